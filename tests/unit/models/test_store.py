"""Unit tests for the model store: formats, versions, atomicity, safety.

They go through ``rayml.models.store`` and also cover the modules it is built from: ``model_names``,
``model_formats`` and ``model_layout``.
"""

from __future__ import annotations

import datetime as dt
import doctest
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from xgboost import Booster, XGBClassifier, XGBRegressor

import rayml.models.formats
import rayml.models.layout
import rayml.models.store
import rayml.protocol.model_names
from rayml.errors import (
    InvalidModelNameError,
    ModelNotFoundError,
    ModelStoreError,
    UnsafeModelFormatError,
)
from rayml.models.formats import is_trusted
from rayml.models.store import METADATA_FILE, ModelStore, fingerprint_arrays, validate_version

X, Y = load_iris(return_X_y=True)


class Doubler(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """A custom transformer: a type skops does not trust by default."""

    def fit(self, x: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, x: Any) -> Any:
        return np.asarray(x) * 2


def halve(x: Any) -> Any:
    return np.asarray(x) / 2


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(str(tmp_path / "models"))


@pytest.fixture(scope="module")
def logreg() -> LogisticRegression:
    return LogisticRegression(max_iter=200).fit(X, Y)


def _save(store: ModelStore, name: str, model: Any, **kwargs: Any) -> Any:
    return store.save(name, model, pipeline="test.train", params={"a": 1}, metrics={}, **kwargs)


# --- round trips -------------------------------------------------------------------------------


def test_xgboost_classifier_round_trip(store: ModelStore) -> None:
    model = XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1).fit(X, Y)
    saved = store.save(
        "iris_xgb",
        model,
        pipeline="iris.train",
        params={"n_estimators": 3},
        metrics={"accuracy": np.float64(0.9)},
        data_fingerprint="abc",
    )
    assert saved.version == "000001"

    loaded = store.load("iris_xgb")
    assert type(loaded.model) is XGBClassifier
    assert loaded.version == "000001"
    np.testing.assert_array_equal(loaded.model.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.model.classes_, model.classes_)

    meta = loaded.metadata
    assert meta["framework"] == "xgboost"
    assert meta["format"] == "ubj"
    assert meta["model_class"] == "XGBClassifier"
    assert meta["artifact"] == "model.ubj"
    assert meta["pipeline"] == "iris.train"
    assert meta["params"] == {"n_estimators": 3}
    assert meta["metrics"] == {"accuracy": 0.9}
    assert meta["data_fingerprint"] == "abc"
    assert meta["version"] == "000001"
    assert set(meta["libraries"]) >= {"python", "numpy", "xgboost", "sklearn"}
    created = dt.datetime.fromisoformat(meta["created_at"])
    assert created.utcoffset() == dt.timedelta(0)
    assert saved.metrics == {"accuracy": 0.9}
    assert saved.framework == "xgboost"
    assert saved.created_at == meta["created_at"]


def test_xgboost_regressor_and_booster_round_trip(store: ModelStore) -> None:
    reg = XGBRegressor(n_estimators=2, n_jobs=1).fit(X, Y.astype(float))
    _save(store, "reg", reg)
    assert type(store.load("reg").model) is XGBRegressor

    booster = reg.get_booster()
    _save(store, "booster", booster)
    loaded = store.load("booster").model
    assert isinstance(loaded, Booster)
    assert store.load("booster").metadata["model_class"] == "Booster"


def test_xgboost_subclass_is_stored_as_its_xgboost_base(store: ModelStore) -> None:
    class MyClassifier(XGBClassifier):
        pass

    _save(store, "sub", MyClassifier(n_estimators=2, n_jobs=1).fit(X, Y))
    assert type(store.load("sub").model) is XGBClassifier


def test_sklearn_round_trip_via_skops(store: ModelStore) -> None:
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, Y)
    version = _save(store, "forest", forest)
    assert version.metadata["framework"] == "sklearn"
    assert version.metadata["format"] == "skops"
    loaded = store.load("forest").model
    assert type(loaded) is RandomForestClassifier
    np.testing.assert_array_equal(loaded.predict_proba(X), forest.predict_proba(X))


