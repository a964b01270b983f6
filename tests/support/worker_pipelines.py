"""Pipelines for the ModelWorker unit tests; workers import them by path, as in production.

They register into a registry of their own, not the default one, so that importing this module
never changes what the executor's tests discover. ``CALLS`` records the size of every batch a
pipeline here was called with, so tests can see how the worker split a batch.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from rayml.pipeline import Registry, inference

REGISTRY = Registry()
#: Batch sizes of every call to :func:`poison` and :func:`predict`, in call order.
CALLS: list[int] = []

#: Model name the tests store a tiny scikit-learn model under.
MODEL = "tiny"
PREDICT = "tests.support.worker_pipelines:predict"
POISON = "tests.support.worker_pipelines:poison"
NEEDS_ABSENT_MODEL = "tests.support.worker_pipelines:needs_absent_model"


class Row(BaseModel):
    x: float


@inference("worker_test.predict", model=MODEL, params=Row, registry=REGISTRY)
def predict(model: Any, batch: list[Row]) -> list[int]:
    """The stored classifier's prediction for each row."""
    CALLS.append(len(batch))
    return [int(y) for y in model.predict([[row.x] for row in batch])]


@inference("worker_test.poison", model=MODEL, params=Row, registry=REGISTRY)
def poison(model: Any, batch: list[Row]) -> list[float]:
    """Doubles x, but fails the whole batch if any row has a negative x."""
    CALLS.append(len(batch))
    if any(row.x < 0 for row in batch):
        raise ValueError("poisoned row: x < 0")
    return [row.x * 2 for row in batch]


@inference("worker_test.absent", model="absent", params=Row, registry=REGISTRY)
def needs_absent_model(model: Any, batch: list[Row]) -> list[float]:
    """Reads a model that the tests never store."""
    raise AssertionError("never called: the model does not exist")
