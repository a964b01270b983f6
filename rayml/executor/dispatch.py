"""From formed micro-batches to finished ones: the ready queue, the Ray calls, retries.

The dispatcher sends **one Ray call per micro-batch** and only when a worker has room
(``max_batches_per_worker``); batches waiting for room stay in a queue here, still counted as in
flight by the ingest, so backpressure pauses the partitions and the backlog stays in Kafka.

Completions are told apart the way STYLE.md asks:

* ``RayActorError`` (and Ray's ``OutOfMemoryError``) — *infrastructure*: the worker died. The
  pool replaces it. The batch it was running is split in halves and resent at the front of the
  queue, uncharged; the batches queued behind it on that worker are resent whole, uncharged
  (:mod:`rayml.executor.isolation`). A request that kills its worker (a segfault in a pipeline)
  is isolated in O(log n) calls and is the only one charged: its batch-mates are answered.
* A batch past its time bound (``batch_timeout_s``): the dispatcher ends the worker and replaces
  it, and the batch is handled as after a death. A hung worker never holds a batch for ever.
* Any other ``RayError`` (``RayTaskError``: the worker's own code raised outside the pipeline's
  error handling, which bisects record failures itself, see :mod:`rayml.executor.worker`) —
  split and retried the same way; it never crashes the ingest loop.
* Requests charged ``max_attempts`` times are handed back as exhausted.

A model under a *shadow* rollout (docs/rollouts.md) also runs its candidate on a copy of each
answered batch: :meth:`Dispatcher.enqueue_shadow` queues it apart, and it is sent only when no
caller's batch waits, and only to a worker with nothing in flight, which takes nothing else
until it is back (so no caller's batch ever queues behind a shadow's); at most
``shadow_max_queued`` requests wait (the rest of the copy is skipped, counted). A shadow batch
has a time bound of its own (``shadow_timeout_s``), is never retried and never charged to its
requests; its failure is answered as an error for each of its requests (the candidate's figures
count it), and after ``_SHADOW_BREAKER`` failures in a row its route gets no more copies.

Batches grow with the load: when a worker gets room, the batch at the head of the queue takes
along the later waiting batches of its route, up to the batch size limit. An idle executor
sends small batches at once (low latency); a busy one sends full ones, so a pipeline with a
fixed cost per call keeps up with a burst instead of queueing thousands of tiny calls. A batch
being retried is never merged: it was split to isolate a failing request.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import ray

from rayml.errors import BatchTimeoutError
from rayml.executor.isolation import after_failure
from rayml.executor.pool import WorkerPool
from rayml.executor.ready import ReadyQueues, RequestClass
from rayml.executor.work import BatchOutcome, InFlight, ItemError, Pending, Route
from rayml.kafka.partitions import TP

logger = logging.getLogger(__name__)

# How far down the queue a batch looks for mates: bounds the work of one dispatch.
_MERGE_WINDOW = 1024
# Shadow batches of one route failing this many times in a row: no more copies of that route.
_SHADOW_BREAKER = 3


def _any_deadline(items: list[Pending]) -> bool:
    return any(p.deadline_ms is not None for p in items)


def _class_of(item: Pending) -> RequestClass:
    return (item.lane, item.tenant)


def _by_class(items: list[Pending]) -> list[tuple[RequestClass, list[Pending]]]:
    """``items`` split by class, each part in arrival order (one part, most of the time)."""
    first = items[0]
    lane, tenant = first.lane, first.tenant
    for item in items:
        if item.lane != lane or item.tenant != tenant:
            break
    else:
        return [((lane, tenant), items)]
    parts: dict[RequestClass, list[Pending]] = {}
    for item in items:
        parts.setdefault((item.lane, item.tenant), []).append(item)
    return list(parts.items())


class Dispatcher:
    """Sends micro-batches to the pool and hands finished ones back.

    Args:
        pool: The ingest's workers.
        max_attempts: Failures charged to a request alone before it is exhausted.
        max_batch_size: Requests one Ray call carries at most (a pipeline's own
            ``max_batch_size`` is lower where set).
        batch_timeout_s: How long one batch may run on a worker before the worker is ended
            (a pipeline's own ``batch_timeout_s`` wins; ``None``: no bound).
        on_finished: Called with each batch that came back and its outcome.
        on_exhausted: Called with requests that failed ``max_attempts`` times and the last
            cause.
        on_expired: Called with requests whose deadline passed while they waited (they are
            not run); without it they are run anyway.
        owner: A name for log lines.
        on_shadow: Called with each shadow batch that came back and its outcome.
        shadow_max_queued: Shadow requests waiting for a worker, at most.
        shadow_timeout_s: A shadow batch's time bound.
        batch_share: The bulk lane's share of what is sent while both lanes wait
            (:mod:`rayml.executor.ready`).
        tenant_weights: Each tenant's weight in the same order.
    """

    def __init__(
        self,
        pool: WorkerPool,
        *,
        max_attempts: int,
        max_batch_size: int,
        batch_timeout_s: float | None = 300.0,
        on_finished: Callable[[InFlight, BatchOutcome], None],
        on_exhausted: Callable[[list[Pending], BaseException], None],
        owner: str,
        on_expired: Callable[[list[Pending]], None] | None = None,
        on_shadow: Callable[[InFlight, BatchOutcome], None] | None = None,
        shadow_max_queued: int = 0,
        shadow_timeout_s: float = 10.0,
        batch_share: float = 0.25,
        tenant_weights: dict[str, float] | None = None,
    ) -> None:
        self.pool = pool
        self.max_attempts = max_attempts
        self.max_batch_size = max_batch_size
        self.batch_timeout_s = batch_timeout_s
        self.timeouts = 0
        self._on_finished = on_finished
        self._on_exhausted = on_exhausted
        self._on_expired = on_expired
        self._owner = owner
        self.inflight: dict[Any, InFlight] = {}  # ObjectRef -> batch
        # Each worker's batches in the order it runs them (the head is running).
        self._by_worker: dict[str, deque[Any]] = {}
        self._seq = itertools.count()
        # Formed batches waiting for a worker, one FIFO per lane and tenant.
        self.ready: ReadyQueues[Route] = ReadyQueues(batch_share, tenant_weights)
        self.batches = 0
        self.redispatched = 0
        self._on_shadow = on_shadow
        self.shadow_max_queued = shadow_max_queued
        self.shadow_ready: deque[tuple[Route, list[Pending]]] = deque()
        self.shadow_queued = 0  # requests in shadow_ready
        self.shadow_sent = 0  # shadow requests sent to a worker
        self.shadow_skipped = 0  # shadow requests not run: queue full, or their batch failed
        self.shadow_timeout_s = shadow_timeout_s
        self._shadow_failures: dict[Route, int] = {}  # failures in a row, by route
        self.shadow_broken: set[Route] = set()  # routes past the breaker: no more copies

    def enqueue(self, route: Route, items: list[Pending], *, pump: bool = True) -> None:
        """Queue a formed batch (split to the pipeline's own ``max_batch_size``) and pump
        (``pump=False``: the caller queues more first, so that the ready queue's order, not
        the order of the calls, decides what the free workers take)."""
        for cls, part in _by_class(items):
            limit = self._limit(part)
            for start in range(0, len(part), limit):
                self.ready.append(route, part[start : start + limit], cls)
        if pump:
            self.pump()

    def enqueue_shadow(self, route: Route, items: list[Pending]) -> None:
        """Queue a shadow's copy of answered ``items`` (skipped past ``shadow_max_queued``)."""
        if route in self.shadow_broken:
            self.shadow_skipped += len(items)
            return
        room = max(0, self.shadow_max_queued - self.shadow_queued)
        if room < len(items):
            self.shadow_skipped += len(items) - room
            items = items[:room]
        if items:
            self.shadow_ready.append((route, items))
            self.shadow_queued += len(items)
            self.pump()

    def pump(self) -> None:
        """Send ready batches while workers have room; then shadow batches, if any."""
        self._pump_callers()
        while self.shadow_ready and not self.ready:
            route, items = self.shadow_ready[0]
            import_path, model, version = route
            sent = self.pool.try_submit(
                f"{model}@{version}",
                import_path,
                version,
                [p.request.params for p in items],
                None,
                exclusive=True,  # an idle worker, which takes no caller's batch until it is back
            )
            if sent is None:
                return
            self.shadow_ready.popleft()
            self.shadow_queued -= len(items)
            self.shadow_sent += len(items)
            batch = InFlight(route, items, sent[0], time.time() * 1000.0)
            batch.shadow = True
            self._track(sent[1], batch)

    def _track(self, ref: Any, batch: InFlight) -> None:
        """A batch sent to its worker: in flight, in the order its worker runs them."""
        batch.seq = next(self._seq)
        self.inflight[ref] = batch
        queue = self._by_worker.setdefault(batch.worker_id, deque())
        queue.append(ref)
        if len(queue) == 1:
            batch.started = time.monotonic()

    def _pump_callers(self) -> None:
        while self.ready:
            cls = self.ready.next_class()
            queue = self.ready.queue(cls)
            route, items, taken = self._next_batch(queue)
            deadlines = [p.deadline_ms for p in items] if _any_deadline(items) else None
            if deadlines is not None and self._on_expired is not None:
                now_ms = time.time() * 1000.0
                expired = [p for p in items if p.deadline_ms is not None and p.deadline_ms < now_ms]
                if expired:
                    # Answered without running; the rest goes back to the head of the queue.
                    self._take(cls, queue, taken)
                    self._on_expired(expired)
                    live = [p for p in items if p.deadline_ms is None or p.deadline_ms >= now_ms]
                    if live:
                        self.ready.appendleft(route, live, cls)
                    continue
            import_path, model, version = route
            exclusive = items[0].isolate
            sent = self.pool.try_submit(
                f"{model}@{version}",
                import_path,
                version,
                [p.request.params for p in items],
                deadlines,
                exclusive=exclusive,
            )
            if sent is None:
                return
            self._take(cls, queue, taken)
            self.ready.charge(cls, len(items))
            for item in items:
                item.attempts += 1
            batch = InFlight(route, items, sent[0], time.time() * 1000.0)
            batch.exclusive = exclusive
            self._track(sent[1], batch)
            self.batches += 1

    def _take(
        self, cls: RequestClass, queue: deque[tuple[Route, list[Pending]]], taken: set[int]
    ) -> None:
        """Remove the positions of ``cls``'s queue that a batch was formed from."""
        if len(taken) == 1:
            queue.popleft()
        else:
            kept = [b for i, b in enumerate(queue) if i not in taken]
            queue.clear()
            queue.extend(kept)
        self.ready.taken(cls, len(taken))

    def _limit(self, items: list[Pending]) -> int:
        return min(items[0].spec.max_batch_size or self.max_batch_size, self.max_batch_size)

    def _next_batch(
        self, queue: deque[tuple[Route, list[Pending]]]
    ) -> tuple[Route, list[Pending], set[int]]:
        """The head batch of ``queue``, with the later fresh batches of its route that fit
        merged in.

        Returns the route, the requests and the queue positions they came from.
        """
        route, items = queue[0]
        if items[0].attempts > 0:
            return route, items, {0}
        limit = self._limit(items)
        merged = items
        taken = {0}
        for position, (other_route, more) in enumerate(
            itertools.islice(queue, 1, _MERGE_WINDOW), start=1
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
        self.take_back(wait_for_any(list(self.inflight), block_s))

    def take_back(self, ready: list[Any]) -> None:
        """Hand back the batches of ``ready`` (refs of this dispatcher's that are back), end
        workers past their time bound, and send what waits."""
        # After the wait: a batch that finished just in time is not judged overdue.
        self._end_overdue(set(ready))
        # In dispatch order: of a dead worker's batches, the one it was running comes first.
        for ref in sorted(ready, key=lambda r: self.inflight[r].seq):
            batch = self.inflight.pop(ref)
            self._left_worker(batch.worker_id, ref)
            self.pool.finished(batch.worker_id)
            try:
                outcome: BatchOutcome = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as exc:
                if batch.failure is None and not batch.bystander and not batch.ambiguous:
                    self._worker_died(batch, exc)
                self.pool.replace(batch.worker_id)
                if batch.shadow:
                    self._shadow_failed(batch, batch.failure or exc)
                    continue
                culprit = batch.failure is not None or not (batch.bystander or batch.ambiguous)
                self._retry(batch, batch.failure or exc, culprit=culprit)
            except ray.exceptions.RayError as exc:
                if batch.shadow:
                    self._shadow_failed(batch, exc)
                    continue
                # The worker's code raised outside the pipeline's own error handling (a model
                # store outage, a broken import): every request of the batch is charged, so a
                # failure that is not one request's ends in max_attempts rounds.
                # The whole error (traceback, node, pid) is for this log, by request id; the
                # requests' results say only what failed (rayml.executor.answers).
                logger.warning(
                    "ingest=%s batch of %d (requests %s...) failed on worker=%s: %s",
                    self._owner,
                    len(batch.items),
                    ", ".join(item.request.id for item in batch.items[:3]),
                    batch.worker_id,
                    exc,
                )
                self._retry(batch, exc, culprit=True, charge_all=True)
            else:
                self.pool.answered()
                if not batch.shadow:
                    self._on_finished(batch, outcome)
                else:
                    self._shadow_failures.pop(batch.route, None)
                    if self._on_shadow is not None:
                        self._on_shadow(batch, outcome)
        self.pump()

    def _shadow_failed(self, batch: InFlight, cause: BaseException) -> None:
        """A shadow batch failed as a whole: never retried or charged; each of its requests is
        answered as an error (the candidate's figures count it), and a route that keeps failing
        gets no more copies."""
        self.shadow_skipped += len(batch.items)
        failures = self._shadow_failures.get(batch.route, 0) + 1
        self._shadow_failures[batch.route] = failures
        if failures >= _SHADOW_BREAKER and batch.route not in self.shadow_broken:
            self.shadow_broken.add(batch.route)
            self.shadow_ready = deque(b for b in self.shadow_ready if b[0] != batch.route)
            self.shadow_queued = sum(len(items) for _, items in self.shadow_ready)
            logger.error(
                "ingest=%s shadow of %s@%s failed %d times in a row: no more copies of it "
                "(callers are not affected; abort the rollout, or start it again once fixed)",
                self._owner,
                batch.route[1],
                batch.route[2],
                failures,
            )
        if self._on_shadow is not None:
            code = "batch_timeout" if isinstance(cause, BatchTimeoutError) else "shadow_failed"
            failed = ItemError(code, f"the shadow batch failed: {type(cause).__name__}")
            self._on_shadow(
                batch,
                BatchOutcome(
                    batch.route[1],
                    batch.route[2],
                    [failed] * len(batch.items),
                    0.0,
                    batch.worker_id,
                ),
            )
        logger.warning(
            "ingest=%s shadow batch of %d on %s (worker=%s) failed, not retried: %s: %s",
            self._owner,
            len(batch.items),
            batch.route[1] + "@" + str(batch.route[2]),
            batch.worker_id,
            type(cause).__name__,
            cause,
        )

    def _left_worker(self, worker_id: str, ref: Any) -> None:
        """``ref`` is back: the next batch queued at its worker starts running now."""
        queue = self._by_worker.get(worker_id)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(ref)
        if not queue:
            del self._by_worker[worker_id]
            return
        head = self.inflight.get(queue[0])
        if head is not None and head.started is None:
            head.started = time.monotonic()

    def _worker_died(self, batch: InFlight, exc: BaseException) -> None:
        """First news of a worker's death, through ``batch`` (already out of the queue)."""
        others = [self.inflight[r] for r in self._by_worker.get(batch.worker_id, ())]
        logger.warning(
            "ingest=%s worker=%s died with %d requests in flight (requests %s...): %s",
            self._owner,
            batch.worker_id,
            len(batch.items) + sum(len(o.items) for o in others),
            ", ".join(item.request.id for item in batch.items[:3]),
            exc,
        )
        if others and not batch.exclusive:
            # Which batch ran is unknown (the reply of one that finished may have died with the
            # process): none is charged, each is resent whole to a worker of its own.
            batch.ambiguous = True
            for other in others:
                other.ambiguous = True

    def _mark_bystanders(self, worker_id: str) -> None:
        """The worker hung: its batches still out were queued behind the one it ran."""
        for ref in self._by_worker.get(worker_id, ()):
            batch = self.inflight.get(ref)
            if batch is not None:
                batch.bystander = True

    def _end_overdue(self, back: set[Any]) -> None:
        """End each worker whose running batch is past its time bound (one check per worker);
        ``back``: the refs that came back in this round (not overdue, whatever their age)."""
        now = time.monotonic()
        for worker_id, queue in list(self._by_worker.items()):
            if queue[0] in back:
                continue
            running = self.inflight.get(queue[0])
            if running is None or running.started is None or running.failure is not None:
                continue
            bound = running.items[0].spec.batch_timeout_s or self.batch_timeout_s
            if running.shadow:
                bound = min(bound or self.shadow_timeout_s, self.shadow_timeout_s)
            if bound is None or now - running.started < bound:
                continue
            running.failure = BatchTimeoutError(worker_id, bound, len(running.items))
            self.timeouts += 1
            logger.warning(
                "ingest=%s worker=%s: %s",
                self._owner,
                worker_id,
                running.failure,
            )
            self._mark_bystanders(worker_id)
            running.bystander = False
            # Its batches then come back as RayActorError and are resent from collect().
            self.pool.replace(worker_id)

    def _retry(
        self, batch: InFlight, cause: BaseException, *, culprit: bool, charge_all: bool = False
    ) -> None:
        parts, exhausted = after_failure(
            batch.items, culprit=culprit, max_attempts=self.max_attempts, charge_all=charge_all
        )
        if exhausted:
            self._on_exhausted(exhausted, cause)
        isolate = culprit or batch.ambiguous
        for part in reversed(parts):
            if isolate:
                for item in part:
                    item.isolate = True
            self.redispatched += len(part)
            self.ready.appendleft(batch.route, part, _class_of(part[0]))

    def drop(self, tps: set[TP]) -> int:
        """Forget the queued (not running) requests of partitions this ingest let go of.

        Their new owner reads them again from the committed offset; running them here too would
        only answer them twice. Returns how many were dropped.
        """
        return self.ready.filter_items(lambda item: item.tp not in tps)

    @property
    def queued_requests(self) -> int:
        return self.ready.requests


def wait_for_any(refs: list[Any], block_s: float) -> list[Any]:
    """The refs that are back, waiting up to ``block_s`` for the first one.

    One ``ray.wait`` when nothing is back (most calls: each costs the loop ~0.1 ms); a second
    only to take every batch that is back once one is.
    """
    if not refs:
        return []
    ready, _ = ray.wait(refs, num_returns=1, timeout=block_s)
    if ready and len(refs) > 1:
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
    return list(ready)
