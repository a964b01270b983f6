"""The ingest loop: Kafka consumer-group member → micro-batches → worker pool → results → commits.

One :class:`Ingest` runs a single loop thread that owns its Kafka consumer and producer (only
:mod:`rayml.kafka.topic_checks` asks the producer for topic metadata from a thread of its own;
librdkafka handles are thread-safe). Each turn (:meth:`Ingest.step`) polls what the in-flight
window (:mod:`rayml.executor.window`) and the lanes and tenant shares
(:mod:`rayml.executor.intake`) leave room for, triages the records
(:mod:`rayml.executor.triage`), hands due batches to the pools (:mod:`rayml.executor.pools`,
:mod:`rayml.executor.dispatch`: one Ray call per batch), answers the finished ones
(:mod:`rayml.executor.answers`), and commits when due: the watermark of the records whose
writes are acknowledged, or exactly-once the transaction that holds their writes and offsets
(:mod:`rayml.delivery.transactions`). Where it writes is :mod:`rayml.executor.outputs`; how it
gives partitions back (revoke, shutdown, a pool that cannot serve), :mod:`rayml.executor.drain`;
what it reports, :mod:`rayml.executor.ingest_status`. Each step, the backpressure and the
delivery guarantees: docs/architecture.md ("The ingest loop", "Exactly-once", "Drain").

:class:`rayml.executor.service.IngestActorImpl` wraps it as a Ray actor (``num_cpus=0``) whose
control calls (status, resize, drain) run on other actor threads while the loop works.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from typing import Any

from rayml.config import Settings
from rayml.delivery.consumer_loop import ConsumerLoop, LoopCounters, Polled
from rayml.delivery.txn_errors import TransactionAbortedError
from rayml.executor import drain
from rayml.executor.answers import answer_batch, answer_exhausted, answer_expired
from rayml.executor.batching import Batch, MicroBatcher
from rayml.executor.dispatch import Dispatcher
from rayml.executor.gc_pauses import GcPauses
from rayml.executor.ingest_status import flush_metrics, ingest_status
from rayml.executor.intake import Intake
from rayml.executor.membership import ServingWatch
from rayml.executor.outputs import ingest_outputs
from rayml.executor.pool import WorkerPool
from rayml.executor.pools import DEFAULT_POOL, Pools, dispatch_shares
from rayml.executor.rollout_answers import RolloutAnswers
from rayml.executor.triage import Triage
from rayml.executor.version_follower import LatestVersions
from rayml.executor.window import InFlightWindow
from rayml.executor.work import BatchOutcome, InFlight, Pending, Route
from rayml.kafka import clients as kafka_clients
from rayml.kafka.partitions import TP
from rayml.metrics import IngestMetrics
from rayml.pipeline import Registry
from rayml.tenancy.rules import Tenancy
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
        # The producer for the delivery mode, the transaction (exactly-once), the result writer.
        outputs = ingest_outputs(settings, ingest_id, self.tenancy, self._done, self.traces)
        self.producer, self.txn, self.writer = outputs.producer, outputs.txn, outputs.writer
        self.commit_interval_s = outputs.commit_interval_s
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
        if self.commit_due(self.commit_interval_s):
            # The periodic commit does not stop the loop for a broker round trip (it did, for
            # up to tens of ms a second on a busy machine: every request polled meanwhile waited).
            self.commit(wait=False)
        if now >= self._next_membership_check:
            self._next_membership_check = now + 0.5
            drain.follow_pool(self, now)
            self.pools.refresh(now)
            self.pools.release_idle(now)
        if self.metrics.due(now):
            flush_metrics(self, self._assigned)

    def _send_buffered(self) -> None:
        """Hand the batcher's due batches to the pools; with ``dispatch_when_idle``, also what
        it holds for a pool whose worker has room for a batch now (it would wait for its batch
        wait while the worker had nothing queued to run next; another pool's batches keep
        filling)."""
        if self._dispatch_when_idle and len(self.batcher) and self.pools.room():
            if self.pools.many:
                room, pools = self.pools.pools_with_room(), self.pools
                self.enqueue(self.batcher.flush(lambda key: pools.entry_of(key).name in room))
                self.enqueue(self.batcher.due(time.monotonic()))
            else:
                self.enqueue(self.batcher.flush())
        else:
            self.enqueue(self.batcher.due(time.monotonic()))

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
        self.enqueue(self.triage.take_all(polled, time.monotonic(), time.time() * 1000.0))

    def enqueue(self, batches: list[Batch[Route, Pending]]) -> None:
        """Hand batches to their pools' ready queues."""
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
        self.rewind(tps)  # raises if positions are unknown (nothing more commits then)

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
        drain.settle_revoked(self, revoked)

    def let_go(self, tps: set[TP]) -> None:
        if self.txn is not None:
            self.txn.forget(tps)
        drain.drop_queued(self, tps)
        if self.traces is not None:
            self.traces.forget(tps)

    def after_lost(self, lost: set[TP]) -> None:
        if self.txn is not None and self.txn.usable:
            # The open transaction may have held results of the lost partitions, which the new
            # owner redoes: it is aborted, and the rest of ours redone too.
            self._rewind(set(self._assigned))

    def shutdown(self) -> None:
        """Drain (bounded) and commit (rayml.executor.drain), leave the group, close."""
        try:
            drain.drain_all(self)
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
        """What this ingest has done and holds now (:mod:`rayml.executor.ingest_status`)."""
        return ingest_status(self)
