"""IngestMetrics folds running totals into deltas: one metric call per tag set and flush."""

from __future__ import annotations

from typing import Any

from rayml.metrics import IngestMetrics


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[float, dict[str, str] | None]] = []

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        self.calls.append((value, tags))

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append((value, tags))

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append((value, tags))


def flush(m: IngestMetrics, **figures: Any) -> None:
    base: dict[str, Any] = {
        "written": {},
        "in_flight": 0,
        "pool_size": 1,
        "batches_queued": 0,
        "paused": False,
        "lags": {},
    }
    m.flush(**{**base, **figures})


def test_failed_deliveries_are_counted_by_topic_and_error_as_deltas() -> None:
    m = IngestMetrics("i0")
    m.failed_deliveries = failed = Recorder()
    m.in_flight_bytes = held = Recorder()
    flush(m, in_flight_bytes=5_000, failed_deliveries={("out", "_UNKNOWN_PARTITION"): 40})
    flush(
        m,
        in_flight_bytes=0,
        failed_deliveries={("out", "_UNKNOWN_PARTITION"): 43, ("dlq", "_MSG_TIMED_OUT"): 1},
    )
    flush(m, failed_deliveries={("out", "_UNKNOWN_PARTITION"): 43, ("dlq", "_MSG_TIMED_OUT"): 1})
    assert failed.calls == [
        (40, {"topic": "out", "error": "_UNKNOWN_PARTITION"}),
        (3, {"topic": "out", "error": "_UNKNOWN_PARTITION"}),
        (1, {"topic": "dlq", "error": "_MSG_TIMED_OUT"}),
    ]
    assert [value for value, _ in held.calls] == [5_000, 0, 0]


def test_error_results_are_counted_by_pipeline_and_type_as_deltas() -> None:
    m = IngestMetrics("i0")
    m.error_results = errors = Recorder()
    flush(m, error_results={("p", "invalid_params"): 3})
    flush(m, error_results={("p", "invalid_params"): 3, ("_other", "_other"): 2})
    flush(m, error_results={("p", "invalid_params"): 7, ("_other", "_other"): 2})
    assert errors.calls == [
        (3, {"pipeline": "p", "type": "invalid_params"}),
        (2, {"pipeline": "_other", "type": "_other"}),
        (4, {"pipeline": "p", "type": "invalid_params"}),
    ]
