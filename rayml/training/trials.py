"""Trials as Ray tasks, with bounded concurrency: the job runner's scheduler (no Kafka here).

A :class:`TrialScheduler` holds the trials of the runner's jobs: those *waiting* for a slot,
those *running* as Ray tasks (:func:`rayml.training.task.run_trial`, at most ``limit`` at once),
and the sweeps whose best trial is being *copied* to the sweep's own version
(:func:`rayml.training.task.promote_best`; the promotion gate judges that copy when the job is
answered, :mod:`rayml.training.gate`).
One ``ray.wait`` per loop turn serves them all: a trial's task is a streaming generator that
first yields :class:`~rayml.training.task.TrialStarted`, then its outcome.

* A trial whose task is lost (worker or node died: any ``RayError`` but ``RayTaskError``) is an
  infrastructure failure: it waits again at the head of the queue, up to
  ``training.max_attempts`` attempts, then fails with ``retries_exhausted``. A pipeline that
  raises is a record failure and is not run again.
* A trial that runs past its time bound (``@training(timeout_s=...)``, else
  ``training.trial_timeout_s``), counted from when its task *started* (:mod:`rayml.training.watch`),
  is cancelled (``ray.cancel(force=True)``: a training task stops only with its worker process)
  and fails with ``trial_timeout``, a record failure, not run again. Its slot is free at once.
* A launched task that has not started ``training.waiting_notice_s`` after its launch is
  waiting for Ray to find it room: a ``queued`` event says what it needs and what the cluster
  has free (read at most once per interval), repeated at that interval while it waits, and
  :attr:`TrialScheduler.waiting_report` lists it for ``rayml status``.
* When every trial of a job is back, a single training is handed to ``on_success`` with its
  version; a sweep's best trial is copied first and the copy handed over; a job with no
  successful trial goes to ``on_failure``.
* :meth:`TrialScheduler.abandon` gives jobs up (rebalance, shutdown): their tasks are cancelled
  with ``force=True`` -- their models were stored atomically or not at all, so the next owner
  finds exactly the finished trials.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import ray

from rayml.config import Settings
from rayml.errors import PipelineFailedError
from rayml.protocol.envelopes import ErrorInfo, error_info_from
from rayml.training.plan import (
    Job,
    Trial,
    TrialTimeoutError,
    exhausted,
    sweep_summary,
    trial_bound,
)
from rayml.training.publish import JobPublisher
from rayml.training.task import (
    MODEL_ROLE,
    TRIAL_ROLE,
    TrialFailure,
    TrialOutcome,
    TrialStarted,
    TrialTask,
    promote_best,
    run_trial,
    task_options,
)
from rayml.training.watch import TrialClock, needs_of, waiting_message

logger = logging.getLogger(__name__)

__all__ = ["TrialScheduler"]


class TrialScheduler:
    """The trials of one job runner. Use from the runner's loop thread only.

    Args:
        settings: Training limits, the model store, and where events go.
        runner_id: For logs.
        publish: Publishes job events.
        on_success: ``(job, servable version, its extra metadata)`` when a job succeeded.
        on_failure: ``(job, error)`` when a job failed.
    """

    def __init__(
        self,
        settings: Settings,
        runner_id: str,
        publish: JobPublisher,
        on_success: Callable[[Job, TrialOutcome, dict[str, Any]], None],
        on_failure: Callable[[Job, ErrorInfo], None],
    ) -> None:
        self._settings = settings
        self._runner_id = runner_id
        self._publish = publish
        self._on_success = on_success
        self._on_failure = on_failure
        self.limit = settings.training.max_concurrent_tasks
        self.waiting: deque[tuple[Job, Trial]] = deque()  # trials not launched yet
        self.running: dict[Any, tuple[Job, Trial]] = {}  # ObjectRefGenerator -> trial
        self.promoting: dict[Any, Job] = {}  # ObjectRef -> sweep whose best is being copied
        self.clock: TrialClock[Any] = TrialClock(settings.training.waiting_notice_s)
        self.trials_launched = 0
        self.trials_retried = 0
        self.trials_timed_out = 0
        # Launched trials still waiting for Ray to start them, as `rayml status` shows them;
        # replaced (never mutated) by the loop thread, so status() may read it from another.
        self.waiting_report: tuple[dict[str, Any], ...] = ()
        self._reasons: dict[Any, str] = {}  # waiting task -> what its last notice said
        self._resources: tuple[float, dict[str, float], dict[str, float]] | None = None
        self._run = ray.remote(run_trial)
        self._promote = ray.remote(promote_best).options(
            # A load and a save: light, and it must not queue behind trials for a CPU.
            num_cpus=0,
            max_retries=0,  # retried by _promoted, counted against max_attempts
        )

    def add(self, job: Job) -> None:
        """Queue the trials of ``job`` that have no outcome yet (finish it if none is left)."""
        for trial in job.trials:
            if trial.outcome is None:
                self.waiting.append((job, trial))
        if job.done:
            self._finish(job)

    @property
    def outstanding(self) -> int:
        """Trials waiting or running: what the runner's backpressure counts."""
        return len(self.waiting) + len(self.running)

    @property
    def busy(self) -> bool:
        """Whether any task (trial or promotion) is in flight."""
        return bool(self.running or self.promoting)

    def waiting_jobs(self) -> set[int]:
        """``id()`` of the jobs that have a trial waiting."""
        return {id(job) for job, _ in self.waiting}

    def launch(self) -> None:
        """Start waiting trials while fewer than the limit run."""
        while self.waiting and len(self.running) < self.limit:
            job, trial = self.waiting.popleft()
            if job.abandoned:
                continue
            trial.attempts += 1
            spec = job.spec
            task = TrialTask(
                job_id=job.request.id,
                pipeline=spec.name,
                import_path=spec.import_path,
                model=spec.model,
                trial=trial.index,
                trials=len(job.trials),
                attempt=trial.attempts,
                params=trial.params,
                role=TRIAL_ROLE if job.is_sweep else MODEL_ROLE,
                num_cpus=spec.resources.num_cpus,
                num_gpus=spec.resources.num_gpus,
                store_root=self._settings.models.root,
                allow_pickle=self._settings.models.allow_pickle,
                kafka=self._settings.kafka,
                events_topic=self._settings.topics.events,
                progress_interval_s=self._settings.training.progress_interval_s,
            )
            options = task_options(spec, job.request.id, trial.index)
            ref = self._run.options(**options).remote(task)
            self.running[ref] = (job, trial)
            self.clock.launched(ref, time.monotonic(), trial_bound(spec, self._settings.training))
            self.trials_launched += 1
            if job.started_ms is None:
                job.started_ms = time.time() * 1000.0

    def collect(self, block_s: float) -> None:
        """Handle what the tasks said (waiting up to ``block_s`` for something), then cancel
        the trials past their time bound and report those still waiting for resources."""
        refs = [*self.running, *self.promoting]
        if refs:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            if not ready and block_s > 0:
                ready, _ = ray.wait(refs, num_returns=1, timeout=block_s)
            for ref in ready:
                if ref in self.promoting:
                    self._promoted(ref, self.promoting.pop(ref))
                else:
                    self._heard_from(ref)
        if self.running:
            self._watch(time.monotonic())

    def _heard_from(self, ref: Any) -> None:
        """A trial's task yielded its start or its outcome (or Ray's error in their place)."""
        job, trial = self.running[ref]
        outcome: TrialStarted | TrialOutcome | TrialFailure
        try:
            outcome = ray.get(next(ref))
        except StopIteration as exc:
            # The generator ended without an outcome: treat as a lost task.
            outcome = self._lost(job, trial, exc)
        except ray.exceptions.RayTaskError as exc:
            # The task body catches the pipeline's errors; this is Ray failing to run it (e.g.
            # unpickling its arguments): about this job, not the platform.
            failed = PipelineFailedError(f"training task failed: {exc}", {})
            outcome = TrialFailure(trial.index, error_info_from(failed))
        except ray.exceptions.RayError as exc:
            # Infrastructure: the worker or its node died. Run the trial again, bounded.
            outcome = self._lost(job, trial, exc)
        if isinstance(outcome, TrialStarted):
            waited = self.clock.started(ref, time.monotonic())
            if self._reasons.pop(ref, None) is not None:
                self._report()
                logger.info(
                    "runner=%s job=%s trial=%d started after waiting %.1fs for resources",
                    self._runner_id,
                    job.request.id,
                    trial.index,
                    waited or 0.0,
                )
            return
        self._drop(ref)
        self._trial_back(job, trial, outcome)

    def _lost(self, job: Job, trial: Trial, exc: Exception) -> TrialFailure:
        logger.warning(
            "runner=%s job=%s trial=%d attempt=%d lost: %s",
            self._runner_id,
            job.request.id,
            trial.index,
            trial.attempts,
            type(exc).__name__,
        )
        error = error_info_from(exhausted(trial.attempts, exc))
        return TrialFailure(trial.index, error, retriable=True)

    def _drop(self, ref: Any) -> None:
        del self.running[ref]
        self.clock.forget(ref)
        if self._reasons.pop(ref, None) is not None:
            self._report()

    def _trial_back(self, job: Job, trial: Trial, outcome: TrialOutcome | TrialFailure) -> None:
        if job.abandoned:
            return
        retry = isinstance(outcome, TrialFailure) and outcome.retriable
        if retry and trial.attempts < self._settings.training.max_attempts:
            self.trials_retried += 1
            self.waiting.appendleft((job, trial))
            self._publish.event(job, "queued", trial=trial.index, attempt=trial.attempts + 1)
            return
        trial.outcome = outcome
        if isinstance(outcome, TrialFailure) and job.is_sweep:
            # A trial's failure (``trial`` set), not yet the job's: the other trials go on.
            self._publish.event(job, "failed", trial=trial.index, error=outcome.error)
        if job.done:
            self._finish(job)

    # -- time bounds and waiting for resources ------------------------------------------------

    def _watch(self, now: float) -> None:
        for ref in self.clock.overdue(now):
            self._time_out(ref)
        due = self.clock.notices_due(now)
        if not due:
            return
        free, total = self._cluster_resources(now)
        for ref, waited in due:
            job, trial = self.running[ref]
            resources = job.spec.resources
            needs = needs_of(resources.num_cpus, resources.num_gpus, resources.memory)
            message = waiting_message(needs, free, total)
            self._reasons[ref] = message
            logger.info(
                "runner=%s job=%s trial=%d not started after %.1fs: %s",
                self._runner_id,
                job.request.id,
                trial.index,
                waited,
                message,
            )
            self._publish.event(
                job, "queued", trial=trial.index, attempt=trial.attempts, message=message
            )
        self._report()

    def _time_out(self, ref: Any) -> None:
        """Cancel a trial past its bound; it fails (not retried) and its slot is free now."""
        job, trial = self.running[ref]
        bound = self.clock.bound_of(ref) or 0.0
        self._drop(ref)
        # force: a training task stops only by ending its worker process.
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)
        self.trials_timed_out += 1
        error = TrialTimeoutError(job.spec.name, trial.index, trial.attempts, bound)
        logger.warning("runner=%s job=%s: %s", self._runner_id, job.request.id, error)
        self._trial_back(job, trial, TrialFailure(trial.index, error_info_from(error)))

    def _cluster_resources(self, now: float) -> tuple[dict[str, float], dict[str, float]]:
        """The cluster's free and total resources, read at most once per notice interval."""
        cached = self._resources
        if cached is None or now - cached[0] >= self.clock.notice_s:
            try:
                cached = (now, ray.available_resources(), ray.cluster_resources())
            except Exception as exc:  # the GCS is slow or away: say so, do not stop the loop
                logger.warning(
                    "runner=%s cannot read the cluster's resources: %s", self._runner_id, exc
                )
                cached = (now, {}, {})
            self._resources = cached
        return cached[1], cached[2]

    def _report(self) -> None:
        now, wall = time.monotonic(), time.time()
        report = []
        for ref, reason in self._reasons.items():
            job, trial = self.running[ref]
            since = self.clock.waiting_since(ref)
            report.append(
                {
                    "job_id": job.request.id,
                    "pipeline": job.spec.name,
                    "trial": trial.index,
                    "attempt": trial.attempts,
                    "since_ms": round((wall - (now - (since or now))) * 1000),
                    "reason": reason,
                }
            )
        self.waiting_report = tuple(report)

    # -- finishing a job ----------------------------------------------------------------------

    def _finish(self, job: Job) -> None:
        """Every trial is back: answer a single training, or promote a sweep's best."""
        ok = job.succeeded()
        if not ok:
            failures = job.failed()
            error = failures[0].error
            if job.is_sweep:
                error = ErrorInfo(
                    type="sweep_failed",
                    message=f"all {len(failures)} trials of the sweep failed; first: "
                    f"{error.message}",
                    details={"trials": [f.summary() for f in failures]},
                )
            self._on_failure(job, error)
        elif not job.is_sweep:
            self._on_success(job, next(iter(ok.values())), {})
        else:
            self._start_promotion(job)

    def _start_promotion(self, job: Job) -> None:
        best, job.sweep = sweep_summary(job)
        job.promote_attempts += 1
        ref = self._promote.remote(
            self._settings.models.root,
            self._settings.models.allow_pickle,
            job.spec.model,
            job.request.id,
            best,
            job.sweep,
        )
        self.promoting[ref] = job

    def _promoted(self, ref: Any, job: Job) -> None:
        if job.abandoned:
            return
        try:
            copy: TrialOutcome = ray.get(ref)
        except ray.exceptions.RayError as exc:
            if job.promote_attempts < self._settings.training.max_attempts:
                logger.warning(
                    "runner=%s job=%s promotion failed: %s", self._runner_id, job.request.id, exc
                )
                self._start_promotion(job)
                return
            self._on_failure(job, error_info_from(exhausted(job.promote_attempts, exc)))
            return
        extra = {"promoted_from": job.sweep.get("best_version"), "sweep": job.sweep}
        self._on_success(job, copy, extra)

    def abandon(self, which: Callable[[Job], bool]) -> None:
        """Stop working on the jobs ``which`` selects: cancel their tasks, drop their queue."""
        jobs = {id(j): j for j, _ in [*self.waiting, *self.running.values()] if which(j)}
        jobs.update({id(j): j for j in self.promoting.values() if which(j)})
        for job in jobs.values():
            job.abandoned = True
        self.waiting = deque(item for item in self.waiting if not item[0].abandoned)
        for ref, (job, _trial) in list(self.running.items()):
            if job.abandoned:
                self._drop(ref)
                # force: a training task only stops by ending its worker process. Its model,
                # if any, was stored atomically or not at all.
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        for ref, job in list(self.promoting.items()):
            if job.abandoned:
                del self.promoting[ref]
        if jobs:
            logger.info(
                "runner=%s gave up %d jobs; they will be redelivered", self._runner_id, len(jobs)
            )
