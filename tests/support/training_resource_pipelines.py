"""A training pipeline that asks for more CPUs than any test machine has (64): it can never
start on the test session's 2-CPU Ray, and must fail at once as ``resources_unavailable``."""

from __future__ import annotations

from rayml.pipeline import TrainedModel, TrainingContext, training
from tests.support.training_pipelines import FastParams, _fit

#: What ``testing.train_huge`` asks for.
HUGE_NUM_CPUS = 64


@training("testing.train_huge", model="testing_huge", params=FastParams, num_cpus=HUGE_NUM_CPUS)
def train_huge(params: FastParams, ctx: TrainingContext) -> TrainedModel:
    """Would fit as ``testing.train_fast`` does, if it ever got 64 CPUs."""
    return _fit(params.c)
