"""The dispatcher's ready queue: one FIFO per class of request, served in weighted fair order.

A *class* is a request's lane and tenant (``Pending.lane``, ``Pending.tenant``): interactive or
bulk (docs/service.md, "Priority lanes and tenant shares"), and the tenant whose topic it came
from. Each class keeps its batches in arrival order; which class's head batch goes next is
start-time fair queuing: every class has a virtual finish time that grows by ``requests /
weight`` with each batch sent, and the class with the smallest one goes first. A class that
had nothing waiting starts again at the current virtual time, so it cannot hoard credit while
idle. The effect, when several classes wait at once:

* the interactive lane gets ``1 - batch_share`` of the requests sent and the bulk lane
  ``batch_share`` (neither starves); an interactive request that arrives while a bulk backlog
  waits goes out with the next batch sent, ahead of that backlog;
* tenants share in proportion to their ``weight``, so one tenant's burst delays another's
  requests by at most its share.

With one class (one tenant, nothing on the bulk lane) it is one FIFO, as before. Pure code: no
Ray, no Kafka.

Example:
    >>> q = ReadyQueues(batch_share=0.25)
    >>> q.append("r", ["b1", "b2"], ("batch", "t"))
    >>> q.append("r", ["i1"], ("interactive", "t"))
    >>> q.next_class()
    ('batch', 't')
    >>> q.charge(("batch", "t"), 2)
    >>> q.queue(("batch", "t")).popleft()
    ('r', ['b1', 'b2'])
    >>> q.next_class()
    ('interactive', 't')
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

__all__ = ["BULK", "INTERACTIVE", "ReadyQueues", "RequestClass"]

INTERACTIVE = "interactive"
BULK = "batch"

#: (lane, tenant)
RequestClass = tuple[str, str]

R = TypeVar("R")


class ReadyQueues(Generic[R]):
    """Batches ``(route, items)`` waiting for a worker, one FIFO per :data:`RequestClass`.

    Args:
        batch_share: The bulk lane's share of what is sent while both lanes wait (0..1).
        tenant_weights: A tenant's weight (default 1.0).
    """

    def __init__(
        self, batch_share: float = 0.25, tenant_weights: Mapping[str, float] | None = None
    ) -> None:
        if not 0.0 < batch_share < 1.0:
            raise ValueError(f"batch_share must be in (0, 1), got {batch_share}")
        self._lane_weight = {INTERACTIVE: 1.0 - batch_share, BULK: batch_share}
        self._tenant_weights = dict(tenant_weights or {})
        self._queues: dict[RequestClass, deque[tuple[R, list[Any]]]] = {}
        self._finish: dict[RequestClass, float] = {}
        self._clock = 0.0
        self._batches = 0

    # -- adding --------------------------------------------------------------------------------

    def _queue_for(self, cls: RequestClass) -> deque[tuple[R, list[Any]]]:
        queue = self._queues.get(cls)
        if queue is None:
            queue = self._queues[cls] = deque()
        if not queue:
            # Back from idle: start at the current virtual time (no credit hoarded while idle).
            self._finish[cls] = max(self._finish.get(cls, 0.0), self._clock)
        return queue

    def append(self, route: R, items: list[Any], cls: RequestClass) -> None:
        """A formed batch of one class, at the back of its class's queue."""
        self._queue_for(cls).append((route, items))
        self._batches += 1

    def appendleft(self, route: R, items: list[Any], cls: RequestClass) -> None:
        """A batch to send before its class's others (a retry, what is left of a batch)."""
        self._queue_for(cls).appendleft((route, items))
        self._batches += 1

    # -- serving -------------------------------------------------------------------------------

    def weight(self, cls: RequestClass) -> float:
        lane, tenant = cls
        return self._lane_weight.get(lane, 1.0) * max(1e-6, self._tenant_weights.get(tenant, 1.0))

    def next_class(self) -> RequestClass:
        """The class whose head batch goes next (the queue must not be empty)."""
        if len(self._queues) == 1:
            only = next(iter(self._queues))
            self._clock = self._finish[only]
            return only
        best: RequestClass | None = None
        best_finish = 0.0
        for cls, queue in self._queues.items():
            if queue and (best is None or self._finish[cls] < best_finish):
                best, best_finish = cls, self._finish[cls]
        if best is None:
            raise IndexError("no batch is ready")
        self._clock = best_finish
        return best

    def queue(self, cls: RequestClass) -> deque[tuple[R, list[Any]]]:
        """The FIFO of one class. Callers that take from it call :meth:`taken`."""
        return self._queues[cls]

    def taken(self, cls: RequestClass, batches: int) -> None:
        """``batches`` were removed from ``cls``'s queue; drop a class left empty."""
        self._batches -= batches
        if not self._queues[cls] and len(self._queues) > 1:
            del self._queues[cls]

    def charge(self, cls: RequestClass, requests: int) -> None:
        """``requests`` of ``cls`` were sent: its virtual finish time moves on."""
        self._finish[cls] = self._finish.get(cls, self._clock) + requests / self.weight(cls)

    # -- the whole -----------------------------------------------------------------------------

    def __bool__(self) -> bool:
        return self._batches > 0

    def __len__(self) -> int:
        """Batches waiting, over all classes."""
        return self._batches

    def __iter__(self) -> Iterator[tuple[R, list[Any]]]:
        for queue in list(self._queues.values()):
            yield from queue

    @property
    def requests(self) -> int:
        return sum(len(items) for queue in self._queues.values() for _, items in queue)

    def requests_by_class(self) -> dict[RequestClass, int]:
        return {
            cls: sum(len(items) for _, items in queue)
            for cls, queue in self._queues.items()
            if queue
        }

    def filter_items(self, keep: Callable[[Any], bool]) -> int:
        """Keep only the items ``keep`` accepts (order kept); returns how many were dropped."""
        dropped = 0
        for cls, queue in list(self._queues.items()):
            kept: deque[tuple[R, list[Any]]] = deque()
            for route, items in queue:
                left = [item for item in items if keep(item)]
                dropped += len(items) - len(left)
                if left:
                    kept.append((route, left))
            self._batches -= len(queue) - len(kept)
            self._queues[cls] = kept
        return dropped
