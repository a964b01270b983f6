"""The job runner: training jobs from the training topics → Ray tasks → model store → results.

A :class:`JobRunner` is a member of consumer group ``executor.jobs_group_id`` on every tenant's
training topic (never an inference topic: hours of training hold back no inference commit). One
loop thread owns its consumer and producers. Per job it:

1. screens the request and checks it against its topic's tenant as the ingest does, plans its
   trials (a sweep expands) and validates their params: a bad or refused request gets an error
   result naming the problem (:mod:`rayml.training.plan`);
2. looks in the store for what this job id already stored for this tenant, pipeline and params
   (:func:`~rayml.training.task.find_job`): a job finished before a crash is answered from the
   store, not re-trained; a sweep re-runs only the trials not stored;
3. publishes ``queued`` and hands the trials to :class:`~rayml.training.trials.TrialScheduler`
   (Ray tasks, retries, time bounds, a sweep's promotion);
4. answers it (:mod:`rayml.training.publish`): the promotion gate judges the new version, and
   a promoted version's serving record is acknowledged before the result is written, so a
   client holding the result finds every executor told of the version;
5. marks the job's offset done once its answer is acknowledged; the watermark commits every
   ``commit_interval_s``, on revoke and at shutdown. So a crash re-delivers exactly the jobs
   whose answers were not acknowledged.

At most ``training.max_concurrent_tasks`` trials are outstanding; beyond that the runner pauses
its partitions and keeps polling (so it stays in the group). With ``executor.delivery =
"exactly_once"`` a job's answer and its jobs offset commit in one transaction (a
``reply_to``'s result is written outside it), released in jobs-offset order per partition; an
aborted transaction rewinds the partitions but keeps the jobs still running
(:meth:`JobRunner._rewind`). Its producers and publishers are built by
:mod:`rayml.training.outputs`; its Ray actor is :mod:`rayml.training.runner_actor`.

Why, and what each step guarantees: docs/training.md (crash safety, exactly-once, resources
and concurrency).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from rayml.config import Settings
from rayml.delivery.consumer_loop import ConsumerLoop, LoopCounters
from rayml.delivery.screening import dead_letter_record, screen
from rayml.delivery.txn_errors import TransactionAbortedError
from rayml.errors import ModelStoreError, RecordError, ReplyToRefusedError
from rayml.kafka import clients as kafka_clients
from rayml.kafka.partitions import TP
from rayml.kafka.records import PolledRecord, headers_of, timestamp_ms
from rayml.metrics import JobMetrics
from rayml.models.store import ModelStore
from rayml.pipeline import Registry
from rayml.protocol.envelopes import (
    ErrorInfo,
    Rejected,
    Request,
    Result,
    error_info_from,
    public_error,
)
from rayml.tenancy.rules import Tenancy
from rayml.training.outputs import runner_outputs
from rayml.training.plan import Job, Trial, plan_trials
from rayml.training.publish import JobPublisher
from rayml.training.task import (
    JobRecord,
    TrialOutcome,
    find_job,
    outcome_of,
)
from rayml.training.trials import TrialScheduler

logger = logging.getLogger(__name__)

__all__ = ["JobRunner"]


@dataclass
class Counters(LoopCounters):
    """What the runner has done since it started (status and metrics)."""

    jobs_succeeded: int = 0
    jobs_failed: int = 0
    jobs_reused: int = 0


class JobRunner(ConsumerLoop):
    """The job loop. Use :meth:`run` in a thread and :meth:`stop` from another.

    Its consumer-group skeleton (subscribe, pause state, revoke, commits, paused polling) is
    :class:`~rayml.delivery.consumer_loop.ConsumerLoop`, shared with the ingest.
    """

    counters: Counters

    def __init__(self, settings: Settings, runner_id: str, registry: Registry) -> None:
        self.settings = settings
        self.runner_id = runner_id
        self.registry = registry
        self.metrics = JobMetrics(runner_id)
        self.store = ModelStore(settings.models.root, allow_pickle=settings.models.allow_pickle)
        ex = settings.executor
        self._drain_s = ex.drain_timeout_s
        self.tenancy = Tenancy(settings)
        self.outputs = runner_outputs(settings, runner_id, self.tenancy, on_done=self._done)
        self.producer, self.events = self.outputs.producer, self.outputs.events
        self.txn, self.routes = self.outputs.txn, self.outputs.routes
        self.publishers = self.outputs.publishers
        self._commit_interval_s = (
            ex.commit_interval_s if self.txn is None else ex.transaction_commit_interval_s
        )
        # Events, dead letters: the same for every tenant.
        self.publish = next(iter(self.publishers.values()))
        self.trials = TrialScheduler(settings, runner_id, self.publish, self._answer_ok, self._fail)
        # Exactly-once: jobs still running when their partition was rewound (an aborted
        # transaction), by (partition, offset), until they are polled again; and the answers
        # of those that finished before that (see _rewind).
        self._kept: dict[tuple[TP, int], Job] = {}
        self._held: dict[tuple[TP, int], Callable[[], None]] = {}
        consumer = kafka_clients.consumer(
            settings.kafka,
            settings.executor.jobs_group_id,
            **{
                "client.id": runner_id,
                # Jobs are few and slow: prefetch little, so pausing holds back almost nothing.
                "queued.max.messages.kbytes": 1024,
                "fetch.wait.max.ms": 100,
            },
        )
        super().__init__(consumer, self.tenancy.training_topics, f"runner={runner_id}", Counters())

    # -- the loop ----------------------------------------------------------------------------

    def step(self) -> None:
        busy = self.trials.busy
        room = self.trials.limit - self.trials.outstanding
        self._apply_backpressure(room)
        # Poll even while paused: it serves rebalances and keeps this member in the group
        # through hours of training (max.poll.interval.ms).
        for msg, tp, offset in self.poll(max(1, room), 0.0 if busy else 0.1):
            if self.txn is not None:
                self.txn.track(tp, offset)
            self._accept(msg, tp, offset)
        if not self._stop.is_set():
            self.trials.launch()
        self.trials.collect(block_s=0.1 if busy else 0.0)
        self.outputs.poll()
        if self.commit_due(self._commit_interval_s):
            self.commit()
        now = time.monotonic()
        if self.metrics.due(now):
            c = self.counters
            totals = {
                "succeeded": c.jobs_succeeded,
                "failed": c.jobs_failed,
                "reused": c.jobs_reused,
            }
            self.metrics.flush(totals, now)

    def _accept(self, msg: Message, tp: TP, offset: int) -> None:
        if self._kept.pop((tp, offset), None) is not None:
            # Polled again after a rewind: the job is running still (its answer comes when it
            # finishes), or finished meanwhile and its answer was held until now.
            held = self._held.pop((tp, offset), None)
            if held is not None:
                held()
            return
        raw = msg.value() or b""
        request = screen(msg, tp, offset, raw, self.settings.executor.max_request_bytes, self)
        if request is None:
            return
        headers = headers_of(msg)
        received_ms = (
            float(request.sent_at_ms) if request.sent_at_ms is not None else timestamp_ms(msg)
        )
        tenant, refused = self.tenancy.check(
            tp[0], request.reply_to, request.tenant, request.pipeline
        )
        # From here on the request names its topic's tenant (echoed in its results), and only
        # a reply_to it may name: a refused one is answered on the tenant's result topic.
        refused_reply = isinstance(refused, ReplyToRefusedError)
        request = request.model_copy(
            update={"tenant": tenant.name, "reply_to": None if refused_reply else request.reply_to}
        )
        try:
            if refused is not None:
                raise refused
            spec, params, is_sweep = plan_trials(
                self.registry,
                request,
                max_trials=self.settings.training.max_trials,
                refuse=lambda s: self.tenancy.refuse_kind(tenant, tp[0], s.name, s.kind),
            )
        except RecordError as exc:
            # A bad or refused request: an error result naming the problem; nothing to replay.
            self.counters.jobs_failed += 1
            self._publisher(request).answer_error(request, None, error_info_from(exc), tp, offset)
            return
        trials = [Trial(n, p) for n, p in enumerate(params)]
        job = Job(tp, offset, raw, headers, request, spec, trials, is_sweep, received_ms)
        record = self._stored(job)
        if record.servable is not None:
            # Finished before a crash that came before its offset was committed: answer it
            # from the store, without training (and announce it again, in case the crash came
            # before the announcement).
            logger.info(
                "runner=%s job=%s already stored as model=%s version=%s; re-sending its result",
                self.runner_id,
                request.id,
                spec.model,
                record.servable.version,
            )
            self.counters.jobs_reused += 1
            job.reused = True
            extra = record.servable.metadata.get("extra")
            self._answer_ok(
                job,
                outcome_of(record.servable, 0, reused=True),
                extra if isinstance(extra, dict) else {},
            )
            return
        for trial in trials:
            stored = record.trials.get(trial.index) if is_sweep else None
            if stored is not None:
                # A sweep trial stored before the crash: only the others run again.
                trial.outcome = outcome_of(stored, trial.index, reused=True)
        self.publish.event(job, "queued")
        self.trials.add(job)

    # What screen() cannot turn into a request (a RejectSink): answered on the tenant's result
    # topic (a bad envelope's reply_to is not trusted), or dead-lettered.

    def dead_letter(self, msg: PolledRecord, error_type: str, message: str) -> None:
        tp, offset, headers = dead_letter_record(msg, error_type, message)
        self.publish.dead_letter(tp, offset, msg.value() or b"", msg.key(), headers)

    def reject(self, msg: PolledRecord, tp: TP, offset: int, rejected: Rejected) -> None:
        tenant = self.tenancy.of_topic(tp[0]).name
        result = Result.failed(
            rejected.request_id, rejected.pipeline or "", rejected.error, tenant=tenant
        )
        self.counters.jobs_failed += 1
        self.publishers[tenant].result(None, result, tp, offset)

    def _publisher(self, request: Request) -> JobPublisher:
        """The publisher of the request's tenant (set from its topic in :meth:`_accept`)."""
        return self.publishers[request.tenant or ""]

    def _stored(self, job: Job) -> JobRecord:
        """What the store holds for this job id already (a crash re-delivered it)."""
        try:
            return find_job(self.store, job.spec.model, job.request.id, *job.owner)
        except (ModelStoreError, OSError) as exc:
            # Each task checks again before training; this look is only a shortcut.
            logger.warning(
                "runner=%s cannot read model=%s: %s", self.runner_id, job.spec.model, exc
            )
            return JobRecord()

    def _held_back(self, job: Job, answer: Callable[[], None]) -> bool:
        """Whether ``job`` was kept over a rewind and not polled again yet: then its answer
        waits (the reorder buffer takes it only once its offset is tracked again)."""
        key = (job.tp, job.offset)
        if key not in self._kept:
            return False
        self._held[key] = answer
        return True

    def _answer_ok(self, job: Job, outcome: TrialOutcome, extra: dict[str, Any]) -> None:
        if self._held_back(job, lambda: self._answer_ok(job, outcome, extra)):
            return
        self.counters.jobs_succeeded += 1
        self._publisher(job.request).answer_ok(job, outcome, extra)

    def _fail(self, job: Job, error: ErrorInfo) -> None:
        """The job ran and failed: an error result, and its request on the DLQ for replay.

        The result carries the error as the caller may see it; the whole of it (a Ray error's
        node and pid, a traceback, paths) is logged here with the job id.
        """
        if self._held_back(job, lambda: self._fail(job, error)):
            return
        self.counters.jobs_failed += 1
        public = public_error(error)
        if public is not error:
            logger.warning(
                "runner=%s job=%s failed: %s %s %s",
                self.runner_id,
                job.request.id,
                error.type,
                error.message,
                error.details,
            )
        self._publisher(job.request).answer_error(
            job.request, job, public, job.tp, job.offset, dead_letter=(job.raw, job.headers)
        )

    def _done(self, tp: TP, offset: int) -> None:
        # KeyError: the partition was revoked meanwhile; its new owner re-runs the job, finds
        # its model in the store, and answers again.
        with contextlib.suppress(KeyError):
            self.tracker.done(tp, offset)

    # -- exactly-once: the transaction -------------------------------------------------------

    def commit(self, offsets: dict[TP, int] | None = None, *, wait: bool = True) -> None:
        """At-least-once: the watermark (the runner's consumer has no ``on_commit``: it always
        waits); exactly-once: the open transaction."""
        if self.txn is None:
            super().commit(offsets)
            return
        self._last_commit = time.monotonic()
        # Not skipped when the producer failed fatally (fenced, or a fatal error swallowed by a
        # write or a begin): txn.commit raises ProducerFencedError then, the loop crashes and
        # Ray restarts the actor, which leaves the group -- rather than train on, never
        # committing, holding its partitions.
        try:
            done = self.txn.commit(self.consumer.consumer_group_metadata())
        except TransactionAbortedError:
            self._rewind(set(self._assigned))
            return
        if done:
            for tp, offsets_done in done.items():
                for offset in offsets_done:
                    self._done(tp, offset)
            self.tracker.mark_committed(self.tracker.committable())
            self.counters.commits += 1

    def _rewind(self, tps: set[TP]) -> None:
        """Exactly-once, after an abort: read these partitions again from the committed
        offsets, and redo the answers the aborted transaction held.

        Only answers were lost: the jobs whose answers were in the transaction, or held behind
        an unfinished job, had finished; they are found in the store when polled again and
        answered from it. A job still running had no answer in it: it is **kept** (its trials
        go on) and, when its record is polled again, not started a second time; if it finishes
        before that, its answer waits for the record (:meth:`_held_back`). A suspect
        ``reply_to`` (a write timed out) is asked about first, so the redo does not time out
        on a missing topic again.
        """
        assert self.txn is not None
        self._unsettled |= tps
        self.txn.abort()
        self.routes.settle()
        for job in self.trials.jobs(lambda job: job.tp in tps):
            self._kept[(job.tp, job.offset)] = job
        logger.warning(
            "runner=%s rewinding %d partitions (%d running jobs kept)",
            self.runner_id,
            len(tps),
            len(self._kept),
        )
        for tp in tps:
            self.tracker.reset(tp)
        self.txn.forget(tps)
        self.rewind(tps)  # raises if positions are unknown (nothing more commits then)

    # -- offsets, backpressure, rebalance ----------------------------------------------------

    def _apply_backpressure(self, room: int) -> None:
        if room <= 0:
            self.pause(f"with {self.trials.outstanding} trials outstanding")
        else:
            self.resume("(trials have room)")

    # rebalance: the callbacks are ConsumerLoop's; these are the runner's parts.

    def settle_revoked(self, revoked: set[TP]) -> None:
        """Give up the jobs of these partitions (their new owner re-runs them), commit.

        Training may take hours, far longer than a rebalance may wait; trials that finished are
        in the store, so the new owner runs only what did not. Exactly-once, the open
        transaction (answers released so far, with their offsets) commits while the partitions
        are still ours; answers held behind an unfinished job are redone by the new owner.
        """
        self.trials.abandon(lambda job: job.tp in revoked)
        if self.txn is None:
            self.producer.flush(min(10.0, self._drain_s))
            self.commit(self.tracker.revoke(revoked))
        elif self.txn.usable:
            self.commit()

    def let_go(self, tps: set[TP]) -> None:
        self.trials.abandon(lambda job: job.tp in tps)
        for key in [key for key in self._kept if key[0] in tps]:
            # Their new owner redoes them (a finished one from the store).
            del self._kept[key]
            self._held.pop(key, None)
        if self.txn is not None:
            self.txn.forget(tps)

    def after_lost(self, lost: set[TP]) -> None:
        if self.txn is not None and self.txn.usable:
            # The open transaction may hold answers of the lost partitions, which their new
            # owner redoes: it is aborted, and the rest of ours redone too.
            self._rewind(set(self._assigned))

    def shutdown(self) -> None:
        """Finish (bounded) the trials running now, answer what finished, commit, leave."""
        try:
            deadline = time.monotonic() + self._drain_s
            # Trials not started yet are left for the next owner: starting them now could only
            # be cancelled.
            waiting = self.trials.waiting_jobs()
            self.trials.abandon(lambda job: id(job) in waiting)
            txn = self.txn
            while self.trials.busy and time.monotonic() < deadline:
                self.trials.collect(block_s=0.1)
                self.outputs.poll()
                # Exactly-once: keep committing while draining, or a drain longer than the
                # transaction timeout would have the broker abort (and fence) this producer.
                if txn is not None and txn.usable and self.commit_due(self._commit_interval_s):
                    self.commit()
            self.trials.abandon(lambda job: True)
            if txn is None:
                self.producer.flush(max(1.0, deadline - time.monotonic()))
                self.commit()
            elif txn.usable:  # not after a fatal (fenced) error: nothing may commit
                self.commit()
            if self.events is not self.producer:
                self.events.flush(max(1.0, deadline - time.monotonic()))
        finally:
            try:
                # Leaves the group, after a failed commit too (as the ingest does).
                self.consumer.close()
            finally:
                self._stopped.set()
                logger.info("runner=%s stopped", self.runner_id)

    # -- control (from other threads) --------------------------------------------------------

    def stop(self, timeout_s: float | None = None) -> bool:
        """Ask the loop to drain (within ``timeout_s``) and stop; True if it stopped in time."""
        if timeout_s is not None:
            self._drain_s = timeout_s
        self._stop.set()
        return self._stopped.wait(None if timeout_s is None else timeout_s + 5.0)

    def status(self) -> dict[str, Any]:
        c = self.counters
        # Not consumer.assignment(): a confluent-kafka consumer is not to be called from two
        # threads, and this runs on an actor thread while the loop sits in consume().
        assignment = self.assignment_names()
        status: dict[str, Any] = {
            "runner_id": self.runner_id,
            "pid": os.getpid(),
            "assignment": assignment,
            "jobs_in_flight": self.tracker.in_flight(),
            # Launched (started, or waiting for Ray to start them) and not launched yet.
            "trials_running": len(self.trials.running),
            "trials_waiting": len(self.trials.waiting),
            # Launched trials that Ray has not started yet, with what they wait for.
            "waiting_for_resources": list(self.trials.waiting_report),
            "promoting": len(self.trials.promoting),
            "paused": c.paused,
            "polled": c.polled,
            "jobs_succeeded": c.jobs_succeeded,
            "jobs_failed": c.jobs_failed,
            "jobs_reused": c.jobs_reused,
            "trials_launched": self.trials.trials_launched,
            "trials_retried": self.trials.trials_retried,
            "trials_timed_out": self.trials.trials_timed_out,
            # Failed for resources: asked more than any node has, or waited max_wait_s.
            "trials_unplaceable": self.trials.trials_unplaceable,
            "commits": c.commits,
            "delivery": self.settings.executor.delivery,
            "uptime_s": round(time.time() - c.started_at, 3),
        }
        if self.txn is not None:
            # Answers held until every earlier job of their partition is answered.
            status["answers_held"] = self.txn.unreleased()
            status["transaction_aborts"] = self.txn.aborts
        return status
