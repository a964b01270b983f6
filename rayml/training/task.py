"""Training as Ray tasks: run one trial of a job, store its model, report progress.

The job runner (:mod:`rayml.training.runner`) launches :func:`run_trial` once per trial, as a Ray
task with the resources the pipeline declares (``num_cpus``, ``num_gpus``, ``memory``), so Ray
places it on any node of the cluster that has them. The task is a *streaming generator*: the
first thing it yields is :class:`TrialStarted`, so the runner learns in the same ``ray.wait``
that serves every task when the task actually started running (its time bound counts from
there, and until then it is waiting for resources), then the trial's outcome from
:func:`train_trial`. Inside it:

1. the pipeline is imported by its ``module:qualname`` path (never a pickled closure);
2. if the store already holds this trial's version (same job id, tenant, request hash, trial
   and role: the task was retried after it had saved), that version is returned and nothing is
   trained again;
3. ``run_training`` runs with a :class:`~rayml.pipeline.TrainingContext` whose ``nthread``
is the
   task's CPU count (and the BLAS/OpenMP pools are limited to it), whose ``device`` is
   ``"cuda"`` when the task reserved a GPU, and whose ``report_progress`` publishes job events;
4. the model is saved as a new version with its metadata: pipeline, params, metrics, data
   fingerprint, and in ``extra`` the job id, tenant, request hash (:func:`request_hash`), trial
   and role (the store adds the time, format
   and library versions), and the drift reference of the pipeline's ``reference_rows``
   (:mod:`rayml.training.reference`) as ``extra.drift_reference``. The save is atomic: a
   crash leaves no partial version.

Progress goes **straight from the task to Kafka** through a producer the task opens for itself.
The alternative, a call to the runner actor per report, would tie every report to the runner's
liveness and add an actor round trip to each boosting round; a producer per task costs one
connection, which is nothing next to a training run. Reports are rate-limited
(``progress_interval_s``) and flushed (bounded) before the task returns, so the task's events
reach the topic before the runner's ``succeeded`` event. Events are advisory: a broker that is
away costs the events, never the training.

A pipeline that raises, or returns something invalid, is a *record* failure: the task returns a
:class:`TrialFailure` rather than raising, so the runner never has to unpickle a user's
exception. A store write that fails is retriable. The task itself never retries; losing its
worker (``WorkerCrashedError``, a node dying) is an infrastructure failure that the runner
retries, bounded.

Example:
    >>> ctx = context_for(num_cpus=0.5, num_gpus=1)
    >>> ctx.nthread, ctx.device
    (1, 'cuda')
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from rayml.config import KafkaSettings
from rayml.errors import ModelStoreError, PipelineFailedError, RecordError
from rayml.models.store import ModelStore, ModelVersion
from rayml.models.versions import TRIAL_ROLE
from rayml.pipeline import PipelineSpec, TrainingContext, load_spec_by_path, run_training
from rayml.protocol.envelopes import ErrorInfo, error_info_from
from rayml.protocol.training import JobEvent, JobState, encode_event
from rayml.training.reference import DRIFT_KEY, drift_reference

logger = logging.getLogger(__name__)

__all__ = [
    "MODEL_ROLE",
    "TRIAL_ROLE",
    "JobRecord",
    "ProgressReporter",
    "TrialFailure",
    "TrialOutcome",
    "TrialStarted",
    "TrialTask",
    "context_for",
    "find_job",
    "outcome_of",
    "promote_best",
    "request_hash",
    "run_trial",
    "task_options",
    "train_trial",
]

#: ``extra["role"]`` of a job's own version: a plain training's model, or a sweep's copy of its
#: best trial. Served once the promotion gate (:mod:`rayml.training.gate`) lets it through.
MODEL_ROLE = "model"


@dataclass(frozen=True)
class TrialTask:
    """Everything one training task needs; pickled to wherever Ray runs it."""

    job_id: str
    pipeline: str
    import_path: str
    model: str
    trial: int
    trials: int
    attempt: int
    params: BaseModel
    role: str
    num_cpus: float
    num_gpus: float
    store_root: str
    allow_pickle: bool
    kafka: KafkaSettings
    events_topic: str
    progress_interval_s: float = 1.0
    tenant: str = ""  # the job's tenant and request hash: stored, see find_job
    request_hash: str = ""


@dataclass(frozen=True)
class TrialStarted:
    """What a trial's task yields first: it is running (on this process)."""

    pid: int


