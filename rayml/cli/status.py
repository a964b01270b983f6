"""What ``rayml status`` reports: consumer lag from Kafka, live figures from the executors.

Lag comes from the broker alone (committed offsets of the executor's group against the end
offsets of the input topic), so it is true even when no executor runs — which is exactly when
it matters. In-flight work, pool sizes, throughput and loaded models come from the executors'
ingest actors, and training (jobs and trials in flight, trials waiting for resources and what
they wait for, trials past their time bound) from the job runner actors, both found by name on
the Ray cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from rayml.executor.service import INGEST_ACTOR_PREFIX
from rayml.kafka.lag import PartitionLag
from rayml.training.runner_actor import RUNNER_ACTOR_PREFIX

logger = logging.getLogger(__name__)


def executor_status(
    ray_address: str | None, namespace: str, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Status of every ingest actor on the Ray cluster at ``ray_address``.

    Connects as a short-lived driver; returns [] when no executor runs there.
    """
    return cluster_status(ray_address, namespace, timeout_s)[0]


def cluster_status(
    ray_address: str | None, namespace: str, timeout_s: float = 10.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Status of every ingest actor and every job runner on the Ray cluster at ``ray_address``.

    Connects as a short-lived driver (unless this process is connected already); returns
    ``([], [])`` when no executor runs there.
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
        names = sorted(
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == namespace
        )
        ingests = [n for n in names if n.startswith(INGEST_ACTOR_PREFIX)]
        runners = [n for n in names if n.startswith(RUNNER_ACTOR_PREFIX)]
        handles = [ray.get_actor(name, namespace=namespace) for name in ingests + runners]
        statuses: list[dict[str, Any]] = ray.get(
            [h.status.remote() for h in handles], timeout=timeout_s
        )
        return statuses[: len(ingests)], statuses[len(ingests) :]
    finally:
        if started_here:
            ray.shutdown()


def summarize(
    lags: list[PartitionLag],
    ingests: list[dict[str, Any]],
    runners: list[dict[str, Any]] | None = None,
    now_ms: float | None = None,
    topic_classes: Mapping[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """One JSON-ready summary: lag per partition and in total, executor and training figures.

    ``topic_classes``: each request topic's (tenant, lane), for the figures per tenant.
    """
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
            **delivery_summary(ingests),
        },
        "pools": pools_summary(ingests),
        "tenants": tenants_summary(lags, ingests, topic_classes or {}),
        "ingests": ingests,
        "training": training_summary(runners or [], now_ms),
    }


def tenants_summary(
    lags: list[PartitionLag],
    ingests: list[dict[str, Any]],
    topic_classes: Mapping[str, tuple[str, str]],
) -> list[dict[str, Any]]:
    """Per tenant and lane: the lag from Kafka, what the ingests hold in flight and what their
    workers answered (since each ingest started), and that as a rate.

    Example:
        >>> lags = [PartitionLag("a.in", 0, 5, 12), PartitionLag("a.in.batch", 0, 0, 900)]
        >>> ingests = [{"uptime_s": 10.0, "answered_by_tenant": {"a": {"interactive": 50}},
        ...             "intake": {"in_flight": {"a": {"batch": 300}}}}]
        >>> [t] = tenants_summary(lags, ingests,
        ...     {"a.in": ("a", "interactive"), "a.in.batch": ("a", "batch")})
        >>> t["lag"], t["in_flight"], t["answered"], t["answered_per_s"]
        ({'interactive': 7, 'batch': 900}, {'batch': 300}, {'interactive': 50}, 5.0)
    """
    tenants: dict[str, dict[str, Any]] = {}

    def of(name: str) -> dict[str, Any]:
        return tenants.setdefault(
            name, {"tenant": name, "lag": {}, "in_flight": {}, "answered": {}}
        )

    for p in lags:
        tenant, lane = topic_classes.get(p.topic, ("?", "?"))
        lag = of(tenant)["lag"]
        lag[lane] = lag.get(lane, 0) + max(0, p.lag)
    uptime = max((s.get("uptime_s", 0.0) for s in ingests), default=0.0)
    for s in ingests:
        for key, source in (
            ("answered", s.get("answered_by_tenant", {})),
            ("in_flight", s.get("intake", {}).get("in_flight", {})),
        ):
            for tenant, lanes in source.items():
                into = of(tenant)[key]
                for lane, n in lanes.items():
                    into[lane] = into.get(lane, 0) + int(n)
    for t in tenants.values():
        total = sum(t["answered"].values())
        t["answered_per_s"] = round(total / uptime, 1) if uptime else 0.0
    return sorted(tenants.values(), key=lambda t: str(t["tenant"]))


def tenants_lines(tenants: list[dict[str, Any]]) -> list[str]:
    """The tenants of ``rayml status`` as text lines (none with one tenant and no bulk).

    Example:
        >>> for line in tenants_lines([{"tenant": "a", "lag": {"interactive": 7, "batch": 900},
        ...     "in_flight": {"batch": 300}, "answered": {"interactive": 50},
        ...     "answered_per_s": 5.0}, {"tenant": "b", "lag": {"interactive": 0},
        ...     "in_flight": {}, "answered": {}, "answered_per_s": 0.0}]):
        ...     print(line)
        tenant a: lag interactive 7, batch 900; in flight interactive 0, batch 300; answered 50 (5.0/s since start)
        tenant b: lag interactive 0, batch 0; in flight interactive 0, batch 0; answered 0 (0.0/s since start)
    """  # noqa: E501
    lanes = ("interactive", "batch")
    return [
        f"tenant {t['tenant']}: lag "
        + ", ".join(f"{lane} {t['lag'].get(lane, 0)}" for lane in lanes)
        + "; in flight "
        + ", ".join(f"{lane} {t['in_flight'].get(lane, 0)}" for lane in lanes)
        + f"; answered {sum(t['answered'].values())} ({t['answered_per_s']}/s since start)"
        for t in tenants
    ]


def pools_summary(ingests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pool over the ingests: its pipelines, resources, size, backlog, last cold start.

    Sizes, backlogs and counters are summed over the ingests (each ingest has its own workers
    of every pool); bounds are per ingest; the cold start is the longest last one.

    Example:
        >>> pool = {"pool": "big.predict", "pipelines": ["big.predict"], "num_cpus": 1.0,
        ...         "num_gpus": 1.0, "memory": None, "min": 0, "max": 2, "size": 1,
        ...         "starting": 0, "backlog": 7, "queued": 5, "arrived": 9, "answered": 2,
        ...         "cold_starts": 1, "last_cold_start_s": 3.2, "scale_to_zero": True,
        ...         "workers": [{"device": "cuda"}]}
        >>> summary = pools_summary([{"pools": [pool]}, {"pools": [dict(pool, size=0,
        ...     last_cold_start_s=None, workers=[])]}])
        >>> s = summary[0]
        >>> s["size"], s["backlog"], s["last_cold_start_s"], s["devices"], s["ingests"]
        (1, 14, 3.2, ['cuda'], 2)
    """
    merged: dict[str, dict[str, Any]] = {}
    summed = (
        "size",
        "starting",
        "draining",
        "backlog",
        "queued",
        "arrived",
        "answered",
        "released",
        "unavailable",
    )
    for ingest in ingests:
        for pool in ingest.get("pools", []):
            name = pool.get("pool", "?")
            into = merged.get(name)
            if into is None:
                into = merged[name] = {
                    "pool": name,
                    "pipelines": list(pool.get("pipelines", [])),
                    "num_cpus": pool.get("num_cpus"),
                    "num_gpus": pool.get("num_gpus"),
                    "memory": pool.get("memory"),
                    "min_per_ingest": pool.get("min"),
                    "max_per_ingest": pool.get("max"),
                    "scale_to_zero": bool(pool.get("scale_to_zero")),
                    "max_batch_size": pool.get("max_batch_size"),
                    "max_batch_wait_ms": pool.get("max_batch_wait_ms"),
                    "ingests": 0,
                    "cold_starts": 0,
                    "last_cold_start_s": None,
                    "on_cpu_instead_of_gpu": 0,
                    "devices": set(),
                    **dict.fromkeys(summed, 0),
                }
            into["ingests"] += 1
            for key in summed:
                into[key] += int(pool.get(key) or 0)
            into["cold_starts"] += int(pool.get("cold_starts") or 0)
            into["on_cpu_instead_of_gpu"] += int(pool.get("on_cpu_instead_of_gpu") or 0)
            cold = pool.get("last_cold_start_s")
            if cold is not None and (
                into["last_cold_start_s"] is None or cold > into["last_cold_start_s"]
            ):
                into["last_cold_start_s"] = cold
            into["devices"] |= {w.get("device", "cpu") for w in pool.get("workers", [])}
    for pool in merged.values():
        pool["devices"] = sorted(pool["devices"])
    return list(merged.values())


def pools_lines(pools: list[dict[str, Any]]) -> list[str]:
    """The pools of ``rayml status`` as text lines.

    Example:
        >>> for line in pools_lines([{"pool": "default", "pipelines": ["iris.predict"],
        ...     "num_cpus": 0.5, "num_gpus": 0.0, "size": 2, "min_per_ingest": 1,
        ...     "max_per_ingest": None, "backlog": 0, "scale_to_zero": False,
        ...     "last_cold_start_s": None, "cold_starts": 0, "devices": ["cpu"]},
        ...     {"pool": "big", "pipelines": ["big"], "num_cpus": 1.0, "num_gpus": 1.0,
        ...     "size": 0, "min_per_ingest": 0, "max_per_ingest": 2, "backlog": 0,
        ...     "scale_to_zero": True, "last_cold_start_s": 4.25, "cold_starts": 1,
        ...     "devices": []}]):
        ...     print(line)
        pool default (iris.predict): 2 workers of 0.5 CPU, backlog 0
        pool big (big): 0 workers of 1.0 CPU + 1.0 GPU, 0..2 per ingest, scales to zero, backlog 0, last cold start 4.25s (1 in all)
    """  # noqa: E501
    lines = []
    for p in pools:
        shape = f"{p.get('num_cpus')} CPU" + (
            f" + {p.get('num_gpus')} GPU" if p.get("num_gpus") else ""
        )
        pipelines = ", ".join(p.get("pipelines", [])) or "-"
        line = f"pool {p['pool']} ({pipelines}): {p['size']} workers of {shape}"
        if p.get("max_per_ingest") is not None:
            line += f", {p.get('min_per_ingest')}..{p['max_per_ingest']} per ingest"
        if p.get("scale_to_zero"):
            line += ", scales to zero"
        line += f", backlog {p.get('backlog', 0)}"
        if p.get("last_cold_start_s") is not None:
            cold, count = p["last_cold_start_s"], p.get("cold_starts", 0)
            line += f", last cold start {cold:.2f}s ({count} in all)"
        lines.append(line)
    return lines


def training_summary(runners: list[dict[str, Any]], now_ms: float | None = None) -> dict[str, Any]:
    """The job runners' figures, and every trial waiting for resources with its reason.

    Example:
        >>> waiting = {"job_id": "j1", "pipeline": "iris.train", "trial": 0, "attempt": 1,
        ...            "since_ms": 1_000, "reason": "waiting for resources: ..."}
        >>> summary = training_summary([{"runner_id": "ex-1-j0", "jobs_in_flight": 1,
        ...     "trials_running": 1, "waiting_for_resources": [waiting]}], now_ms=13_000)
        >>> summary["waiting_for_resources"][0]["waiting_s"], summary["trials_running"]
        (12.0, 1)
    """
    now = time.time() * 1000 if now_ms is None else now_ms
    waiting = [
        {
            **entry,
            "runner_id": r.get("runner_id"),
            "waiting_s": round(max(0.0, now - entry.get("since_ms", now)) / 1000, 1),
        }
        for r in runners
        for entry in r.get("waiting_for_resources", [])
    ]
    return {
        "job_runners": len(runners),
        "jobs_in_flight": sum(r.get("jobs_in_flight", 0) for r in runners),
        "trials_running": sum(r.get("trials_running", 0) for r in runners),
        "trials_queued": sum(r.get("trials_waiting", 0) for r in runners),
        "trials_timed_out": sum(r.get("trials_timed_out", 0) for r in runners),
        "jobs_succeeded": sum(r.get("jobs_succeeded", 0) for r in runners),
        "jobs_failed": sum(r.get("jobs_failed", 0) for r in runners),
        "paused": any(r.get("paused", False) for r in runners),
        "waiting_for_resources": waiting,
    }


def training_lines(training: dict[str, Any]) -> list[str]:
    """The training part of ``rayml status`` as text lines (none without job runners).

    Example:
        >>> lines = training_lines(training_summary([{"trials_running": 1,
        ...     "waiting_for_resources": [{"job_id": "j1", "pipeline": "iris.train", "trial": 0,
        ...     "since_ms": 0, "reason": "waiting for resources: needs {'CPU': 1.0}"}]}],
        ...     now_ms=5_000))
        >>> for line in lines:
        ...     print(line)
        training: 1 job runners, 0 jobs in flight, 1 trials launched (1 waiting for resources), 0 queued, 0 past their time bound
          job j1 trial 0 (iris.train), 5s: waiting for resources: needs {'CPU': 1.0}
    """  # noqa: E501
    if not training["job_runners"]:
        return []
    waiting = training["waiting_for_resources"]
    lines = [
        f"training: {training['job_runners']} job runners, {training['jobs_in_flight']} jobs in "
        f"flight, {training['trials_running']} trials launched ({len(waiting)} waiting for "
        f"resources), {training['trials_queued']} queued, {training['trials_timed_out']} past "
        "their time bound"
    ]
    lines += [
        f"  job {w.get('job_id')} trial {w.get('trial')} ({w.get('pipeline')}), "
        f"{w['waiting_s']:.0f}s: {w.get('reason')}"
        for w in waiting
    ]
    return lines


def delivery_summary(ingests: list[dict[str, Any]]) -> dict[str, Any]:
    """The ingests' byte budget in use, and the topics their writes fail on now.

    Example:
        >>> failing = {"topic": "out", "error": "_UNKNOWN_PARTITION", "since": "...",
        ...            "failures": 3, "waiting": 40}
        >>> summary = delivery_summary([{"ingest_id": "ex-1-i0", "in_flight_bytes": 10,
        ...     "max_in_flight_bytes": 64, "failing_topics": [failing]}])
        >>> summary["in_flight_bytes"], summary["failing_topics"][0]["ingest_id"]
        (10, 'ex-1-i0')
    """
    return {
        "in_flight_bytes": sum(s.get("in_flight_bytes", 0) for s in ingests),
        "max_in_flight_bytes": sum(s.get("max_in_flight_bytes", 0) for s in ingests),
        "failed_deliveries": sum(s.get("failed_deliveries", 0) for s in ingests),
        "failing_topics": [
            {"ingest_id": s.get("ingest_id"), **failing}
            for s in ingests
            for failing in s.get("failing_topics", [])
        ],
    }


def delivery_lines(executors: dict[str, Any]) -> list[str]:
    """The bytes in flight and the failing topics of ``rayml status``, as text lines.

    Example:
        >>> lines = delivery_lines({"in_flight_bytes": 3 * 2**20, "max_in_flight_bytes": 2**28,
        ...     "failing_topics": [{"ingest_id": "ex-1-i0", "topic": "ml.pipeline.output",
        ...     "error": "_UNKNOWN_PARTITION: Local: Unknown partition",
        ...     "since": "2025-11-26T10:00:00+00:00", "failures": 3, "waiting": 40}]})
        >>> for line in lines:
        ...     print(line)
        in flight 3.0 MiB of 256 MiB
        writes failing to ml.pipeline.output since 2025-11-26T10:00:00+00:00 (ingest ex-1-i0): _UNKNOWN_PARTITION: Local: Unknown partition; 3 failed deliveries, 40 writes wait (retried with backoff, not committed)
    """  # noqa: E501
    lines = [
        f"in flight {executors['in_flight_bytes'] / 2**20:.1f} MiB of "
        f"{executors['max_in_flight_bytes'] / 2**20:.0f} MiB"
    ]
    lines += [
        f"writes failing to {f.get('topic')} since {f.get('since')} (ingest "
        f"{f.get('ingest_id')}): {f.get('error')}; {f.get('failures')} failed deliveries, "
        f"{f.get('waiting')} writes wait (retried with backoff, not committed)"
        for f in executors["failing_topics"]
    ]
    return lines
