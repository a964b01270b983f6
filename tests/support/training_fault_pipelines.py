"""Training pipelines for the training fault tests: ones that hang, and one that waits for a file.

Like :mod:`tests.support.training_pipelines` (whose logistic-regression fit they share), they
ask for a quarter CPU, so two trials run side by side next to two half-CPU model workers on the
test session's 2-CPU Ray.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from rayml.pipeline import TrainedModel, TrainingContext, training
from tests.support.training_pipelines import _fit

#: The time bound that ``testing.train_hang_bounded`` declares for itself.
HANG_BOUNDED_TIMEOUT_S = 2.0


class HangParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hang_s: float = Field(600.0, ge=0, le=3600, description="How long to hang before fitting.")


class GateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gate: str = Field(description="A file path: the trial waits until the file exists.")
    c: float = Field(1.0, gt=0, le=1000)


@training(
    "testing.train_hang",
    model="testing_hang",
    params=HangParams,
    num_cpus=0.25,
    metric="accuracy",
)
def train_hang(params: HangParams, ctx: TrainingContext) -> TrainedModel:
    """Hangs for ``hang_s`` (10 minutes by default), then fits; bound by the settings."""
    ctx.report_progress(0.1, "hanging")
    time.sleep(params.hang_s)
    return _fit(1.0)


@training(
    "testing.train_hang_bounded",
    model="testing_hang",
    params=HangParams,
    num_cpus=0.25,
    timeout_s=HANG_BOUNDED_TIMEOUT_S,
)
def train_hang_bounded(params: HangParams, ctx: TrainingContext) -> TrainedModel:
    """As ``testing.train_hang``, with a time bound of its own."""
    time.sleep(params.hang_s)
    return _fit(1.0)


@training("testing.train_gate", model="testing_gate", params=GateParams, num_cpus=0.25)
def train_gate(params: GateParams, ctx: TrainingContext) -> TrainedModel:
    """Waits until the file ``gate`` exists, then fits (and stores a model)."""
    gate = Path(params.gate)
    while not gate.exists():
        time.sleep(0.05)
    return _fit(params.c)


class QuickParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    c: float = Field(1.0, gt=0, le=1000)


@training(
    "testing.train_quick",
    model="testing_quick",
    params=QuickParams,
    num_cpus=0.25,
    timeout_s=300.0,
)
def train_quick(params: QuickParams, ctx: TrainingContext) -> TrainedModel:
    """A real (fast) fit with a generous bound of its own: a job that must not time out even
    on a loaded machine, beside jobs that do under a short settings bound."""
    return _fit(params.c)
