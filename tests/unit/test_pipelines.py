"""The example pipelines, called as plain Python: train, store, load, predict."""

from __future__ import annotations

import doctest
import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris

import pipelines
import pipelines.breast_cancer as breast_cancer
import pipelines.iris as iris
from rayml.errors import InvalidParamsError
from rayml.models.store import ModelStore
from rayml.pipeline import (
    InferenceContext,
    Registry,
    TrainedModel,
    TrainingContext,
    default_registry,
    get_spec,
    run_inference,
    run_training,
)

# (module, tiny training params, data loader)
CASES = [
    pytest.param(breast_cancer, {"n_estimators": 5, "max_depth": 2}, load_breast_cancer, id="bc"),
    pytest.param(iris, {"n_estimators": 5}, load_iris, id="iris"),
]


def _train(module: types.ModuleType, params: dict[str, Any]) -> tuple[TrainedModel, list[Any]]:
    progress: list[tuple[float, str]] = []
    ctx = TrainingContext(
        nthread=1, device="cpu", report_progress=lambda f, m: progress.append((f, m))
    )
    spec = get_spec(module.train)
    assert spec is not None
    validated = default_registry.validate_params(spec.name, params)
    return run_training(spec, validated, ctx), progress


@pytest.mark.parametrize(("module", "params", "loader"), CASES)
def test_train_store_load_predict(
    tmp_path: Path, module: types.ModuleType, params: dict[str, Any], loader: Any
) -> None:
    trained, progress = _train(module, params)

    assert trained.metrics["accuracy"] > 0.8
    assert trained.data_fingerprint is not None
    assert len(trained.data_fingerprint) == 64
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0
    assert fractions[-1] == 1.0

    train_spec = get_spec(module.train)
    predict_spec = get_spec(module.predict)
    assert train_spec is not None
    assert predict_spec is not None
    assert train_spec.model == predict_spec.model == module.MODEL

    store = ModelStore(str(tmp_path / "models"))
    saved = store.save(
        train_spec.model,
        trained.model,
        pipeline=train_spec.name,
        params=params,
        metrics=trained.metrics,
        data_fingerprint=trained.data_fingerprint,
        extra=trained.extra,
    )
    assert saved.metadata["framework"] == ("xgboost" if module is breast_cancer else "sklearn")
    loaded = store.load(predict_spec.model).model

    x = loader().data[::15]  # a few dozen rows across the classes
    batch = [
        default_registry.validate_params(predict_spec.name, {"features": row.tolist()}) for row in x
    ]
    outputs = run_inference(predict_spec, loaded, batch)

    assert len(outputs) == len(x)
    json.dumps(outputs)  # results go into a JSON envelope as they are
    proba = loaded.predict_proba(x)
    np.testing.assert_array_equal([o["label"] for o in outputs], loaded.predict(x))
    np.testing.assert_allclose([o["probability"] for o in outputs], proba.max(axis=1))
    # The stored model predicts exactly like the one training returned.
    np.testing.assert_array_equal(proba, trained.model.predict_proba(x))
    assert all(type(o["label"]) is int and type(o["probability"]) is float for o in outputs)
    if module is iris:
        assert all(o["class_name"] == iris.CLASS_NAMES[o["label"]] for o in outputs)
    # Predict pins the model to one thread (small batches on a busy node).
    assert loaded.n_jobs == 1


@pytest.mark.parametrize(("module", "params", "loader"), CASES)
def test_training_is_reproducible(
    module: types.ModuleType, params: dict[str, Any], loader: Any
) -> None:
    first, _ = _train(module, params)
    second, _ = _train(module, params)
    assert first.data_fingerprint == second.data_fingerprint
    assert first.metrics == second.metrics
    # The held-out split is fixed (the promotion gate compares on it): another model seed
    # trains on the very same data.
    other, _ = _train(module, {**params, "random_state": 1})
    assert other.data_fingerprint == first.data_fingerprint


def test_breast_cancer_metrics_and_picklable_model() -> None:
    import pickle

    trained, _ = _train(breast_cancer, {"n_estimators": 3})
    assert set(trained.metrics) == {"accuracy", "roc_auc"}
    assert 0.5 < trained.metrics["roc_auc"] <= 1.0
    # The progress callback is dropped after fit: the model goes back from a Ray task by pickle.
    assert trained.model.get_params()["callbacks"] is None
    pickle.loads(pickle.dumps(trained.model))


@pytest.mark.parametrize(
    ("name", "raw", "field"),
    [
        ("breast_cancer.predict", {"features": [0.0] * 29}, "params.features"),
        ("breast_cancer.predict", {"features": [0.0] * 31}, "params.features"),
        ("breast_cancer.predict", {"features": [0.0] * 29 + [float("inf")]}, "params.features.29"),
        ("breast_cancer.predict", {"features": [0.0] * 30, "feature": 1}, "params.feature"),
        ("iris.predict", {"features": [1, 2, 3]}, "params.features"),
        ("iris.predict", {"features": [1, 2, 3, "x"]}, "params.features.3"),
        ("iris.train", {"n_estimators": 0}, "params.n_estimators"),
        ("breast_cancer.train", {"test_size": 0.05}, "params.test_size"),  # not a param
    ],
)
def test_bad_params_name_the_field(name: str, raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParamsError) as info:
        default_registry.validate_params(name, raw)
    assert field in [e["field"] for e in info.value.details["errors"]]


def test_examples_are_registered_with_their_contract() -> None:
    names = Registry().discover(entry_points=False)
    assert {"breast_cancer.predict", "breast_cancer.train", "iris.predict", "iris.train"} <= set(
        names
    )
    for name in ("breast_cancer.train", "iris.train"):
        spec = default_registry.get(name)
        assert (spec.metric, spec.mode) == ("accuracy", "max")
        assert spec.resources.num_cpus == 1
        assert spec.importable
        assert spec.doc
    for name in ("breast_cancer.predict", "iris.predict"):
        spec = default_registry.get(name)
        assert spec.batched
        assert spec.importable
    schema = default_registry.get("breast_cancer.predict").params.model_json_schema()
    assert schema["properties"]["features"]["minItems"] == 30
    assert schema["properties"]["features"]["maxItems"] == 30


@pytest.mark.parametrize("module", [pipelines, breast_cancer, iris], ids=lambda m: m.__name__)
def test_docstring_examples_run(module: types.ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_breast_cancer_predicts_on_its_workers_device() -> None:
    """A model trained on a GPU predicts on a CPU worker (and the other way round): the
    pipeline sets XGBoost's device from ``ctx.device``; XGBoost itself falls back to the CPU,
    with a warning, where a "cuda" worker has no device behind it."""
    from xgboost import XGBClassifier

    X, y = load_breast_cancer(return_X_y=True)
    model = XGBClassifier(n_estimators=3, device="cuda").fit(X, y)
    row = [breast_cancer.PredictParams(features=X[0].tolist())]
    out = breast_cancer.predict(model, row, InferenceContext(device="cpu"))
    assert model.get_params()["device"] == "cpu"
    assert out[0]["label"] in (0, 1)
    # The registered pipeline takes the context (the worker passes its own).
    spec = get_spec(breast_cancer.predict)
    assert spec is not None
    assert spec.takes_context
