"""Unit tests for rayml.registry: registration checks, lookup, validation, discovery."""

from __future__ import annotations

import doctest
import importlib
import importlib.metadata
import json
import pickle
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest
from pydantic import BaseModel, Field, FiniteFloat

import rayml.registry
from rayml.errors import (
    InvalidParamsError,
    PipelineFailedError,
    RegistrationError,
    UnknownPipelineError,
)
from rayml.registry import (
    SPEC_ATTR,
    PipelineSpec,
    Registry,
    Resources,
    TrainedModel,
    TrainingContext,
    get_spec,
    inference,
    load_spec_by_path,
    run_inference,
    run_training,
    training,
)


class Item(BaseModel):
    x: float


class Vector(BaseModel):
    features: Annotated[list[FiniteFloat], Field(min_length=3, max_length=3)]
    scale: float = 1.0


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


def test_duplicate_names_name_both_functions(reg: Registry) -> None:
    def first(model: Any, batch: list[Item]) -> list[float]:
        return []

    def second(model: Any, batch: list[Item]) -> list[float]:
        return []

    inference("demo.dup", model="m", params=Item, registry=reg)(first)
    with pytest.raises(RegistrationError, match="already registered") as info:
        inference("demo.dup", model="m", params=Item, registry=reg)(second)
    message = str(info.value)
    assert first.__qualname__ in message
    assert second.__qualname__ in message
    assert __name__ in message
    assert reg.get("demo.dup").fn is first


def test_same_function_or_same_import_path_registers_idempotently(reg: Registry) -> None:
    def make() -> Any:
        def predict(model: Any, batch: list[Item]) -> list[float]:
            return []

        return predict

    fn = make()
    inference("demo.same", model="m", params=Item, registry=reg)(fn)
    inference("demo.same", model="m", params=Item, registry=reg)(fn)
    # A re-definition (module reloaded, notebook cell re-run) has the same import path.
    newer = make()
    inference("demo.same", model="m", params=Item, registry=reg)(newer)
    assert reg.get("demo.same").fn is newer


def test_one_function_cannot_back_two_names(reg: Registry) -> None:
    def predict(model: Any, batch: list[Item]) -> list[float]:
        return []

    inference("demo.a", model="m", params=Item, registry=reg)(predict)
    with pytest.raises(RegistrationError, match="Wrap it in a second function"):
        inference("demo.b", model="m", params=Item, registry=reg)(predict)


def test_module_reimport_does_not_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = Registry()
    monkeypatch.setattr(rayml.registry, "default_registry", fresh)
    source = _PIPELINE_SOURCE.format(name="reimported.x").replace(", registry=LOCAL", "")
    _write_module(tmp_path, "reimported_pipes", source)
    monkeypatch.syspath_prepend(str(tmp_path))

    module = importlib.import_module("reimported_pipes")
    reloaded = importlib.reload(module)  # runs the decorators again on new function objects

    assert fresh.names() == ["reimported.x"]
    assert fresh.get("reimported.x").fn is reloaded.predict


def test_decorators_use_default_registry_without_registry_kwarg(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fresh = Registry()
    monkeypatch.setattr(rayml.registry, "default_registry", fresh)

    @inference("demo.default", model="m", params=Item)
    def predict(model: Any, batch: list[Item]) -> list[float]:
        return []

    assert fresh.names() == ["demo.default"]


# --- lookup and validation -------------------------------------------------------------------


def test_get_unknown_name_lists_known_ones(reg: Registry) -> None:
    inference("demo.known", model="m", params=Item, batched=False, registry=reg)(_item_fn())
    with pytest.raises(UnknownPipelineError) as info:
        reg.get("demo.unknown")
    assert info.value.details == {"pipeline": "demo.unknown", "known": ["demo.known"]}
    assert "demo.unknown" not in reg
    assert "demo.known" in reg


def test_validate_params_returns_model_instance(reg: Registry) -> None:
    inference("demo.vec", model="m", params=Vector, registry=reg)(_vector_fn())
    params = reg.validate_params("demo.vec", {"features": [1, 2, 3]})
    assert isinstance(params, Vector)
    assert params.features == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        ({"features": [1, 2]}, ["params.features"]),
        ({"features": [1, "x", 3]}, ["params.features.1"]),
        ({"features": [1, 2, float("nan")]}, ["params.features.2"]),
        ({}, ["params.features"]),
        ({"features": [1, 2, 3], "scale": "big"}, ["params.scale"]),
    ],
)
def test_validate_params_names_bad_fields(
    reg: Registry, raw: dict[str, Any], fields: list[str]
) -> None:
    inference("demo.vec", model="m", params=Vector, registry=reg)(_vector_fn())
    with pytest.raises(InvalidParamsError) as info:
        reg.validate_params("demo.vec", raw)
    err = info.value
    assert [e["field"] for e in err.details["errors"]] == fields
    assert err.details["pipeline"] == "demo.vec"
    assert all(e["message"] for e in err.details["errors"])
    for field in fields:
        assert field in str(err)
    json.dumps(err.details)  # goes into the result envelope as is
    assert err.type == "invalid_params"


