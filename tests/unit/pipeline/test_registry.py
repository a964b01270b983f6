"""Unit tests for rayml.pipeline.registry (and rayml.pipeline.spec): registering, lookup,
validation, discovery.

The decorators' own checks are in test_decorators.py, calling pipelines in test_contract.py.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.metadata
import json
import pickle
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field, FiniteFloat, ValidationError, model_validator

import rayml.pipeline
import rayml.pipeline.registry
import rayml.pipeline.spec
from rayml.errors import (
    InvalidParamsError,
    RegistrationError,
    UnknownPipelineError,
)
from rayml.pipeline import (
    Registry,
    TrainedModel,
    TrainingContext,
    inference,
    load_spec_by_path,
    training,
    validate_batch_params,
    validate_spec_params,
)


class Item(BaseModel):
    x: float


class Vector(BaseModel):
    features: Annotated[list[FiniteFloat], Field(min_length=3, max_length=3)]
    scale: float = 1.0


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


# --- registering twice -------------------------------------------------------------------------


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


def test_module_reimport_does_not_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = Registry()
    monkeypatch.setattr(rayml.pipeline.registry, "default_registry", fresh)
    source = _PIPELINE_SOURCE.format(name="reimported.x").replace(", registry=LOCAL", "")
    _write_module(tmp_path, "reimported_pipes", source)
    monkeypatch.syspath_prepend(str(tmp_path))

    module = importlib.import_module("reimported_pipes")
    reloaded = importlib.reload(module)  # runs the decorators again on new function objects

    assert fresh.names() == ["reimported.x"]
    assert fresh.get("reimported.x").fn is reloaded.predict


# --- lookup and validation -------------------------------------------------------------------


def test_get_unknown_name_names_no_other_pipeline(reg: Registry) -> None:
    inference("demo.known", model="m", params=Item, batched=False, registry=reg)(_item_fn())
    with pytest.raises(UnknownPipelineError) as info:
        reg.get("demo.unknown")
    # What a caller is told: only the name it sent (the error becomes its result).
    assert info.value.details == {"pipeline": "demo.unknown"}
    assert "demo.known" not in str(info.value)
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
    group = rayml.pipeline.registry.ENTRY_POINT_GROUP
    eps = [
        importlib.metadata.EntryPoint(name="mod", value="ep_mod", group=group),
        importlib.metadata.EntryPoint(name="fn", value="ep_fn:predict", group=group),
    ]

    def fake_entry_points(*, group: str) -> list[importlib.metadata.EntryPoint]:
        assert group == rayml.pipeline.registry.ENTRY_POINT_GROUP
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


@pytest.mark.parametrize("module", [rayml.pipeline, rayml.pipeline.registry, rayml.pipeline.spec])
def test_docstring_examples_run(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# --- helpers -----------------------------------------------------------------------------------

_PIPELINE_SOURCE = textwrap.dedent(
    """
    from typing import Any

    from pydantic import BaseModel

    from rayml.pipeline import Registry, inference

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


def test_importing_pipelines_stays_light() -> None:
    # The ingest imports every pipeline module to validate requests: no ML libraries, no Ray,
    # no Kafka client at import time.
    import subprocess

    code = (
        "import sys, rayml.pipeline, rayml.models.store\n"
        "import pipelines.iris, pipelines.breast_cancer\n"
        "heavy = {'xgboost', 'sklearn', 'skops', 'ray', 'confluent_kafka'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_a_batch_validates_in_one_call_and_an_invalid_request_fails_alone(reg: Registry) -> None:
    """validate_batch_params gives what validate_spec_params gives, request by request."""

    @inference("test.vec", model="m", params=Vector, registry=reg)
    def vec(model: Any, batch: list[Vector]) -> list[float]:
        return [sum(p.features) for p in batch]

    spec = reg.get("test.vec")
    good = [{"features": [1.0, 2.0, 3.0]}, {"features": [0.0, 0.0, 1.0], "scale": 2.0}]
    assert validate_batch_params(spec, good) == [validate_spec_params(spec, g) for g in good]
    bad = [good[0], {"features": [1.0]}, "not an object", {"features": [1, 2, 3], "x": 1}, good[1]]
    checked = validate_batch_params(spec, bad)
    assert checked[0] == validate_spec_params(spec, good[0])
    assert checked[4] == validate_spec_params(spec, good[1])
    for i in (1, 2):
        assert isinstance(checked[i], InvalidParamsError)
        with pytest.raises(InvalidParamsError) as one:
            validate_spec_params(spec, bad[i])
        assert str(checked[i]) == str(one.value)
        assert checked[i].details == one.value.details
    # Vector ignores unknown fields (pydantic's default): the same in both paths.
    assert checked[3] == validate_spec_params(spec, bad[3])


class Renamed(BaseModel):
    """A params model whose validator changes the dict it is given (allowed by pydantic)."""

    n: int

    @model_validator(mode="before")
    @classmethod
    def _rename(cls, data: Any) -> Any:
        if isinstance(data, dict) and "count" in data:
            data["n"] = data.pop("count")
        return data


class Capped(BaseModel):
    """A params model that overrides model_validate."""

    n: int

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Capped:  # type: ignore[override]
        model = super().model_validate(obj, *args, **kwargs)
        if model.n > 100:
            raise ValidationError.from_exception_data(
                "Capped",
                [{"type": "less_than_equal", "loc": ("n",), "input": model.n, "ctx": {"le": 100}}],
            )
        return model


def test_each_request_of_a_batch_is_validated_once(reg: Registry) -> None:
    """A validator that edits its input sees each request once, and an invalid batch-mate
    changes nothing for the others (found by review: a second pass broke the whole batch)."""

    @inference("test.renamed", model="m", params=Renamed, registry=reg)
    def renamed(model: Any, batch: list[Renamed]) -> list[int]:
        return [p.n for p in batch]

    checked = validate_batch_params(reg.get("test.renamed"), [{"count": 1}, {"count": "x"}])
    assert checked[0] == Renamed(n=1)
    assert isinstance(checked[1], InvalidParamsError)
    assert checked[1].details["errors"][0]["field"] == "params.n"


def test_a_model_validate_override_is_honoured_in_a_batch(reg: Registry) -> None:
    @inference("test.capped", model="m", params=Capped, registry=reg)
    def capped(model: Any, batch: list[Capped]) -> list[int]:
        return [p.n for p in batch]

    checked = validate_batch_params(reg.get("test.capped"), [{"n": 1}, {"n": 1000}])
    assert checked[0] == Capped(n=1)
    assert isinstance(checked[1], InvalidParamsError)
