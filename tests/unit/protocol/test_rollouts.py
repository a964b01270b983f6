"""Rollout records on the wire: the input vector an answer carries for drift figures."""

from __future__ import annotations

import doctest
from typing import Any

import pytest

import rayml.protocol.rollouts
from rayml.protocol.rollouts import MAX_INPUTS, VersionAnswer, input_vector


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.protocol.rollouts).failed == 0


@pytest.mark.parametrize(
    ("params", "want"),
    [
        ({"features": [1, 2.5, -3]}, [1.0, 2.5, -3.0]),
        ({"features": [0.5], "threshold": 0.3, "tag": "x", "empty": []}, [0.5]),
        ({"features": [1.0] * MAX_INPUTS}, [1.0] * MAX_INPUTS),
        ({"features": [1.0] * (MAX_INPUTS + 1)}, None),
        ({"features": [0.5], "huge": [1.0] * (MAX_INPUTS + 1)}, None),
        ({"a": [1.0], "b": [2.0]}, None),
        ({"a": [1.0], "b": ["x"]}, [1.0]),
        ({"features": [True, 1.0]}, None),
        ({"features": [float("nan")]}, None),
        ({"features": [float("inf")]}, None),
        ({"features": [10**400]}, None),
        ({"features": [[1.0]]}, None),
        ({"features": (1.0, 2.0)}, None),
        ({}, None),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_input_vector_is_the_one_list_of_finite_numbers(params: dict[str, Any], want: Any) -> None:
    assert input_vector(params) == want


def test_an_answer_without_inputs_still_parses_and_one_with_them_round_trips() -> None:
    old = b'{"v":1,"id":"r","model":"m","version":"1","role":"serving","pipeline":"p",'
    old += b'"status":"ok","output":1,"at_ms":5}'
    assert VersionAnswer.model_validate_json(old).inputs is None
    new = VersionAnswer.model_validate_json(old[:-1] + b',"inputs":[1,2.5]}')
    assert new.inputs == [1.0, 2.5]
