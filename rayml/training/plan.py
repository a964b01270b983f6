"""What a training job is and what its result says (no Kafka, no Ray).

The job runner (:mod:`rayml.training.runner`) turns each request from the jobs topic into a
:class:`Job` with one :class:`Trial` per parameter set (:func:`plan_trials`), tracks the trials'
outcomes, and answers with :func:`result_payload`. Keeping these checks here keeps them
unit-testable.

The ``result`` of an ``ok`` training result::

    {"model": "breast_cancer", "version": "000004", "metrics": {"accuracy": 0.97},
     "params": {"n_estimators": 50, ...}, "train_ms": 812.4, "reused": false}

and for a sweep, where ``version`` is the promoted copy of the best trial::

    {"model": "breast_cancer", "version": "000009", "metrics": {...}, "params": {...},
     "metric": "accuracy", "mode": "max", "best_trial": 2, "best_version": "000007",
     "trials": [{"trial": 0, "status": "ok", "version": "000005", "params": {...},
                 "metrics": {...}},
                {"trial": 1, "status": "error", "error": {"type": ..., "message": ...}}, ...],
     "reused": false}

``reused`` is true when the job had finished before a crash and was answered from the store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from rayml.config import TrainingSettings
from rayml.errors import (
    DeadlineExceededError,
    InvalidParamsError,
    InvalidRequestError,
    RecordError,
    RetriesExhaustedError,
)
from rayml.kafka.partitions import TP
from rayml.kafka.records import Headers
from rayml.pipeline import PipelineSpec, Registry
from rayml.protocol.envelopes import ErrorInfo, Request, public_error
from rayml.protocol.sweeps import expand, select_best, validate_trials
from rayml.training.task import TrialFailure, TrialOutcome, request_hash

logger = logging.getLogger(__name__)

__all__ = [
    "Job",
    "ResourcesUnavailableError",
    "Trial",
    "TrialTimeoutError",
    "exhausted",
    "plan_trials",
    "result_payload",
    "sweep_summary",
    "trial_bound",
]


class TrialTimeoutError(RecordError):
    """Raised (as a trial's error) when a trial ran past its time bound; its task was cancelled.

    A record failure: the pipeline hung or is too slow for its bound, so it is not run again
    (the failed job's request goes to the DLQ for a replay, e.g. with a larger bound).
    """

    type = "trial_timeout"

    def __init__(self, pipeline: str, trial: int, attempt: int, timeout_s: float) -> None:
        self.pipeline = pipeline
        self.trial = trial
        self.timeout_s = timeout_s
        super().__init__(
            f"trial {trial} of {pipeline!r} ran past its {timeout_s:g}s time bound; its task "
            f"was cancelled (raise the bound with @training(timeout_s=...) or "
            f"training.trial_timeout_s)",
            {"pipeline": pipeline, "trial": trial, "attempt": attempt, "timeout_s": timeout_s},
        )


class ResourcesUnavailableError(RecordError):
    """Raised (as a trial's error) when a trial cannot get the resources it asks for: no node
    of the cluster has them at all, or it waited ``training.max_wait_s`` without starting.

    A record failure: not run again here (the failed job's request goes to the DLQ, to be
    replayed once the cluster has room, or with a pipeline that asks for less).
    """

    type = "resources_unavailable"

    def __init__(
        self,
        pipeline: str,
        trial: int,
        needs: dict[str, float],
        largest_node: dict[str, float],
        why: str,
        *,
        waited_s: float | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.trial = trial
        self.needs = needs
        self.largest_node = largest_node
        details: dict[str, Any] = {
            "pipeline": pipeline,
            "trial": trial,
            "needs": needs,
            "largest_node": largest_node,
        }
        if waited_s is not None:
            details["waited_s"] = round(waited_s, 1)
        super().__init__(f"trial {trial} of {pipeline!r} cannot start: {why}", details)


def trial_bound(spec: PipelineSpec, training: TrainingSettings) -> float | None:
    """How long one trial of ``spec`` may run: the pipeline's own bound, else the setting.

    Example:
        >>> from rayml.pipeline import load_spec_by_path
        >>> spec = load_spec_by_path("pipelines.iris:train")
        >>> trial_bound(spec, TrainingSettings()), trial_bound(spec, TrainingSettings(
        ...     trial_timeout_s=None))
        (3600.0, None)
    """
    if spec.trial_timeout_s is not None:
        return spec.trial_timeout_s
    return training.trial_timeout_s


@dataclass(eq=False)
class Trial:
    """One parameter set of a job, from queued to outcome."""

    index: int
    params: BaseModel
    attempts: int = 0
    outcome: TrialOutcome | TrialFailure | None = None


@dataclass(eq=False)
class Job:
    """One training request, from poll until its result is acknowledged."""

    tp: TP
    offset: int
    raw: bytes
    headers: Headers
    request: Request
    spec: PipelineSpec
    trials: list[Trial]
    is_sweep: bool
    received_ms: float
    started_ms: float | None = None
    promote_attempts: int = 0
    sweep: dict[str, Any] = field(default_factory=dict)  # the sweep's summary, once all are back
    reused: bool = False
    abandoned: bool = False

    @property
    def owner(self) -> tuple[str, str]:
        """Its tenant and request hash: what a stored version must match to be this job's
        (:func:`~rayml.training.task.find_job`)."""
        return self.request.tenant or "", request_hash(self.request.pipeline, self.request.params)

    @property
    def done(self) -> bool:
        """Whether every trial has an outcome."""
        return all(t.outcome is not None for t in self.trials)

    @property
    def attempts(self) -> int:
        """The most attempts any trial took (what the result reports)."""
        return max([1, *(t.attempts for t in self.trials)])

    def succeeded(self) -> dict[int, TrialOutcome]:
        """The trials that stored a version, by index."""
        return {t.index: t.outcome for t in self.trials if isinstance(t.outcome, TrialOutcome)}

    def failed(self) -> list[TrialFailure]:
        """The trials that failed."""
        return [t.outcome for t in self.trials if isinstance(t.outcome, TrialFailure)]


def plan_trials(
    registry: Registry,
    request: Request,
    *,
    max_trials: int,
    refuse: Callable[[PipelineSpec], RecordError | None] | None = None,
) -> tuple[PipelineSpec, list[BaseModel], bool]:
    """Check a training request; return its pipeline, each trial's params, and if it is a sweep.

    Args:
        registry: The pipelines.
        request: The request.
        max_trials: Most trials a sweep may expand to.
        refuse: The tenant's rules for the pipeline found (e.g. an inference pipeline on a
            training topic: ``wrong_topic`` naming the tenant's input topic); its error is
            raised. Without it, a pipeline that is not a training pipeline is refused as
            ``invalid_request``.

    Raises:
        UnknownPipelineError: No such pipeline.
        RecordError: What ``refuse`` returned.
        InvalidRequestError: The pipeline is not a training pipeline.
        DeadlineExceededError: The request's deadline has passed.
        InvalidParamsError: Bad params or sweep, or a sweep of a pipeline without a metric; the
            message names the field (and the trial).

    Example:
        >>> from rayml.pipeline import Registry
        >>> reg = Registry(); _ = reg.discover(entry_points=False)
        >>> req = Request(id="j1", pipeline="iris.train",
        ...               params={"grid": {"n_estimators": [5, 10]}})
        >>> spec, trials, sweep = plan_trials(reg, req, max_trials=8)
        >>> spec.name, [t.n_estimators for t in trials], sweep
        ('iris.train', [5, 10], True)
    """
    spec = registry.get(request.pipeline)
    refused = refuse(spec) if refuse is not None else None
    if refused is not None:
        raise refused
    if spec.kind != "training":
        raise InvalidRequestError(
            f"pipeline {spec.name!r} is an {spec.kind} pipeline; a training topic takes "
            f"training requests only",
            {"pipeline": spec.name, "kind": spec.kind},
        )
    if request.deadline is not None and request.deadline.timestamp() < time.time():
        raise DeadlineExceededError(
            f"the request's deadline {request.deadline.isoformat()} passed before it could run",
            {"deadline": request.deadline.isoformat()},
        )
    plan = expand(request.params, fields=set(spec.params.model_fields), max_trials=max_trials)
    if plan.is_sweep and spec.metric is None:
        raise InvalidParamsError(
            f"pipeline {spec.name!r} declares no metric, so a sweep cannot pick a best trial; "
            f"send one parameter set, or register it with @training(metric=...)",
            {"pipeline": spec.name},
        )
    validated = validate_trials(plan, lambda p: registry.validate_params(spec.name, p), spec.name)
    return spec, validated, plan.is_sweep


def sweep_summary(job: Job) -> tuple[TrialOutcome, dict[str, Any]]:
    """The best trial of a finished sweep, and the summary stored with its promoted copy.

    Raises:
        RecordError: No trial succeeded.
    """
    spec = job.spec
    if spec.metric is None:  # refused by plan_trials; kept for the type checker
        raise InvalidParamsError(f"pipeline {spec.name!r} declares no metric")
    ok = job.succeeded()
    best = select_best(((i, o.metrics) for i, o in ok.items()), spec.metric, spec.mode)
    summary = {
        "metric": spec.metric,
        "mode": spec.mode,
        "best_trial": best,
        "best_version": ok[best].version,
        "trials": [t.outcome.summary() for t in job.trials if t.outcome is not None],
    }
    return ok[best], summary


def result_payload(
    spec: PipelineSpec, outcome: TrialOutcome, sweep: Any, reused: bool
) -> dict[str, Any]:
    """The ``result`` of a training job's ``ok`` result envelope (see the module docstring).

    Example:
        >>> from rayml.pipeline import load_spec_by_path
        >>> spec = load_spec_by_path("pipelines.iris:train")
        >>> out = TrialOutcome(0, "000002", {"accuracy": 0.9}, {"n_estimators": 5})
        >>> result_payload(spec, out, None, False)["version"]
        '000002'
    """
    payload: dict[str, Any] = {
        "model": spec.model,
        "version": outcome.version,
        "metrics": outcome.metrics,
        "params": outcome.params,
        "reused": reused,
    }
    if isinstance(sweep, dict):
        for key in ("metric", "mode", "best_trial", "best_version"):
            payload[key] = sweep.get(key)
        # Stored summaries written before trial errors were cut are cut here.
        payload["trials"] = [_public_trial(t) for t in sweep.get("trials", [])]
    else:
        payload["train_ms"] = round(outcome.train_ms, 3)
    return payload


def _public_trial(trial: Any) -> Any:
    """A trial of a stored sweep summary with its error as the caller may see it."""
    if not isinstance(trial, dict) or not isinstance(trial.get("error"), dict):
        return trial
    try:
        error = ErrorInfo.model_validate(trial["error"])
    except ValidationError:
        return {**trial, "error": {"type": "trial_failed", "message": "the trial failed"}}
    return {**trial, "error": public_error(error).model_dump(mode="json")}


def exhausted(attempts: int, cause: Exception) -> RetriesExhaustedError:
    """The error of a task lost to infrastructure failures on every allowed attempt.

    It tells the caller what was lost, not Ray's error (node addresses, pids, ids): that is
    logged here.
    """
    logger.warning("training task lost (attempt %d): %s: %s", attempts, type(cause).__name__, cause)
    return RetriesExhaustedError(
        f"the training task was lost on all {attempts} attempts (its worker process or node "
        f"went away)",
        {"attempts": attempts, "last_error": "task_lost"},
    )
