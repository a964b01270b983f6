"""A training pipeline that can be told to train a worse model, and its predictor: for the
promotion gate's tests (tests/integration/test_promotion.py).

``testing.train_promo`` fits a logistic regression on the iris data and reports its held-out
accuracy (``@training(metric="accuracy", mode="max")``); with ``degrade=True`` it fits on
shuffled labels, so its accuracy falls to about a third. A quarter CPU per trial, like the other
test pipelines, so it trains beside two half-CPU workers on the session's 2-CPU Ray.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rayml.models.store import fingerprint_arrays
from rayml.pipeline import TrainedModel, TrainingContext, inference, training

MODEL = "testing_promo"


class PromoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    degrade: bool = Field(False, description="Fit on shuffled labels: a worse model.")


class Row(BaseModel):
    features: list[float]


@training(
    "testing.train_promo",
    model=MODEL,
    params=PromoParams,
    num_cpus=0.25,
    metric="accuracy",
    mode="max",
)
def train_promo(params: PromoParams, ctx: TrainingContext) -> TrainedModel:
    """Fit on iris (or on shuffled labels) and report the held-out accuracy."""
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.4, random_state=0, stratify=y
    )
    if params.degrade:
        y_train = np.random.default_rng(0).permutation(y_train)
    model = LogisticRegression(max_iter=500).fit(x_train, y_train)
    return TrainedModel(
        model=model,
        metrics={"accuracy": float(model.score(x_test, y_test))},
        data_fingerprint=fingerprint_arrays(x_train, y_train),
    )


@inference("testing.predict_promo", model=MODEL, params=Row)
def predict_promo(model: Any, batch: list[Row]) -> list[int]:
    """The class of each row."""
    return [int(y) for y in model.predict([row.features for row in batch])]
