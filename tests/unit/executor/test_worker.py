"""Unit tests for rayml.executor.worker's ModelWorker, as a plain object: no Ray, no Kafka."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression

from rayml.executor.work import BatchOutcome, ItemError
from rayml.executor.worker import ModelWorker
from rayml.models.store import ModelStore, ModelVersion
from tests.support import worker_pipelines as wp
from tests.support.worker_pipelines import Row


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(str(tmp_path / "models"))


@pytest.fixture
def tiny(store: ModelStore) -> ModelVersion:
    """A one-feature classifier: class 1 for x > 0.5."""
    est = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    return store.save(wp.MODEL, est, pipeline="test", params={}, metrics={})


@pytest.fixture
def worker(store: ModelStore) -> Iterator[ModelWorker]:
    w = ModelWorker("w-test", store.root)
    wp.CALLS.clear()
    yield w
    # The worker caps this process's BLAS/OpenMP pools; give other tests their threads back.
    w._thread_limits.restore_original_limits()


def rows(*xs: float) -> list[dict[str, float]]:
    """Requests' params as they travel to a worker: plain JSON values."""
    return [Row(x=x).model_dump() for x in xs]


def test_invalid_params_fail_alone_and_name_the_field(
    worker: ModelWorker, tiny: ModelVersion
) -> None:
    outcome = worker.run_batch(wp.PREDICT, None, [{"x": 0.0}, {"x": "nope"}, {"x": 1.0}, []])
    ok_first, bad, ok_last, not_object = outcome.outputs
    assert (ok_first, ok_last) == (0, 1)
    assert isinstance(bad, ItemError)
    assert bad.type == "invalid_params"
    assert "params.x" in bad.message
    assert isinstance(not_object, ItemError)
    assert not_object.type == "invalid_params"


def test_runs_a_batch_with_the_newest_model(worker: ModelWorker, tiny: ModelVersion) -> None:
    outcome = worker.run_batch(wp.PREDICT, None, rows(0.0, 1.0, 0.9))

    assert isinstance(outcome, BatchOutcome)
    assert outcome.outputs == [0, 1, 1]
    assert (outcome.model_name, outcome.model_version) == (wp.MODEL, tiny.version)
    assert outcome.worker_id == "w-test"
    assert outcome.compute_ms >= 0
    assert wp.CALLS == [3]  # one pipeline call for the whole batch


def test_newest_version_unless_pinned(
    worker: ModelWorker, store: ModelStore, tiny: ModelVersion
) -> None:
    flipped = LogisticRegression().fit([[0.0], [1.0]], [1, 0])
    newer = store.save(wp.MODEL, flipped, pipeline="test", params={}, metrics={})

    latest = worker.run_batch(wp.PREDICT, None, rows(1.0))
    pinned = worker.run_batch(wp.PREDICT, tiny.version, rows(1.0))

    assert (latest.model_version, latest.outputs) == (newer.version, [0])
    assert (pinned.model_version, pinned.outputs) == (tiny.version, [1])


def test_poisoned_rows_fail_alone(worker: ModelWorker, tiny: ModelVersion) -> None:
    xs = [1.0, 2.0, 3.0, 4.0, 5.0, -6.0, 7.0, 8.0, -9.0, 10.0, 11.0]
    outcome = worker.run_batch(wp.POISON, None, rows(*xs))

    assert len(outcome.outputs) == len(xs)
    for x, out in zip(xs, outcome.outputs, strict=True):
        if x < 0:
            assert isinstance(out, ItemError)
            assert out.type == "pipeline_failed"
            assert "poisoned row" in out.message
            assert out.details["pipeline"] == "worker_test.poison"
        else:
            assert out == x * 2
    assert outcome.model_version == tiny.version
    # Bisection, not one call per row: k bad rows of n cost O(k log n) calls.
    bad = sum(x < 0 for x in xs)
    assert len(wp.CALLS) <= 1 + 2 * bad * math.ceil(math.log2(len(xs)))
    assert wp.CALLS[0] == len(xs)


def test_a_batch_of_one_poisoned_row_gets_one_error(
    worker: ModelWorker, tiny: ModelVersion
) -> None:
    (out,) = worker.run_batch(wp.POISON, None, rows(-1.0)).outputs
    assert isinstance(out, ItemError)
    assert out.type == "pipeline_failed"
    assert wp.CALLS == [1]


