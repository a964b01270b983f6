"""Training pipelines for the drift reference's tests: reference rows with a twin that fails,
with rows that are not a matrix, and with no inference twin at all.

They register in a registry of their own (not the default one), so discovery elsewhere never
sees them; the training task imports them by path, as it does any pipeline.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from rayml.pipeline import Registry, TrainedModel, TrainingContext, inference, training

REGISTRY = Registry()
ROWS = [[float(i), float(i % 3)] for i in range(50)]


class NoParams(BaseModel):
    pass


class Vector(BaseModel):
    values: list[float]


@training("drift.raising_twin", model="drift_raising", params=NoParams, registry=REGISTRY)
def train_raising_twin(params: NoParams, ctx: TrainingContext) -> TrainedModel:
    """Reference rows; its twin below raises on them."""
    return TrainedModel(model=_model(), metrics={}, reference_rows=ROWS)


@inference("drift.raising_predict", model="drift_raising", params=Vector, registry=REGISTRY)
def predict_raising(model: Any, batch: list[Vector]) -> list[int]:
    raise RuntimeError("this twin fails on every batch")


@training("drift.bad_rows", model="drift_bad_rows", params=NoParams, registry=REGISTRY)
def train_bad_rows(params: NoParams, ctx: TrainingContext) -> TrainedModel:
    """Reference rows that are not a matrix of numbers."""
    return TrainedModel(model=_model(), metrics={}, reference_rows=[["a", "b"], ["c"]])


@training("drift.no_twin", model="drift_no_twin", params=NoParams, registry=REGISTRY)
def train_no_twin(params: NoParams, ctx: TrainingContext) -> TrainedModel:
    """Reference rows, and no inference pipeline of its model in this module."""
    return TrainedModel(model=_model(), metrics={}, reference_rows=ROWS)


def _model() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression().fit([[0.0], [1.0]], [0, 1])
