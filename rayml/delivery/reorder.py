"""Reorder buffers: release finished work in offset order, for exactly-once transactions.

With ``executor.delivery = "exactly_once"`` a transaction carries results *and* the input offsets
they answer. Kafka stores one offset per partition ("everything before this is handled"), so a
transaction may only commit offset ``n`` if every tracked record below ``n`` has its result in the
same or an earlier transaction. Results finish out of order (batches run on different workers);
if a transaction held the results of offsets 10 and 12 but committed 11 (11 still running), a
crash would redeliver 12 and its result would be committed twice.

So a finished record's writes are *held* here until every earlier tracked record of its partition
has finished too, and then released as a contiguous prefix, in offset order. The offset to commit
with a transaction is then exactly one past the last released record of each partition
(:attr:`PartitionReorder.next_offset`).

This module is pure bookkeeping (no Kafka client), so its guarantees are property-tested.

Example:
    >>> buf: ReorderBuffer[str] = ReorderBuffer()
    >>> tp = ("ml.pipeline.input", 0)
    >>> for offset in (10, 11, 12):
    ...     buf.track(tp, offset)
    >>> buf.finish(tp, 12, "result of 12")  # 10 and 11 are still running: held back
    []
    >>> buf.finish(tp, 10, "result of 10")
    [(10, 'result of 10')]
    >>> buf.finish(tp, 11, "result of 11")  # releases 11 and the 12 held behind it
    [(11, 'result of 11'), (12, 'result of 12')]
    >>> buf.next_offset(tp), buf.in_flight()
    (13, 0)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

from rayml.kafka.partitions import TP

__all__ = ["PartitionReorder", "ReorderBuffer"]

T = TypeVar("T")

_WAITING = object()  # the value of a tracked offset whose item has not arrived yet
_UNKNOWN = object()  # what the items dict gives for an offset it does not hold


class PartitionReorder(Generic[T]):
    """The reorder buffer of one partition.

    :meth:`track` and :meth:`finish` are O(1) amortized: tracked offsets wait in a FIFO in offset
    order, and each is popped once, when it is released.

    A :meth:`finish` for an offset already finished or already released is ignored (a batch that
    was re-dispatched, or one that came back after a rewind, may report a record twice; the first
    item wins). Any other offset that was never tracked raises :class:`KeyError`.
    """

    __slots__ = ("_first", "_items", "_last", "_next", "_queue")

    def __init__(self) -> None:
        self._queue: deque[int] = deque()  # tracked, not released, in offset order
        self._items: dict[int, object] = {}  # the same offsets -> item, or _WAITING
        self._first: int | None = None  # lowest offset ever tracked
        self._last: int | None = None  # highest offset tracked
        self._next: int | None = None  # one past the last released offset

    @property
    def next_offset(self) -> int | None:
        """One past the last released offset (the offset to commit), or ``None`` yet."""
        return self._next

    @property
    def pending(self) -> int:
        """How many tracked records are not released yet (finished or not)."""
        return len(self._queue)

    def track(self, offset: int) -> None:
        """Start tracking ``offset``, which must be above every offset tracked before.

        Raises:
            ValueError: ``offset`` is negative or not above the last tracked offset.
        """
        if offset < 0:
            raise ValueError(f"offset {offset} is negative")
        if self._last is not None and offset <= self._last:
            raise ValueError(
                f"offset {offset} is not above the last tracked offset {self._last}; "
                "offsets must be tracked in increasing order (reset the partition after a seek)"
            )
        if self._first is None:
            self._first = offset
        self._last = offset
        self._queue.append(offset)
        self._items[offset] = _WAITING

    def finish(self, offset: int, item: T) -> list[tuple[int, T]]:
        """Hand in ``offset``'s item; return what is released now, in offset order.

        Raises:
            KeyError: ``offset`` was never tracked.
        """
        items = self._items
        held = items.get(offset, _UNKNOWN)
        if held is _UNKNOWN:
            nxt, first = self._next, self._first
            if nxt is not None and first is not None and first <= offset < nxt:
                return []  # released before: the first item won
            raise KeyError(offset)
        if held is not _WAITING:
            return []  # finished before, still held: the first item wins
        items[offset] = item
        queue = self._queue
        if offset != queue[0]:
            return []  # an earlier record is still running: hold this one
        released: list[tuple[int, T]] = []
        while queue and items[queue[0]] is not _WAITING:
            head = queue.popleft()
            released.append((head, items.pop(head)))  # type: ignore[arg-type]
        self._next = released[-1][0] + 1
        return released


class ReorderBuffer(Generic[T]):
    """Reorder buffers of every partition an ingest consumes, keyed by ``(topic, partition)``."""

    __slots__ = ("_in_flight", "_parts")

    def __init__(self) -> None:
        self._parts: dict[TP, PartitionReorder[T]] = {}
        self._in_flight = 0

    def track(self, tp: TP, offset: int) -> None:
        """Start tracking a polled record (in poll order).

        Raises:
            ValueError: ``offset`` is not above the last offset tracked for ``tp``.
        """
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = PartitionReorder()
        part.track(offset)
        self._in_flight += 1

    def finish(self, tp: TP, offset: int, item: T) -> list[tuple[int, T]]:
        """Hand in a finished record's item; return ``tp``'s records released now, in order.

        Raises:
            KeyError: ``tp`` or ``offset`` is not tracked (e.g. the partition was revoked or
                rewound meanwhile: a late completion the caller drops).
        """
        part = self._parts.get(tp)
        if part is None:
            raise KeyError(tp)
        released = part.finish(offset, item)
        self._in_flight -= len(released)
        return released

    def next_offset(self, tp: TP) -> int | None:
        """One past ``tp``'s last released offset, or ``None``."""
        part = self._parts.get(tp)
        return None if part is None else part.next_offset

    def pending(self, tp: TP) -> int:
        """How many records of ``tp`` are tracked and not released (0 for an unknown one)."""
        part = self._parts.get(tp)
        return 0 if part is None else part.pending

    def in_flight(self) -> int:
        """How many records are tracked and not released, over all partitions (O(1))."""
        return self._in_flight

    def forget(self, tps: Iterable[TP]) -> None:
        """Drop partitions (revoked, lost, or rewound): their held items are discarded."""
        for tp in tps:
            part = self._parts.pop(tp, None)
            if part is not None:
                self._in_flight -= part.pending