def test_every_row_poisoned(worker: ModelWorker, tiny: ModelVersion) -> None:
    outcome = worker.run_batch(wp.POISON, None, rows(-1.0, -2.0, -3.0))
    assert [type(out) for out in outcome.outputs] == [ItemError] * 3


def test_missing_model_fails_every_item(worker: ModelWorker) -> None:
    outcome = worker.run_batch(wp.NEEDS_ABSENT_MODEL, None, rows(1.0, 2.0))

    assert outcome.model_name == "absent"
    assert outcome.model_version is None
    assert len(outcome.outputs) == 2
    for out in outcome.outputs:
        assert isinstance(out, ItemError)
        assert out.type == "model_not_found"
        assert out.details == {"model": "absent", "version": None}
    assert worker.model_loads == 0


def test_missing_pinned_version_fails_every_item(worker: ModelWorker, tiny: ModelVersion) -> None:
    outcome = worker.run_batch(wp.PREDICT, "7", rows(1.0, 2.0, 3.0))

    assert outcome.model_version == "7"
    assert all(
        isinstance(out, ItemError) and out.type == "version_not_found" for out in outcome.outputs
    )
    assert len(outcome.outputs) == 3
    assert outcome.outputs[0].details == {"model": wp.MODEL, "version": "000007"}
    assert wp.CALLS == []


def _job_version(store: ModelStore, role: str = "model") -> ModelVersion:
    """A version as a training job stores it: served only once promoted."""
    flipped = LogisticRegression().fit([[0.0], [1.0]], [1, 0])
    extra = {"job_id": "job-1", "role": role, "trial": 0}
    return store.save(wp.MODEL, flipped, pipeline="t", params={}, metrics={}, extra=extra)


def test_a_version_a_job_stored_runs_only_once_promoted(
    store: ModelStore, tiny: ModelVersion, tmp_path: Path
) -> None:
    candidate = _job_version(store)
    trial = _job_version(store, role="trial")
    worker = ModelWorker("w-pins", store.root, version_check_ttl_s=60.0)
    try:
        for version in (candidate.version, trial.version):
            refused = worker.run_batch(wp.PREDICT, version, rows(1.0, 0.0))
            assert [o.type for o in refused.outputs] == ["version_not_allowed"] * 2  # type: ignore[union-attr]
            assert refused.outputs[0].details == {"model": wp.MODEL, "version": version}  # type: ignore[union-attr]
            assert "never promoted" in refused.outputs[0].message  # type: ignore[union-attr]
        # Without model_version the newest version the store serves: not the unpromoted ones.
        newest = worker.run_batch(wp.PREDICT, None, rows(1.0))
        assert (newest.model_version, newest.outputs) == (tiny.version, [1])
        # A version saved outside training jobs may be pinned.
        assert worker.run_batch(wp.PREDICT, tiny.version, rows(1.0)).outputs == [1]
        assert worker.versions_refused == 2
        assert wp.CALLS == [1, 1]

        # Promoted: a worker that did not refuse it runs it (the refusal above is cached).
        store.mark_promoted(wp.MODEL, candidate.version, {"by": "test"})
        fresh = ModelWorker("w-fresh", store.root)
        try:
            assert fresh.run_batch(wp.PREDICT, candidate.version, rows(1.0)).outputs == [0]
            assert fresh.run_batch(wp.PREDICT, None, rows(1.0)).model_version == candidate.version
        finally:
            fresh._thread_limits.restore_original_limits()
    finally:
        worker._thread_limits.restore_original_limits()

    anything = ModelWorker("w-any", store.root, allow_unpromoted_pins=True)
    try:
        assert anything.run_batch(wp.PREDICT, trial.version, rows(1.0)).outputs == [0]
    finally:
        anything._thread_limits.restore_original_limits()


