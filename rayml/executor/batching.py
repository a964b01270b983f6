"""Micro-batching and backpressure policy for the ingest. Pure: the caller passes the clock.

One Ray call costs far more than one batched prediction row, so the ingest groups requests per
route (pipeline, model version) and sends each group in one call. A batch leaves when it is full
or when its oldest request has waited ``max_wait_s`` -- whichever comes first -- which bounds both
the per-call overhead and the latency a lone request pays.

Time is an argument (``now``, e.g. ``time.monotonic()``), never read here, so tests are exact
and instant.

Example:
    >>> b = MicroBatcher[str, int](max_size=2, max_wait_s=0.01)
    >>> b.add("iris", 1, now=0.0)
    []
    >>> b.next_deadline()
    0.01
    >>> [batch.items for batch in b.add("iris", 2, now=0.001)]
    [[1, 2]]
    >>> b.add("iris", 3, now=0.002)
    []
    >>> [batch.items for batch in b.due(now=0.012)]
    [[3]]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Backpressure", "Batch", "MicroBatcher"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(slots=True)
class Batch(Generic[K, T]):
    """Items for one route, in arrival order.

    Attributes:
        key: The route, e.g. ``(pipeline, model_version)``.
        items: The buffered items, oldest first.
        opened_at: When the first item arrived (the caller's clock).
        max_size: Items it takes at most (its key's limit).
    """

    key: K
    items: list[T] = field(default_factory=list)
    opened_at: float = 0.0
    max_size: int = field(default=0, compare=False)


#: A key's own limits: (max_size or None, max_wait_s or None), None for the batcher's own.
Limits = Callable[[K], "tuple[int | None, float | None] | None"]


class MicroBatcher(Generic[K, T]):
    """Groups items per key into batches of at most ``max_size`` that wait at most ``max_wait_s``.

    A key may have limits of its own (``limits_of``: a pipeline's own pool, with its batch size
    and wait), asked once per batch opened, never per item.

    Every operation is O(1) per item or per emitted batch (times the few distinct waits): open
    batches are kept per wait in the order they were opened, and because every batch of one
    wait waits the same time, that is also the order in which they fall due.
    """

    __slots__ = ("_by_wait", "_count", "_limits_of", "_max_size", "_max_wait_s", "_open")

    def __init__(
        self, max_size: int, max_wait_s: float, limits_of: Limits[K] | None = None
    ) -> None:
        """Create an empty batcher.

        Raises:
            ValueError: ``max_size`` < 1 or ``max_wait_s`` < 0.
        """
        _check(max_size, max_wait_s)
        self._max_size = max_size
        self._max_wait_s = max_wait_s
        self._limits_of = limits_of
        self._open: dict[K, Batch[K, T]] = {}
        # Open batches by their wait, each in the order opened (so in the order they fall due).
        self._by_wait: dict[float, OrderedDict[K, Batch[K, T]]] = {max_wait_s: OrderedDict()}
        self._count = 0

    @property
    def max_size(self) -> int:
        """Most items in one batch (a key's own limit aside)."""
        return self._max_size

    @property
    def max_wait_s(self) -> float:
        """Longest time a batch's first item waits before the batch is due (a key's own
        limit aside)."""
        return self._max_wait_s

    def __len__(self) -> int:
        """How many items are buffered, over all keys."""
        return self._count

    def _open_batch(self, key: K, now: float) -> Batch[K, T]:
        max_size, max_wait_s = self._max_size, self._max_wait_s
        if self._limits_of is not None:
            own = self._limits_of(key)
            if own is not None:
                size, wait = own
                if size is not None or wait is not None:
                    max_size = size if size is not None else max_size
                    max_wait_s = wait if wait is not None else max_wait_s
                    _check(max_size, max_wait_s)
        batch: Batch[K, T] = Batch(key, [], now, max_size)
        self._open[key] = batch
        group = self._by_wait.get(max_wait_s)
        if group is None:
            group = self._by_wait[max_wait_s] = OrderedDict()
        group[key] = batch
        return batch

    def _close(self, batch: Batch[K, T]) -> None:
        del self._open[batch.key]
        for group in self._by_wait.values():
            if group.pop(batch.key, None) is not None:
                break
        self._count -= len(batch.items)

    def add(self, key: K, item: T, now: float) -> list[Batch[K, T]]:
        """Buffer ``item`` under ``key``.

        Returns:
            The batch that this item filled (a list of zero or one), to dispatch now.
        """
        batch = self._open.get(key)
        if batch is None:
            batch = self._open_batch(key, now)
        batch.items.append(item)
        self._count += 1
        if len(batch.items) >= batch.max_size:
            self._close(batch)
            return [batch]
        return []

    def due(self, now: float) -> list[Batch[K, T]]:
        """Remove and return the batches whose oldest item has waited their wait or more."""
        ready: list[Batch[K, T]] = []
        for wait, group in self._by_wait.items():
            while group:
                key = next(iter(group))
                batch = group[key]
                # Same expression as next_deadline(), so sleeping until that time always finds
                # the batch due (no float rounding gap that would make the loop spin).
                if now < batch.opened_at + wait:
                    break  # opened in order, so every later batch of this wait is younger
                group.popitem(last=False)
                del self._open[key]
                self._count -= len(batch.items)
                ready.append(batch)
        return ready

    def flush(self, keys: Callable[[K], bool] | None = None) -> list[Batch[K, T]]:
        """Remove and return every open batch (or those whose key ``keys`` accepts), oldest
        first (on drain or shutdown; or for the routes of a pool with an idle worker)."""
        if keys is None:
            batches = sorted(self._open.values(), key=lambda b: b.opened_at)
            self._open.clear()
            for group in self._by_wait.values():
                group.clear()
            self._count = 0
            return batches
        batches = sorted(
            (b for key, b in self._open.items() if keys(key)), key=lambda b: b.opened_at
        )
        for batch in batches:
            self._close(batch)
        return batches

    def next_deadline(self) -> float | None:
        """When the oldest open batch falls due, or ``None`` when nothing is buffered.

        The poll loop may block until then (capped by its own poll timeout) without delaying
        any batch.
        """
        if not self._open:
            return None
        return min(
            next(iter(group.values())).opened_at + wait
            for wait, group in self._by_wait.items()
            if group
        )


def _check(max_size: int, max_wait_s: float) -> None:
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, got {max_size}")
    if not max_wait_s >= 0:  # also rejects NaN, which would never fall due
        raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")


class Backpressure:
    """When to pause and resume consuming, with hysteresis.

    Pausing at ``max_in_flight`` bounds memory under any burst. Resuming only once in-flight work
    has fallen to ``max_in_flight * resume_ratio`` (not as soon as it drops below the maximum)
    keeps the consumer from flapping between pause and resume on every completion.

    Example:
        >>> bp = Backpressure(max_in_flight=100)
        >>> bp.should_pause(100), bp.should_resume(60), bp.should_resume(50)
        (True, False, True)
    """

    __slots__ = ("_max", "_resume_at")

    def __init__(self, max_in_flight: int, resume_ratio: float = 0.5) -> None:
        """Create the policy.

        Raises:
            ValueError: ``max_in_flight`` < 1, or ``resume_ratio`` outside [0, 1) (at 1 the
                pause and resume thresholds would meet and there would be no hysteresis).
        """
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        if not 0 <= resume_ratio < 1:
            raise ValueError(f"resume_ratio must be in [0, 1), got {resume_ratio}")
        self._max = max_in_flight
        self._resume_at = max_in_flight * resume_ratio

    @property
    def max_in_flight(self) -> int:
        """In-flight count at which to pause."""
        return self._max

    @property
    def resume_at(self) -> float:
        """In-flight count at or below which to resume."""
        return self._resume_at

    def should_pause(self, in_flight: int) -> bool:
        """Whether to pause the partitions now (in-flight work reached the maximum)."""
        return in_flight >= self._max

    def should_resume(self, in_flight: int) -> bool:
        """Whether paused partitions may resume (in-flight work fell to the resume level)."""
        return in_flight <= self._resume_at
