"""IngestMetrics folds running totals into deltas: one metric call per tag set and flush;
RolloutMetrics reports the rollout monitor's figures per version, bounded to the running
rollouts."""

from __future__ import annotations

import math
from typing import Any

import pytest

import rayml.metrics as metrics_module
from rayml.config import load_settings
from rayml.metrics import IngestMetrics, RolloutMetrics, _Noop
from rayml.models.promotion import ServingRecord
from rayml.protocol.rollouts import Feedback, Rollout, VersionAnswer
from rayml.rollouts.quality import QualityWindow
from rayml.rollouts.status import figures


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


def test_records_in_flight_per_tenant_and_lane_are_set_at_each_flush_from_the_last_counts() -> None:
    m = IngestMetrics("i0")
    m.lane_in_flight = lanes = Recorder()
    flush(m)  # nothing handed over yet: nothing set
    m.intake({("a", "interactive"): 1, ("a", "batch"): 500})
    m.intake({("a", "interactive"): 0, ("a", "batch"): 480})  # only the last counts
    flush(m)
    assert lanes.calls == [
        (0, {"tenant": "a", "lane": "interactive"}),
        (480, {"tenant": "a", "lane": "batch"}),
    ]


# -- RolloutMetrics: the rollout monitor's figures per version ------------------------------

T0 = 1_800_000_000_000
PER_VERSION = ("answers", "labelled", "accuracy", "error_rate", "p99_ms")


def rollout_metrics() -> tuple[RolloutMetrics, dict[str, Recorder]]:
    m = RolloutMetrics()
    recorders = {name: Recorder() for name in (*PER_VERSION, "agreement", "decisions")}
    for name, recorder in recorders.items():
        setattr(m, name, recorder)
    return m, recorders


def answer(rid: str, model: str, version: str, role: str, output: int, ok: bool = True) -> Any:
    return VersionAnswer(
        id=rid,
        model=model,
        version=version,
        role=role,
        pipeline=f"{model}.predict",
        status="ok" if ok else "error",
        output=output if ok else None,
        error_type=None if ok else "pipeline_error",
        compute_ms=2.0,
        at_ms=T0,
    )


def record(model: str, served: str, candidate: str | None, action: str = "rollout_started") -> Any:
    rollout = (
        None
        if candidate is None
        else Rollout(candidate=candidate, mode="shadow", started_at_ms=T0 - 1_000)
    )
    return ServingRecord(name=model, version=served, rollout=rollout, action=action)


def status(window: QualityWindow, *records: ServingRecord) -> list[dict[str, Any]]:
    """What RolloutMonitor.status() gives: the monitor's own figures()."""
    return [figures(window, r, load_settings(), T0 + 1_000) for r in records]


def finite(recorder: Recorder) -> list[tuple[float, dict[str, str] | None]]:
    return [(v, tags) for v, tags in recorder.calls if not math.isnan(v)]


def nan_tags(recorder: Recorder) -> list[dict[str, str] | None]:
    return [tags for v, tags in recorder.calls if math.isnan(v)]


def test_rollout_figures_are_set_per_served_version_and_candidate_only() -> None:
    window = QualityWindow(3600, 1000)
    # 000002 was served before: its answers are still in the window, not reported.
    window.add_answer(answer("old", "m", "000002", "serving", 1))
    for i in range(4):  # served 000003: 4 answers, 3 labelled, 2 correct
        window.add_answer(answer(f"r{i}", "m", "000003", "serving", 1))
    for i in range(3):
        window.add_feedback(Feedback(id=f"r{i}", label=1 if i else 0), T0)
    # candidate 000004 (shadow): the same 4 requests, r3 an error, r0 answered 0 (right,
    # where the served version was wrong): 3 labelled, 3 correct; 2 of 3 alike.
    for i in range(4):
        window.add_answer(answer(f"r{i}", "m", "000004", "shadow", int(i != 0), ok=i != 3))
    m, rec = rollout_metrics()
    m.flush(status(window, record("m", "000003", "000004")), [])

    serving = {"model": "m", "version": "000003", "role": "serving"}
    candidate = {"model": "m", "version": "000004", "role": "candidate"}
    assert rec["answers"].calls == [(4, serving), (4, candidate)]
    assert rec["labelled"].calls == [(3, serving), (3, candidate)]
    assert rec["accuracy"].calls == [(2 / 3, serving), (1.0, candidate)]
    assert rec["error_rate"].calls == [(0.0, serving), (0.25, candidate)]
    assert rec["p99_ms"].calls == [(2.0, serving), (2.0, candidate)]
    assert rec["agreement"].calls == [(2 / 3, {"model": "m"})]
    assert rec["decisions"].calls == []


