"""Breast-cancer diagnosis with XGBoost, on the Wisconsin data set that ships with scikit-learn.

Two pipelines share the model ``breast_cancer`` in the model store:

* ``breast_cancer.train`` fits an ``XGBClassifier`` and returns it with its test metrics; the
  training runner stores it as a new version.
* ``breast_cancer.predict`` classifies a batch of tumours (30 measurements each) with the
  newest version: label ``0`` is malignant, ``1`` benign.

Heavy libraries (XGBoost, scikit-learn's data sets) are imported inside the functions: the
executor imports every pipeline module to validate requests and publish the registry, and the
ingest process should not pay for libraries only the workers use.

Example:
    >>> from rayml.pipeline import TrainingContext
    >>> trained = train(TrainParams(n_estimators=5), TrainingContext(nthread=1))
    >>> trained.metrics["accuracy"] > 0.8
    True
    >>> x = [13.0, 20.0, 85.0, 550.0, 0.1, 0.1, 0.05, 0.03, 0.18, 0.06] * 3
    >>> predict(trained.model, [PredictParams(features=x)])[0]["label"] in (0, 1)
    True
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

from rayml.models.store import fingerprint_arrays
from rayml.pipeline import (
    InferenceContext,
    TrainedModel,
    TrainingContext,
    inference,
    training,
)

logger = logging.getLogger(__name__)

MODEL = "breast_cancer"
N_FEATURES = 30


# The held-out split is fixed, not a request's param: the promotion gate compares versions by
# their metric on it, and a request that chose its own split could choose one its weak model
# does well on (docs/security.md, "Which model is served").
HELD_OUT = 0.25
SPLIT_SEED = 0


class PredictParams(BaseModel):
    """One tumour to classify."""

    # Unknown fields are an error, not ignored: a typo ("feature") should fail loudly.
    model_config = ConfigDict(extra="forbid")

    features: Annotated[
        list[FiniteFloat],
        Field(
            min_length=N_FEATURES,
            max_length=N_FEATURES,
            description="The 30 measurements, in the column order of "
            "sklearn.datasets.load_breast_cancer().feature_names.",
        ),
    ]


class TrainParams(BaseModel):
    """Hyperparameters and split for one training run."""

    model_config = ConfigDict(extra="forbid")

    n_estimators: int = Field(100, ge=1, le=5000, description="Boosting rounds.")
    max_depth: int = Field(4, ge=1, le=16, description="Maximum tree depth.")
    learning_rate: float = Field(0.1, gt=0, le=1, description="Shrinkage per round.")
    random_state: int = Field(
        0, ge=0, description="Seed for the model (the held-out split is fixed)."
    )


@inference("breast_cancer.predict", model=MODEL, params=PredictParams)
def predict(
    model: Any, batch: list[PredictParams], ctx: InferenceContext | None = None
) -> list[dict[str, Any]]:
    """Classify tumours as malignant (label 0) or benign (label 1).

    The whole batch goes through one ``predict_proba`` call: per-row calls would cost far more
    than the prediction itself. ``probability`` is the model's probability of the returned
    label. It predicts on the worker's device (``ctx.device``): ``"cuda"`` where its pool
    declares a GPU (``pool=Pool(num_gpus=1)``, docs/autoscaling.md) and Ray gave it one, the CPU
    otherwise, whichever device the model was trained on.

    Args:
        model: A fitted ``xgboost.XGBClassifier`` (the newest ``breast_cancer`` version).
        batch: Validated requests.
        ctx: The worker's context (its device).

    Returns:
        One ``{"label": int, "probability": float}`` per request, in order.

    Example:
        >>> from xgboost import XGBClassifier
        >>> from sklearn.datasets import load_breast_cancer
        >>> X, y = load_breast_cancer(return_X_y=True)
        >>> clf = XGBClassifier(n_estimators=3).fit(X, y)
        >>> out = predict(clf, [PredictParams(features=X[0].tolist())])
        >>> out[0]["label"], 0.5 <= out[0]["probability"] <= 1
        (0, True)
    """
    _use_one_thread(model)
    _use_device(model, "cpu" if ctx is None else ctx.device)
    features = np.asarray([params.features for params in batch], dtype=np.float64)
    proba = model.predict_proba(features)
    best = proba.argmax(axis=1)
    labels = model.classes_[best]
    return [
        {"label": int(label), "probability": float(proba[row, column])}
        for row, (column, label) in enumerate(zip(best, labels, strict=True))
    ]


@training(
    "breast_cancer.train",
    model=MODEL,
    params=TrainParams,
    num_cpus=1,
    metric="accuracy",
    mode="max",
)
def train(params: TrainParams, ctx: TrainingContext) -> TrainedModel:
    """Fit an XGBoost classifier on the breast-cancer data; report accuracy and ROC AUC.

    Uses ``ctx.nthread`` threads and ``ctx.device`` (``"cuda"`` when the task got a GPU), and
    reports progress every tenth of the boosting rounds.

    Args:
        params: Hyperparameters and split.
        ctx: Threads, device and progress callback from the training runner.

    Returns:
        The fitted model, ``accuracy`` and ``roc_auc`` on the held-out split, the sha256
        fingerprint of the training arrays, and the training rows (the drift reference).

    Example:
        >>> from rayml.pipeline import TrainingContext
        >>> result = train(TrainParams(n_estimators=3), TrainingContext())
        >>> sorted(result.metrics)
        ['accuracy', 'roc_auc']
    """
    from sklearn.datasets import load_breast_cancer
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split
    from xgboost import XGBClassifier

    ctx.report_progress(0.0, "loading data")
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=HELD_OUT, random_state=SPLIT_SEED, stratify=y
    )
    ctx.report_progress(0.05, f"training on {len(y_train)} rows")
    model = XGBClassifier(
        n_estimators=params.n_estimators,
        max_depth=params.max_depth,
        learning_rate=params.learning_rate,
        random_state=params.random_state,
        n_jobs=ctx.nthread,
        device=ctx.device,
        tree_method="hist",
        callbacks=[_progress_callback(ctx, params.n_estimators)],
    )
    model.fit(x_train, y_train)
    # The callback holds the context (and through it the runner's reporter): drop it so the
    # returned model pickles cleanly back from a Ray task and carries no live references.
    model.set_params(callbacks=None)

    proba = model.predict_proba(x_test)[:, 1]
    metrics = {
        "accuracy": float(accuracy_score(y_test, model.predict(x_test))),
        "roc_auc": float(roc_auc_score(y_test, proba)),
    }
    ctx.report_progress(1.0, f"accuracy {metrics['accuracy']:.4f}")
    logger.info("pipeline=breast_cancer.train metrics=%s", metrics)
    return TrainedModel(
        model=model,
        metrics=metrics,
        data_fingerprint=fingerprint_arrays(x_train, y_train),
        extra={"n_train": len(y_train), "n_test": len(y_test)},
        # What serving traffic is compared with for drift (docs/rollouts.md, "Drift").
        reference_rows=x_train,
    )


def _progress_callback(ctx: TrainingContext, rounds: int) -> Any:
    """An XGBoost callback reporting progress every tenth of ``rounds`` (training's 5-95 %)."""
    from xgboost.callback import TrainingCallback

    every = max(1, rounds // 10)

    class _Progress(TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            done = epoch + 1
            if done % every == 0 or done == rounds:
                ctx.report_progress(0.05 + 0.9 * done / rounds, f"round {done}/{rounds}")
            return False  # False: keep training

    return _Progress()


def _use_device(model: Any, device: str) -> None:
    # A model trained on a GPU predicts on a CPU worker, and the other way round.
    if (getattr(model, "device", None) or "cpu") != device:
        model.set_params(device=device)


def _use_one_thread(model: Any) -> None:
    # Predict batches are small and the worker pool already runs one actor per core: an
    # XGBoost thread pool per call costs more than it saves (and oversubscribes a busy node).
    if getattr(model, "n_jobs", 1) != 1:
        model.set_params(n_jobs=1)
