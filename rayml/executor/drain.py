"""How an ingest gives its partitions back: the bounded drain of a revoke and of shutdown.

A revoke finishes what is in flight for the revoked partitions, within ``drain_timeout_s``,
and commits it while they are still the ingest's own; what is still queued for partitions let
go of (revoked or lost) is dropped, since their next owner reads it again. Shutdown drains
everything the same way and commits, before the ingest leaves the group. What is not finished
in time is not committed, so it is redelivered. An ingest whose pool has had no serving worker
for ``leave_group_without_workers_s`` leaves the group (its revoke drains) and joins again once
a worker serves. The rebalance callbacks that call these are
:class:`~rayml.delivery.consumer_loop.ConsumerLoop`'s; why and how it is tested:
docs/architecture.md ("Drain (SIGTERM, revoke)", "Workers and failures", "Exactly-once").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Producer

    from rayml.config import Settings
    from rayml.delivery.offsets import OffsetTracker
    from rayml.delivery.result_writer import ResultWriter
    from rayml.delivery.transactions import TransactionalOutput
    from rayml.executor.batching import Batch, MicroBatcher
    from rayml.executor.membership import ServingWatch
    from rayml.executor.pool import WorkerPool
    from rayml.executor.pools import Pools
    from rayml.executor.work import Pending, Route
    from rayml.kafka.partitions import TP

logger = logging.getLogger(__name__)

__all__ = ["Draining", "drain_all", "drop_queued", "follow_pool", "settle_revoked"]


class Draining(Protocol):
    """What a drain uses of an ingest (:class:`~rayml.executor.ingest.Ingest` is one)."""

    ingest_id: str
    settings: Settings
    consumer: Consumer
    producer: Producer
    tracker: OffsetTracker
    txn: TransactionalOutput | None
    commit_interval_s: float
    batcher: MicroBatcher[Route, Pending]
    pools: Pools
    writer: ResultWriter
    pool: WorkerPool
    membership: ServingWatch

    def enqueue(self, batches: list[Batch[Route, Pending]]) -> None: ...

    def commit(self, offsets: dict[TP, int] | None = None, *, wait: bool = True) -> None: ...

    def commit_due(self, interval_s: float) -> bool: ...

    def subscribe(self) -> None: ...


def settle_revoked(ingest: Draining, revoked: set[TP]) -> None:
    """Finish (bounded) what is in flight for these partitions, and commit it."""
    txn = ingest.txn
    if txn is None:
        _finish_in_flight(
            ingest,
            ingest.settings.executor.drain_timeout_s,
            lambda: sum(ingest.tracker.pending(tp) for tp in revoked),
        )
        ingest.commit(ingest.tracker.revoke(revoked))
    elif txn.usable:
        # Exactly-once: what is released is in the open transaction, with the revoked
        # partitions' offsets; commit it while they are still ours.
        pending = lambda: sum(txn.pending(tp) for tp in revoked)  # noqa: E731
        _finish_in_flight(ingest, ingest.settings.executor.drain_timeout_s, pending)
        ingest.commit()


def drop_queued(ingest: Draining, tps: set[TP]) -> None:
    """Forget the not-yet-running requests of partitions let go of (their owner redoes them)."""
    for batch in ingest.batcher.flush():
        keep = [item for item in batch.items if item.tp not in tps]
        if keep:
            ingest.pools.enqueue(batch.key, keep)
    # Results parked for a timed-out reply_to too: answered again by the new owner anyway.
    dropped = ingest.pools.drop(tps) + ingest.writer.forget(tps)
    if dropped:
        logger.info(
            "ingest=%s left %d queued requests to the partitions' next owner",
            ingest.ingest_id,
            dropped,
        )


def drain_all(ingest: Draining) -> None:
    """Shutdown: finish (bounded) everything in flight and commit it (not after a fatal error
    of the transaction: then nothing may commit)."""
    logger.info(
        "ingest=%s draining %d records in flight (%d batches running, %d waiting)",
        ingest.ingest_id,
        ingest.tracker.in_flight(),
        ingest.pools.batches_in_flight,
        ingest.pools.batches_ready,
    )
    started = time.monotonic()
    if ingest.txn is None:
        _finish_in_flight(
            ingest, ingest.settings.executor.drain_timeout_s, ingest.tracker.in_flight
        )
        ingest.commit()
    elif ingest.txn.usable:  # not after a fatal (fenced) error: nothing may commit
        _finish_in_flight(ingest, ingest.settings.executor.drain_timeout_s, ingest.txn.unreleased)
        ingest.commit()
    logger.info(
        "ingest=%s drained in %.1fs; leaving the group",
        ingest.ingest_id,
        time.monotonic() - started,
    )


def follow_pool(ingest: Draining, now: float) -> None:
    """Leave the group while the pool cannot serve; rejoin once it can
    (rayml.executor.membership)."""
    change = ingest.membership.update(ingest.pool.serving, now)
    if change == "leave":
        logger.warning(
            "ingest=%s has had no serving worker for %.0fs (its %d workers wait for a node "
            "with room): leaving the consumer group so that its partitions go to ingests "
            "that can serve them",
            ingest.ingest_id,
            ingest.membership.unserved_for(now),
            ingest.pool.size,
        )
        # The revoke callback runs in the next poll: it commits what is done and drops
        # the queued rest, which the partitions' new owners read again.
        ingest.consumer.unsubscribe()
    elif change == "join":
        logger.info("ingest=%s has a serving worker again: rejoining", ingest.ingest_id)
        ingest.subscribe()


def _finish_in_flight(ingest: Draining, timeout_s: float, remaining: Callable[[], int]) -> None:
    ingest.enqueue(ingest.batcher.flush())
    started = time.monotonic()
    deadline = started + timeout_s
    why = ""
    while remaining() > 0 and time.monotonic() < deadline:
        if ingest.pools.stuck():
            why = " (no worker serves the pools they wait for: waiting is pointless)"
            break  # nothing runs and no worker could run the rest
        ingest.pools.collect(block_s=0.01)
        ingest.producer.poll(0.001)
        ingest.writer.settle()
        # Exactly-once: keep committing while draining. A drain longer than the
        # transaction timeout would otherwise have the broker abort the open transaction
        # and fence this producer (a crash, and all the drained work redone).
        txn = ingest.txn
        if txn is not None and txn.usable and ingest.commit_due(ingest.commit_interval_s):
            ingest.commit()
    ingest.producer.flush(max(0.0, deadline - time.monotonic()))
    if remaining() > 0:
        logger.warning(
            "ingest=%s gave up on %d unfinished records after %.1fs%s; they will be redelivered",
            ingest.ingest_id,
            remaining(),
            time.monotonic() - started,
            why,
        )