def test_a_figure_the_monitor_does_not_have_is_nan_never_zero() -> None:
    window = QualityWindow(3600, 1000)
    window.add_answer(answer("a", "m", "000003", "serving", 1))  # no label; candidate silent
    m, rec = rollout_metrics()
    m.flush(status(window, record("m", "000003", "000004")), [])

    candidate = {"model": "m", "version": "000004", "role": "candidate"}
    assert finite(rec["answers"])[1] == (0, candidate)
    assert finite(rec["labelled"])[1] == (0, candidate)
    assert nan_tags(rec["accuracy"]) == [
        {"model": "m", "version": "000003", "role": "serving"},
        candidate,
    ]
    assert nan_tags(rec["error_rate"]) == nan_tags(rec["p99_ms"]) == [candidate]
    assert nan_tags(rec["agreement"]) == [{"model": "m"}]  # nothing compared


def test_an_ended_rollout_is_set_to_nan_once_then_no_longer_reported() -> None:
    window = QualityWindow(3600, 1000)
    window.add_answer(answer("a", "m", "000003", "serving", 1))
    window.add_answer(answer("a", "m", "000004", "shadow", 1))
    m, rec = rollout_metrics()
    m.flush(status(window, record("m", "000003", "000004")), [])
    for r in rec.values():
        r.calls.clear()

    # Promoted: status() still lists the model (its rollout is None) right after.
    promoted = record("m", "000004", None, action="promoted")
    m.flush(status(window, promoted), [{"model": "m", "action": "promoted"}])
    ended = [
        {"model": "m", "version": "000003", "role": "serving"},
        {"model": "m", "version": "000004", "role": "candidate"},
    ]
    for name in PER_VERSION:
        assert finite(rec[name]) == [], name
        assert nan_tags(rec[name]) == ended, name
    assert nan_tags(rec["agreement"]) == [{"model": "m"}]

    for r in rec.values():
        r.calls.clear()
    m.flush(status(window, promoted), [{"model": "m", "action": "promoted"}])
    assert all(r.calls == [] for r in rec.values())


def test_series_stay_within_two_versions_per_running_rollout() -> None:
    # 30 models start, swap candidates and end rollouts over 40 flushes, while the window
    # gathers a new served version each step: each flush sets exactly the 2 tag sets of each
    # running rollout, and NaN once for each tag set that just stopped running.
    window = QualityWindow(3600, 100_000)
    m, rec = rollout_metrics()
    previous: set[tuple[str, str, str]] = set()
    for step in range(40):
        records = []
        for k in range(30):
            model = f"m{k}"
            window.add_answer(answer(f"{model}-{step}", model, f"{step:06}", "serving", 1))
            if (step + k) % 7 == 6:
                records.append(record(model, f"{step:06}", None, action="rollout_aborted"))
            else:  # the candidate changes every 3 steps: the old one's rollout ended
                records.append(record(model, "000000", f"{(step + k) // 3 + 1:06}"))
        for r in rec.values():
            r.calls.clear()
        m.flush(status(window, *records), [])

        running = {
            (r.name, version, role)
            for r in records
            if r.rollout is not None
            for version, role in ((r.version, "serving"), (r.rollout.candidate, "candidate"))
        }
        for name in PER_VERSION:
            live = [(t["model"], t["version"], t["role"]) for _, t in finite(rec[name]) if t]
            gone = [(t["model"], t["version"], t["role"]) for t in nan_tags(rec[name]) if t]
            if name in ("answers", "labelled"):  # always known while running
                assert sorted(live) == sorted(running), name
            assert sorted(live + gone) == sorted(running | (previous - running)), name
        models = {model for model, _, _ in running}
        agreement_models = [t["model"] for _, t in rec["agreement"].calls if t]
        was = {model for model, _, _ in previous}
        assert sorted(agreement_models) == sorted(models | (was - models))
        assert 0 < len(running) < 2 * 30
        previous = running
    assert len(m._reported) <= 2 * 30


def test_each_decision_is_counted_once() -> None:
    m, rec = rollout_metrics()
    decisions: list[dict[str, Any]] = []
    m.flush([], decisions)
    decisions.append({"model": "a", "action": "promoted", "version": "2", "reason": "..."})
    m.flush([], decisions)
    m.flush([], decisions)
    decisions += [
        {"model": "b", "action": "rollout_aborted", "version": "1", "reason": "..."},
        {"model": "a", "action": "rollout_aborted", "version": "2", "reason": "..."},
    ]
    m.flush([], decisions)
    assert rec["decisions"].calls == [
        (1, {"model": "a", "action": "promoted"}),
        (1, {"model": "b", "action": "rollout_aborted"}),
        (1, {"model": "a", "action": "rollout_aborted"}),
    ]


def test_outside_ray_the_rollout_recorders_are_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    # As in a process where Ray is not initialised (the suite's own process may have it up).
    monkeypatch.setattr(metrics_module, "_ray_on", lambda: False)
    m = RolloutMetrics()
    assert all(isinstance(getattr(m, n), _Noop) for n in (*PER_VERSION, "agreement", "decisions"))
    m.flush(status(QualityWindow(3600, 10), record("m", "1", "2")), [{"model": "m", "action": "x"}])
