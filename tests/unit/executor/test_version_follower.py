"""LatestVersions without Kafka: serving records applied by hand, the store as the fallback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression

from rayml.executor.version_follower import LatestVersions
from rayml.models.promotion import ServingRecord
from rayml.models.store import ModelStore, ModelVersion
from tests.support.waiting import wait_until


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(str(tmp_path))


@pytest.fixture
def versions(store: ModelStore) -> Iterator[LatestVersions]:
    """Its thread never refreshes by itself: the tests call _refresh() (one round) instead."""
    latest = LatestVersions(store.root, refresh_s=3600)
    yield latest
    latest.close()


def save(store: ModelStore, job_id: str | None = None, role: str = "model") -> ModelVersion:
    est = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    extra = {"job_id": job_id, "role": role} if job_id else {}
    return store.save("m", est, pipeline="p", params={}, metrics={}, extra=extra)


def test_a_serving_record_is_served_exactly_also_when_it_goes_back(
    versions: LatestVersions, store: ModelStore
) -> None:
    save(store)
    assert versions.get("m") == "000001"
    versions.announce("m", "000005")
    assert versions.get("m") == "000005"
    versions.announce("m", "000004")  # a rollback: an older version is served at once
    assert versions.get("m") == "000004"
    versions.announce("other", "000001")
    assert versions.snapshot()["other"] == "000001"
    record = versions.record("m")
    assert record is not None
    assert record.version == "000004"


def test_without_a_record_the_store_serves_hand_saved_and_promoted_versions_only(
    versions: LatestVersions, store: ModelStore
) -> None:
    assert versions.get("m") is None
    hand = save(store)
    versions._refresh()
    assert versions.get("m") == hand.version
    candidate = save(store, job_id="job-1")  # held back by the gate: never served from here
    save(store, job_id="sweep-1", role="trial")
    versions._refresh()
    assert versions.get("m") == hand.version
    store.mark_promoted("m", candidate.version, {"by": "test"})
    versions._refresh()
    assert versions.get("m") == candidate.version


def test_a_model_with_a_record_ignores_the_store(
    versions: LatestVersions, store: ModelStore
) -> None:
    first = save(store)
    versions.announce("m", first.version)
    save(store)  # newer, saved by hand after the model got a record
    versions._refresh()
    assert versions.get("m") == first.version


def test_a_tombstone_forgets_the_record_and_the_store_answers_again(
    versions: LatestVersions, store: ModelStore
) -> None:
    hand = save(store)
    versions._state.apply(ServingRecord(name="m", version="000007"))
    assert versions.get("m") == "000007"
    versions._state.apply(None, "m")
    versions._refresh()
    assert versions.get("m") == hand.version


def test_the_thread_refreshes_from_the_store(store: ModelStore) -> None:
    latest = LatestVersions(store.root, refresh_s=0.05)
    try:
        assert latest.get("m") is None
        hand = save(store)
        wait_until(lambda: latest.get("m") == hand.version, "the refresh finds 000001", 5)
    finally:
        latest.close()
