"""Which versions may be served or pinned (rayml.models.versions) and the store's promotion
markers they rest on; local store and fsspec's memory filesystem (an object store's layout)."""

from __future__ import annotations

import doctest
import uuid
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression

import rayml.models.versions
from rayml.errors import ModelNotFoundError
from rayml.models.store import PROMOTED_FILE, ModelStore, ModelVersion
from rayml.models.versions import (
    VerdictCache,
    needs_promotion,
    newest_servable,
    pin_verdict,
)


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ModelStore:
    if request.param == "local":
        return ModelStore(str(tmp_path))
    return ModelStore(f"memory://versions-{uuid.uuid4().hex}")


def save(store: ModelStore, extra: dict[str, str] | None = None) -> ModelVersion:
    est = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    return store.save("m", est, pipeline="p", params={}, metrics={}, extra=extra)


def test_promotion_markers_are_kept_per_version_and_go_with_the_version(
    store: ModelStore,
) -> None:
    one, two = save(store), save(store, {"job_id": "j"})
    assert store.promoted_versions("m") == set()
    assert store.promotion("m", two.version) is None
    store.mark_promoted("m", two.version, {"by": "test", "reason": "r"})
    store.mark_promoted("m", "2", {"by": "again"})  # idempotent, any spelling
    assert store.promotion("m", "000002") == {"by": "again"}
    assert store.promoted_versions("m") == {"000002"}
    # The marker is not a version, and listing versions does not change.
    assert [v.version for v in store.versions("m")] == [one.version, two.version]
    described = store.describe("m", 2)
    assert described is not None
    assert described.metadata["extra"] == {"job_id": "j"}
    assert store.describe("m", 9) is None
    with pytest.raises(ModelNotFoundError):
        store.mark_promoted("m", "9", {})
    store.delete("m", two.version)
    assert store.promoted_versions("m") == set()
    assert store.promotion("m", two.version) is None


def test_an_unreadable_marker_still_marks_the_version(tmp_path: Path) -> None:
    store = ModelStore(str(tmp_path))
    v = save(store, {"job_id": "j"})
    (tmp_path / "m" / v.version / PROMOTED_FILE).write_bytes(b"{half")
    assert store.promotion("m", v.version) == {}
    assert pin_verdict(store, "m", v.version) == "allowed"


def test_newest_servable_is_hand_saved_or_promoted(store: ModelStore) -> None:
    assert newest_servable(store, "m") is None
    hand = save(store)
    job = save(store, {"job_id": "j1", "role": "model"})
    trial = save(store, {"job_id": "s1", "role": "trial"})
    assert [needs_promotion(v) for v in (hand, job, trial)] == [False, True, True]
    found = newest_servable(store, "m")
    assert found is not None
    assert found.version == hand.version
    store.mark_promoted("m", job.version, {})
    found = newest_servable(store, "m")
    assert found is not None
    assert found.version == job.version
    other = newest_servable(store, "m", other_than=job.version)
    assert other is not None
    assert other.version == hand.version


def test_pin_verdicts(store: ModelStore) -> None:
    hand = save(store)
    job = save(store, {"job_id": "j1", "role": "model"})
    trial = save(store, {"job_id": "s1", "role": "trial"})
    assert pin_verdict(store, "m", hand.version) == "allowed"
    assert pin_verdict(store, "m", job.version) == "not_allowed"
    assert pin_verdict(store, "m", trial.version) == "not_allowed"
    assert pin_verdict(store, "m", "000042") == "not_found"
    assert pin_verdict(store, "m", trial.version, allow_unpromoted=True) == "allowed"
    assert pin_verdict(store, "m", "000042", allow_unpromoted=True) == "not_found"
    store.mark_promoted("m", trial.version, {})
    assert pin_verdict(store, "m", trial.version) == "allowed"


def test_the_verdict_cache_expires_refusals_and_is_bounded() -> None:
    cache = VerdictCache(ttl_s=2.0, max_items=3)
    cache.put("gone", "not_found", now=0.0)
    cache.put("held", "not_allowed", now=0.0)
    cache.put("ok", "allowed", now=0.0)
    assert [cache.get(k, 1.99) for k in ("gone", "held", "ok")] == [
        "not_found",
        "not_allowed",
        "allowed",
    ]
    assert [cache.get(k, 2.0) for k in ("gone", "held", "ok")] == [None, None, "allowed"]
    assert cache.get("ok", 1e9) == "allowed"  # allowed stays (a version is never un-promoted)
    for n in range(10):
        cache.put(n, "not_found", now=5.0)
    assert len(cache) == 3
    assert cache.get("ok", 5.0) is None  # pushed out, least recently used first
    with pytest.raises(ValueError, match="must be positive"):
        VerdictCache(ttl_s=0)


def test_docstring_examples_run() -> None:
    failures, _ = doctest.testmod(rayml.models.versions)
    assert failures == 0
