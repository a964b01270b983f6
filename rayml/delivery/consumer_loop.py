"""The consumer-group member that the ingest and the job runner both are.

One skeleton, so that a fix to rebalance handling is made once:

* **subscribe** to its topics (every tenant's request topics of its kind) with the three
  rebalance callbacks;
* **poll** that returns the first record at once (a lone request on an idle member does not sit
  out the poll timeout), drops the consumer's error events, and tracks every record's offset as
  unfinished in an :class:`~rayml.delivery.offsets.OffsetTracker`, weighed by its value's
  length in the same call (the ingest's byte budget reads it);
* **pause** the whole assignment (backpressure) and resume it; while paused the consumer is
  still polled without waiting: that poll serves rebalance callbacks (a leave's revocation among
  them) and keeps the member within ``max.poll.interval.ms``; a record read while paused
  pauses its partition (``pause()`` silently skips a partition librdkafka has not seen yet);
* **hold** some topics (the ingest's priority lanes and tenant shares:
  :mod:`rayml.executor.intake`): their assigned partitions are paused on their own, beside the
  whole-assignment pause, and the two compose: a resume of the whole assignment leaves the held
  topics paused, and a topic let go of while the whole assignment is paused is resumed with it;
  a record of a held topic read anyway pauses its partition, as above;
* **assign** sets the member's pause state on the partitions it adds, either way: paused while
  the whole assignment is, or while their topic is held, resumed otherwise (librdkafka keeps a
  revoked partition's pause, so one let go of while paused would come back paused for good);
* **revoke** finishes, within a bound, what the member holds of those partitions, commits their
  watermark, and lets go of them *even when the drain or the commit raised* (confluent-kafka
  unassigns them anyway: nothing of theirs may be tracked or committed by this member again);
* **lost** lets go at once without committing (another member may own them already);
* **commit** the watermark of done offsets: synchronous on revocation and at shutdown,
  per-partition errors checked; the periodic commit may go without waiting (:meth:`commit`).

What a member does with its records, how it drains and what it drops when it lets go are its
own: subclasses implement :meth:`ConsumerLoop.step`, :meth:`ConsumerLoop.settle_revoked`,
:meth:`ConsumerLoop.let_go` and :meth:`ConsumerLoop.shutdown`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from rayml.delivery.offsets import OffsetTracker
from rayml.delivery.transactions import TransactionalOutput
from rayml.kafka import clients as kafka_clients
from rayml.kafka.clients import partition_names
from rayml.kafka.partitions import TP

logger = logging.getLogger(__name__)

__all__ = ["ConsumerLoop", "LoopCounters", "Polled"]

# One polled record with its partition and offset, read once.
Polled = tuple[Message, TP, int]


@dataclass
class LoopCounters:
    """What a member has done since it started (status and metrics)."""

    polled: int = 0
    polled_bytes: int = 0  # what the polled records' values weigh
    commits: int = 0
    paused: bool = False
    started_at: float = field(default_factory=time.time)


class ConsumerLoop:
    """A consumer-group member on its topics. Use :meth:`run` in a thread, stop from another.

    Args:
        consumer: Its own consumer (``enable.auto.commit`` off); only the loop thread calls it.
        topics: The topics it subscribes to.
        owner: How log lines name the member (``ingest=...``, ``runner=...``).
        counters: Its counters (a subclass may extend :class:`LoopCounters`).
    """

    # Exactly-once: the member's transactional output (set by the subclass before the loop
    # runs); None: at-least-once.
    txn: TransactionalOutput | None = None

    def __init__(
        self, consumer: Consumer, topics: list[str], owner: str, counters: LoopCounters
    ) -> None:
        self.consumer = consumer
        self.topics = list(topics)
        self.owner = owner
        self.counters = counters
        self.tracker = OffsetTracker()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._last_commit = time.monotonic()
        # Kept by the rebalance callbacks (loop thread) and replaced, never mutated: status()
        # reads it from other threads, which must not call the consumer (it blocks behind its
        # poll).
        self._assigned: frozenset[TP] = frozenset()
        # Partitions revoked, lost or rewound since the current poll began (see _poll).
        self._unsettled: set[TP] = set()
        # Topics whose partitions are paused on their own (hold()), whatever the whole
        # assignment's state; replaced, never mutated.
        self._held_topics: frozenset[str] = frozenset()

    # -- what a member does ------------------------------------------------------------------

    def step(self) -> None:
        """One turn of the loop (poll, work, commit when due)."""
        raise NotImplementedError

    def settle_revoked(self, revoked: set[TP]) -> None:
        """Finish (bounded) what is held of ``revoked`` and commit it, while they are ours.

        The default commits the watermark of what is done; a member drains first.
        """
        self.commit(self.tracker.revoke(revoked))

    def let_go(self, tps: set[TP]) -> None:
        """Forget what is held of partitions revoked or lost (their next owner redoes it)."""

    def after_lost(self, lost: set[TP]) -> None:
        """React to partitions lost (after they are let go of)."""

    def crashed(self, exc: Exception) -> BaseException:
        """The loop raised ``exc``: return what to raise (``exc`` itself, at-least-once)."""
        if self.txn is not None:
            # Exactly-once: nothing more commits; the restarted actor redoes what was open.
            return self.txn.give_up(exc)
        return exc

    def shutdown(self) -> None:
        """Drain (bounded), commit, and close the consumer (leaving the group); never raise
        without closing it."""
        self.consumer.close()

    def rewind(self, tps: set[TP]) -> None:
        """Exactly-once, after an abort: seek ``tps`` back to their committed offsets
        (:func:`rewind_positions`). If that fails, the positions are unknown: nothing more
        may commit from here (it raises; the loop crashes and the restarted actor resumes
        from the committed offsets)."""
        try:
            rewind_positions(self.consumer, tps)
        except Exception:
            if self.txn is not None:
                self.txn.usable = False
            raise

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Consume until :meth:`stop`; then :meth:`shutdown` (after a crash too)."""
        if self.txn is not None:
            self.txn.start()
        self.subscribe()
        try:
            while not self._stop.is_set():
                self.step()
        except Exception as exc:
            logger.exception("%s loop crashed", self.owner)
            cause = self.crashed(exc)
            if cause is not exc:
                raise cause from exc
            raise
        finally:
            self.shutdown()

    def subscribe(self) -> None:
        self.consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        logger.info("%s subscribed to %s", self.owner, ", ".join(self.topics))

    def poll(self, limit: int, timeout: float) -> list[Polled]:
        """Up to ``limit`` records, each tracked as unfinished, weighed by its value's length;
        ``timeout`` waits for the first.

        While paused, a record that was read anyway pauses its partition (it is still returned
        and tracked: it has been read).
        """
        messages = self._poll(limit, timeout)
        if messages:
            if self.counters.paused:
                kafka_clients.pause_strays(self.consumer, messages, self.owner)
            elif self._held_topics:
                held = self._held_topics
                strays = [m for m in messages if m.topic() in held and m.error() is None]
                if strays:
                    # Read from a held topic: a partition paused in on_assign before
                    # librdkafka knew it, or a record already on its way at the pause. Kept,
                    # as any record read; its partition paused again (DEBUG: lanes pause and
                    # resume often).
                    stray = [TopicPartition(m.topic(), m.partition()) for m in strays]  # type: ignore[arg-type]
                    logger.debug("%s read held %s: pausing it", self.owner, partition_names(stray))
                    self.consumer.pause(stray)
        polled: list[Polled] = []
        nbytes = 0
        track = self.tracker.track
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    logger.warning("%s consumer error: %s", self.owner, err)
                continue
            tp: TP = (msg.topic(), msg.partition())  # type: ignore[assignment]
            offset: int = msg.offset()  # type: ignore[assignment]
            size = len(msg.value() or b"")
            track(tp, offset, size)
            nbytes += size
            polled.append((msg, tp, offset))
        self.counters.polled += len(polled)
        self.counters.polled_bytes += nbytes
        return polled

    def _poll(self, limit: int, timeout: float) -> list[Message]:
        """Up to ``limit`` records, returning as soon as the first one is there.

        ``consume(limit, timeout)`` alone waits for ``limit`` records or the whole timeout, so
        a lone request on an idle member would sit out the timeout before being handled.
        """
        if timeout <= 0:
            return self.consumer.consume(limit, 0)
        first = self.consumer.poll(timeout)
        if first is None or limit == 1:
            return [] if first is None else [first]
        self._unsettled = set()
        rest = self.consumer.consume(limit - 1, 0)
        if self._unsettled and (first.topic(), first.partition()) in self._unsettled:
            # A callback in consume() revoked, lost or rewound the first record's partition:
            # librdkafka dropped its other fetched records, but not the one already returned.
            # Its partition is re-read from the committed offset (by us or its new owner).
            return rest
        return [first, *rest]

    # -- backpressure and commits ------------------------------------------------------------

    def pause(self, why: str) -> None:
        """Pause every assigned partition (no-op when paused already)."""
        if not self.counters.paused:
            self.consumer.pause(self.consumer.assignment())
            self.counters.paused = True
            logger.info("%s paused %s", self.owner, why)

    def resume(self, why: str) -> None:
        """Resume every assigned partition but those of held topics (no-op when not paused)."""
        if self.counters.paused:
            held = self._held_topics
            assigned = self.consumer.assignment()
            self.consumer.resume([tp for tp in assigned if tp.topic not in held])
            self.counters.paused = False
            logger.info("%s resumed %s", self.owner, why)

    def hold(self, topics: frozenset[str]) -> None:
        """Pause the assigned partitions of ``topics`` on their own, and resume those of the
        topics held before and not now (while the whole assignment is not paused; while it
        is, :meth:`resume` applies the held set). Cheap when nothing changes."""
        before = self._held_topics
        if topics == before:
            return
        self._held_topics = topics
        if self.counters.paused:
            return  # every partition is paused; resume() leaves the held ones paused
        assigned = self._assigned
        pause = [TopicPartition(t, p) for t, p in assigned if t in topics and t not in before]
        resume = [TopicPartition(t, p) for t, p in assigned if t in before and t not in topics]
        if pause:
            self.consumer.pause(pause)
        if resume:
            self.consumer.resume(resume)

    @property
    def held_topics(self) -> frozenset[str]:
        """The topics whose partitions are paused on their own (:meth:`hold`)."""
        return self._held_topics

    def commit_due(self, interval_s: float) -> bool:
        return time.monotonic() - self._last_commit >= interval_s

    def commit(self, offsets: dict[TP, int] | None = None, *, wait: bool = True) -> None:
        """Commit ``offsets`` (default: every partition whose watermark moved).

        ``wait=False`` (the periodic commit of a member whose consumer has an ``on_commit``
        callback, :meth:`on_commit`) sends it and goes on: the loop does not stop for the
        broker's round trip; the answer marks the offsets committed in a later poll, and a
        refused commit leaves them committable for the next one. A revocation and the last
        commit at shutdown wait.
        """
        self._last_commit = time.monotonic()
        offsets = self.tracker.committable() if offsets is None else offsets
        if not wait:
            kafka_clients.commit_offsets_async(self.consumer, offsets, self.owner)
            return
        committed = kafka_clients.commit_offsets(self.consumer, offsets, self.owner)
        if committed:
            self.tracker.mark_committed(committed)
            self.counters.commits += 1

    def on_commit(self, err: Any, partitions: list[TopicPartition]) -> None:
        """The consumer's ``on_commit`` callback (loop thread, in a poll): what the broker
        accepted is committed (a late or repeated answer changes nothing)."""
        committed = kafka_clients.committed_in(err, partitions, self.owner)
        if committed:
            self.tracker.mark_committed(committed)
            self.counters.commits += 1

    # -- rebalance callbacks (run inside the loop thread's poll) -----------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        logger.info("%s assigned %s", self.owner, partition_names(partitions))
        self._assigned = self._assigned | {(tp.topic, tp.partition) for tp in partitions}
        held = self._held_topics
        if self.counters.paused or not held:
            kafka_clients.set_pause_state(consumer, partitions, self.counters.paused)
        else:
            kafka_clients.set_pause_state(
                consumer, [tp for tp in partitions if tp.topic in held], True
            )
            kafka_clients.set_pause_state(
                consumer, [tp for tp in partitions if tp.topic not in held], False
            )

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Finish (bounded) what is in flight for these partitions, commit, then let go."""
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        logger.info("%s revoking %s", self.owner, partition_names(partitions))
        self._unsettled |= revoked
        started = time.monotonic()
        try:
            self.settle_revoked(revoked)
        finally:
            # Let go even if the drain or the commit raised (confluent-kafka unassigns them
            # anyway): nothing of theirs may be tracked or committed by this member again.
            self.tracker.revoke(revoked)
            self.let_go(revoked)
            self._assigned = self._assigned - revoked
        logger.info(
            "%s let go of %s after %.2fs",
            self.owner,
            partition_names(partitions),
            time.monotonic() - started,
        )

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Another member may own these already: committing now could move its offsets.
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self._unsettled |= lost
        self.tracker.revoke(lost)
        self.let_go(lost)
        self._assigned = self._assigned - lost
        self.after_lost(lost)
        logger.warning("%s lost %s", self.owner, partition_names(partitions))

    # -- control (from other threads) --------------------------------------------------------

    def assignment_names(self) -> list[str]:
        """The assigned partitions as ``topic[p]`` (safe from any thread)."""
        return sorted(f"{t}[{p}]" for t, p in self._assigned)


def rewind_positions(consumer: Any, tps: set[TP], timeout_s: float = 30.0) -> None:
    """Seek ``tps`` back to their committed offsets (the beginning where none is committed).

    Raises:
        KafkaException: The committed offset of one of them is unknown (a per-partition error:
            seeking to the beginning instead would redo the whole partition), or a seek failed.
            A partition whose fetcher has not started yet (``_STATE``) is skipped: it starts at
            its committed offset anyway.
    """
    if not tps:
        return
    parts = [TopicPartition(t, p) for t, p in sorted(tps)]
    for tp in consumer.committed(parts, timeout=timeout_s):
        if tp.error is not None:
            raise KafkaException(tp.error)
        offset = tp.offset if tp.offset >= 0 else -2  # OFFSET_BEGINNING (auto.offset.reset)
        try:
            consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not isinstance(err, KafkaError) or err.code() != KafkaError._STATE:
                raise
