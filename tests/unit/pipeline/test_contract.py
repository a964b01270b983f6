"""Unit tests for rayml.pipeline.contract: calling pipelines and checking what they return."""

from __future__ import annotations

import doctest
import pickle
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

import rayml.pipeline.contract
from rayml.errors import PipelineFailedError
from rayml.pipeline import (
    PipelineSpec,
    Registry,
    TrainedModel,
    TrainingContext,
    inference,
    run_inference,
    run_training,
    training,
)


class Item(BaseModel):
    x: float


@pytest.fixture
def reg() -> Registry:
    return Registry()


# Module-level pipelines so they pickle and re-import by path.
_MODULE_REG = Registry()


@inference("test.double", model="m", params=Item, batched=False, registry=_MODULE_REG)
def double(model: Any, params: Item) -> float:
    """Double x.

    Second paragraph is not part of the published doc.
    """
    return params.x * 2


# --- running -----------------------------------------------------------------------------------


def test_run_inference_checks_output_length(reg: Registry) -> None:
    @inference("demo.short", model="m", params=Item, registry=reg)
    def short(model: Any, batch: list[Item]) -> list[float]:
        return [1.0]

    assert run_inference(reg.get("demo.short"), None, [Item(x=1)]) == [1.0]
    with pytest.raises(PipelineFailedError, match="returned 1 outputs for a batch of 2") as info:
        run_inference(reg.get("demo.short"), None, [Item(x=1), Item(x=2)])
    assert info.value.details == {"pipeline": "demo.short", "expected": 2, "got": 1}


def test_run_inference_converts_numpy_and_skips_empty_batches(reg: Registry) -> None:
    calls: list[int] = []

    @inference("demo.np", model="m", params=Item, registry=reg)
    def f(model: Any, batch: list[Item]) -> Any:
        calls.append(len(batch))
        return np.array([p.x for p in batch]) * 2

    out = run_inference(reg.get("demo.np"), None, [Item(x=1), Item(x=2)])
    assert out == [2.0, 4.0]
    assert all(type(v) is float for v in out)
    assert run_inference(reg.get("demo.np"), None, []) == []
    assert calls == [2]


@pytest.mark.parametrize("returned", [{"a": 1}, "ab", 3, None])
def test_run_inference_refuses_non_sequences(reg: Registry, returned: Any) -> None:
    @inference("demo.odd", model="m", params=Item, registry=reg)
    def f(model: Any, batch: list[Item]) -> Any:
        return returned

    with pytest.raises(PipelineFailedError, match="one output per request"):
        run_inference(reg.get("demo.odd"), None, [Item(x=1), Item(x=2)])


def test_run_inference_wraps_pipeline_exceptions(reg: Registry) -> None:
    @inference("demo.boom", model="m", params=Item, registry=reg)
    def f(model: Any, batch: list[Item]) -> list[float]:
        raise ValueError("bad row")

    with pytest.raises(PipelineFailedError, match="raised ValueError: bad row") as info:
        run_inference(reg.get("demo.boom"), None, [Item(x=1)])
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.type == "pipeline_failed"


def test_run_inference_refuses_training_specs_and_vice_versa() -> None:
    with pytest.raises(PipelineFailedError, match="not inference"):
        run_inference(_training_spec(), None, [Item(x=1)])
    with pytest.raises(PipelineFailedError, match="not training"):
        run_training(_MODULE_REG.get("test.double"), Item(x=1), TrainingContext())


def test_run_training_normalises_and_checks_metrics(reg: Registry) -> None:
    results: dict[str, Any] = {}

    @training("demo.t", model="m", params=Item, metric="acc", registry=reg)
    def fit(params: Item, ctx: TrainingContext) -> Any:
        return results["value"]

    spec = reg.get("demo.t")
    results["value"] = TrainedModel(model=1, metrics={"acc": np.float32(0.5)})  # type: ignore[dict-item]
    out = run_training(spec, Item(x=1), TrainingContext())
    assert out.metrics == {"acc": 0.5}
    assert type(out.metrics["acc"]) is float

    results["value"] = TrainedModel(model=1, metrics={"loss": 0.1})
    with pytest.raises(PipelineFailedError, match="declares metric 'acc'"):
        run_training(spec, Item(x=1), TrainingContext())

    results["value"] = TrainedModel(model=1, metrics={"acc": "high"})  # type: ignore[dict-item]
    with pytest.raises(PipelineFailedError, match="not a number"):
        run_training(spec, Item(x=1), TrainingContext())

    results["value"] = {"model": 1}
    with pytest.raises(PipelineFailedError, match="returns TrainedModel"):
        run_training(spec, Item(x=1), TrainingContext())


# --- training context ---------------------------------------------------------------------------


def test_training_context_defaults_and_progress() -> None:
    ctx = TrainingContext()
    assert (ctx.nthread, ctx.device) == (1, "cpu")
    ctx.report_progress(0.5)  # default no-op

    seen: list[tuple[float, str]] = []
    ctx = TrainingContext(
        nthread=4, device="cuda:1", report_progress=lambda f, m: seen.append((f, m))
    )
    ctx.report_progress(-1)
    ctx.report_progress(0.25, "quarter")
    ctx.report_progress(7, "over")
    ctx.report_progress(float("nan"))
    assert seen == [(0.0, ""), (0.25, "quarter"), (1.0, "over"), (0.0, "")]


def test_failing_progress_callback_never_fails_training(caplog: pytest.LogCaptureFixture) -> None:
    def broken(fraction: float, message: str) -> None:
        raise RuntimeError("listener gone")

    ctx = TrainingContext(report_progress=broken)
    ctx.report_progress(0.1)
    ctx.report_progress(0.2)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1


@pytest.mark.parametrize(
    "kwargs", [{"nthread": 0}, {"nthread": True}, {"nthread": 1.5}, {"device": "gpu"}]
)
def test_training_context_validates(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"nthread|device"):
        TrainingContext(**kwargs)


def test_training_context_pickles() -> None:
    ctx = pickle.loads(pickle.dumps(TrainingContext(nthread=2)))
    assert ctx.nthread == 2
    ctx.report_progress(0.3)


def _training_spec() -> PipelineSpec:
    def fit(params: Item, ctx: TrainingContext) -> TrainedModel:
        return TrainedModel(model=None, metrics={})

    return PipelineSpec(
        name="demo.t",
        kind="training",
        model="m",
        params=Item,
        fn=fit,
        batch_fn=fit,
        import_path="x:fit",
    )


def test_docstring_examples_run() -> None:
    result = doctest.testmod(rayml.pipeline.contract, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