def test_skops_untrusted_types_are_refused_unless_trusted(
    tmp_path: Path, logreg: LogisticRegression
) -> None:
    pipe = make_pipeline(Doubler(), LogisticRegression(max_iter=200)).fit(X, Y)
    ModelStore(str(tmp_path)).save("custom", pipe, pipeline="p", params={}, metrics={})

    with pytest.raises(UnsafeModelFormatError, match="Doubler") as info:
        ModelStore(str(tmp_path)).load("custom")
    assert "trusted_types" in str(info.value)

    trusted = ModelStore(str(tmp_path), trusted_types=[f"{__name__}.Doubler"])
    np.testing.assert_array_equal(trusted.load("custom").model.predict(X), pipe.predict(X))


def test_function_references_need_explicit_trust(tmp_path: Path) -> None:
    # A function would be called on request data at predict time: trusted only by name.
    pipe = make_pipeline(FunctionTransformer(halve), LogisticRegression(max_iter=200)).fit(X, Y)
    ModelStore(str(tmp_path)).save("fn", pipe, pipeline="p", params={}, metrics={})
    with pytest.raises(UnsafeModelFormatError, match="halve"):
        ModelStore(str(tmp_path)).load("fn")
    assert ModelStore(str(tmp_path), trusted_types=[f"{__name__}.halve"]).load("fn")


@pytest.mark.parametrize(
    ("type_name", "trusted"),
    [
        ("sklearn.tree._tree.Tree", True),
        ("numpy.ndarray", True),
        ("scipy.sparse.csr_matrix", True),
        ("numpy.load", False),  # a function, even inside a trusted package
        ("sklearn.does_not.Exist", False),
        ("sklearnx.Evil", False),
        ("builtins.eval", False),
        ("os.system", False),
        ("Tree", False),
    ],
)
def test_default_trust_policy(store: ModelStore, type_name: str, trusted: bool) -> None:
    assert is_trusted(type_name, store.trusted_types) is trusted


# --- versions ------------------------------------------------------------------------------------


def test_versions_latest_names_and_delete(store: ModelStore, logreg: LogisticRegression) -> None:
    assert store.names() == []
    assert store.latest("a") is None
    assert store.versions("a") == []
    for _ in range(3):
        _save(store, "a", logreg)
    _save(store, "b", logreg)

    assert [v.version for v in store.versions("a")] == ["000001", "000002", "000003"]
    latest = store.latest("a")
    assert latest is not None
    assert latest.version == "000003"
    assert store.names() == ["a", "b"]
    assert store.load("a", "2").version == "000002"
    assert store.load("a", 1).version == "000001"

    store.delete("a", "000003")
    latest = store.latest("a")
    assert latest is not None
    assert latest.version == "000002"
    with pytest.raises(ModelNotFoundError):
        store.load("a", "3")
    with pytest.raises(ModelNotFoundError):
        store.delete("a", "3")
    # A deleted number is never handed out again: a pin on it must not find another model.
    assert _save(store, "a", logreg).version == "000004"
    assert [v.version for v in store.versions("a")] == ["000001", "000002", "000004"]


def test_missing_models_raise_model_not_found(store: ModelStore) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        store.load("nothing")
    assert info.value.details == {"model": "nothing", "version": None}
    with pytest.raises(ModelNotFoundError, match="version '000007'"):
        store.load("nothing", "7")


@pytest.mark.parametrize(
    "name",
    ["../etc", "..", "a/b", "/etc/passwd", "a\\b", "", ".hidden", "a..b", "x" * 129, "é", None, 3],
)
def test_unsafe_names_are_refused_everywhere(
    store: ModelStore, logreg: LogisticRegression, name: Any
) -> None:
    with pytest.raises(InvalidModelNameError):
        _save(store, name, logreg)
    with pytest.raises(InvalidModelNameError):
        store.load(name)
    with pytest.raises(InvalidModelNameError):
        store.versions(name)
    with pytest.raises(InvalidModelNameError):
        store.latest(name)
    with pytest.raises(InvalidModelNameError):
        store.delete(name, "1")


