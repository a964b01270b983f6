"""An ingest's status (the keys ``rayml status`` and the bench read) and its metrics' figures."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from confluent_kafka import TopicPartition

from rayml.config import load_settings
from rayml.delivery.consumer_loop import LoopCounters
from rayml.executor.gc_pauses import GcPauses
from rayml.executor.ingest_status import flush_metrics, ingest_status
from rayml.executor.intake import Intake
from rayml.executor.membership import ServingWatch
from rayml.executor.window import InFlightWindow
from rayml.tenancy.rules import Tenancy

# Every key of an at-least-once ingest's status with tracing off and no rollout.
KEYS = {
    "ingest_id",
    "pid",
    "rss_bytes",
    "assignment",
    "in_flight",
    "in_flight_bytes",
    "held_result_bytes",
    "peak_in_flight_bytes",
    "max_in_flight_bytes",
    "batches_in_flight",
    "batches_ready",
    "buffered",
    "paused",
    "pool_size",
    "workers_starting",
    "in_group",
    "workers_replaced",
    "polled",
    "results_ok",
    "results_error",
    "dead_letters",
    "refused",
    "errors_scrubbed",
    "failed_deliveries",
    "failing_topics",
    "batches",
    "redispatched",
    "pools",
    "answered_by_tenant",
    "commits",
    "delivery",
    "uptime_s",
    "gc",
    "intake",
}
# What rayml.cli.status, the autoscaler's summary and the bench's report read among them.
READ = {
    "ingest_id",
    "in_flight",
    "in_flight_bytes",
    "max_in_flight_bytes",
    "pool_size",
    "workers_starting",
    "in_group",
    "paused",
    "polled",
    "results_ok",
    "results_error",
    "dead_letters",
    "failed_deliveries",
    "failing_topics",
    "batches",
    "commits",
    "pools",
    "answered_by_tenant",
    "uptime_s",
    "gc",
    "intake",
}


class FakeIngest:
    """What ingest_status and flush_metrics read, with figures a test can tell apart."""

    def __init__(self, **counters: int) -> None:
        self.settings = load_settings()
        self.ingest_id = "ex-1-i0"
        self.counters = LoopCounters(
            polled=counters.get("polled", 0),
            commits=counters.get("commits", 0),
            started_at=time.time() - 10.0,
        )
        self.tracker = SimpleNamespace(in_flight=lambda: 7, pending=lambda tp: 2)
        self.writer = SimpleNamespace(
            held_bytes=100,
            results_ok=50,
            results_error=3,
            dead_letters=1,
            errors_scrubbed=0,
            failed_total=4,
            failing_topics=("replies",),
            failed_deliveries={},
            error_results={},
        )
        self.window = InFlightWindow(1_000, 64 * 1024**2, first_guess_bytes=1024)
        self.peak_in_flight_bytes = 900
        self.batcher = [1, 2]
        self.pools = SimpleNamespace(
            batches_in_flight=2,
            batches_ready=5,
            counter=lambda name: {"batches": 11, "redispatched": 1}.get(name, 0),
            status=lambda: [{"pool": "default"}],
            entries={},
        )
        self.pool = SimpleNamespace(size=3, starting=1, replaced=0)
        self.membership = ServingWatch(30.0, time.monotonic())
        self.triage = SimpleNamespace(refused=2)
        self.answered_by_class: dict[tuple[str, str], int] = {}
        self.gc_pauses = GcPauses()
        self.intake = Intake.of(self.settings, Tenancy(self.settings))
        self.tracing: Any = None
        self.traces: Any = None
        self.rollout_answers = SimpleNamespace(
            written=0, dropped=0, failed=0, sample=1.0, sampled_out=0
        )
        self.versions = SimpleNamespace(rollouts={})
        self.txn: Any = None
        self.metrics = FakeMetrics()
        self.consumer: Any = None

    def assignment_names(self) -> list[str]:
        return ["ml.pipeline.input[0]"]

    def held_bytes(self) -> int:
        return 600


class FakeMetrics:
    def __init__(self) -> None:
        self.flushed: dict[str, Any] = {}
        self.pool_figures: list[Any] = []

    def pools(self, pools: list[Any]) -> None:
        self.pool_figures = pools

    def flush(self, written: dict[str, int], **figures: Any) -> None:
        self.flushed = {"written": written, **figures}


def test_status_has_the_keys_rayml_status_and_the_bench_read() -> None:
    status = ingest_status(FakeIngest(polled=20, commits=4))  # type: ignore[arg-type]
    assert set(status) >= READ
    assert set(status) == KEYS
    assert {k: status[k] for k in ("in_flight", "in_flight_bytes", "held_result_bytes")} == {
        "in_flight": 7,
        "in_flight_bytes": 600,  # held_bytes(): the records' values and the results held
        "held_result_bytes": 100,
    }
    assert (status["polled"], status["commits"], status["batches"], status["redispatched"]) == (
        20,
        4,
        11,
        1,
    )
    assert (status["pool_size"], status["workers_starting"], status["buffered"]) == (3, 1, 2)
    assert status["failing_topics"] == ["replies"]
    assert status["failed_deliveries"] == 4
    assert status["delivery"] == "at_least_once"
    assert status["max_in_flight_bytes"] == 64 * 1024**2
    assert status["in_group"] is True
    assert 9.0 <= status["uptime_s"] <= 60.0


def test_answered_requests_are_grouped_by_tenant_then_lane() -> None:
    ingest = FakeIngest()
    ingest.answered_by_class = {("a", "interactive"): 5, ("a", "batch"): 2, ("b", "batch"): 1}
    status = ingest_status(ingest)  # type: ignore[arg-type]
    assert status["answered_by_tenant"] == {"a": {"interactive": 5, "batch": 2}, "b": {"batch": 1}}


def test_exactly_once_adds_the_transactions_figures_rounded() -> None:
    ingest = FakeIngest()
    ingest.txn = SimpleNamespace(
        aborts=1, commit_s=0.12345, commit_thread_s=2.00049, sealed_s=0.5, held=3
    )
    status = ingest_status(ingest)  # type: ignore[arg-type]
    assert {k: v for k, v in status.items() if k.startswith("transaction_")} == {
        "transaction_aborts": 1,
        "transaction_commit_s": 0.123,
        "transaction_commit_thread_s": 2.0,
        "transaction_sealed_s": 0.5,
        "transaction_held": 3,
    }


def test_tracing_and_rollout_figures_appear_only_while_on() -> None:
    ingest = FakeIngest()
    assert "tracing" not in ingest_status(ingest)  # type: ignore[arg-type]
    assert "rollout" not in ingest_status(ingest)  # type: ignore[arg-type]
    ingest.tracing = SimpleNamespace(url="http://otel:4318")
    ingest.traces = _Traces(traced=8, over_budget=1, open_=2)
    ingest.rollout_answers.written = 6
    status = ingest_status(ingest)  # type: ignore[arg-type]
    assert status["tracing"] == {
        "endpoint": "http://otel:4318",
        "traced": 8,
        "over_budget": 1,
        "open": 2,
    }
    assert status["rollout"]["answers_written"] == 6
    assert status["rollout"]["under_rollout"] == {}


class _Traces:
    def __init__(self, traced: int, over_budget: int, open_: int) -> None:
        self.traced, self.over_budget, self._open = traced, over_budget, open_

    def __len__(self) -> int:
        return self._open


class _Consumer:
    """Positions and cached high watermarks of two partitions; the second fetched nothing."""

    def position(self, parts: list[TopicPartition]) -> list[TopicPartition]:
        offsets = {0: 40, 1: -1001}
        return [TopicPartition(p.topic, p.partition, offsets[p.partition]) for p in parts]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        assert cached, "the loop thread asks the broker nothing"
        return 0, 100


def test_metrics_get_the_written_counts_and_the_lags_of_partitions_assigned_now() -> None:
    ingest = FakeIngest()
    ingest.consumer = _Consumer()
    flush_metrics(ingest, frozenset({("in", 0), ("in", 1)}))  # type: ignore[arg-type]
    flushed = ingest.metrics.flushed
    assert flushed["written"] == {"ok": 50, "error": 3, "dead_letter": 1}
    # Unpolled (100 - 40) plus polled and unfinished (2); no figure before a fetch.
    assert flushed["lags"] == {"in[0]": 62}
    assert (flushed["in_flight"], flushed["in_flight_bytes"], flushed["pool_size"]) == (7, 600, 3)
    assert (flushed["batches_queued"], flushed["paused"]) == (5, False)
