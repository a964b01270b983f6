"""Iris species with a scikit-learn random forest, on the data set that ships with scikit-learn.

Two pipelines share the model ``iris`` in the model store:

* ``iris.train`` fits a ``RandomForestClassifier`` (stored through skops, a safe format).
* ``iris.predict`` classifies a batch of flowers (4 measurements each) with the newest version.

scikit-learn is imported inside the functions so that importing this module (which the executor
does to validate requests) stays cheap.

Example:
    >>> from rayml.pipeline import TrainingContext
    >>> trained = train(TrainParams(n_estimators=5), TrainingContext(nthread=1))
    >>> predict(trained.model, [PredictParams(features=[5.1, 3.5, 1.4, 0.2])])[0]["class_name"]
    'setosa'
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

from rayml.models.store import fingerprint_arrays
from rayml.pipeline import TrainedModel, TrainingContext, inference, training

logger = logging.getLogger(__name__)

MODEL = "iris"
#: ``sklearn.datasets.load_iris().target_names``, fixed here so predict needs no data set.
CLASS_NAMES = ("setosa", "versicolor", "virginica")


# The held-out split is fixed, not a request's param: the promotion gate compares versions by
# their metric on it, and a request that chose its own split could choose one its weak model
# does well on (docs/security.md, "Which model is served").
HELD_OUT = 0.25
SPLIT_SEED = 0


class PredictParams(BaseModel):
    """One flower to classify."""

    # Unknown fields are an error, not ignored: a typo ("feature") should fail loudly.
    model_config = ConfigDict(extra="forbid")

    features: Annotated[
        list[FiniteFloat],
        Field(
            min_length=4,
            max_length=4,
            description="Sepal length, sepal width, petal length, petal width (cm).",
        ),
    ]


class TrainParams(BaseModel):
    """Hyperparameters and split for one training run."""

    model_config = ConfigDict(extra="forbid")

    n_estimators: int = Field(100, ge=1, le=2000, description="Number of trees.")
    max_depth: int | None = Field(None, ge=1, le=64, description="Maximum depth (None: full).")
    random_state: int = Field(
        0, ge=0, description="Seed for the model (the held-out split is fixed)."
    )


@inference("iris.predict", model=MODEL, params=PredictParams)
def predict(model: Any, batch: list[PredictParams]) -> list[dict[str, Any]]:
    """Classify iris flowers into setosa (0), versicolor (1) or virginica (2).

    One ``predict_proba`` call for the whole batch. ``probability`` is the model's probability
    of the returned label.

    Args:
        model: A fitted scikit-learn classifier (the newest ``iris`` version).
        batch: Validated requests.

    Returns:
        One ``{"label": int, "class_name": str, "probability": float}`` per request, in order.

    Example:
        >>> from sklearn.datasets import load_iris
        >>> from sklearn.ensemble import RandomForestClassifier
        >>> X, y = load_iris(return_X_y=True)
        >>> clf = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
        >>> predict(clf, [PredictParams(features=X[0].tolist())])[0]["class_name"]
        'setosa'
    """
    _use_one_thread(model)
    features = np.asarray([params.features for params in batch], dtype=np.float64)
    proba = model.predict_proba(features)
    best = proba.argmax(axis=1)
    labels = model.classes_[best]
    return [
        {
            "label": int(label),
            "class_name": CLASS_NAMES[int(label)],
            "probability": float(proba[row, column]),
        }
        for row, (column, label) in enumerate(zip(best, labels, strict=True))
    ]


@training("iris.train", model=MODEL, params=TrainParams, num_cpus=1, metric="accuracy")
def train(params: TrainParams, ctx: TrainingContext) -> TrainedModel:
    """Fit a random forest on the iris data and report its held-out accuracy.

    Builds the trees on ``ctx.nthread`` threads (scikit-learn has no GPU path; ``ctx.device``
    is ignored).

    Args:
        params: Hyperparameters and split.
        ctx: Threads and progress callback from the training runner.

    Returns:
        The fitted forest, its ``accuracy`` on the held-out split, the sha256 fingerprint of
        the training arrays, and the training rows (the drift reference).

    Example:
        >>> from rayml.pipeline import TrainingContext
        >>> train(TrainParams(n_estimators=3), TrainingContext()).metrics["accuracy"] > 0.8
        True
    """
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import train_test_split

    ctx.report_progress(0.0, "loading data")
    x, y = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=HELD_OUT, random_state=SPLIT_SEED, stratify=y
    )
    ctx.report_progress(0.1, f"training {params.n_estimators} trees on {len(y_train)} rows")
    model = RandomForestClassifier(
        n_estimators=params.n_estimators,
        max_depth=params.max_depth,
        random_state=params.random_state,
        n_jobs=ctx.nthread,
    )
    model.fit(x_train, y_train)
    metrics = {"accuracy": float(accuracy_score(y_test, model.predict(x_test)))}
    ctx.report_progress(1.0, f"accuracy {metrics['accuracy']:.4f}")
    logger.info("pipeline=iris.train metrics=%s", metrics)
    return TrainedModel(
        model=model,
        metrics=metrics,
        data_fingerprint=fingerprint_arrays(x_train, y_train),
        extra={"n_train": len(y_train), "n_test": len(y_test)},
        # What serving traffic is compared with for drift (docs/rollouts.md, "Drift").
        reference_rows=x_train,
    )


def _use_one_thread(model: Any) -> None:
    # Predict batches are small and the worker pool already runs one actor per core: joblib's
    # thread pool per call costs more than it saves (and oversubscribes a busy node).
    if getattr(model, "n_jobs", 1) not in (1, None):
        model.set_params(n_jobs=1)
