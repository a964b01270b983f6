"""Unit tests for rayml.pipeline.decorators (and rayml.pipeline.signatures): registration and its
checks."""

from __future__ import annotations

import doctest
import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from pydantic import BaseModel

import rayml.pipeline.decorators
import rayml.pipeline.registry
import rayml.pipeline.signatures
from rayml.errors import RegistrationError
from rayml.pipeline import (
    SPEC_ATTR,
    InferenceContext,
    Pool,
    Registry,
    Resources,
    TrainedModel,
    TrainingContext,
    get_spec,
    inference,
    run_inference,
    training,
)


class Item(BaseModel):
    x: float


class Other(BaseModel):
    y: int


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


# --- registration ----------------------------------------------------------------------------


def test_inference_returns_function_unchanged_and_attaches_spec(reg: Registry) -> None:
    def predict(model: Any, batch: list[Item]) -> list[float]:
        """Add the model to each x."""
        return [model + p.x for p in batch]

    decorated = inference("demo.add", model="adder", params=Item, registry=reg)(predict)

    assert decorated is predict
    assert decorated(1, [Item(x=2)]) == [3]  # still a plain callable
    spec = reg.get("demo.add")
    assert getattr(predict, SPEC_ATTR) is spec
    assert get_spec(predict) is spec
    assert spec.kind == "inference"
    assert spec.model == "adder"
    assert spec.params is Item
    assert spec.batched is True
    assert spec.batch_fn is predict
    assert spec.doc == "Add the model to each x."
    assert spec.import_path == f"{__name__}:{predict.__qualname__}"
    assert not spec.importable  # a local function: workers could not import it


def test_doc_is_first_paragraph_and_explicit_doc_wins(reg: Registry) -> None:
    assert _MODULE_REG.get("test.double").doc == "Double x."

    @inference("demo.documented", model="m", params=Item, doc="Custom.", registry=reg)
    def f(model: Any, batch: list[Item]) -> list[float]:
        """Ignored."""
        return []

    assert reg.get("demo.documented").doc == "Custom."


def test_unbatched_function_is_wrapped_to_batch_form() -> None:
    spec = _MODULE_REG.get("test.double")
    assert spec.batched is False
    assert spec.fn is double
    assert spec.batch_fn(None, [Item(x=1), Item(x=2)]) == [2, 4]
    assert run_inference(spec, None, [Item(x=3)]) == [6]


def test_training_spec_records_resources_metric_and_mode(reg: Registry) -> None:
    @training(
        "demo.fit",
        model="demo",
        params=Item,
        num_cpus=4,
        num_gpus=1,
        memory=2**30,
        metric="rmse",
        mode="min",
        registry=reg,
    )
    def fit(params: Item, ctx: TrainingContext) -> TrainedModel:
        return TrainedModel(model=params.x, metrics={"rmse": 0.5})

    spec = reg.get("demo.fit")
    assert spec.kind == "training"
    assert spec.resources == Resources(num_cpus=4, num_gpus=1, memory=2**30)
    assert spec.resources.to_ray_options() == {"num_cpus": 4, "num_gpus": 1, "memory": 2**30}
    assert (spec.metric, spec.mode) == ("rmse", "min")
    assert fit(Item(x=1), TrainingContext()).model == 1


def test_metric_is_optional_at_registration(reg: Registry) -> None:
    @training("demo.nometric", model="demo", params=Item, registry=reg)
    def fit(params: Item, ctx: TrainingContext) -> TrainedModel:
        return TrainedModel(model=None, metrics={})

    assert reg.get("demo.nometric").metric is None


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Iris.predict",
        "iris..predict",
        ".iris",
        "iris.",
        "1iris",
        "iris-predict",
        "iris/x",
        None,
    ],
)
def test_bad_pipeline_names_are_refused(reg: Registry, name: Any) -> None:
    with pytest.raises(RegistrationError, match="lowercase dotted identifiers"):
        inference(name, model="m", params=Item, registry=reg)


