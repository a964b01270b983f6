"""The executor: what ``rayml serve`` runs on a Ray cluster.

It connects to Ray (or starts a local one), discovers the pipelines, creates the topics if they
are missing, publishes the registry, and starts the ingest actors, each with its own ModelWorker
pool. On SIGTERM/SIGINT it drains them within ``drain_timeout_s`` (stop polling, finish or give
up on in-flight work, commit, leave the group).

Example:
    >>> from rayml.config import load_settings
    >>> executor = Executor(load_settings())        # doctest: +SKIP
    >>> executor.start(); executor.drain()          # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rayml import logs
from rayml.config import Settings
from rayml.errors import RaymlError
from rayml.executor.gc_pauses import tune_for_throughput
from rayml.executor.ingest import Ingest
from rayml.executor.registry_lease import RegistryLease
from rayml.kafka import clients as kafka_clients
from rayml.kafka.topics import create_topics
from rayml.pipeline import Registry
from rayml.rollouts.monitor import RolloutMonitor
from rayml.tenancy.rules import Tenancy, tenants_of

if TYPE_CHECKING:
    from rayml.autoscaling.controller import PoolAutoscaler

logger = logging.getLogger(__name__)

# Ingest actors are named "<INGEST_ACTOR_PREFIX><executor instance>-i<n>" in the Ray namespace
# (`rayml status` finds them by it).
INGEST_ACTOR_PREFIX = "rayml-ingest:"

# The Ray memory an ingest actor reserves (ingest_memory_bytes): a fixed part for what it holds
# besides its in-flight records (the Python runtime and Ray's core worker, librdkafka's queues:
# the consumer's prefetch is bounded at 8 MiB; its workers' handles, metrics), plus 2.5 bytes
# per byte of its budget: the record's value, the request decoded from it and a batch's
# serialized Ray call arguments are held at once. Measured with 1 MiB requests: RSS at most
# 249 MiB behind a 32 MiB budget and 414 MiB behind 64 MiB, i.e. ~256 MiB + 2.5x the budget.
INGEST_BASE_MEMORY = 256 * 1024**2
INGEST_MEMORY_PER_HELD_BYTE = 2.5
# At most this share of the smallest node's memory, split among the ingests it may hold: the
# rest is the workers' and training's (a training task declaring 2 GiB must still find room on
# a small node).
INGEST_NODE_MEMORY_SHARE = 0.25


class IngestActorImpl:
    """Ray actor body around :class:`~rayml.executor.ingest.Ingest`: the loop runs in a thread so
    that control calls (status, resize, drain) are served on other actor threads meanwhile.

    The actor is restartable: if its loop crashes, the process exits and Ray starts it again,
    which re-joins the consumer group and resumes from the committed offsets.
    """

    def __init__(self, settings: Settings, ingest_id: str) -> None:
        logs.configure(settings.log_level)
        registry = Registry()
        registry.discover(settings.executor.pipeline_modules)
        self.ingest = Ingest(settings, ingest_id, registry)
        # What start-up left alive (modules, Ray, the registry) out of the collector's sight,
        # and young collections rarer: see rayml.executor.gc_pauses.
        tune_for_throughput()
        self._thread = threading.Thread(target=self._run, name=f"ingest-{ingest_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.ingest.run()
        except BaseException:
            # A dead loop in a live actor would stall its partitions silently: exit instead, so
            # Ray restarts the actor (max_restarts) and the group reassigns the partitions.
            logging.getLogger(__name__).exception("ingest loop crashed; restarting the actor")
            os._exit(1)

    def ready(self) -> str:
        return self.ingest.ingest_id

    def status(self) -> dict[str, Any]:
        status = self.ingest.status()
        status["workers"] = self.ingest.pool.stats()
        # Each pipeline's own pool: its workers too (where they run, on which device).
        entries = self.ingest.pools.entries
        for pool in status.get("pools", []):
            entry = entries.get(pool["pool"])
            if entry is not None and entry.shape is not None:
                pool["workers"] = entry.pool.stats()
        return status

    def resize(self, workers: int) -> None:
        self.ingest.resize(workers)

    def resize_pool(self, name: str, workers: int) -> None:
        self.ingest.resize_pool(name, workers)

    def drain(self, timeout_s: float) -> bool:
        return self.ingest.stop(timeout_s)


def publish_registry(settings: Settings, registry: Registry) -> int:
    """Write each pipeline's description to the compacted registry topic (key = name)."""
    producer = kafka_clients.producer(settings.kafka)
    described = registry.describe()
    for entry in described:
        producer.produce(
            settings.topics.registry,
            key=entry["name"].encode(),
            value=json.dumps(entry, sort_keys=True).encode(),
        )
    remaining = producer.flush(30)
    if remaining:
        raise RaymlError(f"could not publish the registry: {remaining} messages not delivered")
    return len(described)


