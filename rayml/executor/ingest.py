"""The ingest: Kafka consumer-group member → micro-batches → worker pool → results → commits.

One :class:`Ingest` runs a single loop thread that owns its Kafka consumer and producer (only
:mod:`rayml.kafka.topic_checks` asks the producer for topic metadata from a thread of its own;
librdkafka handles are thread-safe). Per iteration it:

1. polls up to ``poll_max_messages`` records from every tenant's inference topics, its
   interactive and its bulk lane (:mod:`rayml.tenancy`; without tenants, ``topics.input`` and
   ``topics.input_batch``), and tracks each offset as unfinished; a lane or tenant at its share
   of the window waits, paused (:mod:`rayml.executor.intake`);
2. decodes and checks them against the tenant of their topic: undecodable ones are
   dead-lettered, bad or refused ones answered with an error result (a refused ``reply_to`` on
   the tenant's result topic), training requests refused (they belong on the tenant's training
   topic, which the job runner reads), inference requests added to a micro-batch keyed by
   (pipeline, model version);
3. sends each full or due micro-batch to a worker: **one Ray call per batch**; while a worker
   is idle (``dispatch_when_idle``), what is buffered goes at once, so batches fill only while
   the workers are busy and an idle executor adds no batch wait to a request's latency;
4. collects finished batches and produces one result per request (idempotent producer);
5. marks an offset done only in the producer's delivery callback, i.e. once the broker has
   acknowledged the result (or dead letter), and commits the per-partition
   watermark (:mod:`rayml.delivery.offsets`) every ``commit_interval_s``, on revoke and at shutdown.

So a crash anywhere re-delivers only unfinished records (at-least-once); results carry the
request id so readers can deduplicate. With ``executor.delivery = "exactly_once"`` step 5 is
different: writes go through :mod:`rayml.delivery.transactions`, in offset order, into a Kafka
transaction that also carries the input offsets; a record is done when its transaction commits
(every ``transaction_commit_interval_s``, on revoke and at shutdown), and an aborted transaction
rewinds the partitions to their committed offsets.

Over ``max_in_flight`` unfinished records, or ``max_in_flight_bytes`` of their values and of the
results the writer holds for topics that fail, the ingest pauses its partitions and resumes them
once both are down to half (:mod:`rayml.executor.window`, which also sizes each poll to the byte
room): memory stays bounded under any backlog, of small records or large ones, and under any
outage of the topics it writes.

:mod:`rayml.executor.triage` does step 2, :mod:`rayml.executor.dispatch` steps 3-4 (ready queue,
Ray calls, retries) and :mod:`rayml.delivery.result_writer` the writes of step 5; this module is
the loop that ties them to the consumer. :class:`rayml.executor.service.IngestActorImpl` wraps it
as a Ray actor (``num_cpus=0``) whose control calls (status, resize, drain) run on other actor
threads while the loop works.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Callable
from typing import Any

import psutil

from rayml.config import Settings
from rayml.delivery.consumer_loop import ConsumerLoop, LoopCounters, Polled
from rayml.delivery.result_writer import ResultWriter
from rayml.delivery.sink import TopicTenant
from rayml.delivery.transactions import (
    TransactionAbortedError,
    TransactionalOutput,
    rewind_positions,
)
from rayml.executor.answers import answer_batch, answer_exhausted, answer_expired
from rayml.executor.batching import Batch, MicroBatcher
from rayml.executor.dispatch import Dispatcher
from rayml.executor.gc_pauses import GcPauses
from rayml.executor.intake import Intake
from rayml.executor.membership import ServingWatch
from rayml.executor.pool import WorkerPool
from rayml.executor.pools import DEFAULT_POOL, Pools, dispatch_shares
from rayml.executor.rollout_answers import RolloutAnswers
from rayml.executor.triage import Triage
from rayml.executor.version_follower import LatestVersions
from rayml.executor.window import InFlightWindow
from rayml.executor.work import BatchOutcome, InFlight, Pending, Route
from rayml.kafka import clients as kafka_clients
from rayml.kafka.lag import partition_lags
from rayml.kafka.partitions import TP
from rayml.metrics import IngestMetrics
from rayml.pipeline import Registry
from rayml.tenancy.rules import Tenancy, tenants_of
from rayml.tracing import RequestTraces, Tracing

logger = logging.getLogger(__name__)


class Ingest(ConsumerLoop):
    """The ingest loop. Use :meth:`run` in a thread and :meth:`stop` from another.

    Its consumer-group skeleton (subscribe, pause state, bounded revoke, commits, paused
    polling) is :class:`~rayml.delivery.consumer_loop.ConsumerLoop`, shared with the job runner.
    """

    def __init__(self, settings: Settings, ingest_id: str, registry: Registry) -> None:
        self.settings = settings
        self.ingest_id = ingest_id
        self.registry = registry
        ex = settings.executor
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        # The default pool and one per pipeline that declares its own (rayml.executor.pools),
        # each with its dispatcher.
        self.pools = Pools(
            settings,
            ingest_id,
            registry,
            self._make_dispatcher,
            on_unavailable=self._answer_exhausted,
        )
        self.pool = self.pools.default.pool
        self.dispatcher = self.pools.default.dispatcher
        # A pipeline's own pool may set its batches' size and wait.
        self.batcher: MicroBatcher[Route, Pending] = MicroBatcher(
            ex.max_batch_size, ex.max_batch_wait_ms / 1000.0, self.pools.limits_of
        )
        # Two budgets, records and bytes; until records are seen, each is guessed as large as
        # a request may be (so the first poll cannot overshoot the byte budget).
        self.window = InFlightWindow(
            ex.max_in_flight, ex.max_in_flight_bytes, first_guess_bytes=ex.max_request_bytes
        )
        self.peak_in_flight_bytes = 0
        self.versions = LatestVersions(settings)
        # Aggregated per batch, sent on a timer: never a metric call per message.
        self.metrics = IngestMetrics(ingest_id)
        # What each version answered while its model is under rollout (docs/rollouts.md).
        self.rollout_answers = RolloutAnswers(settings, ingest_id)
        self.txn = None
        self._commit_interval_s = ex.commit_interval_s
        self.producer, txn_id = kafka_clients.ingest_producer(settings.kafka, ex, ingest_id)
        if txn_id is not None:
            # The transaction spans rayml's own topics only; a reply_to is written outside it.
            own = {t.result_topic for t in tenants_of(settings)} | {settings.topics.dlq}
            self.txn = TransactionalOutput(
                self.producer,
                txn_id,
                on_failed_delivery=lambda *failed: self.writer.note_failed_delivery(*failed),
                owner=ingest_id,
                own_topics=frozenset(own),
                outside=kafka_clients.reply_producer(settings.kafka, ex),
                outside_timeout_s=kafka_clients.reply_timeout_s(ex),
            )
            self._commit_interval_s = ex.transaction_commit_interval_s
        self.tenancy = Tenancy(settings)
        # Priority lanes and tenant shares: which request topics wait (rayml.executor.intake).
        self.intake = Intake.of(settings, self.tenancy)
        # Off (None) unless an OTLP endpoint is set: then no header is read (rayml.tracing).
        self.tracing = Tracing.start(settings.tracing, "ingest", **{"rayml.ingest": ingest_id})
        self.traces = (
            None
            if self.tracing is None
            else RequestTraces(
                self.tracing.tracer,
                self.tracing.sample_ratio,
                max_traced_per_s=self.tracing.max_traced_per_s,
            )
        )
        self.writer = ResultWriter(
            self.producer,
            tenants={
                topic: TopicTenant(tenant.name, tenant.result_topic)
                for topic in self.tenancy.input_topics
                for tenant in (self.tenancy.of_topic(topic),)
            },
            dlq_topic=settings.topics.dlq,
            on_done=self._done,
            owner=ingest_id,
            stage=None if self.txn is None else self.txn.stage,
            retry_initial_s=ex.write_retry_initial_s,
            retry_max_s=ex.write_retry_max_s,
            failure_log_interval_s=ex.write_failure_log_interval_s,
            traces=self.traces,
        )
        self.triage = Triage(
            self.writer,
            registry,
            self.versions,
            self.batcher,
            ex.max_request_bytes,
            self.tenancy,
            self.traces,
        )
        super().__init__(
            kafka_clients.ingest_consumer(
                settings.kafka,
                ex.group_id,
                ingest_id,
                ex.drain_timeout_s,
                on_commit=self.on_commit,
            ),
            self.tenancy.input_topics,
            f"ingest={ingest_id}",
            LoopCounters(),
        )
        self.membership = ServingWatch(ex.leave_group_without_workers_s, time.monotonic())
        self._next_membership_check = 0.0
        self._dispatch_when_idle = ex.dispatch_when_idle
        # The collector's pauses of this process while the loop runs (status: "gc").
        self.gc_pauses = GcPauses()
        # Requests a worker answered, per (tenant, lane): each tenant's throughput in status.
        self.answered_by_class: dict[tuple[str, str], int] = {}

    def _make_dispatcher(self, pool: WorkerPool, max_batch_size: int) -> Dispatcher:
        """The dispatcher of one of this ingest's pools, its callbacks bound to this ingest."""
        ex, settings = self.settings.executor, self.settings

        def finished(batch: InFlight, outcome: BatchOutcome) -> None:
            self.pools.answered(batch, outcome)
            self._answer_batch(batch, outcome)

        return Dispatcher(
            pool,
            max_attempts=ex.max_attempts,
            batch_timeout_s=ex.batch_timeout_s,
            on_expired=lambda items: answer_expired(self.writer, items),
            max_batch_size=max_batch_size,
            on_finished=finished,
            on_exhausted=self._answer_exhausted,
            owner=self.ingest_id,
            on_shadow=self._answer_shadow,
            shadow_max_queued=settings.rollout.shadow_max_queued,
            shadow_timeout_s=settings.rollout.shadow_timeout_s,
            **dispatch_shares(settings),
        )

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """The loop (:meth:`ConsumerLoop.run`), its collector pauses counted from its start."""
        self.gc_pauses.install()
        super().run()

    def step(self) -> None:
        while not self._commands.empty():
            self._commands.get_nowait()()
        busy = self.pools.in_flight
        if busy:
            timeout = 0.0  # completions are waited for below, in ray.wait
        else:
            deadline = self.batcher.next_deadline()
            timeout = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
        # A sealed transaction waits for its delivery reports, then for its commit on the
        # commit thread: wait on those (below), not in the consumer's poll, which would keep
        # the loop from taking them for the poll's whole timeout.
        txn = self.txn
        sealed = txn is not None and txn.sealed
        self._apply_backpressure()
        wait_output = sealed and not busy  # below, once
        if not self.counters.paused:
            # Never take more than the in-flight window has room for, in records and in bytes
            # (at the size it expects of a record); not paused, so room for one at least.
            limit = self.window.poll_limit(
                self.tracker.in_flight(),
                self.held_bytes(),
                self.settings.executor.poll_max_messages,
            )
            self._accept(limit, 0.0 if sealed else timeout)
        else:
            # Paused (the window is full): the consumer is still polled, without waiting. Its
            # poll serves rebalance callbacks, a leave's revocation among them, and keeps this
            # member within max.poll.interval.ms; paused partitions return no records.
            self._accept(1, 0.0)  # nothing, unless a partition's pause did not hold
            # Wait on the producer instead: its delivery reports free the window (or on the
            # sealed transaction: its commit does).
            wait_output = not busy
        self._send_buffered()
        self.pools.collect(block_s=0.002 if self.pools.in_flight else 0.0)
        if len(self.batcher):
            self._send_buffered()  # batches that came back made room for what was polled
        if not wait_output or self.pools.in_flight:  # (batches sent since: collect them)
            self.producer.poll(0)
        elif txn is not None and sealed:
            txn.wait(timeout)
        else:
            self.producer.poll(timeout)
        self.rollout_answers.poll()
        self.writer.settle()
        now = time.monotonic()
        if txn is not None and txn.commit_finished:
            self._take_commit(txn.finish_commit)
        if self.commit_due(self._commit_interval_s):
            # The periodic commit does not stop the loop for a broker round trip (it did, for
            # up to tens of ms a second on a busy machine: every request polled meanwhile waited).
            self.commit(wait=False)
        if now >= self._next_membership_check:
            self._next_membership_check = now + 0.5
            self._follow_pool(now)
            self.pools.refresh(now)
            self.pools.release_idle(now)
        if self.metrics.due(now):
            self._flush_metrics()

    def _send_buffered(self) -> None:
        """Hand the batcher's due batches to the pools; with ``dispatch_when_idle``, also what
        it holds for a pool whose worker has room for a batch now (it would wait for its batch
        wait while the worker had nothing queued to run next; another pool's batches keep
        filling)."""
        if self._dispatch_when_idle and len(self.batcher) and self.pools.room():
            if self.pools.many:
                room, pools = self.pools.pools_with_room(), self.pools
                self._enqueue(self.batcher.flush(lambda key: pools.entry_of(key).name in room))
                self._enqueue(self.batcher.due(time.monotonic()))
            else:
                self._enqueue(self.batcher.flush())
        else:
            self._enqueue(self.batcher.due(time.monotonic()))

    def _flush_metrics(self) -> None:
        """Hand the metrics their figures (loop thread: the lags read the consumer)."""
        self.metrics.pools(
            [
                (e.name, e.pool.size, e.backlog, e.pool.last_cold_start_s)
                for e in self.pools.entries.values()
            ]
        )
        w = self.writer
        written = {
            "ok": w.results_ok,
            "error": w.results_error,
            "dead_letter": w.dead_letters,
        }
        assigned = self._assigned
        lags = partition_lags(
            self.consumer, assigned, lambda tp: self.tracker.pending(tp) if tp in assigned else 0
        )
        self.metrics.flush(
            written,
            in_flight=self.tracker.in_flight(),
            in_flight_bytes=self.held_bytes(),
            failed_deliveries=w.failed_deliveries,
            error_results=w.error_results,
            pool_size=self.pool.size,
            batches_queued=self.pools.batches_ready,
            paused=self.counters.paused,
            lags=lags,
        )

    def _follow_pool(self, now: float) -> None:
        """Leave the group while the pool cannot serve; rejoin once it can
        (rayml.executor.membership)."""
        change = self.membership.update(self.pool.serving, now)
        if change == "leave":
            logger.warning(
                "ingest=%s has had no serving worker for %.0fs (its %d workers wait for a node "
                "with room): leaving the consumer group so that its partitions go to ingests "
                "that can serve them",
                self.ingest_id,
                self.membership.unserved_for(now),
                self.pool.size,
            )
            # The revoke callback runs in the next poll: it commits what is done and drops
            # the queued rest, which the partitions' new owners read again.
            self.consumer.unsubscribe()
        elif change == "join":
            logger.info("ingest=%s has a serving worker again: rejoining", self.ingest_id)
            self.subscribe()

    def held_bytes(self) -> int:
        """What the byte budget counts: the values of the records in flight (each weighed by
        the poll that tracked it, held until its offset is done: its writes acknowledged, or
        its transaction committed, or its partition let go of) and the results the writer
        holds for topics that fail (waiting for their topic, or parked)."""
        return self.tracker.in_flight_bytes() + self.writer.held_bytes

    def _accept(self, limit: int, timeout: float) -> None:
        """Poll up to ``limit`` records (each tracked and weighed), fewer while a lane or
        tenant with a share is read (rayml.executor.intake), and triage them."""
        polled_bytes = self.counters.polled_bytes
        polled: list[Polled] = self.poll(self.intake.poll_limit(limit), timeout)
        if not polled:
            return
        self.intake.polled()
        self.window.observe(len(polled), self.counters.polled_bytes - polled_bytes)
        self.peak_in_flight_bytes = max(self.peak_in_flight_bytes, self.held_bytes())
        txn = self.txn
        if txn is not None:
            for _msg, tp, offset in polled:
                txn.track(tp, offset)
        self._enqueue(self.triage.take_all(polled, time.monotonic(), time.time() * 1000.0))

    def _enqueue(self, batches: list[Batch[Route, Pending]]) -> None:
        if batches:
            self.pools.enqueue_all([(batch.key, batch.items) for batch in batches])

    # -- answers -----------------------------------------------------------------------------

    def _answer_batch(self, batch: InFlight, outcome: BatchOutcome) -> None:
        if self.traces is not None and self.traces.tracing_any:
            self.traces.batch_returned(
                [(item.tp, item.offset) for item in batch.items],
                batch.dispatched_ms,
                time.time() * 1000.0,
                {
                    "rayml.worker": batch.worker_id,
                    "rayml.model": outcome.model_name,
                    "rayml.model.version": outcome.model_version or "",
                    "rayml.compute_ms": outcome.compute_ms,
                },
            )
        errors, now_ms = answer_batch(self.writer, batch, outcome)
        items = batch.items
        if items and (self.versions.rollouts or items[0].role is not None):
            self._rollout_copies(batch, outcome)
        if batch.items:
            first = batch.items[0]
            pipeline = first.request.pipeline
            self.metrics.batch_finished(pipeline, batch.items, errors, outcome.compute_ms, now_ms)
            # One tenant and lane a batch (rayml.executor.ready keeps classes apart).
            self.metrics.tenant_batch(first.tenant, first.lane, len(batch.items), errors)
            key = (first.tenant, first.lane)
            self.answered_by_class[key] = self.answered_by_class.get(key, 0) + len(batch.items)

    def _rollout_copies(self, batch: InFlight, outcome: BatchOutcome) -> None:
        """A model under rollout: record what answered, and queue the shadow's copy."""
        self.rollout_answers.answered(batch, outcome)
        shadows: dict[str, list[Pending]] = {}
        kept = self.rollout_answers.kept
        for item in batch.items:
            if item.shadow is not None and kept(item.request.id):
                shadows.setdefault(item.shadow, []).append(item)
        import_path, model, _version = batch.route
        for version, items in shadows.items():
            self.pools.enqueue_shadow((import_path, model, version), items)

    def _answer_shadow(self, batch: InFlight, outcome: BatchOutcome) -> None:
        self.rollout_answers.shadowed(batch, outcome)

    def _answer_exhausted(self, items: list[Pending], cause: BaseException) -> None:
        answer_exhausted(self.writer, items, cause)
        if any(item.role is not None for item in items):
            # A candidate that kills or hangs its workers: its figures must count the failures.
            self.rollout_answers.exhausted(items, self.versions)

    def _done(self, tp: TP, offset: int) -> None:
        # Once per result: try/except costs nothing when nothing is raised (contextlib.suppress
        # builds a context manager each time).
        try:  # noqa: SIM105 (the hot path: see above)
            self.tracker.done(tp, offset)
        except KeyError:
            pass  # the partition was revoked meanwhile; its new owner re-runs the record
        if self.traces is not None:
            self.traces.done((tp, offset))

    # -- offsets, backpressure, rebalance ----------------------------------------------------

    def commit(self, offsets: dict[TP, int] | None = None, *, wait: bool = True) -> None:
        """At-least-once: the watermark (``wait=False``: without waiting for the broker);
        exactly-once: the open transaction."""
        txn = self.txn
        if txn is None:
            super().commit(offsets, wait=wait)
            return
        if not wait:
            # The periodic commit seals the transaction and comes back each turn (the commit
            # stays due) until its writes are acknowledged: the loop polls and dispatches
            # meanwhile instead of waiting in a flush; then the commit thread sends the
            # offsets and commits while the loop goes on (step takes the outcome).
            if txn.committing:
                return  # the last one is still under way: at most one at a time
            if not txn.seal():
                self._last_commit = time.monotonic()  # nothing to commit
                return
            if not txn.delivered():
                return
            self._last_commit = time.monotonic()
            meta = self.consumer.consumer_group_metadata()
            if txn.begin_commit(meta):
                return
            # A write failed or the seal outlasted its bound: commit (or abort) here.
            self._take_commit(lambda: txn.commit(meta, sealed_only=True))
            return
        self._last_commit = time.monotonic()
        self._take_commit(lambda: txn.commit(self.consumer.consumer_group_metadata()))

    def _take_commit(self, commit: Callable[[], dict[TP, list[int]]]) -> None:
        """Exactly-once: run ``commit`` (a transaction's commit, or the taking of one that
        ended on the commit thread); its records (only they) are done."""
        try:
            done = commit()
        except TransactionAbortedError:
            self._rewind(set(self._assigned))
            return
        if done:
            for tp, offsets in done.items():
                for offset in offsets:
                    self._done(tp, offset)
            self.tracker.mark_committed(self.tracker.committable())
            self.counters.commits += 1

    def _rewind(self, tps: set[TP]) -> None:
        """Exactly-once, after an abort: redo every uncommitted record from the committed offsets.

        Batches still running finish into nothing (their offsets are no longer tracked), or
        into the same records tracked again after the seek, which is just as good: the reorder
        buffer takes the first result of a record and ignores a second.
        """
        assert self.txn is not None
        logger.warning("ingest=%s rewinding %d partitions", self.ingest_id, len(tps))
        self._unsettled |= tps
        self.txn.abort()
        if self.traces is not None:
            self.traces.forget(tps, "rewound")
        for tp in tps:
            self.tracker.reset(tp)
        self.txn.forget(tps)
        self.batcher.flush()  # dropped: these records are polled again
        self.pools.drop(tps)
        try:
            rewind_positions(self.consumer, tps)
        except Exception:
            # Positions unknown: nothing more may commit from here; the loop crashes and the
            # restarted actor resumes from the committed offsets.
            self.txn.usable = False
            raise

    def _apply_backpressure(self) -> None:
        in_flight, held = self.tracker.in_flight(), self.held_bytes()
        if not self.counters.paused and self.window.full(in_flight, held):
            self.pause(f"at {in_flight} records, {held} bytes in flight")
        elif self.counters.paused and self.window.should_resume(in_flight, held):
            self.resume(f"at {in_flight} records, {held} bytes in flight")
        # Lanes and tenant shares, per topic, beside the whole window's pause: from the
        # records in flight per assigned partition, after a poll or every few ms.
        intake, now = self.intake, time.monotonic()
        if intake.due(now):
            pending = self.tracker.pending
            if intake.update(((tp, pending(tp)) for tp in self._assigned), now):
                self.hold(intake.held)
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug(
                        "ingest=%s holds %s: %s",
                        self.ingest_id,
                        ", ".join(sorted(intake.held)) or "nothing",
                        intake.why,
                    )
            self.metrics.intake(intake.in_flight)

    # rebalance: the callbacks are ConsumerLoop's; these are the ingest's parts.

    def settle_revoked(self, revoked: set[TP]) -> None:
        """Finish (bounded) what is in flight for these partitions, and commit it."""
        txn = self.txn
        if txn is None:
            self._finish_in_flight(
                self.settings.executor.drain_timeout_s,
                lambda: sum(self.tracker.pending(tp) for tp in revoked),
            )
            self.commit(self.tracker.revoke(revoked))
        elif txn.usable:
            # Exactly-once: what is released is in the open transaction, with the revoked
            # partitions' offsets; commit it while they are still ours.
            pending = lambda: sum(txn.pending(tp) for tp in revoked)  # noqa: E731
            self._finish_in_flight(self.settings.executor.drain_timeout_s, pending)
            self.commit()

    def let_go(self, tps: set[TP]) -> None:
        if self.txn is not None:
            self.txn.forget(tps)
        self._drop_queued(tps)
        if self.traces is not None:
            self.traces.forget(tps)

    def after_lost(self, lost: set[TP]) -> None:
        if self.txn is not None and self.txn.usable:
            # The open transaction may have held results of the lost partitions, which the new
            # owner redoes: it is aborted, and the rest of ours redone too.
            self._rewind(set(self._assigned))

    def _drop_queued(self, tps: set[TP]) -> None:
        """Forget the not-yet-running requests of partitions let go of (their owner redoes them)."""
        for batch in self.batcher.flush():
            keep = [item for item in batch.items if item.tp not in tps]
            if keep:
                self.pools.enqueue(batch.key, keep)
        # Results parked for a timed-out reply_to too: answered again by the new owner anyway.
        dropped = self.pools.drop(tps) + self.writer.forget(tps)
        if dropped:
            logger.info(
                "ingest=%s left %d queued requests to the partitions' next owner",
                self.ingest_id,
                dropped,
            )

    def _finish_in_flight(self, timeout_s: float, remaining: Callable[[], int]) -> None:
        self._enqueue(self.batcher.flush())
        started = time.monotonic()
        deadline = started + timeout_s
        why = ""
        while remaining() > 0 and time.monotonic() < deadline:
            if self.pools.stuck():
                why = " (no worker serves the pools they wait for: waiting is pointless)"
                break  # nothing runs and no worker could run the rest
            self.pools.collect(block_s=0.01)
            self.producer.poll(0.001)
            self.writer.settle()
            # Exactly-once: keep committing while draining. A drain longer than the
            # transaction timeout would otherwise have the broker abort the open transaction
            # and fence this producer (a crash, and all the drained work redone).
            txn = self.txn
            if (
                txn is not None
                and txn.usable
                and time.monotonic() - self._last_commit >= self._commit_interval_s
            ):
                self.commit()
        self.producer.flush(max(0.0, deadline - time.monotonic()))
        if remaining() > 0:
            logger.warning(
                "ingest=%s gave up on %d unfinished records after %.1fs%s; they will be "
                "redelivered",
                self.ingest_id,
                remaining(),
                time.monotonic() - started,
                why,
            )

    def shutdown(self) -> None:
        logger.info(
            "ingest=%s draining %d records in flight (%d batches running, %d waiting)",
            self.ingest_id,
            self.tracker.in_flight(),
            self.pools.batches_in_flight,
            self.pools.batches_ready,
        )
        started = time.monotonic()
        try:
            if self.txn is None:
                self._finish_in_flight(
                    self.settings.executor.drain_timeout_s, self.tracker.in_flight
                )
                self.commit()
            elif self.txn.usable:  # not after a fatal (fenced) error: nothing may commit
                self._finish_in_flight(self.settings.executor.drain_timeout_s, self.txn.unreleased)
                self.commit()
            logger.info(
                "ingest=%s drained in %.1fs; leaving the group",
                self.ingest_id,
                time.monotonic() - started,
            )
        finally:
            try:
                # Leaves the group, after a crash too: partitions move at once (a consumer left
                # open would keep them, heartbeating, in a process that lives on).
                self.consumer.close()
            finally:
                self.pools.shutdown()
                self.writer.close()
                if self.txn is not None:
                    self.txn.close()
                self.versions.close()
                self.gc_pauses.uninstall()
                self.rollout_answers.close()
                if self.traces is not None:
                    self.traces.close()
                if self.tracing is not None:
                    self.tracing.shutdown()
                self._stopped.set()
                logger.info("ingest=%s stopped", self.ingest_id)

    # -- control (from other threads) --------------------------------------------------------

    def stop(self, timeout_s: float | None = None) -> bool:
        """Ask the loop to drain and stop; wait up to ``timeout_s``. True if it stopped."""
        self._stop.set()
        return self._stopped.wait(timeout_s)

    def resize(self, workers: int) -> None:
        """Change the default pool's size (applied by the loop thread)."""
        self._commands.put(lambda: self.pools.resize(DEFAULT_POOL, workers))

    def resize_pool(self, name: str, workers: int) -> None:
        """Change one pool's size, within its bounds (applied by the loop thread)."""
        self._commands.put(lambda: self.pools.resize(name, workers))

    def status(self) -> dict[str, Any]:
        c, w = self.counters, self.writer
        status: dict[str, Any] = {
            "ingest_id": self.ingest_id,
            "pid": os.getpid(),
            "rss_bytes": psutil.Process().memory_info().rss,
            "assignment": self.assignment_names(),
            "in_flight": self.tracker.in_flight(),
            # The byte budget's use: record values in flight and, of those, the results held
            # by the writer for failing topics.
            "in_flight_bytes": self.held_bytes(),
            "held_result_bytes": w.held_bytes,
            "peak_in_flight_bytes": self.peak_in_flight_bytes,
            "max_in_flight_bytes": self.window.max_bytes,
            "batches_in_flight": self.pools.batches_in_flight,
            "batches_ready": self.pools.batches_ready,
            "buffered": len(self.batcher),
            "paused": c.paused,
            "pool_size": self.pool.size,
            "workers_starting": self.pool.starting,
            "in_group": self.membership.in_group,
            "workers_replaced": self.pool.replaced,
            "polled": c.polled,
            "results_ok": w.results_ok,
            "results_error": w.results_error,
            "dead_letters": w.dead_letters,
            "refused": self.triage.refused,
            "errors_scrubbed": w.errors_scrubbed,
            "failed_deliveries": w.failed_total,
            # Topics whose writes fail now (retried with backoff, offsets uncommitted).
            "failing_topics": list(w.failing_topics),
            "batches": self.pools.counter("batches"),
            "redispatched": self.pools.counter("redispatched"),
            # Every pool: its pipelines, shape, size, backlog, last cold start.
            "pools": self.pools.status(),
            # Answered by a worker, per tenant and lane.
            "answered_by_tenant": _by_tenant(dict(self.answered_by_class)),
            "commits": c.commits,
            "delivery": self.settings.executor.delivery,
            "uptime_s": round(time.time() - c.started_at, 3),
            "gc": self.gc_pauses.snapshot(),
            # Records in flight per tenant and lane, the shares, what waits (rayml.executor.intake).
            "intake": self.intake.status(),
        }
        if self.tracing is not None and self.traces is not None:
            # Requests given spans so far, and those in flight whose result owes a traceparent.
            status["tracing"] = {
                "endpoint": self.tracing.url,
                "traced": self.traces.traced,
                "over_budget": self.traces.over_budget,
                "open": len(self.traces),
            }
        ra = self.rollout_answers
        rollouts = self.versions.rollouts
        if (
            rollouts
            or ra.written
            or self.pools.counter("shadow_sent")
            or self.pools.counter("shadow_skipped")
        ):
            status["rollout"] = {
                "under_rollout": {m: r.model_dump() for m, r in sorted(rollouts.items())},
                "answers_written": ra.written,
                "answers_dropped": ra.dropped,
                "answers_failed": ra.failed,
                "shadow_sent": self.pools.counter("shadow_sent"),
                "shadow_queued": self.pools.counter("shadow_queued"),
                "shadow_skipped": self.pools.counter("shadow_skipped"),
                # The share of request ids whose answers are written (and shadowed) now.
                "answers_sample": round(ra.sample, 4),
                "answers_sampled_out": ra.sampled_out,
            }
        if self.txn is not None:
            status["transaction_aborts"] = self.txn.aborts
            status["transaction_commit_s"] = round(self.txn.commit_s, 3)
            status["transaction_commit_thread_s"] = round(self.txn.commit_thread_s, 3)
            status["transaction_sealed_s"] = round(self.txn.sealed_s, 3)
            status["transaction_held"] = self.txn.held
        return status


def _by_tenant(counts: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (tenant, lane), n in counts.items():
        out.setdefault(tenant, {})[lane] = n
    return out