@pytest.mark.parametrize("model", ["../etc", "a/b", "/abs", "", "..", None])
def test_bad_model_names_are_refused(reg: Registry, model: Any) -> None:
    with pytest.raises(RegistrationError, match="model name is not valid"):
        training("demo.x", model=model, params=Item, registry=reg)


@pytest.mark.parametrize("params", [Item(x=1), dict, None, "Item"])
def test_params_must_be_a_pydantic_model_class(reg: Registry, params: Any) -> None:
    with pytest.raises(RegistrationError, match="BaseModel subclass"):
        inference("demo.x", model="m", params=params, registry=reg)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_cpus": -1}, "num_cpus"),
        ({"num_gpus": "1"}, "num_gpus"),
        ({"memory": 0}, "memory"),
        ({"mode": "maximise"}, "mode"),
        ({"metric": ""}, "metric"),
    ],
)
def test_bad_training_options_are_refused(
    reg: Registry, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(RegistrationError, match=match):
        training("demo.x", model="m", params=Item, registry=reg, **kwargs)


@pytest.mark.parametrize("size", [0, -1, True, 1.5])
def test_bad_max_batch_size_is_refused(reg: Registry, size: Any) -> None:
    with pytest.raises(RegistrationError, match="max_batch_size"):
        inference("demo.x", model="m", params=Item, max_batch_size=size, registry=reg)


def test_wrong_arity_says_what_to_write(reg: Registry) -> None:
    def one(batch: list[Item]) -> list[float]:
        return []

    def three(model: Any, batch: list[Item], extra: int) -> list[float]:
        return []

    def kw_only(model: Any, batch: list[Item], *, flag: bool) -> list[float]:
        return []

    for fn in (one, three, kw_only):
        with pytest.raises(RegistrationError, match=r"write fn\(model, batch: list\[Params\]\)"):
            inference("demo.x", model="m", params=Item, registry=reg)(fn)

    def train_one(params: Item) -> TrainedModel:
        return TrainedModel(model=None, metrics={})

    with pytest.raises(RegistrationError, match="ctx: TrainingContext"):
        training("demo.t", model="m", params=Item, registry=reg)(train_one)
    assert reg.names() == []


def test_optional_extra_arguments_are_fine(reg: Registry) -> None:
    def predict(model: Any, batch: list[Item], scale: float = 1.0) -> list[float]:
        return [p.x * scale for p in batch]

    inference("demo.opt", model="m", params=Item, registry=reg)(predict)
    assert "demo.opt" in reg


def test_batched_function_annotated_with_single_params_suggests_batched_false(
    reg: Registry,
) -> None:
    def predict(model: Any, params: Item) -> float:
        return params.x

    with pytest.raises(RegistrationError, match="batched=False") as info:
        inference("demo.x", model="m", params=Item, registry=reg)(predict)
    assert "list[Item]" in str(info.value)


def test_unbatched_function_annotated_with_list_is_refused(reg: Registry) -> None:
    def predict(model: Any, batch: list[Item]) -> list[float]:
        return []

    with pytest.raises(RegistrationError, match="a batch, but this function gets one request"):
        inference("demo.x", model="m", params=Item, batched=False, registry=reg)(predict)


def test_params_annotation_must_match_params_model(reg: Registry) -> None:
    def predict(model: Any, batch: list[Other]) -> list[float]:
        return []

    with pytest.raises(RegistrationError, match=r"write `batch: list\[Item\]`"):
        inference("demo.x", model="m", params=Item, registry=reg)(predict)

    def fit(params: Other, ctx: TrainingContext) -> TrainedModel:
        return TrainedModel(model=None, metrics={})

    with pytest.raises(RegistrationError, match="write `params: Item`"):
        training("demo.t", model="m", params=Item, registry=reg)(fit)


def test_compatible_annotations_are_accepted(reg: Registry) -> None:
    def a(model: Any, batch: Sequence[Item]) -> list[float]:
        return []

    def b(model: Any, batch: list[BaseModel]) -> list[float]:
        return []

    def c(model, batch):  # type: ignore[no-untyped-def]
        return []

    def d(model: Any, batch: list) -> list[float]:  # type: ignore[type-arg]
        return []

    fns: list[Callable[..., Any]] = [a, b, c, d]
    for i, fn in enumerate(fns):
        inference(f"demo.ok{i}", model="m", params=Item, registry=reg)(fn)
    assert len(reg) == 4


def test_training_context_and_return_annotations_are_checked(reg: Registry) -> None:
    def bad_ctx(params: Item, ctx: dict[str, Any]) -> TrainedModel:
        return TrainedModel(model=None, metrics={})

    def bad_ctx_class(params: Item, ctx: Item) -> TrainedModel:
        return TrainedModel(model=None, metrics={})

    def bad_return(params: Item, ctx: TrainingContext) -> dict:  # type: ignore[type-arg]
        return {}

    with pytest.raises(RegistrationError, match="receives a TrainingContext"):
        training("demo.t", model="m", params=Item, registry=reg)(bad_ctx_class)
    with pytest.raises(RegistrationError, match="TrainedModel"):
        training("demo.t", model="m", params=Item, registry=reg)(bad_return)
    # A generic alias is not a class: accepted (the types are advice, the arity is checked).
    training("demo.t", model="m", params=Item, registry=reg)(bad_ctx)


def test_async_functions_and_classes_are_refused(reg: Registry) -> None:
    async def predict(model: Any, batch: list[Item]) -> list[float]:
        return []

    with pytest.raises(RegistrationError, match="async def"):
        inference("demo.x", model="m", params=Item, registry=reg)(predict)

    class Predictor:
        def __init__(self, model: Any, batch: Any) -> None: ...

    with pytest.raises(RegistrationError, match="not class"):
        inference("demo.x", model="m", params=Item, registry=reg)(Predictor)


def test_one_function_cannot_back_two_names(reg: Registry) -> None:
    def predict(model: Any, batch: list[Item]) -> list[float]:
        return []

    inference("demo.a", model="m", params=Item, registry=reg)(predict)
    with pytest.raises(RegistrationError, match="Wrap it in a second function"):
        inference("demo.b", model="m", params=Item, registry=reg)(predict)


def test_decorators_use_default_registry_without_registry_kwarg(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fresh = Registry()
    monkeypatch.setattr(rayml.pipeline.registry, "default_registry", fresh)

    @inference("demo.default", model="m", params=Item)
    def predict(model: Any, batch: list[Item]) -> list[float]:
        return []

    assert fresh.names() == ["demo.default"]


@pytest.mark.parametrize("module", [rayml.pipeline.decorators, rayml.pipeline.signatures])
def test_docstring_examples_run(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_batch_timeout_s_is_a_positive_number_of_seconds_or_none() -> None:
    from pydantic import BaseModel

    from rayml.errors import RegistrationError
    from rayml.pipeline import Registry, inference

    class P(BaseModel):
        x: float

    reg = Registry()

    @inference("demo.bounded", model="m", params=P, batch_timeout_s=30, registry=reg)
    def bounded(model: object, batch: list[P]) -> list[float]:
        return [p.x for p in batch]

    assert reg.get("demo.bounded").batch_timeout_s == 30.0
    for bad in (0, -1, True, "30"):
        with pytest.raises(RegistrationError, match="batch_timeout_s must be"):
            inference("demo.bad", model="m", params=P, batch_timeout_s=bad, registry=reg)  # type: ignore[arg-type]


class FitParams(BaseModel):
    x: float = 1.0


def test_training_timeout_s_is_a_positive_number_of_seconds_or_none() -> None:
    reg = Registry()

    @training("demo.bounded_fit", model="m", params=FitParams, timeout_s=90, registry=reg)
    def bounded(params: FitParams, ctx: TrainingContext) -> TrainedModel:
        return TrainedModel(model=None, metrics={})

    @training("demo.plain_fit", model="m", params=FitParams, registry=reg)
    def plain(params: FitParams, ctx: TrainingContext) -> TrainedModel:
        return TrainedModel(model=None, metrics={})

    assert reg.get("demo.bounded_fit").trial_timeout_s == 90.0
    assert reg.get("demo.plain_fit").trial_timeout_s is None  # the setting applies
    for bad in (0, -1, True, "30"):
        with pytest.raises(RegistrationError, match="timeout_s must be"):
            training("demo.bad", model="m", params=FitParams, timeout_s=bad, registry=reg)  # type: ignore[arg-type]


# -- an inference pipeline's own pool, and its context -------------------------------------


class _PoolParams(BaseModel):
    x: float


def test_an_inference_pipeline_declares_its_own_pool() -> None:
    reg = Registry()
    shape = Pool(num_cpus=0.5, num_gpus=1, min_replicas=0, max_replicas=3, max_batch_size=64)

    @inference("demo.pooled", model="m", params=_PoolParams, pool=shape, registry=reg)
    def pooled(model: object, batch: list[_PoolParams]) -> list[float]:
        return [p.x for p in batch]

    spec = reg.get("demo.pooled")
    assert spec.pool == shape
    assert spec.pool.scales_to_zero
    assert spec.describe()["pool"]["num_gpus"] == 1
    assert not spec.takes_context


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_replicas": 2, "max_replicas": 1}, "max_replicas (1) must be >= min_replicas (2)"),
        ({"num_gpus": -1}, "num_gpus must be a number >= 0"),
        ({"num_cpus": float("nan")}, "num_cpus must be a number >= 0"),
        ({"min_replicas": -1}, "min_replicas must be an int >= 0"),
        ({"max_replicas": 0}, "max_replicas must be an int >= 1"),
        ({"max_batch_size": 0}, "max_batch_size must be an int >= 1"),
        ({"memory": True}, "memory must be an int >= 1"),
        ({"idle_timeout_s": float("inf")}, "idle_timeout_s must be a number >= 0"),
        ({"gpu_fallback": "yes"}, "gpu_fallback must be True or False"),
        # Ray refuses finer amounts when the worker starts: refused at registration instead.
        ({"num_gpus": 0.00001}, "num_gpus must be a multiple of 0.0001"),
        ({"max_batch_wait_ms": 60_001}, "max_batch_wait_ms must be at most 60000"),
    ],
)
def test_a_bad_pool_is_refused_when_declared(kwargs: dict, message: str) -> None:
    with pytest.raises(RegistrationError, match=re.escape(message)):
        Pool(**kwargs)


def test_a_pipeline_named_like_the_default_pool_may_not_have_a_pool_of_its_own() -> None:
    with pytest.raises(RegistrationError, match="names the pool the pipelines without one share"):
        inference("default", model="m", params=_PoolParams, pool=Pool())


def test_a_pool_that_is_not_a_pool_is_refused() -> None:
    with pytest.raises(RegistrationError, match=re.escape("pool must be a rayml.pipeline.Pool")):
        inference("demo.bad_pool", model="m", params=_PoolParams, pool={"num_gpus": 1})  # type: ignore[arg-type]


def test_a_pipeline_that_takes_ctx_gets_its_workers_context() -> None:
    reg = Registry()

    @inference("demo.ctx", model="m", params=_PoolParams, registry=reg)
    def batched(
        model: object, batch: list[_PoolParams], ctx: InferenceContext | None = None
    ) -> list[str]:
        assert ctx is not None
        return [ctx.device] * len(batch)

    @inference("demo.ctx_item", model="m", params=_PoolParams, batched=False, registry=reg)
    def per_item(model: object, params: _PoolParams, *, ctx: InferenceContext) -> int:
        return ctx.nthread

    assert reg.get("demo.ctx").takes_context
    one = [_PoolParams(x=1.0)]
    assert run_inference(reg.get("demo.ctx"), None, one, InferenceContext(device="cuda")) == [
        "cuda"
    ]
    assert run_inference(reg.get("demo.ctx"), None, one) == ["cpu"]  # a default context
    assert run_inference(reg.get("demo.ctx_item"), None, one, InferenceContext(nthread=3)) == [3]
    with pytest.raises(ValueError, match="device must be"):
        InferenceContext(device="tpu")
