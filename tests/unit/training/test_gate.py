"""The promotion gate as the job runner applies it (rayml.training.gate): a real store, the
serving records as a fake follower would hold them (no Kafka, no Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sklearn.linear_model import LogisticRegression

from rayml.config import Settings
from rayml.models.promotion import ServingRecord, rolled_back
from rayml.models.store import ModelStore
from rayml.pipeline import load_spec_by_path
from rayml.training.gate import PromotionGate
from rayml.training.task import TrialOutcome, outcome_of
from tests.support.fake_serving import FakeServing

SPEC = load_spec_by_path("tests.support.training_pipelines:train_fast")  # accuracy, max
SLOW = load_spec_by_path("tests.support.training_pipelines:train_slow")  # no metric


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(models={"root": str(tmp_path)})


def stored(settings: Settings, accuracy: float, model: str = "testing_fast") -> TrialOutcome:
    est = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    version = ModelStore(settings.models.root).save(
        model,
        est,
        pipeline="p",
        params={},
        metrics={"accuracy": accuracy},
        extra={"job_id": "j", "role": "model"},
    )
    return outcome_of(version, 0)


def judge(settings: Settings, serving: FakeServing, outcome: TrialOutcome, **kw: Any) -> Any:
    return PromotionGate(settings, serving, wait_s=0.0).judge(
        kw.pop("spec", SPEC),
        outcome,
        "job-9",
        kw.pop("promoted_from", None),
        reused=kw.pop("reused", False),
    )


def test_a_serving_state_not_read_yet_promotes_nothing(settings: Settings) -> None:
    verdict = judge(settings, FakeServing(caught_up=False), stored(settings, 1.0))
    assert (verdict.promoted, verdict.record) == (False, None)
    assert "could not be read within 0s" in verdict.reason
    assert "rayml models promote testing_fast 000001" in verdict.reason
    assert ModelStore(settings.models.root).promoted_versions("testing_fast") == set()


def test_a_version_judged_again_after_a_crash(settings: Settings) -> None:
    outcome = stored(settings, 0.9)
    served_now = ServingRecord(name="testing_fast", version=outcome.version, reason="first")
    again = judge(settings, FakeServing(served_now), outcome)
    assert (again.promoted, again.record, again.reason) == (True, None, "already served: first")
    rolled = ServingRecord(name="testing_fast", version="000007", previous=[outcome.version])
    back = judge(settings, FakeServing(rolled), outcome)
    assert (back.promoted, back.record) == (False, None)
    assert back.reason.startswith("served before and replaced")


def test_per_model_manual_promotion_and_pipelines_without_a_metric(settings: Settings) -> None:
    first = stored(settings, 0.5)
    serving = FakeServing(
        ServingRecord(name="testing_fast", version=first.version, metrics={"accuracy": 0.5})
    )
    manual = settings.model_copy(
        update={
            "promotion": settings.promotion.model_copy(
                update={"models": {"testing_fast": "manual"}}
            )
        }
    )
    verdict = judge(manual, serving, stored(settings, 0.99))
    assert (verdict.promoted, verdict.record) == (False, None)
    assert "promotion is manual" in verdict.reason
    slow_first = stored(settings, 0.5, model="testing_slow")
    slow = FakeServing(ServingRecord(name="testing_slow", version=slow_first.version))
    no_metric = judge(settings, slow, stored(settings, 0.9, model="testing_slow"), spec=SLOW)
    assert not no_metric.promoted
    assert "declares no metric" in no_metric.reason


def test_a_promoted_version_is_marked_then_its_record_lists_the_one_before(
    settings: Settings,
) -> None:
    first = stored(settings, 0.8)
    serving = FakeServing(
        ServingRecord(
            name="testing_fast",
            version=first.version,
            metrics={"accuracy": 0.8},
            previous=["000000"],
        )
    )
    better = stored(settings, 0.85)
    verdict = judge(settings, serving, better, promoted_from="000001")
    assert verdict.promoted
    assert verdict.reason == "metric accuracy 0.85 >= 0.8 of served version 000001"
    record = verdict.record
    assert record is not None
    assert (record.version, record.previous, record.action) == (
        "000002",
        ["000000", "000001"],
        "trained",
    )
    assert (record.job_id, record.promoted_from, record.metrics) == (
        "job-9",
        "000001",
        {"accuracy": 0.85},
    )
    marker = ModelStore(settings.models.root).promotion("testing_fast", better.version)
    assert marker is not None
    assert (marker["by"], marker["job_id"], marker["reason"]) == ("gate", "job-9", verdict.reason)


def test_a_version_rolled_back_away_from_is_never_served_by_the_gate_again(
    settings: Settings,
) -> None:
    """V5 served, rolled back to V1: V5 is better than V1, and the gate still refuses it
    (a replayed job id answered from the store is judged, or not, alike)."""
    v1 = stored(settings, 0.5)
    v5 = stored(settings, 0.99)
    rolled = rolled_back(
        ServingRecord(name="testing_fast", version=v5.version, previous=[v1.version])
    )
    assert (rolled.version, rolled.previous, rolled.retired) == (v1.version, [], [v5.version])
    for reused in (False, True):
        verdict = judge(settings, FakeServing(rolled), v5, reused=reused)
        assert (verdict.promoted, verdict.record) == (False, None)
        assert verdict.reason.startswith("rolled back before")
    assert ModelStore(settings.models.root).promotion("testing_fast", v5.version) is None


def test_a_job_answered_from_the_store_keeps_its_first_decision_and_is_not_judged_again(
    settings: Settings,
) -> None:
    v1 = stored(settings, 0.5)
    serving = FakeServing(
        ServingRecord(name="testing_fast", version=v1.version, metrics={"accuracy": 0.5})
    )
    # Not promoted the first time (no marker): not served now, though it beats the served one.
    better = stored(settings, 0.99)
    verdict = judge(settings, serving, better, reused=True)
    assert (verdict.promoted, verdict.record) == (False, None)
    assert "not promoted when the job was first answered" in verdict.reason
    assert ModelStore(settings.models.root).promotion("testing_fast", better.version) is None
    # Promoted the first time, its serving record lost to a crash: written now, with the first
    # reason, though it is worse than the served one (no second comparison).
    worse = stored(settings, 0.1)
    ModelStore(settings.models.root).mark_promoted(
        "testing_fast", worse.version, {"reason": "first reason"}
    )
    verdict = judge(settings, serving, worse, reused=True)
    assert (verdict.promoted, verdict.reason) == (True, "first reason")
    assert verdict.record is not None
    assert (verdict.record.version, verdict.record.previous) == (worse.version, [v1.version])
