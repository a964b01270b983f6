"""The pools of one ingest: the default pool, and one per pipeline that declares its own.

A pipeline registered with ``pool=Pool(...)`` (:class:`rayml.pipeline.Pool`) gets workers of
its own in every ingest, of the shape it declares (CPUs, GPUs, memory), with its own batch size
and wait; every other pipeline shares the default pool (``executor.num_workers`` workers of
``executor.worker_num_cpus``). Each pool has its own :class:`~rayml.executor.dispatch.Dispatcher`
(its ready queue, time bounds, retries), so a pool that is full, starting or at zero never
holds up another pool's batches. The ingest's loop waits on all of them with one ``ray.wait``.

Sizes:

* A pool starts at its ``min_replicas`` (the default pool at ``executor.num_workers``).
* The autoscaler (:mod:`rayml.autoscaling.controller`) resizes each pipeline's pool on that
  pipeline's own backlog (requests queued and in flight here) and service rate, within
  ``[max(1, min_replicas), max_replicas]``; the default pool as before, on the group's lag.
* Scale to zero (``min_replicas=0``): a pool with nothing queued or in flight for
  ``idle_timeout_s`` releases its workers (:meth:`Pools.release_idle`); the next batch for it
  starts one at once (:meth:`WorkerPool.wake`), and waits in its queue meanwhile, still counted
  in flight, so its offsets stay uncommitted and nothing is lost. The time to the first answer
  is the pool's cold start, shown in ``rayml status``.

Used from the ingest's loop thread only (``status`` reads counters from another thread).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rayml.config import Settings
from rayml.errors import PoolUnavailableError
from rayml.executor.dispatch import Dispatcher, wait_for_any
from rayml.executor.pool import WorkerPool
from rayml.executor.work import BatchOutcome, InFlight, Pending, Route
from rayml.kafka.partitions import TP
from rayml.pipeline import Pool, Registry
from rayml.pipeline.spec import DEFAULT_POOL

__all__ = ["DEFAULT_POOL", "PoolEntry", "Pools", "dispatch_shares"]
from rayml.tenancy.rules import tenants_of

logger = logging.getLogger(__name__)


@dataclass
class PoolEntry:
    """One pool of an ingest, its dispatcher and its counters."""

    name: str
    pipelines: list[str]
    pool: WorkerPool
    dispatcher: Dispatcher
    shape: Pool | None = None
    arrived: int = 0  # requests handed to its dispatcher
    answered: int = 0  # requests whose batch came back with an outcome
    last_work: float = field(default_factory=time.monotonic)  # monotonic
    released: int = 0  # times it went to zero
    # Requests queued for a worker and in flight on one, as of the last refresh (the loop
    # thread computes them; status reads them from another thread).
    queued: int = 0
    backlog: int = 0
    # Since when requests have waited here with no worker serving (monotonic), if they do.
    unserved_since: float | None = None
    unavailable: int = 0  # requests answered pool_unavailable

    def refresh(self) -> None:
        d = self.dispatcher
        self.queued = d.queued_requests
        self.backlog = self.queued + sum(len(b.items) for b in d.inflight.values())

    @property
    def quiet(self) -> bool:
        """Nothing queued, in flight or shadowed."""
        d = self.dispatcher
        return not d.inflight and not d.ready and not d.shadow_ready


class Pools:
    """The pools of one ingest.

    Args:
        settings: Executor and rollout settings.
        ingest_id: The ingest's id (pool and worker ids start with it).
        registry: The pipelines served; those with a ``pool`` get one each.
        make_dispatcher: Builds a pool's dispatcher (the ingest's callbacks bound).
        on_unavailable: Answers the requests queued for a pipeline's own pool that had no
            serving worker for ``executor.pool_start_timeout_s`` (error and dead letter).
    """

    def __init__(
        self,
        settings: Settings,
        ingest_id: str,
        registry: Registry,
        make_dispatcher: Callable[[WorkerPool, int], Dispatcher],
        on_unavailable: Callable[[list[Pending], BaseException], None] | None = None,
    ) -> None:
        ex = settings.executor
        self._ingest_id = ingest_id
        self._on_unavailable = on_unavailable
        self._start_timeout_s = ex.pool_start_timeout_s
        default = WorkerPool(settings, ingest_id, ex.num_workers)
        own = [
            registry.get(name)
            for name in registry.names()
            if registry.get(name).kind == "inference" and registry.get(name).pool is not None
        ]
        self.default = PoolEntry(
            DEFAULT_POOL,
            sorted(
                s.name
                for s in (registry.get(n) for n in registry.names())
                if s.kind == "inference" and s.pool is None
            ),
            default,
            make_dispatcher(default, ex.max_batch_size),
        )
        self.entries: dict[str, PoolEntry] = {DEFAULT_POOL: self.default}
        self._by_path: dict[str, PoolEntry] = {}
        for spec in own:
            shape = spec.pool
            assert shape is not None
            pool = WorkerPool(settings, f"{ingest_id}-{spec.name}", shape.min_replicas, shape)
            entry = PoolEntry(
                spec.name,
                [spec.name],
                pool,
                make_dispatcher(pool, shape.max_batch_size or ex.max_batch_size),
                shape,
            )
            self.entries[spec.name] = entry
            self._by_path[spec.import_path] = entry
        self._many = len(self.entries) > 1
        self._wait_ms = ex.max_batch_wait_ms

    # -- routing ---------------------------------------------------------------------------

    def entry_of(self, route: Route) -> PoolEntry:
        return self._by_path.get(route[0], self.default) if self._many else self.default

    def limits_of(self, key: Route) -> tuple[int | None, float | None] | None:
        """A route's own batch size and wait (its pipeline's pool), for the micro-batcher."""
        entry = self._by_path.get(key[0]) if self._many else None
        if entry is None or entry.shape is None:
            return None
        wait = entry.shape.max_batch_wait_ms
        return entry.shape.max_batch_size, None if wait is None else wait / 1000.0

    def enqueue_all(self, batches: list[tuple[Route, list[Pending]]]) -> None:
        """Queue formed batches, then send: each pool's free workers take the best of what
        was queued (lanes, tenants: rayml.executor.ready), not the first batch formed."""
        touched: dict[str, PoolEntry] = {}
        for route, items in batches:
            entry = self.entry_of(route)
            entry.arrived += len(items)
            entry.last_work = time.monotonic()
            shape = entry.shape
            if shape is not None and shape.scales_to_zero:
                self._wake(entry, len(items))
            entry.dispatcher.enqueue(route, items, pump=False)
            touched[entry.name] = entry
        for entry in touched.values():
            entry.dispatcher.pump()

    def enqueue(self, route: Route, items: list[Pending]) -> None:
        self.enqueue_all([(route, items)])

    def _wake(self, entry: PoolEntry, requests: int) -> None:
        """Start a worker for a pool at zero; a start Ray refuses is logged, and the requests
        are answered ``pool_unavailable`` after the start timeout (never a crash of the loop)."""
        try:
            if entry.pool.wake():
                logger.info(
                    "ingest=%s pool=%s was at zero: starting a worker for %d requests (cold start)",
                    self._ingest_id,
                    entry.name,
                    requests,
                )
        except Exception:
            logger.exception(
                "ingest=%s pool=%s: a worker could not be started", self._ingest_id, entry.name
            )

    def enqueue_shadow(self, route: Route, items: list[Pending]) -> None:
        entry = self.entry_of(route)
        entry.last_work = time.monotonic()
        entry.dispatcher.enqueue_shadow(route, items)

    def answered(self, batch: InFlight, outcome: BatchOutcome) -> None:
        """Count a caller's batch that came back (called before the ingest answers it); the
        pool's idle time counts from its last answer, not from its last request."""
        entry = self.entry_of(batch.route)
        entry.answered += len(batch.items)
        entry.last_work = time.monotonic()

    # -- the loop --------------------------------------------------------------------------

    def collect(self, block_s: float) -> None:
        """Hand back every finished batch of every pool (one ``ray.wait`` for all)."""
        if not self._many:
            self.default.dispatcher.collect(block_s)
            return
        refs = [ref for e in self.entries.values() for ref in e.dispatcher.inflight]
        back = set(wait_for_any(refs, block_s)) if refs else set()
        for entry in self.entries.values():
            d = entry.dispatcher
            if d.inflight:
                d.take_back([ref for ref in d.inflight if ref in back] if back else [])
            else:
                d.pump()  # nothing to take back, but workers may have come up

    def release_idle(self, now: float) -> None:
        """Release the workers of pools that may scale to zero and had nothing to do."""
        for entry in self.entries.values():
            shape = entry.shape
            if (
                shape is None
                or not shape.scales_to_zero
                or entry.pool.size == 0
                or not entry.quiet
                or now - entry.last_work < shape.idle_timeout_s
            ):
                continue
            logger.info(
                "ingest=%s pool=%s idle for %.0fs: releasing its %d workers (its next request "
                "starts one)",
                self._ingest_id,
                entry.name,
                now - entry.last_work,
                entry.pool.size,
            )
            entry.pool.resize(0)
            entry.released += 1

    def resize(self, name: str, workers: int) -> None:
        """Resize one pool within its bounds (a pool at zero is left to :meth:`enqueue`)."""
        entry = self.entries.get(name)
        if entry is None:
            logger.warning("ingest=%s: no pool %r to resize", self._ingest_id, name)
            return
        shape = entry.shape
        if shape is not None:
            if entry.pool.size == 0:
                return  # released while idle: its next request starts it
            workers = min(shape.max_replicas, max(1, shape.min_replicas, workers))
        entry.pool.resize(workers)

    # -- the whole -------------------------------------------------------------------------

    @property
    def in_flight(self) -> bool:
        """Whether any batch is out on a worker."""
        if not self._many:
            return bool(self.default.dispatcher.inflight)
        return any(e.dispatcher.inflight for e in self.entries.values())

    @property
    def batches_in_flight(self) -> int:
        return sum(len(e.dispatcher.inflight) for e in self.entries.values())

    @property
    def batches_ready(self) -> int:
        return sum(len(e.dispatcher.ready) for e in self.entries.values())

    def room(self) -> bool:
        """A worker with room for a batch (``max_batches_per_worker``) and no batch queued
        ahead for it, in some pool."""
        if not self._many:
            return not self.default.dispatcher.ready and self.default.pool.has_room
        return any(not e.dispatcher.ready and e.pool.has_room for e in self.entries.values())

    def pools_with_room(self) -> set[str]:
        """The pools with a worker that has room for a batch and no batch queued for it."""
        return {n for n, e in self.entries.items() if not e.dispatcher.ready and e.pool.has_room}

    @property
    def many(self) -> bool:
        """Whether any pipeline has a pool of its own."""
        return self._many

    def stuck(self) -> bool:
        """Nothing is in flight, and every pool with queued work has no serving worker (a
        drain waiting for them would wait for nothing)."""
        if self.in_flight:
            return False
        queued = [e for e in self.entries.values() if e.dispatcher.ready]
        return bool(queued) and all(e.pool.serving == 0 for e in queued)

    def refresh(self, now: float) -> None:
        """Count each pool's backlog for status and the autoscaler, and give up on pools that
        cannot start (loop thread)."""
        for entry in self.entries.values():
            entry.refresh()
            if entry.shape is not None:
                self._check_unserved(entry, now)

    def _check_unserved(self, entry: PoolEntry, now: float) -> None:
        """A pipeline's own pool with requests queued and no serving worker for
        ``pool_start_timeout_s``: its queued requests are answered, not held for ever."""
        d = entry.dispatcher
        if not d.ready or entry.pool.serving > 0:
            entry.unserved_since = None
            return
        if entry.unserved_since is None:
            entry.unserved_since = now
            return
        waited = now - entry.unserved_since
        if waited < self._start_timeout_s or self._on_unavailable is None:
            return
        items = [item for _route, batch in d.ready for item in batch]
        d.ready.filter_items(lambda _item: False)
        entry.unavailable += len(items)
        entry.unserved_since = now  # later requests get a whole timeout of their own
        logger.error(
            "ingest=%s pool=%s: no worker served for %.0fs (%s); answering its %d queued "
            "requests pool_unavailable (dead-lettered for replay)",
            self._ingest_id,
            entry.name,
            waited,
            entry.pool.describe(),
            len(items),
        )
        self._on_unavailable(items, PoolUnavailableError(entry.name, waited, len(items)))

    def drop(self, tps: set[TP]) -> int:
        return sum(e.dispatcher.drop(tps) for e in self.entries.values())

    def shutdown(self) -> None:
        for entry in self.entries.values():
            entry.pool.shutdown()

    def counter(self, name: str) -> int:
        """A dispatcher counter summed over the pools (``batches``, ``redispatched``...)."""
        return sum(int(getattr(e.dispatcher, name)) for e in self.entries.values())

    def status(self) -> list[dict[str, Any]]:
        """Each pool: its pipelines, shape, size, backlog, counters and last cold start."""
        out = []
        for entry in list(self.entries.values()):
            shape = entry.shape
            described = entry.pool.describe()
            out.append(
                {
                    "pool": entry.name,
                    "pipelines": entry.pipelines,
                    **described,
                    "max": None if shape is None else shape.max_replicas,
                    "scale_to_zero": shape is not None and shape.scales_to_zero,
                    "idle_timeout_s": None if shape is None else shape.idle_timeout_s,
                    "max_batch_size": entry.dispatcher.max_batch_size,
                    "max_batch_wait_ms": self._wait_ms
                    if shape is None or shape.max_batch_wait_ms is None
                    else shape.max_batch_wait_ms,
                    "queued": entry.queued,
                    "backlog": entry.backlog,
                    "arrived": entry.arrived,
                    "answered": entry.answered,
                    "released": entry.released,
                    "unavailable": entry.unavailable,
                    "idle_s": round(time.monotonic() - entry.last_work, 1),
                }
            )
        return out


def dispatch_shares(settings: Settings) -> dict[str, Any]:
    """The dispatchers' shares (:mod:`rayml.executor.ready`): the bulk lane's share, and each
    tenant's weight."""
    return {
        "batch_share": settings.lanes.batch_share,
        "tenant_weights": {t.name: t.weight for t in tenants_of(settings)},
    }