@dataclass(frozen=True)
class TrialOutcome:
    """A stored version: what a trial (or a promotion) produced."""

    trial: int
    version: str
    metrics: dict[str, float]
    params: dict[str, Any]
    created_at: str | None = None
    train_ms: float = 0.0
    reused: bool = False  # found in the store instead of trained

    def summary(self) -> dict[str, Any]:
        """This trial as listed in a sweep's result."""
        return {
            "trial": self.trial,
            "status": "ok",
            "version": self.version,
            "params": self.params,
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class TrialFailure:
    """A trial that did not produce a version, and whether running it again may help."""

    trial: int
    error: ErrorInfo
    retriable: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "status": "error",
            "error": self.error.model_dump(mode="json"),
        }


@dataclass
class JobRecord:
    """What the store already holds for one job id (see :func:`find_job`)."""

    servable: ModelVersion | None = None
    trials: dict[int, ModelVersion] = field(default_factory=dict)


def context_for(
    num_cpus: float,
    num_gpus: float,
    report: Callable[[float, str], None] | None = None,
) -> TrainingContext:
    """The context a task with these resources gives its pipeline.

    ``nthread`` is the whole CPUs reserved (at least 1): a task never runs more threads than it
    asked Ray for, so tasks packed on one node do not oversubscribe it.

    Example:
        >>> context_for(4, 0).nthread, context_for(2, 0).device
        (4, 'cpu')
    """
    return TrainingContext(
        nthread=max(1, int(num_cpus)),
        device="cuda" if num_gpus > 0 else "cpu",
        report_progress=report,
    )


def task_options(spec: PipelineSpec, job_id: str, trial: int) -> dict[str, Any]:
    """Ray options for a trial's task: the pipeline's resources, no Ray-level retries.

    Example:
        >>> from rayml.pipeline import load_spec_by_path
        >>> opts = task_options(load_spec_by_path("pipelines.iris:train"), "job-1", 0)
        >>> opts["num_cpus"], opts["num_gpus"], opts["max_retries"], opts["name"]
        (1, 0, 0, 'train:iris.train:job-1:0')
    """
    return {
        **spec.resources.to_ray_options(),
        # The runner counts attempts itself (bounded, visible in the result): Ray retrying
        # behind its back would make the count lie.
        "max_retries": 0,
        "name": f"train:{spec.name}:{job_id}:{trial}"[:200],
    }


# --- progress ----------------------------------------------------------------------------------