@pytest.mark.parametrize("raw", [[1, 2, 3], "features", None, 3])
def test_validate_params_refuses_non_objects(reg: Registry, raw: Any) -> None:
    inference("demo.vec", model="m", params=Vector, registry=reg)(_vector_fn())
    with pytest.raises(InvalidParamsError, match="must be a JSON object") as info:
        reg.validate_params("demo.vec", raw)
    assert info.value.details["errors"][0]["field"] == "params"


def test_validate_params_unknown_pipeline(reg: Registry) -> None:
    with pytest.raises(UnknownPipelineError):
        reg.validate_params("nope", {})


def test_describe_is_json_with_schema(reg: Registry) -> None:
    inference("demo.vec", model="m", params=Vector, registry=reg, max_batch_size=64)(_vector_fn())

    @training("demo.fit", model="m", params=Item, metric="acc", num_cpus=2, registry=reg)
    def fit(params: Item, ctx: TrainingContext) -> TrainedModel:
        """Fit it."""
        return TrainedModel(model=None, metrics={"acc": 1.0})

    described = reg.describe()
    json.dumps(described)
    assert [d["name"] for d in described] == ["demo.fit", "demo.vec"]
    fit_d, vec_d = described
    assert fit_d["kind"] == "training"
    assert fit_d["doc"] == "Fit it."
    assert fit_d["metric"] == "acc"
    assert fit_d["resources"] == {"num_cpus": 2, "num_gpus": 0, "memory": None}
    assert vec_d["kind"] == "inference"
    assert vec_d["max_batch_size"] == 64
    schema = vec_d["params_schema"]
    assert schema["properties"]["features"]["minItems"] == 3
    assert schema["required"] == ["features"]


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


# --- import paths and discovery ------------------------------------------------------------------


def test_load_spec_by_path_imports_example_pipeline() -> None:
    spec = load_spec_by_path("pipelines.iris:predict")
    assert spec.name == "iris.predict"
    assert spec.importable


def test_spec_pickles_by_reference() -> None:
    spec = load_spec_by_path("pipelines.breast_cancer:train")
    again = pickle.loads(pickle.dumps(spec))
    assert again.fn is spec.fn
    assert again.name == spec.name
    unbatched = pickle.loads(pickle.dumps(_MODULE_REG.get("test.double")))
    assert unbatched.batch_fn(None, [Item(x=2)]) == [4]


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("os.system", "not of the form"),
        ("a:b:c", "not of the form"),
        ("os:system('x')", "not of the form"),
        ("__import__('os'):x", "not of the form"),
        ("__main__:predict", "__main__"),
        ("pipelines.iris:nope", "has no attribute"),
        ("os:getcwd", "not decorated"),
        ("no_such_module_xyz:f", "failed"),
    ],
)
def test_load_spec_by_path_refuses_bad_paths(path: str, match: str) -> None:
    with pytest.raises(RegistrationError, match=match):
        load_spec_by_path(path)


def test_discover_default_package() -> None:
    reg = Registry()
    names = reg.discover(entry_points=False)
    assert {"breast_cancer.predict", "breast_cancer.train", "iris.predict", "iris.train"} <= set(
        names
    )
    assert reg.names() == names


