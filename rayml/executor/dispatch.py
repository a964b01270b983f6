"""From formed micro-batches to finished ones: the ready queue, the Ray calls, retries.

The dispatcher sends **one Ray call per micro-batch** and only when a worker has room
(``max_batches_per_worker``); batches waiting for room stay in a queue here, still counted as in
flight by the ingest, so backpressure pauses the partitions and the backlog stays in Kafka.

Completions are told apart the way STYLE.md asks:

* ``RayActorError`` — *infrastructure*: the worker died. The pool replaces it and the batch is
  re-dispatched, split in halves, at the front of the queue: a request that kills its worker
  (a segfault in a pipeline) is isolated in O(log n) attempts and cannot take its mates along.
* ``RayTaskError`` — the worker's own code raised outside the pipeline's error handling (which
  bisects record failures itself, see :mod:`rayml.executor.worker`): split and retried the same way.
* Requests past ``max_attempts`` are handed back as exhausted.

Batches grow with the load: when a worker gets room, the batch at the head of the queue takes
along the later waiting batches of its route, up to the batch size limit. An idle executor
sends small batches at once (low latency); a busy one sends full ones, so a pipeline with a
fixed cost per call keeps up with a burst instead of queueing thousands of tiny calls. A batch
being retried is never merged: it was split to isolate a failing request.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import ray

from rayml.executor.pool import WorkerPool
from rayml.executor.work import BatchOutcome, InFlight, Pending, Route
from rayml.kafka.partitions import TP

logger = logging.getLogger(__name__)

# How far down the queue a batch looks for mates: bounds the work of one dispatch.
_MERGE_WINDOW = 1024


class Dispatcher:
    """Sends micro-batches to the pool and hands finished ones back.

    Args:
        pool: The ingest's workers.
        max_attempts: Dispatches a request may have before it is exhausted.
        max_batch_size: Requests one Ray call carries at most (a pipeline's own
            ``max_batch_size`` is lower where set).
        on_finished: Called with each batch that came back and its outcome.
        on_exhausted: Called with requests that failed ``max_attempts`` times and the last
            cause.
        owner: A name for log lines.
    """

    def __init__(
        self,
        pool: WorkerPool,
        *,
        max_attempts: int,
        max_batch_size: int,
        on_finished: Callable[[InFlight, BatchOutcome], None],
        on_exhausted: Callable[[list[Pending], BaseException], None],
        owner: str,
    ) -> None:
        self.pool = pool
        self.max_attempts = max_attempts
        self.max_batch_size = max_batch_size
        self._on_finished = on_finished
        self._on_exhausted = on_exhausted
        self._owner = owner
        self.inflight: dict[Any, InFlight] = {}  # ObjectRef -> batch
        self.ready: deque[tuple[Route, list[Pending]]] = deque()
        self.batches = 0
        self.redispatched = 0

    def enqueue(self, route: Route, items: list[Pending]) -> None:
        """Queue a formed batch (split to the pipeline's own ``max_batch_size``) and pump."""
        limit = self._limit(items)
        for start in range(0, len(items), limit):
            self.ready.append((route, items[start : start + limit]))
        self.pump()

    def pump(self) -> None:
        """Send ready batches while workers have room."""
        while self.ready:
            route, items, taken = self._next_batch()
            import_path, model, version = route
            sent = self.pool.try_submit(
                f"{model}@{version}", import_path, version, [p.request.params for p in items]
            )
            if sent is None:
                return
            if len(taken) == 1:
                self.ready.popleft()
            else:
                self.ready = deque(b for i, b in enumerate(self.ready) if i not in taken)
            for item in items:
                item.attempts += 1
            worker_id, ref = sent
            self.inflight[ref] = InFlight(route, items, worker_id, time.time() * 1000.0)
            self.batches += 1

    def _limit(self, items: list[Pending]) -> int:
        return min(items[0].spec.max_batch_size or self.max_batch_size, self.max_batch_size)

    def _next_batch(self) -> tuple[Route, list[Pending], set[int]]:
        """The head batch, with the later fresh batches of its route that fit merged in.

        Returns the route, the requests and the queue positions they came from.
        """
        route, items = self.ready[0]
        if items[0].attempts > 0:
            return route, items, {0}
        limit = self._limit(items)
        merged = items
        taken = {0}
        for position, (other_route, more) in enumerate(
            itertools.islice(self.ready, 1, _MERGE_WINDOW), start=1
        ):
            if len(merged) >= limit:
                break
            if other_route == route and more[0].attempts == 0 and len(merged) + len(more) <= limit:
                if merged is items:
                    merged = list(items)  # the queued batch itself stays as it is
                merged.extend(more)
                taken.add(position)
        return route, merged, taken

    def collect(self, block_s: float) -> None:
        """Hand back every finished batch, waiting up to ``block_s`` for the first one."""
        if not self.inflight:
            self.pump()  # nothing to collect, but workers may have come up for queued batches
            return
        refs = list(self.inflight)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        if not ready and block_s > 0:
            ready, _ = ray.wait(refs, num_returns=1, timeout=block_s)
        for ref in ready:
            batch = self.inflight.pop(ref)
            self.pool.finished(batch.worker_id)
            try:
                outcome: BatchOutcome = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                logger.warning(
                    "ingest=%s worker=%s died with %d requests in flight: %s",
                    self._owner,
                    batch.worker_id,
                    len(batch.items),
                    type(exc).__name__,
                )
                self.pool.replace(batch.worker_id)
                self._retry(batch.route, batch.items, exc)
            except ray.exceptions.RayTaskError as exc:
                logger.warning(
                    "ingest=%s batch of %d failed on worker=%s: %s",
                    self._owner,
                    len(batch.items),
                    batch.worker_id,
                    exc,
                )
                self._retry(batch.route, batch.items, exc)
            else:
                self._on_finished(batch, outcome)
        self.pump()

    def _retry(self, route: Route, items: list[Pending], cause: BaseException) -> None:
        retry = [item for item in items if item.attempts < self.max_attempts]
        exhausted = [item for item in items if item.attempts >= self.max_attempts]
        if exhausted:
            self._on_exhausted(exhausted, cause)
        if retry:
            self.redispatched += len(retry)
            middle = max(1, len(retry) // 2)
            for part in (retry[middle:], retry[:middle]):
                if part:
                    self.ready.appendleft((route, part))

    def drop(self, tps: set[TP]) -> int:
        """Forget the queued (not running) requests of partitions this ingest let go of.

        Their new owner reads them again from the committed offset; running them here too would
        only answer them twice. Returns how many were dropped.
        """
        dropped = 0
        kept: deque[tuple[Route, list[Pending]]] = deque()
        for route, items in self.ready:
            keep = [item for item in items if item.tp not in tps]
            dropped += len(items) - len(keep)
            if keep:
                kept.append((route, keep))
        self.ready = kept
        return dropped

    @property
    def queued_requests(self) -> int:
        return sum(len(items) for _, items in self.ready)