def test_an_unknown_pin_costs_one_store_read_per_interval_not_per_batch(
    store: ModelStore, tiny: ModelVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rayml.executor.worker as worker_module

    clock = [1000.0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: clock[0])
    worker = ModelWorker("w-neg", store.root, version_check_ttl_s=2.0)
    reads: list[str] = []
    describe = worker.store.describe

    def counted(name: str, version: str | int) -> ModelVersion | None:
        reads.append(str(version))
        return describe(name, version)

    monkeypatch.setattr(worker.store, "describe", counted)
    try:
        for _ in range(50):
            out = worker.run_batch(wp.PREDICT, "999", rows(1.0))
            assert out.outputs[0].type == "version_not_found"  # type: ignore[union-attr]
        assert reads == ["000999"]
        assert worker.stats()["version_checks"] == 1
        assert worker.stats()["versions_refused"] == 50
        clock[0] += 1.9  # still within the interval
        worker.run_batch(wp.PREDICT, "999", rows(1.0))
        assert len(reads) == 1
        clock[0] += 0.2  # past it: read once more
        worker.run_batch(wp.PREDICT, "999", rows(1.0))
        assert len(reads) == 2
        # An allowed version is read once, then never again for its verdict.
        for _ in range(10):
            assert worker.run_batch(wp.PREDICT, tiny.version, rows(1.0)).outputs == [1]
        assert reads == ["000999", "000999", tiny.version]
    finally:
        worker._thread_limits.restore_original_limits()


def test_a_version_deleted_after_it_was_allowed_is_version_not_found(
    worker: ModelWorker, store: ModelStore, tiny: ModelVersion
) -> None:
    older = tiny
    newer = store.save(
        wp.MODEL,
        LogisticRegression().fit([[0.0], [1.0]], [1, 0]),
        pipeline="t",
        params={},
        metrics={},
    )
    assert worker.run_batch(wp.PREDICT, newer.version, rows(1.0)).outputs == [0]
    store.delete(wp.MODEL, older.version)
    # Allowed and cached for `older`? Never loaded: the load fails and says so.
    worker.verdicts.put((wp.MODEL, older.version), "allowed", 0.0)
    out = worker.run_batch(wp.PREDICT, older.version, rows(1.0))
    assert out.outputs[0].type == "version_not_found"  # type: ignore[union-attr]
    assert worker.verdicts.get((wp.MODEL, older.version), 0.0) == "not_found"


def test_models_are_loaded_once_and_cached(worker: ModelWorker, tiny: ModelVersion) -> None:
    worker.run_batch(wp.PREDICT, None, rows(1.0))
    worker.run_batch(wp.POISON, None, rows(1.0))
    # However the version is spelled, it is the same model and the same cache entry.
    worker.run_batch(wp.PREDICT, "1", rows(1.0))
    worker.run_batch(wp.PREDICT, tiny.version, rows(1.0))

    assert worker.model_loads == 1
    assert worker.cache.cached() == [(wp.MODEL, tiny.version)]
    # The cache is charged the artifact's size, not a default guess.
    assert worker.cache.bytes == tiny.metadata["size_bytes"]


def test_stats(worker: ModelWorker, tiny: ModelVersion) -> None:
    assert worker.ping() == "w-test"
    worker.run_batch(wp.PREDICT, None, rows(1.0, 0.0))
    worker.run_batch(wp.POISON, None, rows(1.0, -1.0, 2.0))
    worker.run_batch(wp.NEEDS_ABSENT_MODEL, None, rows(1.0))

    stats = worker.stats()
    assert stats == {
        "worker_id": "w-test",
        "pid": os.getpid(),
        "node_id": stats["node_id"],  # None outside Ray; a node's id where Ray is up
        "device": "cpu",
        "batches": 3,
        "requests": 6,
        "model_loads": 1,
        "models": [f"{wp.MODEL}@{tiny.version}"],
        "cache_hits": 1,
        "cache_misses": 1,
        "version_checks": 0,
        "versions_refused": 0,
    }


def test_an_empty_batch_calls_nothing(worker: ModelWorker, tiny: ModelVersion) -> None:
    outcome = worker.run_batch(wp.POISON, None, [])
    assert outcome.outputs == []
    assert wp.CALLS == []


def test_a_request_past_its_deadline_is_answered_without_running(
    worker: ModelWorker, tiny: ModelVersion
) -> None:
    import time

    now_ms = time.time() * 1000.0
    outcome = worker.run_batch(
        wp.PREDICT, None, rows(0.0, 1.0, 0.9), [None, now_ms - 1.0, now_ms + 60_000]
    )
    assert isinstance(outcome.outputs[1], ItemError)
    assert outcome.outputs[1].type == "deadline_exceeded"
    assert not isinstance(outcome.outputs[0], ItemError)
    assert not isinstance(outcome.outputs[2], ItemError)