def _absolute_store(settings: Settings) -> Settings:
    # Actors may run with another working directory (or on another node): pin a local model
    # store path to an absolute one. URLs (s3://...) are left as they are.
    root = settings.models.root
    if "://" in root:
        return settings
    absolute = str(Path(root).resolve())
    return settings.model_copy(
        update={"models": settings.models.model_copy(update={"root": absolute})}
    )


def size_worker_cpus(cluster_cpus: float, workers: int, reserve_cpus: float) -> float:
    """CPUs per model worker when the settings leave it open: up to 1, leaving ``reserve_cpus``
    of the cluster to training tasks; 1 when the cluster has no CPUs yet (autoscaling from
    zero: each worker then asks for a node's CPU). At least 0.05, in steps of 0.05.

    >>> size_worker_cpus(2, 2, 1.0)   # a 2-core laptop: a training task fits beside the pool
    0.5
    >>> size_worker_cpus(16, 2, 1.0), size_worker_cpus(0, 4, 1.0)
    (1.0, 1.0)
    >>> size_worker_cpus(1, 2, 1.0)   # no room for training at all: the smallest share
    0.05
    """
    if cluster_cpus <= 0 or workers <= 0:
        return 1.0
    share = (cluster_cpus - reserve_cpus) / workers
    if share >= 1.0:
        return 1.0
    return max(0.05, math.floor(share * 20) / 20)


INGEST_CORES = 4  # CPUs of a node per ingest actor, for ingest_actors = "auto"