def test_discover_configured_modules_and_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_module(tmp_path, "cfg_pipes", _PIPELINE_SOURCE.format(name="cfg.single"))
    package = tmp_path / "cfg_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    _write_module(package, "inner", _PIPELINE_SOURCE.format(name="cfg.inner"))
    monkeypatch.syspath_prepend(str(tmp_path))

    reg = Registry()
    names = reg.discover(
        ["cfg_pipes", "cfg_pkg"], include_default_package=False, entry_points=False
    )
    assert names == ["cfg.inner", "cfg.single"]
    # Discovering again (modules already imported) is idempotent.
    assert reg.discover(["cfg_pipes"], include_default_package=False, entry_points=False) == [
        "cfg.single"
    ]


def test_discover_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_module(tmp_path, "ep_mod", _PIPELINE_SOURCE.format(name="ep.module"))
    _write_module(tmp_path, "ep_fn", _PIPELINE_SOURCE.format(name="ep.function"))
    monkeypatch.syspath_prepend(str(tmp_path))
    group = rayml.registry.ENTRY_POINT_GROUP
    eps = [
        importlib.metadata.EntryPoint(name="mod", value="ep_mod", group=group),
        importlib.metadata.EntryPoint(name="fn", value="ep_fn:predict", group=group),
    ]

    def fake_entry_points(*, group: str) -> list[importlib.metadata.EntryPoint]:
        assert group == rayml.registry.ENTRY_POINT_GROUP
        return eps

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    reg = Registry()
    assert reg.discover(include_default_package=False) == ["ep.function", "ep.module"]

    eps[:] = [importlib.metadata.EntryPoint(name="bad", value="ep_mod:LOCAL", group=group)]
    with pytest.raises(RegistrationError, match="neither a module nor a function"):
        reg.discover(include_default_package=False)
    eps[:] = [importlib.metadata.EntryPoint(name="gone", value="missing_ep_xyz", group=group)]
    with pytest.raises(RegistrationError, match="failed to load"):
        reg.discover(include_default_package=False)


def test_discover_reports_broken_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_module(tmp_path, "broken_pipes", "raise RuntimeError('oops at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RegistrationError, match="oops at import") as info:
        Registry().discover(["broken_pipes"], include_default_package=False, entry_points=False)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_discover_reports_duplicate_names_across_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_module(tmp_path, "dup_a", _PIPELINE_SOURCE.format(name="dup.same"))
    _write_module(tmp_path, "dup_b", _PIPELINE_SOURCE.format(name="dup.same"))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RegistrationError, match=r"dup_a:predict.*dup_b:predict"):
        Registry().discover(["dup_a", "dup_b"], include_default_package=False, entry_points=False)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(rayml.registry, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# --- helpers -----------------------------------------------------------------------------------

_PIPELINE_SOURCE = textwrap.dedent(
    """
    from typing import Any

    from pydantic import BaseModel

    from rayml.registry import Registry, inference

    LOCAL = Registry()


    class Params(BaseModel):
        x: float


    @inference("{name}", model="m", params=Params, registry=LOCAL)
    def predict(model: Any, batch: list[Params]) -> list[float]:
        return [p.x for p in batch]
    """
)


def _write_module(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(source)
    # A module of the same name from another test must not be served from the cache.
    sys.modules.pop(name, None)
    importlib.invalidate_caches()


def _item_fn() -> Any:
    def predict(model: Any, params: Item) -> float:
        return params.x

    return predict


def _vector_fn() -> Any:
    def predict(model: Any, batch: list[Vector]) -> list[float]:
        return [sum(p.features) * p.scale for p in batch]

    return predict


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


def test_importing_pipelines_stays_light() -> None:
    # The ingest imports every pipeline module to validate requests: no ML libraries, no Ray,
    # no Kafka client at import time.
    import subprocess

    code = (
        "import sys, rayml.registry, rayml.models, pipelines.iris, pipelines.breast_cancer\n"
        "heavy = {'xgboost', 'sklearn', 'skops', 'ray', 'confluent_kafka'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
