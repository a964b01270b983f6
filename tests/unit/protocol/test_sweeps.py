"""Sweep expansion, per-trial validation and best-trial selection (pure)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from rayml.errors import InvalidParamsError, RecordError
from rayml.pipeline import Registry, TrainedModel, TrainingContext, training
from rayml.protocol.sweeps import expand, select_best, validate_trials


class P(BaseModel):
    n: int = Field(10, ge=1)
    d: int = Field(2, ge=1, le=8)
    lr: float = 0.1


FIELDS = set(P.model_fields)


def test_plain_params_are_one_trial() -> None:
    plan = expand({"n": 3}, fields=FIELDS, max_trials=4)
    assert not plan.is_sweep
    assert [t.params for t in plan.trials] == [{"n": 3}]


def test_grid_is_the_cartesian_product_in_key_then_value_order() -> None:
    plan = expand({"n": 5, "grid": {"d": [2, 4], "lr": [0.1, 0.3]}}, fields=FIELDS, max_trials=8)
    assert plan.is_sweep
    assert [t.params for t in plan.trials] == [
        {"n": 5, "d": 2, "lr": 0.1},
        {"n": 5, "d": 2, "lr": 0.3},
        {"n": 5, "d": 4, "lr": 0.1},
        {"n": 5, "d": 4, "lr": 0.3},
    ]
    assert [t.index for t in plan.trials] == [0, 1, 2, 3]


def test_sweep_list_overrides_shared_params_and_grid_overrides_both() -> None:
    plan = expand(
        {"n": 1, "d": 1, "sweep": [{"n": 2}, {"d": 3}], "grid": {"d": [5]}},
        fields=FIELDS,
        max_trials=8,
    )
    assert [t.params for t in plan.trials] == [{"n": 2, "d": 5}, {"n": 1, "d": 5}]


def test_a_field_named_like_a_reserved_key_is_a_parameter() -> None:
    plan = expand({"grid": [1, 2]}, fields={"grid"}, max_trials=4)
    assert not plan.is_sweep
    assert plan.trials[0].params == {"grid": [1, 2]}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"grid": {}}, "params.grid"),
        ({"grid": [1]}, "params.grid"),
        ({"grid": {"d": []}}, "params.grid.d"),
        ({"grid": {"d": 3}}, "params.grid.d"),
        ({"sweep": []}, "params.sweep"),
        ({"sweep": [{"d": 2}, 3]}, "params.sweep[1]"),
        ({"grid": {"d": [1, 2, 3], "n": [1, 2]}}, "params.grid"),
    ],
)
def test_malformed_sweeps_name_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParamsError) as info:
        expand(params, fields=FIELDS, max_trials=5)
    assert info.value.details["errors"][0]["field"] == field
    assert field in str(info.value)


def test_too_many_trials_are_refused() -> None:
    with pytest.raises(InvalidParamsError, match="more than the limit of 3"):
        expand({"grid": {"d": [1, 2], "n": [1, 2]}}, fields=FIELDS, max_trials=3)


def _registry_validate() -> tuple[Registry, str]:
    reg = Registry()

    @training("demo.sweep", model="demo", params=P, metric="acc", registry=reg)
    def fit(params: P, ctx: TrainingContext) -> TrainedModel:
        return TrainedModel(model=None, metrics={"acc": 1.0})

    return reg, "demo.sweep"


def test_each_trial_is_validated_and_errors_name_where_the_client_wrote_the_value() -> None:
    reg, name = _registry_validate()
    plan = expand({"grid": {"d": [2, 99]}}, fields=FIELDS, max_trials=8)
    with pytest.raises(InvalidParamsError) as info:
        validate_trials(plan, lambda p: reg.validate_params(name, p), name)
    assert info.value.details["trial"] == 1
    assert info.value.details["errors"][0]["field"] == "params.grid.d"
    assert "trial 1 of 2" in str(info.value)

    plan = expand({"n": 0, "sweep": [{"d": 2}]}, fields=FIELDS, max_trials=8)
    with pytest.raises(InvalidParamsError) as info:
        validate_trials(plan, lambda p: reg.validate_params(name, p), name)
    assert info.value.details["errors"][0]["field"] == "params.n"

    plan = expand({"sweep": [{"d": 2}, {"d": "x"}]}, fields=FIELDS, max_trials=8)
    with pytest.raises(InvalidParamsError) as info:
        validate_trials(plan, lambda p: reg.validate_params(name, p), name)
    assert info.value.details["errors"][0]["field"] == "params.sweep[1].d"


def test_a_plain_request_keeps_the_registrys_error() -> None:
    reg, name = _registry_validate()
    plan = expand({"d": 99}, fields=FIELDS, max_trials=8)
    with pytest.raises(InvalidParamsError) as info:
        validate_trials(plan, lambda p: reg.validate_params(name, p), name)
    assert info.value.details["errors"][0]["field"] == "params.d"
    assert "trial" not in info.value.details


def test_valid_trials_come_back_validated_in_order() -> None:
    reg, name = _registry_validate()
    plan = expand({"grid": {"d": [2, 4]}}, fields=FIELDS, max_trials=8)
    validated = validate_trials(plan, lambda p: reg.validate_params(name, p), name)
    assert [v.d for v in validated] == [2, 4]
    assert all(isinstance(v, P) for v in validated)


def test_select_best_by_mode_with_ties_to_the_earliest() -> None:
    results = [(0, {"acc": 0.9}), (1, {"acc": 0.95}), (2, {"acc": 0.95}), (3, {"acc": 0.5})]
    assert select_best(results, "acc", "max") == 1
    assert select_best(results, "acc", "min") == 3


def test_select_best_ranks_missing_and_nan_last() -> None:
    results = [(0, {"loss": math.nan}), (1, {}), (2, {"loss": 7.0})]
    assert select_best(results, "loss", "min") == 2
    assert select_best([(4, {})], "loss", "min") == 4
    with pytest.raises(RecordError):
        select_best([], "loss", "min")


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20))
def test_select_best_agrees_with_max_and_min(values: list[float]) -> None:
    results = [(i, {"m": v}) for i, v in enumerate(values)]
    assert values[select_best(results, "m", "max")] == max(values)
    assert values[select_best(results, "m", "min")] == min(values)
    assert select_best(results, "m", "max") == values.index(max(values))
