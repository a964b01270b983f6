"""Trials as Ray tasks, with bounded concurrency: the job runner's scheduler (no Kafka here).

A :class:`TrialScheduler` holds the trials of the runner's jobs: those *waiting* for a slot,
those *running* as Ray tasks (:func:`rayml.training.task.run_trial`, at most ``limit`` at once),
the sweeps whose best trial is being *copied* to the sweep's own version
(:func:`rayml.training.task.promote_best`; the promotion gate judges that copy when the job is
answered), and the cancelled trials *ending* (:mod:`rayml.training.ending`). One ``ray.wait``
per loop turn serves them all: a trial's task is a streaming generator that first yields
:class:`~rayml.training.task.TrialStarted`, then its outcome.

* A trial whose task is lost (any ``RayError`` but ``RayTaskError``) is an infrastructure
  failure: it waits again at the head of the queue, up to ``training.max_attempts`` attempts,
  then fails with ``retries_exhausted``. A pipeline that raises is a record failure, not re-run.
* A trial past its time bound, counted from when its task *started* (:mod:`rayml.training.watch`),
  is cancelled and fails with ``trial_timeout``, not re-run; its slot is free at once.
* A launched task not started after ``training.waiting_notice_s`` gets ``queued`` notices
  saying what it waits for (and :attr:`TrialScheduler.waiting_report` lists it for ``rayml
  status``); after ``training.max_wait_s`` it is cancelled and fails with
  ``resources_unavailable``, as does at once one that asks for more than any node has.
* When every trial of a job is back, a single training is handed to ``on_success`` with its
  version; a sweep's best trial is copied first and the copy handed over; a job with no
  successful trial goes to ``on_failure``.
* :meth:`TrialScheduler.abandon` gives jobs up (rebalance, shutdown): their tasks are cancelled
  -- their models were stored atomically or not at all, so the next owner finds exactly the
  finished trials.

The rules and their tests: docs/training.md (time bounds, waiting for resources).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import ray

from rayml.config import Settings
from rayml.errors import PipelineFailedError
from rayml.models.store import ModelStore
from rayml.protocol.envelopes import ErrorInfo, error_info_from, public_error
from rayml.training.cluster import ClusterResources
from rayml.training.ending import EndingTrials
from rayml.training.plan import (
    Job,
    ResourcesUnavailableError,
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
from rayml.training.watch import (
    TrialClock,
    largest_node,
    needs_of,
    unplaceable,
    waiting_message,
)

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
        # Cancelled trials (past their bound, or waited too long) until their task has ended.
        self.ending = EndingTrials(
            ModelStore(settings.models.root, allow_pickle=settings.models.allow_pickle), runner_id
        )
        training = settings.training
        self.clock: TrialClock[Any] = TrialClock(training.waiting_notice_s, training.max_wait_s)
        self.trials_launched = 0
        self.trials_retried = 0
        self.trials_timed_out = 0
        self.trials_unplaceable = 0  # failed for resources: none fits, or waited too long
        # Launched trials still waiting for Ray to start them, as `rayml status` shows them;
        # replaced (never mutated) by the loop thread, so status() may read it from another.
        self.waiting_report: tuple[dict[str, Any], ...] = ()
        self._reasons: dict[Any, str] = {}  # waiting task -> what its last notice said
        self.cluster = ClusterResources(training.waiting_notice_s, runner_id)
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
        """Whether any task (trial, promotion, or a cancelled trial not ended yet) is in
        flight."""
        return bool(self.running or self.promoting or self.ending)

    def jobs(self, which: Callable[[Job], bool]) -> list[Job]:
        """The jobs not finished yet (a trial waiting, running or ending, or being promoted)
        that ``which`` selects."""
        found = {id(job): job for job, _ in [*self.waiting, *self.running.values()]}
        found.update({id(job): job for job in self.ending.jobs()})
        found.update({id(job): job for job in self.promoting.values()})
        return [job for job in found.values() if not job.abandoned and which(job)]

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
            if self._settings.training.fail_unplaceable and self._unplaceable(job, trial):
                continue
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
                tenant=job.owner[0],
                request_hash=job.owner[1],
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
        the trials past their time bound or their wait, and report those still waiting for
        resources."""
        refs = [*self.running, *self.promoting, *self.ending]
        if refs:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            if not ready and block_s > 0:
                ready, _ = ray.wait(refs, num_returns=1, timeout=block_s)
            for ref in ready:
                if ref in self.promoting:
                    self._promoted(ref, self.promoting.pop(ref))
                elif ref in self.ending:
                    self._ended(ref)
                else:
                    self._heard_from(ref)
        if self.running or self.ending:
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
        if isinstance(outcome, TrialFailure):
            outcome = self._public(job, outcome)
        trial.outcome = outcome
        if isinstance(outcome, TrialFailure) and job.is_sweep:
            # A trial's failure (``trial`` set), not yet the job's: the other trials go on.
            self._publish.event(job, "failed", trial=trial.index, error=outcome.error)
        if job.done:
            self._finish(job)

    def _public(self, job: Job, failure: TrialFailure) -> TrialFailure:
        """``failure`` as it may leave the runner (its event, the sweep's summary in the result
        and in the store, the job's error): through
        :func:`~rayml.protocol.envelopes.public_error`; the whole error is logged here."""
        public = public_error(failure.error)
        if public is failure.error:
            return failure
        logger.warning(
            "runner=%s job=%s trial=%d failed: %s %s %s",
            self._runner_id,
            job.request.id,
            failure.trial,
            failure.error.type,
            failure.error.message,
            failure.error.details,
        )
        return dataclasses.replace(failure, error=public)

    # -- time bounds and waiting for resources ------------------------------------------------

    def _watch(self, now: float) -> None:
        for ref in self.clock.overdue(now):
            self._time_out(ref)
        for ref, waited in self.clock.overwaited(now):
            self._wait_out(ref, waited, now)
        for job, trial, failure in self.ending.overdue(now):
            self._trial_back(job, trial, failure)
        due = self.clock.notices_due(now)
        if not due:
            return
        free, total = self.cluster.free_and_total(now)
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
        self.trials_timed_out += 1
        error = TrialTimeoutError(job.spec.name, trial.index, trial.attempts, bound)
        logger.warning("runner=%s job=%s: %s", self._runner_id, job.request.id, error)
        self._end(ref, TrialFailure(trial.index, error_info_from(error)))

    def _wait_out(self, ref: Any, waited: float, now: float) -> None:
        """Cancel a trial that waited ``training.max_wait_s`` without starting; it fails with
        ``resources_unavailable`` saying what it waited for."""
        job, trial = self.running[ref]
        resources = job.spec.resources
        needs = needs_of(resources.num_cpus, resources.num_gpus, resources.memory)
        free, total = self.cluster.free_and_total(now)
        nodes = self.cluster.nodes(now)
        why = (
            f"not started within training.max_wait_s={self.clock.max_wait_s:g}s, "
            f"{waiting_message(needs, free, total)}"
        )
        error = ResourcesUnavailableError(
            job.spec.name, trial.index, needs, largest_node(needs, nodes), why, waited_s=waited
        )
        logger.warning("runner=%s job=%s: %s", self._runner_id, job.request.id, error)
        self.trials_unplaceable += 1
        self._end(ref, TrialFailure(trial.index, error_info_from(error)))

    def _end(self, ref: Any, failure: TrialFailure) -> None:
        """Cancel a running trial's task; its slot is free now, its answer waits for the task
        to have ended (:meth:`_ended`)."""
        job, trial = self.running[ref]
        self._drop(ref)
        self.ending.end(ref, job, trial, failure)

    def _ended(self, ref: Any) -> None:
        """A cancelled trial's task said something: answer the trial if it has ended."""
        back = self.ending.ended(ref)
        if back is not None:
            self._trial_back(*back)

    def _unplaceable(self, job: Job, trial: Trial) -> bool:
        """Fail ``trial`` at once if no node of the cluster has what it asks for in total."""
        resources = job.spec.resources
        needs = needs_of(resources.num_cpus, resources.num_gpus, resources.memory)
        nodes = self.cluster.nodes(time.monotonic())
        why = unplaceable(needs, nodes)
        if why is None:
            return False
        error = ResourcesUnavailableError(
            job.spec.name, trial.index, needs, largest_node(needs, nodes), why
        )
        logger.warning("runner=%s job=%s: %s", self._runner_id, job.request.id, error)
        self.trials_unplaceable += 1
        self._trial_back(job, trial, TrialFailure(trial.index, error_info_from(error)))
        return True

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
            *job.owner,
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
        jobs = {id(j): j for j in self.jobs(which)}
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
        self.ending.forget_abandoned()
        if jobs:
            logger.info(
                "runner=%s gave up %d jobs; they will be redelivered", self._runner_id, len(jobs)
            )
