"""Trials cancelled for a failure (past their time bound, or waited too long), until their task
has ended: what each is answered with.

The kill takes effect a moment after the runner decides, so a cancelled trial may still have
stored its model. Its answer waits until Ray reports its task ended (cancelled or lost, within
a second or so; at most :data:`END_WAIT_S`): if the task stored its model before the kill took
effect, the trial is answered with that version, as a re-delivered job would be
(:func:`~rayml.training.task.find_job`); otherwise it fails, and no version of it can appear
later. So a trial answered as failed leaves no version in the store that a redo could answer
with -- and serve. docs/training.md (time bounds) says why.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import ray

from rayml.errors import ModelStoreError
from rayml.models.store import ModelStore
from rayml.training.plan import Job, Trial
from rayml.training.task import (
    TrialFailure,
    TrialOutcome,
    TrialStarted,
    find_job,
    outcome_of,
)

logger = logging.getLogger(__name__)

__all__ = ["END_WAIT_S", "EndingTrials"]

#: How long a cancelled trial's task may take to be reported ended before its failure is
#: answered anyway (a model it stores after that is not looked for; it is logged).
END_WAIT_S = 30.0


class EndingTrials:
    """The cancelled trials whose task has not been reported ended yet, by their task's ref.
    Use from the runner's loop thread only.

    Args:
        store: Where a trial's model would be (read once its task has ended).
        runner_id: For logs.
    """

    def __init__(self, store: ModelStore, runner_id: str) -> None:
        self.store = store
        self._runner_id = runner_id
        # ref -> (job, trial, the failure to answer if it stored nothing, when to stop waiting)
        self.tasks: dict[Any, tuple[Job, Trial, TrialFailure, float]] = {}

    def __contains__(self, ref: object) -> bool:
        return ref in self.tasks

    def __iter__(self) -> Iterator[Any]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def end(self, ref: Any, job: Job, trial: Trial, failure: TrialFailure) -> None:
        """Cancel ``trial``'s task; its answer waits for the task to have ended
        (:meth:`ended`), or :data:`END_WAIT_S` (:meth:`overdue`)."""
        # force: a training task stops only by ending its worker process.
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)
        self.tasks[ref] = (job, trial, failure, time.monotonic() + END_WAIT_S)

    def ended(self, ref: Any) -> tuple[Job, Trial, TrialOutcome | TrialFailure] | None:
        """A cancelled trial's task said something: its outcome if it finished before the
        kill, else (cancelled, lost) it has ended and the store says whether it saved. Returns
        what to answer the trial with, or None while its task has not ended."""
        job, trial, failure, _until = self.tasks[ref]
        item: TrialStarted | TrialOutcome | TrialFailure | None
        try:
            item = ray.get(next(ref))
        except (StopIteration, ray.exceptions.RayError):
            item = None  # ended: cancelled, its worker killed
        if isinstance(item, TrialStarted):
            return None  # it started as it was cancelled: wait for its end
        del self.tasks[ref]
        stored = item if isinstance(item, TrialOutcome) else None
        if item is None:
            stored = self._stored_trial(job, trial)
        if stored is None:
            return job, trial, failure
        logger.warning(
            "runner=%s job=%s trial=%d stored its model as version %s before it was "
            "cancelled (%s): answered with that version",
            self._runner_id,
            job.request.id,
            trial.index,
            stored.version,
            failure.error.type,
        )
        return job, trial, stored

    def overdue(self, now: float) -> list[tuple[Job, Trial, TrialFailure]]:
        """The trials whose task was not reported ended within :data:`END_WAIT_S`: answered
        with their failure, without looking for a model they may still store (logged)."""
        overdue = []
        for ref in [ref for ref, (*_, until) in self.tasks.items() if now >= until]:
            job, trial, failure, _until = self.tasks.pop(ref)
            logger.warning(
                "runner=%s job=%s trial=%d: its cancelled task was not reported ended within "
                "%gs; answered %s without looking for a model it may still store",
                self._runner_id,
                job.request.id,
                trial.index,
                END_WAIT_S,
                failure.error.type,
            )
            overdue.append((job, trial, failure))
        return overdue

    def jobs(self) -> list[Job]:
        """The jobs of the trials ending (one per trial)."""
        return [job for job, _t, _f, _d in self.tasks.values()]

    def forget_abandoned(self) -> None:
        """Drop the trials of abandoned jobs (their tasks are cancelled already)."""
        for ref, (job, *_rest) in list(self.tasks.items()):
            if job.abandoned:
                del self.tasks[ref]

    def _stored_trial(self, job: Job, trial: Trial) -> TrialOutcome | None:
        """The version ``trial`` stored (its task ended), if any."""
        try:
            record = find_job(self.store, job.spec.model, job.request.id, *job.owner)
        except (ModelStoreError, OSError) as exc:
            logger.warning(
                "runner=%s job=%s cannot read model=%s: %s; trial %d answered as failed",
                self._runner_id,
                job.request.id,
                job.spec.model,
                exc,
                trial.index,
            )
            return None
        version = record.trials.get(trial.index) if job.is_sweep else record.servable
        return None if version is None else outcome_of(version, trial.index, reused=True)
