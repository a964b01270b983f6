"""Unit tests for rayml.registry, the deprecated import path of the pipeline API.

Customers' pipelines do ``from rayml.registry import inference, training, ...``: that keeps
working, with a DeprecationWarning, and gives the very objects of :mod:`rayml.pipeline`.
"""

from __future__ import annotations

import ast
import importlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import rayml.errors
import rayml.pipeline
import rayml.pipeline.registry
from rayml.pipeline import Registry

#: What ``rayml.registry`` exported before the pipeline modules moved into rayml/pipeline/.
NAMES_BEFORE_THE_MOVE = [
    "DEFAULT_PACKAGE",
    "ENTRY_POINT_GROUP",
    "SPEC_ATTR",
    "PipelineKind",
    "PipelineSpec",
    "Registry",
    "Resources",
    "TrainedModel",
    "TrainingContext",
    "default_registry",
    "get_spec",
    "inference",
    "load_spec_by_path",
    "run_inference",
    "run_training",
    "training",
    "validate_spec_params",
]

#: rayml's errors that the old module imported (so they were importable from it too).
ERRORS_BEFORE_THE_MOVE = [
    "InvalidParamsError",
    "RaymlError",
    "RegistrationError",
    "UnknownPipelineError",
]


class Item(BaseModel):
    x: float


@pytest.fixture
def shim() -> Iterator[types.ModuleType]:
    """rayml.registry imported anew (its warning fires once per import); put back afterwards."""
    package = sys.modules["rayml"]
    module_before = sys.modules.pop("rayml.registry", None)
    attribute_before = vars(package).get("registry")
    try:
        with pytest.warns(DeprecationWarning, match="rayml.registry is deprecated") as record:
            module = importlib.import_module("rayml.registry")
        assert [str(w.message) for w in record if w.category is DeprecationWarning] == [
            "rayml.registry is deprecated; import from rayml.pipeline"
        ]
        yield module
    finally:
        if module_before is None:
            sys.modules.pop("rayml.registry", None)
        else:
            sys.modules["rayml.registry"] = module_before
        if attribute_before is None:
            vars(package).pop("registry", None)
        else:
            vars(package)["registry"] = attribute_before


def test_import_warns_and_reexports_the_same_objects(shim: types.ModuleType) -> None:
    assert sorted(shim.__all__) == sorted(NAMES_BEFORE_THE_MOVE)
    for name in NAMES_BEFORE_THE_MOVE:
        assert getattr(shim, name) is getattr(rayml.pipeline, name), name
    assert set(NAMES_BEFORE_THE_MOVE) <= set(rayml.pipeline.__all__)
    # Importable from the old module too, though not in its __all__.
    for name in ERRORS_BEFORE_THE_MOVE:
        assert getattr(shim, name) is getattr(rayml.errors, name), name


def test_decorator_through_the_shim_registers_into_the_default_registry(
    shim: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = rayml.pipeline.registry.default_registry
    assert shim.default_registry is default
    assert rayml.pipeline.default_registry is default
    # Register into the real default registry, and leave it as the other tests expect it.
    monkeypatch.setattr(default, "_specs", dict(default._specs))

    @shim.training("shim.train", model="m", params=Item)
    def train(params: Item, ctx: Any) -> Any:
        return shim.TrainedModel(model=None, metrics={})

    assert default.get("shim.train").fn is train
    assert shim.get_spec(train) is default.get("shim.train")


def test_decorator_through_the_shim_follows_a_replaced_default_registry(
    shim: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = Registry()
    monkeypatch.setattr(rayml.pipeline.registry, "default_registry", fresh)

    @shim.inference("shim.predict", model="m", params=Item)
    def predict(model: Any, batch: list[Item]) -> list[float]:
        return [p.x for p in batch]

    assert fresh.names() == ["shim.predict"]
    assert "shim.predict" not in shim.default_registry


def test_nothing_in_rayml_imports_the_shim() -> None:
    package = Path(rayml.pipeline.__file__).resolve().parents[1]
    importers = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                base = node.module or ""
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            if "rayml.registry" in targets:
                importers.append(str(path.relative_to(package.parent)))
    assert importers == []
