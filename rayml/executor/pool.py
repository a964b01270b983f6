"""The ModelWorker pool of one ingest actor: create, route to, replace, resize.

Each ingest actor owns its pool: the workers are its child actors, so they share its fate (a
killed executor leaves no orphan workers) and only one owner ever replaces a dead worker. The
pool is used from the ingest's loop thread only.

* Routing: model affinity (:mod:`rayml.executor.routing`) over the workers that are up (their first
  ping answered) and not draining.
* A dead worker (``RayActorError``) is removed and a new one started at once; the ingest
  re-dispatches the dead worker's batches.
* Shrinking marks workers as draining: they get no new batches and are ended when their last
  in-flight batch comes back, so resizing never loses work.
* Shape: the ingest's default pool has ``executor.worker_num_cpus`` workers; a pipeline's own
  pool (:class:`rayml.pipeline.Pool`) reserves what it declares, GPUs included. A GPU pool on a
  cluster where no node has a GPU starts its workers without one when ``gpu_fallback`` (checked
  at each start: a GPU node that joins later gets the next workers).
* Size zero (a pool with ``min_replicas=0``): :meth:`WorkerPool.resize` to 0 ends every worker
  once its batches are back; growing from zero is a *cold start*, timed from the first worker's
  start to its first answer (:attr:`WorkerPool.last_cold_start_s`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import ray

from rayml.config import Settings
from rayml.executor.routing import pick_worker, preferred_workers
from rayml.executor.worker import ModelWorker
from rayml.pipeline import Pool

logger = logging.getLogger(__name__)

# How often the loop asks Ray whether starting workers answered their first ping.
_START_CHECK_S = 0.005


@dataclass
class _Slot:
    handle: Any  # ray.actor.ActorHandle of a ModelWorker
    # The first ping while the worker starts; None once it answered. A worker gets no batch
    # before that: one waiting for a node (autoscaling) would hold the batch's offsets back
    # and stall the commit watermark until the node arrives.
    starting: Any = None
    in_flight: int = 0
    draining: bool = False
    # Running an isolated batch: nothing else is sent until it is back.
    exclusive: bool = False


class WorkerPool:
    """ModelWorker actors of one ingest, with model-affinity routing.

    Args:
        settings: Executor settings (worker resources, cache size, model store).
        owner_id: The pool's id; worker ids are ``<owner_id>-w<n>``.
        size: Initial number of workers.
        shape: A pipeline's own pool (``None``: the default pool, ``executor.worker_num_cpus``).
    """

    def __init__(
        self, settings: Settings, owner_id: str, size: int, shape: Pool | None = None
    ) -> None:
        self._settings = settings
        self._owner_id = owner_id
        self._slots: dict[str, _Slot] = {}
        self._seq = 0
        self.replaced = 0
        self.shape = shape
        ex = settings.executor
        cpus = None if shape is None else shape.num_cpus
        self.num_cpus = float(
            cpus if cpus is not None else 1.0 if ex.worker_num_cpus is None else ex.worker_num_cpus
        )
        self.num_gpus = 0.0 if shape is None else float(shape.num_gpus)
        self.memory = None if shape is None else shape.memory
        self.min_size = 1 if shape is None else shape.min_replicas
        # Workers started without the GPU they declare (no node has one): their count.
        self.on_cpu_instead_of_gpu = 0
        # Cold starts: growing from zero, timed from the first worker's start to its first
        # answered batch (time.monotonic()).
        self._cold_since: float | None = None
        self.cold_starts = 0
        self.last_cold_start_s: float | None = None
        self._actor_cls = ray.remote(ModelWorker)
        # Whether a worker may still be starting, and when to ask Ray about it next.
        self._starting = False
        self._next_start_check = 0.0
        self.resize(size)

    def wake(self) -> bool:
        """Work came for a pool at zero: start one worker (a cold start, timed). True if so."""
        if self.size > 0:
            return False
        self._cold_since = time.monotonic()
        self.resize(1)
        return True

    def _options(self) -> dict[str, Any]:
        """Ray options of the next worker (its GPU left out where no node has one)."""
        options: dict[str, Any] = {
            "num_cpus": self.num_cpus,
            # The pool replaces dead workers itself; Ray restarting them too would race it.
            "max_restarts": 0,
            "max_task_retries": 0,
        }
        if self.memory is not None:
            options["memory"] = self.memory
        if self.num_gpus > 0:
            if self.shape is not None and self.shape.gpu_fallback and not _cluster_has_gpus():
                self.on_cpu_instead_of_gpu += 1
                logger.warning(
                    "pool=%s: no node of the cluster has a GPU; starting a worker on CPU "
                    "(Pool(gpu_fallback=False) waits for a GPU node instead)",
                    self._owner_id,
                )
            else:
                options["num_gpus"] = self.num_gpus
        return options

    # -- membership ---------------------------------------------------------------------------

    def _spawn(self) -> str:
        """Start one worker (not serving until its first ping is answered)."""
        self._seq += 1
        worker_id = f"{self._owner_id}-w{self._seq}"
        ex = self._settings.executor
        options = self._options()
        handle = self._actor_cls.options(**options).remote(
            worker_id,
            self._settings.models.root,
            allow_pickle=self._settings.models.allow_pickle,
            cache_items=ex.worker_model_cache_size,
            cache_bytes=ex.worker_model_cache_bytes,
            threads=ex.worker_threads,
            log_level=self._settings.log_level,
            allow_unpromoted_pins=self._settings.models.allow_unpromoted_pins,
            version_check_ttl_s=self._settings.models.version_check_ttl_s,
            tune_gc=True,  # a process of its own (rayml.executor.gc_pauses)
            device="cuda" if options.get("num_gpus", 0) > 0 else "cpu",
        )
        self._slots[worker_id] = _Slot(handle, starting=handle.ping.remote())  # type: ignore[attr-defined]
        self._starting = True
        self._next_start_check = 0.0
        return worker_id

    def _check_started(self) -> None:
        """Move workers whose first ping came back into service (never blocks; asks Ray at
        most every few ms, however often the loop sends)."""
        if not self._starting:
            return
        now = time.monotonic()
        if now < self._next_start_check:
            return
        self._next_start_check = now + _START_CHECK_S
        starting = {s.starting: w for w, s in self._slots.items() if s.starting is not None}
        if not starting:
            self._starting = False
            return
        answered, _ = ray.wait(list(starting), num_returns=len(starting), timeout=0)
        for ref in answered:
            worker_id = starting[ref]
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                self.replace(worker_id)  # died while starting (its node went away)
                continue
            self._slots[worker_id].starting = None

    def resize(self, size: int) -> None:
        """Grow or shrink to ``size`` serving workers; shrinking drains before ending.

        Zero only for a pool that may scale to zero (``min_replicas=0``).
        """
        if size < self.min_size or size < 0:
            raise ValueError(f"pool {self._owner_id} needs at least {self.min_size} workers")
        serving = [w for w, s in self._slots.items() if not s.draining]
        for _ in range(size - len(serving)):
            self._spawn()
        # Drain the newest first: the oldest have the warmest caches.
        for worker_id in sorted(serving, key=self._seq_of)[size:] if len(serving) > size else []:
            self._slots[worker_id].draining = True
            self._end_if_idle(worker_id)
        logger.info("pool=%s size=%d (draining %d)", self._owner_id, size, self.draining)

    @staticmethod
    def _seq_of(worker_id: str) -> int:
        return int(worker_id.rsplit("-w", 1)[1])

    def _end_if_idle(self, worker_id: str) -> None:
        slot = self._slots.get(worker_id)
        if slot is not None and slot.draining and slot.in_flight == 0:
            del self._slots[worker_id]
            ray.kill(slot.handle, no_restart=True)

    def replace(self, worker_id: str) -> str | None:
        """Drop a dead worker and start a new one in its place (unless it was draining)."""
        slot = self._slots.pop(worker_id, None)
        if slot is None:
            return None
        self.replaced += 1
        ray.kill(slot.handle, no_restart=True)
        if slot.draining:
            return None
        new_id = self._spawn()
        logger.warning("pool=%s worker=%s died; replaced by %s", self._owner_id, worker_id, new_id)
        return new_id

    # -- work ---------------------------------------------------------------------------------

    def try_submit(
        self, model_key: str, *args: Any, exclusive: bool = False
    ) -> tuple[str, Any] | None:
        """Send one batch to a worker for ``model_key`` if one has room; else None.

        The model's preferred workers are tried first; when all of them are full the batch
        spills to any worker with room (the model then warms there too), so a hot model
        never waits while other workers idle. An ``exclusive`` batch goes only to a worker with
        nothing in flight, and that worker gets nothing else until it is back.
        """
        self._check_started()
        cap = 1 if exclusive else self._settings.executor.max_batches_per_worker
        serving = [
            w
            for w, s in self._slots.items()
            if not s.draining and s.starting is None and not s.exclusive
        ]
        room = [w for w in serving if self._slots[w].in_flight < cap]
        if not room:
            return None
        load = {w: self._slots[w].in_flight for w in room}
        preferred = preferred_workers(model_key, serving)[: self._settings.executor.model_replicas]
        candidates = [w for w in preferred if w in load] or room
        worker_id = pick_worker(model_key, candidates, load, replicas=len(candidates))
        slot = self._slots[worker_id]
        slot.in_flight += 1
        slot.exclusive = exclusive
        return worker_id, slot.handle.run_batch.remote(*args)

    def answered(self) -> None:
        """A batch came back with its outcome: the first after :meth:`wake` ends the cold start."""
        if self._cold_since is not None:
            self.last_cold_start_s = round(time.monotonic() - self._cold_since, 3)
            self.cold_starts += 1
            self._cold_since = None
            logger.info(
                "pool=%s cold start: first answer %.2fs after its first worker started",
                self._owner_id,
                self.last_cold_start_s,
            )

    def finished(self, worker_id: str) -> None:
        """A batch of ``worker_id`` came back (with a result or an error)."""
        slot = self._slots.get(worker_id)
        if slot is not None:
            slot.in_flight -= 1
            if slot.in_flight == 0:
                slot.exclusive = False
            self._end_if_idle(worker_id)

    # -- status -------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        # list(): status() reads it from another thread while the loop adds or ends workers.
        return sum(1 for s in list(self._slots.values()) if not s.draining)

    @property
    def starting(self) -> int:
        """Workers not serving yet: starting, or waiting for a node with room (after a node
        loss without spare capacity, until Ray's autoscaler adds one)."""
        # Read-only (status() calls it from another thread): the loop moves answered workers
        # into service only when it has a batch for them, so ask Ray which pings are back.
        pings = [s.starting for s in list(self._slots.values()) if s.starting is not None]
        if not pings:
            return 0
        answered, _ = ray.wait(pings, num_returns=len(pings), timeout=0)
        return len(pings) - len(answered)

    @property
    def serving(self) -> int:
        """Workers that take batches (up and not draining). Loop thread only."""
        self._check_started()
        return sum(1 for s in self._slots.values() if not s.draining and s.starting is None)

    @property
    def has_room(self) -> bool:
        """Whether a serving worker has nothing queued behind what it runs (at most one batch
        in flight, and room under ``max_batches_per_worker``): a batch sent now runs next on
        it (loop thread; no Ray call). With a larger ``max_batches_per_worker`` the rest of
        the room is for batches that filled or waited out their batch wait, so a worker is
        never sent a row of tiny batches."""
        cap = min(2, self._settings.executor.max_batches_per_worker)
        return any(
            s.in_flight < cap and s.starting is None and not s.draining and not s.exclusive
            for s in self._slots.values()
        )

    @property
    def draining(self) -> int:
        return sum(1 for s in list(self._slots.values()) if s.draining)

    def worker_ids(self) -> list[str]:
        return list(self._slots)

    def handle(self, worker_id: str) -> Any:
        return self._slots[worker_id].handle

    def stats(self, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """Each live worker's counters (workers that do not answer in time are left out)."""
        # Not the workers still starting (or waiting for a node): they would hold the answer.
        refs = {
            w: s.handle.stats.remote() for w, s in list(self._slots.items()) if s.starting is None
        }
        if not refs:
            return []
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        out = []
        for ref in ready:
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayError:
                continue
        return out

    @property
    def busy(self) -> bool:
        """Whether any batch is out on a worker (loop thread; no Ray call)."""
        return any(s.in_flight for s in self._slots.values())

    def describe(self) -> dict[str, Any]:
        """The pool's shape and size, for status (no Ray call but ``starting``)."""
        return {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "memory": self.memory,
            "min": self.min_size,
            "size": self.size,
            "starting": self.starting,
            "draining": self.draining,
            "replaced": self.replaced,
            "on_cpu_instead_of_gpu": self.on_cpu_instead_of_gpu,
            "cold_start_running_s": None
            if self._cold_since is None
            else round(time.monotonic() - self._cold_since, 3),
            "cold_starts": self.cold_starts,
            "last_cold_start_s": self.last_cold_start_s,
        }

    def shutdown(self) -> None:
        for slot in self._slots.values():
            ray.kill(slot.handle, no_restart=True)
        self._slots.clear()


def _cluster_has_gpus() -> bool:
    """Whether any node of the Ray cluster has a GPU resource (alive or not, as Ray counts)."""
    try:
        return float(ray.cluster_resources().get("GPU", 0)) > 0
    except Exception:  # not connected: let Ray place (and report) it
        return True
