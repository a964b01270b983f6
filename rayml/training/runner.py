"""The job runner: training jobs from the training topics → Ray tasks → model store → results.

Training is a right of its own: clients send training requests to their tenant's training
topic (:mod:`rayml.tenancy`; without tenants, ``settings.topics.jobs``), which Kafka's ACLs
guard apart from inference, and the job runner consumes those topics directly (the ingest
refuses a training request on an inference topic, naming the topic to use). Hours of training
never hold back inference commits: the two never share a partition. A :class:`JobRunner` is a
member of consumer group ``settings.executor.jobs_group_id`` on every training topic. One loop
thread owns its consumer and producer. Per job it:

1. decodes the request and checks it against the tenant of its topic, as the ingest does: a
   ``reply_to`` the tenant may not name (answered ``reply_to_refused`` on the tenant's result
   topic), a ``tenant`` field that is not the topic's, a pipeline outside the tenant's
   patterns, an inference pipeline (``wrong_topic``, naming the tenant's input topic); then it
   looks up the pipeline, expands a sweep into trials (:mod:`rayml.protocol.sweeps`) and
   validates each trial's params: a bad request gets an error result naming the field;
2. looks in the model store for versions this job id already stored for this tenant, pipeline
   and params (:func:`find_job`; a version of another tenant or other params under the same
   id is not this job's, and the job runs as new): a job whose model is stored was finished
   before a crash and is **not run again**: its result is re-sent with the promotion decision
   made the first time (the gate does not judge it again, :mod:`rayml.training.gate`); a sweep
   re-runs only the trials that are not stored;
3. publishes ``queued`` and launches one Ray task per trial (:func:`rayml.training.task.run_trial`)
   with the pipeline's resources; the task publishes ``running`` and progress events itself. A
   trial has a time bound from when its task starts (``trial_timeout``); a task that Ray cannot
   start yet is reported as waiting for resources, for at most ``training.max_wait_s``, and one
   that no node could ever hold fails at once (``resources_unavailable``,
   :mod:`rayml.training.trials`);
4. when every trial is back: a single training's version is announced; a sweep's best trial (by
   the pipeline's ``metric``/``mode``) is promoted -- stored again as the newest version -- and
   that copy is announced. Announcements go to the compacted models topic, keyed by model name;
5. **after the announcement is acknowledged**, produces the result (``ok`` with model, version
   and metrics -- and every trial for a sweep -- or ``error``) to the authorised ``reply_to`` if
   the broker has that topic (asked before writing: :mod:`rayml.training.replies`), else to the
   tenant's result topic, keyed by the request id, echoing the tenant, and publishes
   ``succeeded`` or ``failed``. An error result says what failed in the caller's terms
   (:func:`~rayml.protocol.envelopes.public_error`); the whole error is logged with the job id;
6. marks the job's offset done once the broker acknowledges the result, and commits the
   per-partition watermark (:mod:`rayml.delivery.offsets`) every ``commit_interval_s``, on revoke
   and at shutdown.

So a crash re-delivers exactly the jobs whose results were not acknowledged: unfinished ones run
again, finished ones are answered from the store.

With ``executor.delivery = "exactly_once"`` steps 5 and 6 are one: a job's writes (announcement
and result, or error result and DLQ copy) are staged in a
:class:`~rayml.delivery.transactions.TransactionalOutput` (``transactional.id =
"{jobs_group_id}.{runner_id}"``), which releases them into the open transaction in jobs-offset
order per partition and commits them with the jobs offsets every
``transaction_commit_interval_s``; events go through a plain producer, outside transactions. A
result for a ``reply_to`` is written outside the transaction too (a plain idempotent producer,
acknowledged before its jobs offset commits: at-least-once there, and it may be read before
the serving record beside it commits), so a reply topic that refuses transaction markers
cannot stick the runner's ``transactional.id``. A read_committed reader of a result topic sees
each job's result once, across a crash of the runner; the price is
that a long job holds back the answers behind it on its partition. An aborted transaction
rewinds the partitions and redoes only the answers it held: jobs still running are kept, not
cancelled (:meth:`JobRunner._rewind`). A producer that failed fatally (fenced) makes the next
commit raise: the loop stops and Ray restarts the actor.

Announcing before answering means a client that has the result and sends an inference request
finds every executor already told of the version.

**Bounded concurrency, and why training cannot starve inference.** At most
``training.max_concurrent_tasks`` trials are launched or queued per runner; when that many are
outstanding the runner pauses its jobs partitions (it keeps polling, so it stays in the group)
and resumes them as trials finish. Ray schedules by declared resources: a ModelWorker actor holds
its ``worker_num_cpus`` for its whole life, while ingest and runner actors hold none, so a
training task can only take CPUs that no worker holds, and it waits in Ray's queue when there
are none. Inference keeps the CPUs it has. The bound keeps the number of training tasks waiting
for CPUs small, so a burst of jobs cannot grab every CPU the moment one frees up (e.g. when the
pool grows), and ``ctx.nthread`` equal to the task's ``num_cpus`` keeps a running task from using
more cores than it reserved. The flip side: a node whose CPUs are all held by workers runs no
training at all -- which is why the executor, when ``executor.worker_num_cpus`` is unset, sizes
the workers so that ``training.reserve_cpus`` stay free (on a 2-CPU machine: 0.5 for each of two
workers, and a ``num_cpus=1`` task fits). A trial that waits anyway is not silent: after
``training.waiting_notice_s`` its job gets a ``queued`` event saying what it needs and what the
cluster has free, and ``rayml status`` lists it with that reason.

The runner's parts: :mod:`rayml.training.plan` (checks, the job and its result, pure),
:mod:`rayml.training.trials` (trials as Ray tasks, retries, promotion),
:mod:`rayml.training.publish` (announcements, results, events, dead letters),
:mod:`rayml.training.replies` (which ``reply_to`` topics can be written),
:mod:`rayml.training.task` (the task itself).

:class:`JobRunnerActor` wraps the runner as a Ray actor (``num_cpus=0``): the loop runs in a
thread so that ``status`` and ``drain`` calls are served meanwhile. The training tasks are the
actor's children: if the runner (or the executor that owns it) dies, Ray ends them too, and their
jobs, never committed, run again after the restart.

Example:
    >>> from rayml.config import load_settings
    >>> runners = start_job_runners(load_settings(), "ex-1")   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import ray
from confluent_kafka import KafkaError, Message

from rayml import logs
from rayml.config import Settings
from rayml.delivery.consumer_loop import ConsumerLoop, LoopCounters
from rayml.delivery.screening import dead_letter_record, screen
from rayml.delivery.transactions import (
    TransactionAbortedError,
    TransactionalOutput,
    rewind_positions,
)
from rayml.errors import ModelStoreError, RecordError, ReplyToRefusedError
from rayml.kafka import clients as kafka_clients
from rayml.kafka.partitions import TP
from rayml.kafka.records import PolledRecord, headers_of, timestamp_ms
from rayml.kafka.topic_checks import topic_verdicts
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
from rayml.tenancy.rules import Tenancy, tenants_of
from rayml.training.plan import Job, Trial, plan_trials
from rayml.training.publish import JobPublisher
from rayml.training.replies import METADATA_TIMEOUT_S, ReplyRoutes
from rayml.training.task import (
    JobRecord,
    TrialOutcome,
    find_job,
    outcome_of,
)
from rayml.training.trials import TrialScheduler

logger = logging.getLogger(__name__)

__all__ = [
    "RUNNER_ACTOR_PREFIX",
    "JobRunner",
    "JobRunnerActor",
    "drain_job_runners",
    "start_job_runners",
]

# Runner actors are named "<RUNNER_ACTOR_PREFIX><runner id>" in the Ray namespace (`rayml status`
# finds them by it).
RUNNER_ACTOR_PREFIX = "rayml-jobs:"


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
        self._commit_interval_s = ex.commit_interval_s
        self.txn = None
        if ex.delivery == "exactly_once":
            # Stable per runner id: a Ray-restarted runner actor (same id) fences its zombie
            # and aborts the transaction it left open.
            txn_id = f"{ex.jobs_group_id}.{runner_id}"
            self.producer = kafka_clients.output_producer(settings.kafka, ex, txn_id)
            # Events are advisory and a transactional producer writes only in a transaction.
            self.events = kafka_clients.producer(settings.kafka, **{"enable.idempotence": False})
            self.txn = TransactionalOutput(
                self.producer,
                txn_id,
                on_failed_delivery=self._note_failed_delivery,
                owner=runner_id,
                # The transaction spans rayml's own topics only; a reply_to is written
                # outside it (rayml.delivery.transactions says why).
                own_topics=frozenset(
                    {t.result_topic for t in tenants_of(settings)}
                    | {settings.topics.dlq, settings.topics.models}
                ),
                outside=kafka_clients.reply_producer(settings.kafka, ex),
                outside_timeout_s=kafka_clients.reply_timeout_s(ex),
            )
            self._commit_interval_s = ex.transaction_commit_interval_s
        else:
            self.producer = kafka_clients.producer(settings.kafka)
            self.events = self.producer
        self.tenancy = Tenancy(settings)
        # Which reply_to topics can be written, asked of the broker before a result goes there
        # and learnt from failed writes; shared by every tenant's publisher.
        self.routes = ReplyRoutes(
            partial(topic_verdicts, self.producer, timeout_s=METADATA_TIMEOUT_S),
            {tenant.result_topic for tenant in self.tenancy.tenants}
            | {settings.topics.dlq, settings.topics.models, settings.topics.events},
            runner_id,
        )
        # One publisher per tenant, whose "output" is the tenant's result topic: a job's result
        # goes to its authorised reply_to, or there (also when the reply_to cannot be written).
        self.publishers = {
            tenant.name: JobPublisher(
                _answering_on(settings, tenant.result_topic),
                self.producer,
                runner_id,
                on_done=self._done,
                stage=None if self.txn is None else self.txn.stage,
                events=self.events,
                routes=self.routes,
            )
            for tenant in self.tenancy.tenants
        }
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
        self._poll_producers()
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

    def _note_failed_delivery(self, topic: str, key: bytes | None, err: KafkaError) -> None:
        """Exactly-once: a reply_to whose write failed is not written again (for a while):
        each failure costs an aborted transaction, so the redo goes to the result topic
        (shared by every tenant)."""
        self.routes.learn(topic, err, once=True)

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

    def _poll_producers(self) -> None:
        self.producer.poll(0)
        if self.events is not self.producer:
            self.events.poll(0)
        if self.txn is None:
            for publisher in self.publishers.values():
                publisher.serve_refused()

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
        try:
            rewind_positions(self.consumer, tps)
        except Exception:
            # Positions unknown: nothing more may commit from here; the loop crashes and the
            # restarted actor resumes from the committed offsets.
            self.txn.usable = False
            raise

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
                self._poll_producers()
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


# --- the actor --------------------------------------------------------------------------------


class JobRunnerActor:
    """Ray actor body around :class:`JobRunner`: the loop runs in a thread, control calls on
    other actor threads. A crashed loop exits the process so Ray restarts the actor, which
    re-joins the group and re-runs the uncommitted jobs.
    """

    def __init__(self, settings: Settings, runner_id: str) -> None:
        logs.configure(settings.log_level)
        registry = Registry()
        registry.discover(settings.executor.pipeline_modules)
        self.runner = JobRunner(settings, runner_id, registry)
        self._thread = threading.Thread(target=self._run, name=f"jobs-{runner_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException:
            logger.exception("job runner loop crashed; restarting the actor")
            os._exit(1)

    def ready(self) -> str:
        return self.runner.runner_id

    def status(self) -> dict[str, Any]:
        return self.runner.status()

    def drain(self, timeout_s: float) -> bool:
        return self.runner.stop(timeout_s)


def _answering_on(settings: Settings, result_topic: str) -> Settings:
    """``settings`` with ``result_topic`` as the output topic (a tenant's publisher)."""
    if result_topic == settings.topics.output:
        return settings
    topics = settings.topics.model_copy(update={"output": result_topic})
    return settings.model_copy(update={"topics": topics})


def start_job_runners(settings: Settings, instance_id: str, timeout_s: float = 120.0) -> list[Any]:
    """Start ``settings.training.job_runners`` runner actors and wait until they are up (none
    when no tenant may train)."""
    if not Tenancy(settings).training_topics:
        logger.info("executor=%s starts no job runner: no tenant has a training topic", instance_id)
        return []
    actor_cls = ray.remote(JobRunnerActor)
    actors: list[Any] = []
    for n in range(settings.training.job_runners):
        runner_id = f"{instance_id}-j{n}"
        actor = actor_cls.options(
            num_cpus=0,  # IO-bound: the CPUs are for its training tasks and the model workers
            max_concurrency=4,
            max_restarts=-1,
            # Named, so `rayml status` finds them on the cluster.
            name=f"{RUNNER_ACTOR_PREFIX}{runner_id}",
            namespace=settings.ray.namespace,
        ).remote(settings, runner_id)
        actors.append(actor)
    ray.get([a.ready.remote() for a in actors], timeout=timeout_s)
    logger.info("executor=%s started %d job runners", instance_id, len(actors))
    return actors


def drain_job_runners(actors: list[Any], timeout_s: float) -> list[Any]:
    """Ask each runner to drain; returns the refs to wait for (True: drained in time)."""
    return [a.drain.remote(timeout_s) for a in actors]
