"""What an ingest reports of itself: its status on request, its metrics on a timer.

The status (:func:`ingest_status`, returned by :meth:`rayml.executor.ingest.Ingest.status`) is
what the ingest has done and holds now; the ingest actor's control calls ask for it from other
threads than the loop's, so it reads counters and sizes, never the consumer (which blocks
behind the loop's poll). :mod:`rayml.cli.status` and the bench read its keys; the pools' part is
:meth:`~rayml.executor.pools.Pools.status`, the intake's
:meth:`~rayml.executor.intake.Intake.status`. The metrics (:func:`flush_metrics`, the loop
thread, when :class:`~rayml.metrics.IngestMetrics` is due) hand the same figures, and each
assigned partition's lag, to :mod:`rayml.metrics`.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from rayml.kafka.lag import partition_lags

if TYPE_CHECKING:
    from confluent_kafka import Consumer

    from rayml.config import Settings
    from rayml.delivery.consumer_loop import LoopCounters
    from rayml.delivery.offsets import OffsetTracker
    from rayml.delivery.result_writer import ResultWriter
    from rayml.delivery.transactions import TransactionalOutput
    from rayml.executor.batching import MicroBatcher
    from rayml.executor.gc_pauses import GcPauses
    from rayml.executor.intake import Intake
    from rayml.executor.membership import ServingWatch
    from rayml.executor.pool import WorkerPool
    from rayml.executor.pools import Pools
    from rayml.executor.rollout_answers import RolloutAnswers
    from rayml.executor.triage import Triage
    from rayml.executor.version_follower import LatestVersions
    from rayml.executor.window import InFlightWindow
    from rayml.executor.work import Pending, Route
    from rayml.kafka.partitions import TP
    from rayml.metrics import IngestMetrics
    from rayml.tracing import RequestTraces, Tracing

__all__ = ["StatusSource", "flush_metrics", "ingest_status"]


class StatusSource(Protocol):
    """What the status and the metrics read of an ingest (:class:`~rayml.executor.ingest.Ingest`
    is one)."""

    ingest_id: str
    consumer: Consumer
    metrics: IngestMetrics
    settings: Settings
    counters: LoopCounters
    tracker: OffsetTracker
    writer: ResultWriter
    window: InFlightWindow
    peak_in_flight_bytes: int
    batcher: MicroBatcher[Route, Pending]
    pools: Pools
    pool: WorkerPool
    membership: ServingWatch
    triage: Triage
    answered_by_class: dict[tuple[str, str], int]
    gc_pauses: GcPauses
    intake: Intake
    tracing: Tracing | None
    traces: RequestTraces | None
    rollout_answers: RolloutAnswers
    versions: LatestVersions
    txn: TransactionalOutput | None

    def assignment_names(self) -> list[str]: ...

    def held_bytes(self) -> int: ...


def ingest_status(ingest: StatusSource) -> dict[str, Any]:
    """The status of ``ingest``: its counters, budgets, pools, intake; the tracing, rollout and
    transaction figures when those are on."""
    c, w = ingest.counters, ingest.writer
    status: dict[str, Any] = {
        "ingest_id": ingest.ingest_id,
        "pid": os.getpid(),
        "rss_bytes": psutil.Process().memory_info().rss,
        "assignment": ingest.assignment_names(),
        "in_flight": ingest.tracker.in_flight(),
        # The byte budget's use: record values in flight and, of those, the results held
        # by the writer for failing topics.
        "in_flight_bytes": ingest.held_bytes(),
        "held_result_bytes": w.held_bytes,
        "peak_in_flight_bytes": ingest.peak_in_flight_bytes,
        "max_in_flight_bytes": ingest.window.max_bytes,
        "batches_in_flight": ingest.pools.batches_in_flight,
        "batches_ready": ingest.pools.batches_ready,
        "buffered": len(ingest.batcher),
        "paused": c.paused,
        "pool_size": ingest.pool.size,
        "workers_starting": ingest.pool.starting,
        "in_group": ingest.membership.in_group,
        "workers_replaced": ingest.pool.replaced,
        "polled": c.polled,
        "results_ok": w.results_ok,
        "results_error": w.results_error,
        "dead_letters": w.dead_letters,
        "refused": ingest.triage.refused,
        "errors_scrubbed": w.errors_scrubbed,
        "failed_deliveries": w.failed_total,
        # Topics whose writes fail now (retried with backoff, offsets uncommitted).
        "failing_topics": list(w.failing_topics),
        "batches": ingest.pools.counter("batches"),
        "redispatched": ingest.pools.counter("redispatched"),
        # Every pool: its pipelines, shape, size, backlog, last cold start.
        "pools": ingest.pools.status(),
        # Answered by a worker, per tenant and lane.
        "answered_by_tenant": _by_tenant(dict(ingest.answered_by_class)),
        "commits": c.commits,
        "delivery": ingest.settings.executor.delivery,
        "uptime_s": round(time.time() - c.started_at, 3),
        "gc": ingest.gc_pauses.snapshot(),
        # Records in flight per tenant and lane, the shares, what waits (rayml.executor.intake).
        "intake": ingest.intake.status(),
    }
    if ingest.tracing is not None and ingest.traces is not None:
        # Requests given spans so far, and those in flight whose result owes a traceparent.
        status["tracing"] = {
            "endpoint": ingest.tracing.url,
            "traced": ingest.traces.traced,
            "over_budget": ingest.traces.over_budget,
            "open": len(ingest.traces),
        }
    ra = ingest.rollout_answers
    rollouts = ingest.versions.rollouts
    if (
        rollouts
        or ra.written
        or ingest.pools.counter("shadow_sent")
        or ingest.pools.counter("shadow_skipped")
    ):
        status["rollout"] = {
            "under_rollout": {m: r.model_dump() for m, r in sorted(rollouts.items())},
            "answers_written": ra.written,
            "answers_dropped": ra.dropped,
            "answers_failed": ra.failed,
            "shadow_sent": ingest.pools.counter("shadow_sent"),
            "shadow_queued": ingest.pools.counter("shadow_queued"),
            "shadow_skipped": ingest.pools.counter("shadow_skipped"),
            # The share of request ids whose answers are written (and shadowed) now.
            "answers_sample": round(ra.sample, 4),
            "answers_sampled_out": ra.sampled_out,
        }
    if ingest.txn is not None:
        status["transaction_aborts"] = ingest.txn.aborts
        status["transaction_commit_s"] = round(ingest.txn.commit_s, 3)
        status["transaction_commit_thread_s"] = round(ingest.txn.commit_thread_s, 3)
        status["transaction_sealed_s"] = round(ingest.txn.sealed_s, 3)
        status["transaction_held"] = ingest.txn.held
    return status


def flush_metrics(ingest: StatusSource, assigned: frozenset[TP]) -> None:
    """Hand the metrics their figures; ``assigned``: the partitions assigned now (loop
    thread: the lags read the consumer)."""
    ingest.metrics.pools(
        [
            (e.name, e.pool.size, e.backlog, e.pool.last_cold_start_s)
            for e in ingest.pools.entries.values()
        ]
    )
    w = ingest.writer
    written = {
        "ok": w.results_ok,
        "error": w.results_error,
        "dead_letter": w.dead_letters,
    }
    lags = partition_lags(
        ingest.consumer, assigned, lambda tp: ingest.tracker.pending(tp) if tp in assigned else 0
    )
    ingest.metrics.flush(
        written,
        in_flight=ingest.tracker.in_flight(),
        in_flight_bytes=ingest.held_bytes(),
        failed_deliveries=w.failed_deliveries,
        error_results=w.error_results,
        pool_size=ingest.pool.size,
        batches_queued=ingest.pools.batches_ready,
        paused=ingest.counters.paused,
        lags=lags,
    )


def _by_tenant(counts: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """``{(tenant, lane): n}`` as ``{tenant: {lane: n}}``."""
    out: dict[str, dict[str, int]] = {}
    for (tenant, lane), n in counts.items():
        out.setdefault(tenant, {})[lane] = n
    return out
