"""Training pipelines for the training tests: a fast one, a sleeping one, and their predictors.

Both ask for a quarter CPU, so that two trials run side by side next to two half-CPU model
workers on the test session's 2-CPU Ray. They fit a small scikit-learn logistic regression on
the iris data (stored through skops), so their models load in the inference workers.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rayml.models.store import fingerprint_arrays
from rayml.pipeline import TrainedModel, TrainingContext, inference, training


class FastParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    c: float = Field(1.0, gt=0, le=1000, description="Inverse regularisation strength.")
    fail: bool = Field(False, description="Raise instead of training.")


class SlowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sleep_s: float = Field(5.0, ge=0, le=600, description="How long to 'train'.")
    steps: int = Field(5, ge=1, le=1000, description="Progress reports while sleeping.")


class Row(BaseModel):
    features: list[float]


def _fit(c: float) -> TrainedModel:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.4, random_state=0, stratify=y
    )
    model = LogisticRegression(C=c, max_iter=500).fit(x_train, y_train)
    return TrainedModel(
        model=model,
        metrics={"accuracy": float(model.score(x_test, y_test))},
        data_fingerprint=fingerprint_arrays(x_train, y_train),
    )


@training(
    "testing.train_fast",
    model="testing_fast",
    params=FastParams,
    num_cpus=0.25,
    metric="accuracy",
    mode="max",
)
def train_fast(params: FastParams, ctx: TrainingContext) -> TrainedModel:
    """Fits a logistic regression in well under a second (or raises, with ``fail``)."""
    if params.fail:
        raise ValueError("asked to fail")
    ctx.report_progress(0.5, "fitting")
    return _fit(params.c)


@training("testing.train_slow", model="testing_slow", params=SlowParams, num_cpus=0.25)
def train_slow(params: SlowParams, ctx: TrainingContext) -> TrainedModel:
    """Sleeps ``sleep_s`` in ``steps`` steps, reporting progress after each, then fits."""
    for step in range(params.steps):
        time.sleep(params.sleep_s / params.steps)
        ctx.report_progress((step + 1) / params.steps, f"step {step + 1}/{params.steps}")
    return _fit(1.0)


@inference("testing.predict_fast", model="testing_fast", params=Row)
def predict_fast(model: Any, batch: list[Row]) -> list[int]:
    """Iris class of each row, with the newest ``testing_fast`` model."""
    return [int(label) for label in model.predict([row.features for row in batch])]
