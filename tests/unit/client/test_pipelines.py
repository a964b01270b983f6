"""Client-side params checking against published JSON Schemas (no Kafka, no Ray)."""

from __future__ import annotations

import doctest
from typing import Any

import numpy as np
import pytest

import rayml.client.pipelines
from rayml.client.pipelines import ParamsChecker, PipelineInfo, to_wire
from rayml.errors import InvalidParamsError
from rayml.pipeline import Registry


@pytest.fixture(scope="module")
def examples() -> dict[str, PipelineInfo]:
    """The example pipelines described exactly as the executor publishes them."""
    registry = Registry()
    registry.discover([])
    return {d["name"]: PipelineInfo.from_description(d) for d in registry.describe()}


def fields_of(exc: pytest.ExceptionInfo[InvalidParamsError]) -> list[str]:
    return [e["field"] for e in exc.value.details["errors"]]


def test_doctests() -> None:
    assert doctest.testmod(rayml.client.pipelines).failed == 0


def test_valid_params_pass_and_numpy_becomes_plain_json(
    examples: dict[str, PipelineInfo],
) -> None:
    checker = ParamsChecker(examples["breast_cancer.predict"])
    wire = checker.check({"features": np.arange(30, dtype=np.float64)})
    assert wire == {"features": [float(x) for x in range(30)]}
    assert type(wire["features"][0]) is float


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"features": [1.0]}, "params.features", "expected at least 30 items, got 1"),
        ({"features": [1.0] * 31}, "params.features", "expected at most 30 items, got 31"),
        ({}, "params.features", "required field is missing"),
        ({"features": [1.0] * 30, "x": 1}, "params.x", "unexpected field (the pipeline takes"),
        ({"features": ["a"] + [1.0] * 29}, "params.features[0]", "expected number, got str"),
        ({"features": [float("inf")] * 30}, "params", "NaN and infinities"),
        ({"features": object()}, "params", "not JSON-serialisable"),
    ],
)
def test_invalid_params_name_the_field(
    examples: dict[str, PipelineInfo], params: dict[str, Any], field: str, words: str
) -> None:
    checker = ParamsChecker(examples["breast_cancer.predict"])
    with pytest.raises(InvalidParamsError) as excinfo:
        checker.check(params)
    assert field in fields_of(excinfo)
    assert words in str(excinfo.value)
    assert str(excinfo.value).startswith("invalid params for pipeline 'breast_cancer.predict'")
    assert excinfo.value.type == "invalid_params", "the executor's own error code"


def test_many_errors_are_summarised_but_all_kept_in_details(
    examples: dict[str, PipelineInfo],
) -> None:
    with pytest.raises(InvalidParamsError) as excinfo:
        ParamsChecker(examples["iris.predict"]).check({"features": ["a", "b", "c", "d"]})
    assert fields_of(excinfo) == [f"params.features[{i}]" for i in range(4)]
    assert str(excinfo.value).endswith("and 1 more")


def test_training_sweeps_are_checked_per_trial_with_the_callers_paths(
    examples: dict[str, PipelineInfo],
) -> None:
    checker = ParamsChecker(examples["breast_cancer.train"])
    sweep = {"n_estimators": 10, "grid": {"max_depth": [2, 4]}}
    assert checker.check(sweep) == sweep, "a valid sweep is sent as written"
    with pytest.raises(InvalidParamsError) as excinfo:
        checker.check({"grid": {"max_depth": [2, 99]}})
    assert "trial 1 of 2" in str(excinfo.value)
    assert fields_of(excinfo) == ["params.grid.max_depth"]
    with pytest.raises(InvalidParamsError, match=r"params\.sweep"):
        checker.check({"sweep": "not a list"})


def test_nullable_and_defaults_follow_the_schema(examples: dict[str, PipelineInfo]) -> None:
    checker = ParamsChecker(examples["iris.train"])
    assert checker.check({}) == {}
    assert checker.check({"max_depth": None}) == {"max_depth": None}
    with pytest.raises(InvalidParamsError, match=r"params\.n_estimators"):
        checker.check({"n_estimators": 0})


def test_a_schema_the_client_cannot_use_is_not_enforced(caplog: pytest.LogCaptureFixture) -> None:
    info = PipelineInfo("demo.bad", "inference", "m", params_schema={"type": "no-such-type"})
    checker = ParamsChecker(info)
    assert checker.check({"anything": 1}) == {"anything": 1}
    assert "not checked" in caplog.text


def test_pipeline_info_reads_a_registry_record(examples: dict[str, PipelineInfo]) -> None:
    info = examples["breast_cancer.train"]
    assert (info.kind, info.model, info.metric, info.mode) == (
        "training",
        "breast_cancer",
        "accuracy",
        "max",
    )
    assert info.required == []
    assert info.fields["n_estimators"]["default"] == 100
    assert info.description["import_path"] == "pipelines.breast_cancer:train"
    assert to_wire("p", {"t": (1, 2)}) == {"t": [1, 2]}