@pytest.mark.parametrize("version", ["../1", "1a", "-1", "1" * 13, "", "1.0", -1, True, 1.0])
def test_unsafe_versions_are_refused(store: ModelStore, version: Any) -> None:
    with pytest.raises(InvalidModelNameError):
        store.load("a", version)
    with pytest.raises(InvalidModelNameError):
        store.delete("a", version)


def test_validate_version_normalises() -> None:
    assert validate_version("7") == "000007"
    assert validate_version("000007") == "000007"
    assert validate_version(1234567) == "1234567"


# --- safety of formats ---------------------------------------------------------------------------


def test_pickle_refused_unless_allowed(tmp_path: Path) -> None:
    root = str(tmp_path / "models")
    strict = ModelStore(root)
    with pytest.raises(UnsafeModelFormatError, match="allow_pickle=True"):
        strict.save("p", {"w": [1, 2]}, pipeline="p", params={}, metrics={}, format="pickle")
    assert strict.versions("p") == []

    permissive = ModelStore(root, allow_pickle=True)
    version = permissive.save(
        "p", {"w": [1, 2]}, pipeline="p", params={}, metrics={}, format="pickle"
    )
    assert version.metadata["framework"] == "pickle"
    assert permissive.load("p").model == {"w": [1, 2]}

    with pytest.raises(UnsafeModelFormatError, match="arbitrary code"):
        strict.load("p")


def test_objects_without_safe_format_are_refused(store: ModelStore) -> None:
    with pytest.raises(UnsafeModelFormatError, match="no safe format"):
        _save(store, "dict", {"w": 1})
    with pytest.raises(UnsafeModelFormatError, match="XGBoost model"):
        _save(store, "dict", LogisticRegression(), format="xgboost")
    assert store.names() == []


def test_metadata_cannot_name_arbitrary_classes_or_files(
    store: ModelStore, logreg: LogisticRegression
) -> None:
    xgb = XGBClassifier(n_estimators=2, n_jobs=1).fit(X, Y)
    version = _save(store, "x", xgb)
    meta_path = Path(version.uri) / METADATA_FILE
    meta = json.loads(meta_path.read_text())

    meta["model_class"] = "os.system"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(UnsafeModelFormatError, match=r"os\.system"):
        store.load("x")

    meta["model_class"] = "XGBClassifier"
    meta["artifact"] = "../../../etc/passwd"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelStoreError, match="artifact"):
        store.load("x")


def test_corrupted_artifact_fails_checksum(store: ModelStore, logreg: LogisticRegression) -> None:
    version = _save(store, "c", logreg)
    (Path(version.uri) / "model.skops").write_bytes(b"not a model")
    with pytest.raises(ModelStoreError, match="sha256"):
        store.load("c")


def test_unserialisable_metadata_writes_nothing(
    store: ModelStore, logreg: LogisticRegression
) -> None:
    with pytest.raises(ModelStoreError, match="JSON-serialisable"):
        store.save("m", logreg, pipeline="p", params={"x": object()}, metrics={})
    with pytest.raises(ModelStoreError, match="JSON-serialisable"):
        store.save("m", logreg, pipeline="p", params={}, metrics={"x": float("nan")})
    assert store.versions("m") == []


# --- atomicity and concurrency -------------------------------------------------------------------


