"""Commit watermarks: which input offsets are safe to commit when work finishes out of order.

Kafka commits one position per partition: "everything before this offset is handled". Requests
of one partition are polled in offset order but finish in any order (batches run in parallel on
different workers, an error answer is acknowledged before an earlier result), so committing
the offset of the message that just finished could skip one still in flight -- and a crash would
then lose it. The watermark is instead one past the highest offset below which *every* tracked
message is done. Committing only watermarks gives at-least-once delivery: after a crash, messages
above the last watermark are polled and run again, none is skipped.

Offsets of one partition need not be contiguous (compaction, transaction markers); only tracked
offsets hold the watermark back.

A tracked offset may also carry a weight in bytes, given with it in the same call (the consumer
loop weighs each record by its value's length: ``track(tp, offset, size)``), held until the
offset is done or its partition is forgotten: :meth:`OffsetTracker.in_flight_bytes` is what the
ingest's byte budget reads.

This module is pure bookkeeping (no Kafka client), so its guarantees are property-tested.

Example:
    >>> t = OffsetTracker()
    >>> tp = ("ml.pipeline.input", 0)
    >>> for offset in (10, 11, 14):
    ...     t.track(tp, offset)
    >>> t.done(tp, 11)  # returns whether the watermark moved
    False
    >>> t.committable()  # 10 is still running, so nothing is safe to commit yet
    {}
    >>> t.done(tp, 10)
    True
    >>> t.committable()
    {('ml.pipeline.input', 0): 12}
    >>> t.mark_committed({tp: 12})
    >>> t.committable(), t.in_flight()
    ({}, 1)
    >>> t.track(tp, 15, 1_000)  # offset 15's record holds 1,000 bytes until it is done
    >>> t.in_flight_bytes(), t.done(tp, 14), t.done(tp, 15), t.in_flight_bytes()
    (1000, True, True, 0)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from rayml.kafka.partitions import TP

__all__ = ["OffsetTracker", "PartitionOffsets"]

_DONE = -1  # the state of a done offset (a weight is never negative)


class PartitionOffsets:
    """The watermark of one partition.

    Each :meth:`track` and :meth:`done` is O(1) amortized: tracked offsets wait in a FIFO in
    offset order with a done flag each, and the head is popped as soon as it is done, so no call
    sorts or scans more than what it pops.

    Offsets below the watermark are forgotten. A repeated :meth:`done` for one of them is accepted
    as a no-op (it can no longer hold anything back, and delivery callbacks may report twice);
    any other offset that was never tracked raises :class:`KeyError`.
    """

    __slots__ = (
        "_committed",
        "_first",
        "_last",
        "_pending",
        "_pending_bytes",
        "_queue",
        "_state",
        "_watermark",
    )

    def __init__(self) -> None:
        self._queue: deque[int] = deque()  # tracked offsets not yet passed by the watermark
        # The same offsets -> their weight in bytes while unfinished, _DONE once done: one dict
        # for both, so that tracking a weighed offset costs no more than tracking one.
        self._state: dict[int, int] = {}
        self._pending = 0  # how many offsets in _state are not done
        self._first: int | None = None  # lowest offset ever tracked: below it, nothing is known
        self._last: int | None = None  # highest offset tracked
        self._watermark: int | None = None  # next offset to commit; None until a head is done
        self._committed: int | None = None  # highest offset reported committed
        self._pending_bytes = 0  # what the unfinished offsets weigh

    @property
    def watermark(self) -> int | None:
        """The committable offset (one past the contiguous done prefix), or ``None`` yet."""
        return self._watermark

    @property
    def committed(self) -> int | None:
        """The highest offset passed to :meth:`mark_committed`, or ``None``."""
        return self._committed

    @property
    def pending(self) -> int:
        """How many tracked messages are not done yet."""
        return self._pending

    @property
    def pending_bytes(self) -> int:
        """The bytes that tracked, not yet done messages weigh (see :meth:`track`)."""
        return self._pending_bytes

    @property
    def last_tracked(self) -> int | None:
        """The highest offset tracked so far, or ``None``."""
        return self._last

    @property
    def advanced(self) -> bool:
        """Whether the watermark is beyond the last committed offset."""
        wm = self._watermark
        return wm is not None and (self._committed is None or wm > self._committed)

    def track(self, offset: int, size: int = 0) -> None:
        """Start tracking ``offset``, which must be above every offset tracked before; it
        weighs ``size`` bytes until it is done.

        Raises:
            ValueError: ``offset`` or ``size`` is negative, or ``offset`` is not above the last
                tracked offset.
        """
        if offset < 0 or size < 0:
            raise ValueError(f"offset {offset} or size {size} is negative")
        if self._last is not None and offset <= self._last:
            # Out-of-order tracking would break the FIFO's order, and with it the guarantee never
            # to commit past unfinished work. A seek must go through reset() first.
            raise ValueError(
                f"offset {offset} is not above the last tracked offset {self._last}; "
                "offsets must be tracked in increasing order (reset the partition after a seek)"
            )
        if self._first is None:
            self._first = offset
        self._last = offset
        self._queue.append(offset)
        self._state[offset] = size
        self._pending += 1
        self._pending_bytes += size

    def done(self, offset: int) -> bool:
        """Mark ``offset`` done (idempotent); its weight is released.

        Returns:
            Whether the watermark moved.

        Raises:
            KeyError: ``offset`` was never tracked.
        """
        state = self._state
        weight = state.get(offset)
        if weight is None:
            wm, first = self._watermark, self._first
            if wm is not None and first is not None and first <= offset < wm:
                return False  # passed by the watermark, so reported done before
            raise KeyError(offset)
        if weight == _DONE:
            return False
        state[offset] = _DONE
        self._pending -= 1
        self._pending_bytes -= weight
        queue = self._queue
        if offset != queue[0]:
            return False  # finished out of order: an earlier message still holds the line
        # The head is done: pop it and every done offset right behind it. Each offset is popped
        # once, which is what makes done() O(1) amortized.
        last = offset
        while queue and state[queue[0]] == _DONE:
            last = queue.popleft()
            del state[last]
        # One past the last done offset, not up to the next tracked one: the gap in between holds
        # no tracked message, but committing exactly "after the last finished one" is the
        # simplest rule to reason about and loses nothing.
        self._watermark = last + 1
        return True

    def mark_committed(self, offset: int) -> None:
        """Record that ``offset`` was committed; an older report (a late callback) is ignored."""
        if self._committed is None or offset > self._committed:
            self._committed = offset


class OffsetTracker:
    """Watermarks of every partition an ingest consumes, keyed by ``(topic, partition)``.

    The ingest calls :meth:`track` for each polled message (in poll order), :meth:`done` when its
    result is acknowledged by the broker (or it was dead-lettered, or its training job handed off),
    and periodically commits :meth:`committable` and reports back with :meth:`mark_committed`.
    """

    __slots__ = ("_in_flight", "_in_flight_bytes", "_parts")

    def __init__(self) -> None:
        self._parts: dict[TP, PartitionOffsets] = {}
        self._in_flight = 0
        self._in_flight_bytes = 0

    def track(self, tp: TP, offset: int, size: int = 0) -> None:
        """Start tracking a polled message, which holds ``size`` bytes until it is done (or
        its partition forgotten).

        Raises:
            ValueError: ``offset`` is not above the last offset tracked for ``tp``, or a
                negative ``size``.
        """
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = PartitionOffsets()
        part.track(offset, size)
        self._in_flight += 1
        self._in_flight_bytes += size

    def done(self, tp: TP, offset: int) -> bool:
        """Mark a message finished (idempotent).

        Returns:
            Whether ``tp``'s watermark moved.

        Raises:
            KeyError: ``offset`` was never tracked for ``tp`` (or ``tp`` is not tracked, e.g. it
                was revoked -- a late completion the caller may log and drop).
        """
        part = self._parts.get(tp)
        if part is None:
            raise KeyError(tp)
        # The partition's own counts (same module): properties would cost a call each.
        before, before_bytes = part._pending, part._pending_bytes
        moved = part.done(offset)
        self._in_flight -= before - part._pending
        self._in_flight_bytes -= before_bytes - part._pending_bytes
        return moved

    def committable(self) -> dict[TP, int]:
        """The offsets to commit now: partitions whose watermark moved since their last commit.

        O(partitions); an ingest owns tens to hundreds, and calls this once per loop turn.
        """
        offsets: dict[TP, int] = {}
        for tp, part in self._parts.items():
            wm = part.watermark
            if wm is not None and part.advanced:
                offsets[tp] = wm
        return offsets

    def mark_committed(self, offsets: Mapping[TP, int]) -> None:
        """Record committed offsets (e.g. from the commit callback); unknown partitions are ignored.

        A partition may be revoked between a commit and its callback, hence no error.
        """
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            if part is not None:
                part.mark_committed(offset)

    def pending(self, tp: TP) -> int:
        """How many messages of ``tp`` are tracked and not done (0 for an unknown partition)."""
        part = self._parts.get(tp)
        return 0 if part is None else part.pending

    def in_flight(self) -> int:
        """How many messages are tracked and not done, over all partitions (O(1))."""
        return self._in_flight

    def in_flight_bytes(self) -> int:
        """What the tracked, not yet done messages weigh, over all partitions (O(1))."""
        return self._in_flight_bytes

    def watermark(self, tp: TP) -> int | None:
        """``tp``'s current watermark, committed or not, or ``None``."""
        part = self._parts.get(tp)
        return None if part is None else part.watermark

    def revoke(self, tps: Iterable[TP]) -> dict[TP, int]:
        """Forget partitions being revoked, returning their last watermarks to commit.

        Call it after draining (or giving up on) their in-flight work: what is still pending is
        dropped here, and the new owner re-reads it from the returned watermark (at least once).

        Returns:
            The watermark of each given partition that moved since its last commit.
        """
        final: dict[TP, int] = {}
        for tp in tps:
            part = self._parts.pop(tp, None)
            if part is None:
                continue
            self._in_flight -= part.pending
            self._in_flight_bytes -= part.pending_bytes
            wm = part.watermark
            if wm is not None and part.advanced:
                final[tp] = wm
        return final

    def reset(self, tp: TP) -> None:
        """Forget ``tp`` entirely, e.g. after a seek; its next :meth:`track` starts afresh."""
        part = self._parts.pop(tp, None)
        if part is not None:
            self._in_flight -= part.pending
            self._in_flight_bytes -= part.pending_bytes