def ingest_count(node_cpus: list[float], input_partitions: int) -> int:
    """``ingest_actors = "auto"``: one ingest per :data:`INGEST_CORES` CPUs of each ML node
    (at least one a node: an ingest is one Python loop, so a big node's cores are fed by
    several), never more than the input partitions (an ingest without one idles).

    >>> ingest_count([2.0], 8), ingest_count([16.0, 16.0, 0.0], 8), ingest_count([64.0], 8)
    (1, 8, 8)
    >>> ingest_count([], 8)   # no ML node yet (autoscaling from zero)
    1
    """
    per_node = [max(1, int(cpus // INGEST_CORES)) for cpus in node_cpus if cpus > 0]
    return max(1, min(input_partitions, sum(per_node)))


def with_ingest_count(settings: Settings) -> Settings:
    """``settings`` with ``executor.ingest_actors`` a number (resolved from the cluster if
    "auto")."""
    ex = settings.executor
    if ex.ingest_actors != "auto":
        return settings
    cpus = [
        float(node.get("Resources", {}).get("CPU", 0)) for node in ray.nodes() if node.get("Alive")
    ]
    partitions = settings.topics.input_partitions * len(tenants_of(settings))
    count = ingest_count(cpus, partitions)
    logger.info(
        "ingest_actors=%d for ML nodes of %s CPUs and %d input partitions (auto)",
        count,
        ", ".join(f"{c:g}" for c in cpus if c > 0) or "no",
        partitions,
    )
    return settings.model_copy(update={"executor": ex.model_copy(update={"ingest_actors": count})})


def ingests(settings: Settings) -> int:
    """The number of ingest actors, once resolved (:func:`with_ingest_count`)."""
    count = settings.executor.ingest_actors
    if not isinstance(count, int):
        raise ValueError("executor.ingest_actors is not resolved yet (with_ingest_count)")
    return count


def with_sized_workers(settings: Settings, cluster_cpus: float) -> Settings:
    """``settings`` with ``executor.worker_num_cpus`` set (sized from the cluster if unset)."""
    ex = settings.executor
    if ex.worker_num_cpus is not None:
        return settings
    if settings.autoscale.enabled:
        # The pool grows and the cluster with it: a share of today's CPUs would be wrong
        # tomorrow (and would ask Ray's autoscaler for too little). One CPU per worker.
        return settings.model_copy(
            update={"executor": ex.model_copy(update={"worker_num_cpus": 1.0})}
        )
    workers = ex.num_workers * ingests(settings)
    cpus = size_worker_cpus(cluster_cpus, workers, settings.training.reserve_cpus)
    logger.info(
        "worker_num_cpus=%s for %d workers on %s cluster CPUs (%s kept for training; set "
        "executor.worker_num_cpus to choose)",
        cpus,
        workers,
        cluster_cpus,
        settings.training.reserve_cpus,
    )
    if cluster_cpus > 0 and cluster_cpus - cpus * workers < settings.training.reserve_cpus:
        logger.warning(
            "the %s cluster CPUs leave no %s CPU(s) for training beside %d workers: training "
            "tasks wait until the cluster grows",
            cluster_cpus,
            settings.training.reserve_cpus,
            workers,
        )
    return settings.model_copy(update={"executor": ex.model_copy(update={"worker_num_cpus": cpus})})


def ingest_memory_bytes(
    max_in_flight_bytes: int, node_memory: list[float], ingests_per_node: int
) -> tuple[int, int]:
    """The Ray memory to reserve per ingest actor, and what its byte budget would want.

    ``node_memory``: the ``memory`` resource of each node an ingest may go to (none known:
    nothing caps it, e.g. a cluster autoscaling from zero). The reservation is capped to
    :data:`INGEST_NODE_MEMORY_SHARE` of the smallest such node, split among the
    ``ingests_per_node`` it may hold, so that the actor can always be placed.

    >>> mib = 1024**2
    >>> [n // mib for n in ingest_memory_bytes(256 * mib, [16 * 1024 * mib], 1)]
    [896, 896]
    >>> [n // mib for n in ingest_memory_bytes(256 * mib, [2048 * mib], 2)]  # capped
    [256, 896]
    """
    wanted = INGEST_BASE_MEMORY + int(INGEST_MEMORY_PER_HELD_BYTE * max_in_flight_bytes)
    if not node_memory:
        return wanted, wanted
    cap = int(min(node_memory) * INGEST_NODE_MEMORY_SHARE / max(1, ingests_per_node))
    return min(wanted, cap), wanted


def ingest_memory(settings: Settings) -> int:
    """:func:`ingest_memory_bytes` for this cluster's nodes (logged when capped)."""
    ex = settings.executor
    nodes = [
        node["Resources"]
        for node in ray.nodes()
        if node.get("Alive") and node.get("Resources", {}).get("memory", 0) > 0
    ]
    if ex.ingest_placement == "spread":
        # The ML nodes (spread_over_nodes), one ingest per node before any gets a second.
        ml_nodes = [r for r in nodes if r.get("CPU", 0) > 0]
        per_node = math.ceil(ingests(settings) / max(1, len(ml_nodes)))
        nodes = ml_nodes or nodes
    else:
        per_node = ingests(settings)  # Ray's placement: all of them may land on one node
    reserved, wanted = ingest_memory_bytes(
        ex.max_in_flight_bytes, [float(r["memory"]) for r in nodes], per_node
    )
    if reserved < wanted:
        logger.warning(
            "each ingest actor reserves %d MiB of Ray memory, not the %d MiB its "
            "executor.max_in_flight_bytes of %d MiB asks for: the smallest node has %d MiB for "
            "up to %d ingests; lower max_in_flight_bytes or give the nodes more memory",
            reserved // 2**20,
            wanted // 2**20,
            ex.max_in_flight_bytes // 2**20,
            int(min(float(r["memory"]) for r in nodes)) // 2**20,
            per_node,
        )
    return reserved


def ingest_placements(settings: Settings, count: int) -> list[Any]:
    """Where the ingest actors go (``executor.ingest_placement``).

    ``spread``: one per ML node (:func:`spread_over_nodes`), so that a lost node takes only its
    share of the consumers. ``default``: Ray's default, in practice beside the driver on the
    head: one failure domain, but on a node that Ray's autoscaler never removes (an ingest
    actor needs no CPU, so a node that holds only ingest actors counts as idle and may be
    scaled down under it; the supervisor then starts it elsewhere, a pause of one session
    timeout for its partitions).
    """
    if settings.executor.ingest_placement == "default":
        return ["DEFAULT"] * count
    return spread_over_nodes(count)


def spread_over_nodes(count: int) -> list[Any]:
    """Scheduling strategies that put ``count`` actors round-robin on the ML nodes.

    Ray's ``SPREAD`` is best effort and, for actors that need no CPU, often packs them on one
    node, and so does a *soft* node affinity (measured on Ray 2.60). Ingest actors are pinned
    instead, one per node with CPUs (the head of a cluster that keeps its CPUs for itself has
    none) before any node gets a second. A pinned actor cannot restart when its node is gone:
    :meth:`Executor._supervise` starts it again elsewhere.
    """
    nodes = sorted(
        node["NodeID"]
        for node in ray.nodes()
        if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) > 0
    )
    if not nodes:  # no ML node yet (an autoscaling cluster starting from zero): Ray decides
        return ["DEFAULT"] * count
    return [
        NodeAffinitySchedulingStrategy(node_id=nodes[n % len(nodes)], soft=False)
        for n in range(count)
    ]


class Executor:
    """Starts and controls the ingest actors of one executor instance."""

    def __init__(self, settings: Settings) -> None:
        self.settings = _absolute_store(settings)
        self.instance_id = f"ex-{uuid.uuid4().hex[:6]}"
        self.actors: list[Any] = []
        self.job_runners: list[Any] = []
        self._started_ray = False
        self._stopping = threading.Event()

    def start(self, create_missing_topics: bool = True, timeout_s: float = 120.0) -> None:
        """Connect to Ray, publish the registry, start the ingest actors and wait for them."""
        settings = self.settings
        autoscaler: PoolAutoscaler | None = None
        if settings.autoscale.enabled:
            from rayml.autoscaling.controller import PoolAutoscaler

            # Built first: bad autoscale settings fail before anything starts.
            autoscaler = PoolAutoscaler(settings, self)
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "namespace": settings.ray.namespace,
                "logging_level": logging.WARNING,
            }
            if settings.ray.address is None:
                options["include_dashboard"] = False
            ray.init(address=settings.ray.address, **options)
            self._started_ray = True
        settings = self.settings = with_sized_workers(
            with_ingest_count(settings), float(ray.cluster_resources().get("CPU", 0))
        )
        if autoscaler is not None:
            autoscaler.settings = settings
        registry = Registry()
        names = registry.discover(settings.executor.pipeline_modules)
        if create_missing_topics:
            create_topics(settings.kafka, settings.topics)
        published = publish_registry(settings, registry)
        logger.info(
            "executor=%s publishing %d pipelines: %s", self.instance_id, published, ", ".join(names)
        )
        self._actor_cls = ray.remote(IngestActorImpl)
        self._ingest_memory = ingest_memory(settings)
        self.actors = [
            self._start_ingest(n, placement)
            for n, placement in enumerate(ingest_placements(settings, ingests(settings)))
        ]
        ray.get([a.ready.remote() for a in self.actors], timeout=timeout_s)
        logger.info("executor=%s started %d ingest actors", self.instance_id, len(self.actors))
        logger.info(
            "executor=%s tenants: %s",
            self.instance_id,
            "; ".join(
                f"{t.name} (inference {t.input_topic}, training {t.training_topic or '-'}, "
                f"results {t.result_topic})"
                for t in Tenancy(settings).tenants
            ),
        )
        # Training: job runners on the tenants' training topics (rayml.training.runner), started
        # once ingest is serving.
        from rayml.training.runner_actor import start_job_runners

        self.job_runners = start_job_runners(settings, self.instance_id, timeout_s)
        # The pool autoscaler (rayml.autoscaling.controller): a thread here that resizes the pools.
        self.autoscaler = autoscaler
        if autoscaler is not None:
            autoscaler.start()
        # Rollouts (docs/rollouts.md): a thread here that follows them and, by the policy in
        # [rollout], promotes or aborts them.
        self.rollout_monitor: RolloutMonitor | None = RolloutMonitor(settings)
        self._supervisor = threading.Thread(
            target=self._supervise, name="ingest-supervisor", daemon=True
        )
        self._supervisor.start()
        # Clients learn which pipelines have a live pool from this lease (rayml.protocol.leases).
        self.lease: RegistryLease | None = RegistryLease(settings, self.instance_id, names)
        self.lease.start()

    def _start_ingest(self, n: int, placement: Any) -> Any:
        settings = self.settings
        return self._actor_cls.options(
            num_cpus=0,  # IO-bound: it must never take a CPU a worker or training needs
            # What its in-flight byte budget may hold (ingest_memory): Ray places it only where
            # that much memory is free, and counts it against the node.
            memory=self._ingest_memory,
            max_concurrency=8,
            # A crashed loop restarts in place (same node, same ingest id); a lost node is the
            # supervisor's job (_supervise), as the placement pins the node.
            max_restarts=-1,
            scheduling_strategy=placement,
            # Named, so `rayml status` finds them on the cluster.
            name=f"{INGEST_ACTOR_PREFIX}{self.instance_id}-i{n}",
            namespace=settings.ray.namespace,
        ).remote(settings, f"{self.instance_id}-i{n}")

    def _supervise(self) -> None:
        """Start again, on a live node, each ingest actor whose node is gone.

        Ray restarts a crashed ingest actor itself, but not one pinned to a node that died
        (``ActorUnschedulableError``) nor one whose restart failed (``ActorDiedError``). The
        new actor has the same ingest id: it joins the group, and the partitions its
        predecessor held (uncommitted work included) come back to it or to the others.
        """
        while not self._stopping.wait(self.settings.executor.supervise_interval_s):
            for n, actor in enumerate(list(self.actors)):
                try:
                    ray.get(actor.ready.remote(), timeout=10)
                except (ray.exceptions.ActorUnschedulableError, ray.exceptions.ActorDiedError):
                    if self._stopping.is_set():
                        return
                    self._replace_ingest(n, actor)
                except (ray.exceptions.RayError, TimeoutError):
                    continue  # restarting, or busy: look again next round

    def _replace_ingest(self, n: int, dead: Any) -> None:
        ray.kill(dead, no_restart=True)
        placement = ingest_placements(self.settings, len(self.actors))[n]
        for _attempt in range(50):
            try:
                self.actors[n] = self._start_ingest(n, placement)
            except ValueError:  # the dead actor's name is not released yet
                time.sleep(0.2)
                continue
            logger.warning(
                "executor=%s ingest i%d lost with its node; started again on another node",
                self.instance_id,
                n,
            )
            return
        # Still the dead handle: the next round of _supervise tries again.
        logger.warning("executor=%s ingest i%d not restarted yet", self.instance_id, n)

    def status(self, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Each ingest actor's status (in-flight, assignment, pool, counters)."""
        result: list[dict[str, Any]] = ray.get(
            [a.status.remote() for a in self.actors], timeout=timeout_s
        )
        return result

    def resize(self, workers_per_ingest: int) -> None:
        """Resize every ingest's default pool."""
        ray.get([a.resize.remote(workers_per_ingest) for a in self.actors])

    def resize_pool(self, name: str, workers_per_ingest: int) -> None:
        """Resize one pipeline's own pool in every ingest (within its declared bounds)."""
        ray.get([a.resize_pool.remote(name, workers_per_ingest) for a in self.actors])

    def drain(self, timeout_s: float | None = None) -> bool:
        """Stop every ingest actor gracefully within ``timeout_s``; True if all finished."""
        timeout = self.settings.executor.drain_timeout_s if timeout_s is None else timeout_s
        autoscaler = getattr(self, "autoscaler", None)
        if autoscaler is not None:
            # First: no resize may reach an ingest that is draining.
            autoscaler.stop()
            self.autoscaler = None
        monitor = getattr(self, "rollout_monitor", None)
        if monitor is not None:
            monitor.stop()
            self.rollout_monitor = None
        lease = getattr(self, "lease", None)
        if lease is not None:
            # First of all: no client sends to pipelines that stop being served.
            lease.stop()
            self.lease = None
        self._stopping.set()
        done = True
        # Job runners drain alongside the ingest (within the same bound): unfinished training
        # is given up and its job re-runs after the restart.
        runners = self.job_runners
        try:
            finished = ray.get(
                [a.drain.remote(timeout) for a in [*self.actors, *runners]], timeout=timeout + 15
            )
            done = all(finished)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            logger.warning("executor=%s drain incomplete: %s", self.instance_id, exc)
            done = False
        for actor in [*self.actors, *runners]:
            ray.kill(actor, no_restart=True)
        self.actors = []
        self.job_runners = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
        return done
