"""What ``rayml status`` reports: consumer lag from Kafka, live figures from the executors.

Lag comes from the broker alone (committed offsets of the executor's group against the end
offsets of the input topic), so it is true even when no executor runs — which is exactly when
it matters. In-flight work, pool sizes, throughput and loaded models come from the executors'
ingest actors, found by name on the Ray cluster.
"""

from __future__ import annotations

import logging
from typing import Any

from rayml.executor.service import INGEST_ACTOR_PREFIX
from rayml.kafka.lag import PartitionLag

logger = logging.getLogger(__name__)


def executor_status(
    ray_address: str | None, namespace: str, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Status of every ingest actor on the Ray cluster at ``ray_address``.

    Connects as a short-lived driver; returns [] when no executor runs there.
    """
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=ray_address or "auto",
            namespace=namespace,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    try:
        names = [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(INGEST_ACTOR_PREFIX) and a["namespace"] == namespace
        ]
        handles = [ray.get_actor(name, namespace=namespace) for name in sorted(names)]
        statuses: list[dict[str, Any]] = ray.get(
            [h.status.remote() for h in handles], timeout=timeout_s
        )
        return statuses
    finally:
        if started_here:
            ray.shutdown()


def summarize(lags: list[PartitionLag], ingests: list[dict[str, Any]]) -> dict[str, Any]:
    """One JSON-ready summary: lag per partition and in total, and executor figures."""
    answered = sum(s.get("results_ok", 0) + s.get("results_error", 0) for s in ingests)
    uptime = max((s.get("uptime_s", 0.0) for s in ingests), default=0.0)
    models = sorted({m for s in ingests for w in s.get("workers", []) for m in w.get("models", [])})
    return {
        "lag": {"total": sum(p.lag for p in lags), "partitions": [p.as_dict() for p in lags]},
        "executors": {
            "ingest_actors": len(ingests),
            "in_flight": sum(s.get("in_flight", 0) for s in ingests),
            "pool_size": sum(s.get("pool_size", 0) for s in ingests),
            "workers_starting": sum(s.get("workers_starting", 0) for s in ingests),
            # Ingests that left the group because their pool has no serving worker.
            "out_of_group": sum(1 for s in ingests if not s.get("in_group", True)),
            "answered": answered,
            "avg_throughput_per_s": round(answered / uptime, 1) if uptime else 0.0,
            "dead_letters": sum(s.get("dead_letters", 0) for s in ingests),
            "paused": any(s.get("paused", False) for s in ingests),
            "models_loaded": models,
        },
        "ingests": ingests,
    }
