"""Fitted example models stored through the model store's own API (a test fixture's job)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rayml.models.store import ModelStore, ModelVersion
from rayml.pipeline import TrainingContext


def store_breast_cancer(store_root: str, n_estimators: int = 20) -> tuple[ModelVersion, Any]:
    """Train the example XGBoost model quickly, store it, and return (version, model)."""
    from pipelines.breast_cancer import TrainParams, train

    trained = train(TrainParams(n_estimators=n_estimators), TrainingContext(nthread=1))
    version = ModelStore(store_root).save(
        "breast_cancer",
        trained.model,
        pipeline="breast_cancer.train",
        params={"n_estimators": n_estimators},
        metrics=trained.metrics,
    )
    return version, trained.model


def breast_cancer_rows(n: int, seed: int = 0) -> np.ndarray:
    """``n`` rows drawn from the real data set (with repetition), as float64."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer().data
    rng = np.random.default_rng(seed)
    return data[rng.integers(0, len(data), size=n)]