def test_crash_while_writing_metadata_exposes_nothing(
    store: ModelStore, logreg: LogisticRegression, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = rayml.models.layout._write_file

    def crash_on_metadata(path: str, data: bytes) -> None:
        if path.endswith(METADATA_FILE):
            raise OSError("disk full")
        real_write(path, data)

    monkeypatch.setattr(rayml.models.layout, "_write_file", crash_on_metadata)
    with pytest.raises(ModelStoreError, match="disk full"):
        _save(store, "m", logreg)

    assert store.versions("m") == []
    assert store.latest("m") is None
    assert store.names() == []
    with pytest.raises(ModelNotFoundError):
        store.load("m")
    # Our own staging directory and reservation were cleaned up.
    assert os.listdir(Path(store._layout.root) / "m") == []

    monkeypatch.setattr(rayml.models.layout, "_write_file", real_write)
    assert _save(store, "m", logreg).version == "000001"
    assert [v.version for v in store.versions("m")] == ["000001"]


def test_leftovers_of_crashed_writers_are_invisible_and_skipped(
    store: ModelStore, logreg: LogisticRegression
) -> None:
    _save(store, "m", logreg)
    model_dir = Path(store._layout.root) / "m"
    # A writer killed after writing its artifact, and one killed after reserving a number.
    (model_dir / "000002").mkdir()
    (model_dir / "000002" / "model.skops").write_bytes(b"half")
    (model_dir / "000003").mkdir()
    (model_dir / ".staging-dead").mkdir()
    (model_dir / "000004").mkdir()
    (model_dir / "000004" / METADATA_FILE).write_text("{not json")

    assert [v.version for v in store.versions("m")] == ["000001"]
    latest = store.latest("m")
    assert latest is not None
    assert latest.version == "000001"
    with pytest.raises(ModelNotFoundError):
        store.load("m", "2")

    day_ago = time.time() - 2 * 24 * 3600
    os.utime(model_dir / ".staging-dead", (day_ago, day_ago))
    (model_dir / ".staging-live").mkdir()  # a writer still at work: left alone

    assert _save(store, "m", logreg).version == "000005"
    latest = store.latest("m")
    assert latest is not None
    assert latest.version == "000005"
    assert sorted(p.name for p in model_dir.glob(".staging-*")) == [".staging-live"]


def test_concurrent_saves_get_distinct_versions(
    store: ModelStore, logreg: LogisticRegression
) -> None:
    writers = 8
    with ThreadPoolExecutor(max_workers=writers) as pool:
        versions = list(pool.map(lambda i: _save(store, "race", logreg).version, range(writers)))
    assert sorted(versions) == [f"{n:06d}" for n in range(1, writers + 1)]
    assert [v.version for v in store.versions("race")] == sorted(versions)
    for version in versions:
        assert store.load("race", version).model.predict(X[:2]).tolist() == [0, 0]


# --- non-local filesystems -----------------------------------------------------------------------


def test_fsspec_memory_store_round_trip(logreg: LogisticRegression) -> None:
    root = f"memory://rayml-test-{uuid.uuid4().hex}/models"
    store = ModelStore(root)
    xgb = XGBClassifier(n_estimators=2, n_jobs=1).fit(X, Y)
    assert _save(store, "x", xgb).version == "000001"
    assert _save(store, "x", logreg).version == "000002"
    assert store.names() == ["x"]
    latest = store.latest("x")
    assert latest is not None
    assert latest.uri.startswith("memory://")
    loaded = store.load("x", "1").model
    np.testing.assert_array_equal(loaded.predict_proba(X), xgb.predict_proba(X))
    assert type(store.load("x").model) is LogisticRegression

    # An artifact without metadata (a writer that died before its commit point) is invisible,
    # and its number is not reused.
    store._layout.fs.pipe_file(f"{store._layout.join('x', '000003')}/model.skops", b"partial")
    latest = store.latest("x")
    assert latest is not None
    assert latest.version == "000002"
    assert _save(store, "x", logreg).version == "000004"

    store.delete("x", "4")
    latest = store.latest("x")
    assert latest is not None
    assert latest.version == "000002"
    assert _save(store, "x", logreg).version == "000005"


def test_fingerprint_arrays() -> None:
    a = np.arange(6, dtype=np.float64)
    assert fingerprint_arrays(a) == fingerprint_arrays(a.copy())
    assert fingerprint_arrays(a) != fingerprint_arrays(a.reshape(2, 3))
    assert fingerprint_arrays(a) != fingerprint_arrays(a.astype(np.float32))
    assert fingerprint_arrays(a, a) != fingerprint_arrays(a)
    assert len(fingerprint_arrays(a)) == 64


@pytest.mark.parametrize(
    "module",
    [rayml.models.store, rayml.protocol.model_names, rayml.models.formats, rayml.models.layout],
)
def test_docstring_examples_run(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