class ProgressReporter:
    """Publishes one trial's job events from inside its task (rate-limited, never raises).

    Args:
        kafka: How to reach the broker.
        topic: The events topic.
        base: Fields every event carries (job id, pipeline, model, trial, trials, attempt).
        interval_s: Least time between two ``running`` progress events.
    """

    def __init__(
        self, kafka: KafkaSettings, topic: str, base: dict[str, Any], interval_s: float
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._base = base
        self._interval_s = interval_s
        self._last = -float("inf")
        self._producer: Any = None

    def event(self, state: JobState, **fields: Any) -> None:
        """Produce one event (asynchronously); failures are logged at debug level."""
        try:
            if self._producer is None:
                from rayml.kafka import clients as kafka_clients

                # Events are advisory: no idempotence needed, and a short timeout so a task
                # whose broker is away does not hold messages for minutes.
                self._producer = kafka_clients.producer(
                    self._kafka, **{"enable.idempotence": False, "message.timeout.ms": 30_000}
                )
            event = JobEvent(**self._base, state=state, **fields)
            self._producer.produce(
                self._topic, key=str(self._base["job_id"]).encode(), value=encode_event(event)
            )
            self._producer.poll(0)
        except Exception:
            logger.debug("job event %s not published", state, exc_info=True)

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self._last < self._interval_s:
            return
        self._last = now
        self.event("running", progress=fraction, message=message or None)

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (bounded), so these events precede the runner's."""
        if self._producer is not None:
            try:
                self._producer.flush(timeout_s)
            except Exception:
                logger.debug("flushing job events failed", exc_info=True)
            self._producer = None


# --- the task ----------------------------------------------------------------------------------


def run_trial(task: TrialTask) -> Iterator[TrialStarted | TrialOutcome | TrialFailure]:
    """The training Ray task: yields :class:`TrialStarted` at once, then the trial's outcome.

    A streaming generator, so that the runner sees the start without a call of its own (it
    waits on the task's generator with every other task). Losing the worker before or after
    the start comes out of the generator as Ray's error, an infrastructure failure.
    """
    yield TrialStarted(pid=os.getpid())
    yield train_trial(task)


def train_trial(task: TrialTask) -> TrialOutcome | TrialFailure:
    """Run one trial and store its model; the body of the training Ray task.

    Returns:
        The stored version, or why the trial failed. Never raises for a pipeline's error.
    """
    reporter = ProgressReporter(
        task.kafka,
        task.events_topic,
        {
            "job_id": task.job_id,
            "pipeline": task.pipeline,
            "model": task.model,
            "trial": task.trial,
            "trials": task.trials,
            "attempt": task.attempt,
        },
        task.progress_interval_s,
    )
    try:
        store = ModelStore(task.store_root, allow_pickle=task.allow_pickle)
        done = find_job(store, task.model, task.job_id, task.tenant, task.request_hash)
        existing = done.trials.get(task.trial) if task.role == TRIAL_ROLE else done.servable
        if existing is not None:
            # Saved by an earlier attempt that died before reporting back: do not train again.
            logger.info("job=%s trial=%d found as version %s", task.job_id, task.trial, existing)
            return outcome_of(existing, task.trial, reused=True)
        spec = load_spec_by_path(task.import_path)
        reporter.event("running", progress=0.0)
        ctx = context_for(task.num_cpus, task.num_gpus, reporter)
        started = time.perf_counter()
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        with threadpool_limits(limits=ctx.nthread):
            trained = run_training(spec, task.params, ctx)
            train_ms = (time.perf_counter() - started) * 1000.0
            reference = drift_reference(spec, trained)
        extra = {
            **trained.extra,
            # Ours last: the runner finds a job's versions by these keys.
            "job_id": task.job_id,
            "tenant": task.tenant,
            "request_hash": task.request_hash,
            "role": task.role,
            "trial": task.trial,
            "trials": task.trials,
            "attempt": task.attempt,
            "train_ms": round(train_ms, 3),
            "device": ctx.device,
            "nthread": ctx.nthread,
        }
        if reference is not None:
            extra[DRIFT_KEY] = reference
        try:
            version = store.save(
                spec.model,
                trained.model,
                pipeline=spec.name,
                params=task.params.model_dump(mode="json"),
                metrics=trained.metrics,
                data_fingerprint=trained.data_fingerprint,
                extra=extra,
            )
        except RecordError:
            raise
        except ModelStoreError as exc:
            # Unsafe format or unserialisable metadata is the pipeline's fault (a record
            # failure); a failed write may succeed on another attempt.
            retriable = type(exc) is ModelStoreError
            return TrialFailure(task.trial, _error("model_store_failed", exc), retriable)
        return dataclasses.replace(outcome_of(version, task.trial), train_ms=train_ms)
    except RecordError as exc:
        return TrialFailure(task.trial, error_info_from(exc))
    except Exception as exc:
        # Anything else (an import failing, a bug) is about this job, not the platform.
        failed = PipelineFailedError(
            f"training trial {task.trial} of {task.pipeline!r} failed: {type(exc).__name__}: {exc}",
            {"pipeline": task.pipeline, "exception": type(exc).__name__},
        )
        return TrialFailure(task.trial, error_info_from(failed))
    finally:
        reporter.close()


def promote_best(
    store_root: str,
    allow_pickle: bool,
    model: str,
    job_id: str,
    best: TrialOutcome,
    sweep: dict[str, Any],
    tenant: str = "",
    request_hash: str = "",
) -> TrialOutcome:
    """Store the best trial's model again as a new version of ``model``: the sweep's result.

    A sweep stores every trial (``role: "trial"``, never served by the gate); this copies the
    best one to a new version number (``role: "model"``, ``promoted_from``), which the
    promotion gate then judges like a plain training's version; the copy's metadata holds the
    whole sweep (``extra.sweep``) to answer a re-delivered job without training. Idempotent per
    job: an existing copy is returned.
    """
    store = ModelStore(store_root, allow_pickle=allow_pickle)
    existing = find_job(store, model, job_id, tenant, request_hash).servable
    if existing is not None:
        return outcome_of(existing, best.trial, reused=True)
    loaded = store.load(model, best.version)
    version = store.save(
        model,
        loaded.model,
        pipeline=str(loaded.metadata.get("pipeline", "")),
        params=best.params,
        metrics=best.metrics,
        data_fingerprint=loaded.metadata.get("data_fingerprint"),
        extra={
            "job_id": job_id,
            "tenant": tenant,
            "request_hash": request_hash,
            "role": MODEL_ROLE,
            "trial": best.trial,
            "promoted_from": best.version,
            "sweep": sweep,
            **_drift_of(loaded.metadata),
        },
    )
    return outcome_of(version, best.trial)


# --- reading a job back from the store ---------------------------------------------------------


def request_hash(pipeline: str, params: dict[str, Any]) -> str:
    """A digest of a training request's pipeline and params (its sweep included).

    Example:
        >>> one = request_hash("iris.train", {"a": 1, "b": 2})
        >>> one == request_hash("iris.train", {"b": 2, "a": 1})
        True
        >>> one == request_hash("iris.train", {"a": 1, "b": 3})
        False
    """
    canonical = json.dumps([pipeline, params], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_job(
    store: ModelStore, model: str, job_id: str, tenant: str, request_hash: str
) -> JobRecord:
    """The versions of ``model`` that job ``job_id`` of ``tenant``, asking for what
    ``request_hash`` digests (:func:`request_hash`), stored: its servable one and its trials.

    This is what keeps a re-delivered job (a crash after its model was saved but before its
    offset was committed) from training again. Job ids are no secret (the models and events
    topics show them to every tenant): a version stored for another tenant, or for other params
    under the same id, or before versions held their tenant, is not this job's, and the job runs
    as new. It reads every version's metadata of the model: fine for hundreds of versions; a
    store with far more should prune old versions.
    """
    record = JobRecord()
    for version in store.versions(model):
        extra = version.metadata.get("extra")
        if (
            not isinstance(extra, dict)
            or extra.get("job_id") != job_id
            or extra.get("tenant") != tenant
            or extra.get("request_hash") != request_hash
        ):
            continue
        if extra.get("role") == TRIAL_ROLE:
            trial = extra.get("trial")
            if isinstance(trial, int) and trial not in record.trials:
                record.trials[trial] = version
        elif record.servable is None:
            record.servable = version
    return record


def outcome_of(version: ModelVersion, trial: int, *, reused: bool = False) -> TrialOutcome:
    """A stored version as a :class:`TrialOutcome`."""
    params = version.metadata.get("params")
    extra = version.metadata.get("extra")
    train_ms = extra.get("train_ms", 0.0) if isinstance(extra, dict) else 0.0
    return TrialOutcome(
        trial=trial,
        version=version.version,
        metrics=version.metrics,
        params=params if isinstance(params, dict) else {},
        created_at=version.created_at,
        train_ms=float(train_ms) if isinstance(train_ms, int | float) else 0.0,
        reused=reused,
    )


def _drift_of(metadata: dict[str, Any]) -> dict[str, Any]:
    """A stored version's drift reference, to copy with it (``{}`` without one)."""
    extra = metadata.get("extra")
    if isinstance(extra, dict) and isinstance(extra.get(DRIFT_KEY), dict):
        return {DRIFT_KEY: extra[DRIFT_KEY]}
    return {}


def _error(kind: str, exc: Exception) -> ErrorInfo:
    return ErrorInfo(
        type=kind, message=f"{type(exc).__name__}: {exc}", details={"exception": type(exc).__name__}
    )
