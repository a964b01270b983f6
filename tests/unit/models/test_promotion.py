"""The promotion rules (rayml.models.promotion): the gate, serving records, retention. Pure."""

from __future__ import annotations

import doctest

import pytest

import rayml.models.promotion
from rayml.models.promotion import (
    MAX_PREVIOUS,
    NothingToRollBackError,
    ServingRecord,
    decide,
    decode_serving,
    encode_serving,
    retention_plan,
    rolled_back,
    served,
)
from rayml.protocol.training import ModelAnnouncement, decode_announcement, encode_announcement

SERVED = ("000003", {"auc": 0.93, "loss": 0.30})


@pytest.mark.parametrize(
    ("mode", "tolerance", "value", "promoted", "reason"),
    [
        ("max", 0.0, 0.93, True, "metric auc 0.93 >= 0.93 of served version 000003"),
        ("max", 0.0, 0.9299, False, "metric auc 0.9299 < 0.93 of served version 000003"),
        ("max", 0.01, 0.925, True, "metric auc 0.925 >= 0.93 - 0.01 of served version 000003"),
        ("max", 0.01, 0.91, False, "metric auc 0.91 < 0.93 - 0.01 of served version 000003"),
    ],
)
def test_max_metric_no_worse_within_the_tolerance_is_promoted(
    mode: str, tolerance: float, value: float, promoted: bool, reason: str
) -> None:
    d = decide("metric", "auc", "max", tolerance, {"auc": value}, SERVED)
    assert d.promoted is promoted
    assert d.reason == reason + ("" if promoted else ": stored, not served")


def test_min_metric_is_compared_the_other_way() -> None:
    assert decide("metric", "loss", "min", 0.0, {"loss": 0.29}, SERVED).promoted
    worse = decide("metric", "loss", "min", 0.05, {"loss": 0.36}, SERVED)
    assert not worse.promoted
    assert worse.reason == (
        "metric loss 0.36 > 0.3 + 0.05 of served version 000003: stored, not served"
    )
    assert decide("metric", "loss", "min", 0.05, {"loss": 0.35}, SERVED).promoted


def test_the_first_version_is_promoted_by_the_metric_policy_and_held_by_manual() -> None:
    d = decide("metric", None, "max", 0.0, {}, None)
    assert (d.promoted, d.reason) == (True, "the first version of the model: nothing to compare")
    held = decide("manual", None, "max", 0.0, {}, None)
    assert not held.promoted
    assert "nothing is served until `rayml models promote`" in held.reason


def test_manual_and_undeclared_or_missing_metrics_are_not_promoted() -> None:
    manual = decide("manual", "auc", "max", 0.0, {"auc": 1.0}, SERVED)
    assert not manual.promoted
    assert "promotion is manual" in manual.reason
    assert "000003 stays served" in manual.reason
    undeclared = decide("metric", None, "max", 0.0, {"auc": 1.0}, SERVED)
    assert not undeclared.promoted
    assert "declares no metric" in undeclared.reason
    for metrics in ({}, {"auc": float("nan")}, {"auc": float("inf")}):
        missing = decide("metric", "auc", "max", 0.0, metrics, SERVED)
        assert not missing.promoted
        assert missing.reason == "the new version has no finite value of metric auc: not served"
    # Nothing to compare with: the served version lacks the metric. The gate fails closed.
    d = decide("metric", "f1", "max", 0.0, {"f1": 0.1}, SERVED)
    assert not d.promoted
    assert "has no value of metric f1 to compare with" in d.reason


def test_serving_records_keep_the_history_for_rollback() -> None:
    first = served(
        None,
        name="m",
        version="000002",
        metrics={},
        action="trained",
        reason="r",
        fallback="000001",
    )
    assert (first.version, first.previous) == ("000002", ["000001"])
    second = served(
        first, name="m", version="000004", metrics={"a": 1.0}, action="promoted", reason="p"
    )
    assert second.previous == ["000001", "000002"]
    # Promoting a version served before moves it out of the history: it is served now.
    third = served(second, name="m", version="000001", metrics={}, action="promoted", reason="p")
    assert (third.version, third.previous) == ("000001", ["000002", "000004"])

    back = rolled_back(third, {"000004": {"a": 1.0}, "000002": {}})
    assert (back.version, back.previous, back.action) == ("000004", ["000002"], "rolled_back")
    assert back.reason == "rolled back from 000001"
    assert back.metrics == {"a": 1.0}
    again = rolled_back(back, {"000002": {}})
    assert (again.version, again.previous) == ("000002", [])
    with pytest.raises(NothingToRollBackError, match="no version served before 000002"):
        rolled_back(again, {})
    # Versions deleted from the store are passed over.
    assert rolled_back(third, {"000002": {}}).version == "000002"


def test_history_is_bounded() -> None:
    record = None
    for n in range(1, MAX_PREVIOUS + 10):
        record = served(
            record, name="m", version=f"{n:06d}", metrics={}, action="trained", reason=""
        )
    assert record is not None
    assert len(record.previous) == MAX_PREVIOUS
    assert record.previous[-1] == f"{MAX_PREVIOUS + 8:06d}"


def test_a_serving_record_reads_as_an_announcement_and_an_announcement_as_a_record() -> None:
    record = ServingRecord(
        name="iris",
        version="000007",
        metrics={"accuracy": 0.97},
        job_id="j",
        previous=["000005"],
        action="trained",
        reason="r",
        at_ms=1,
    )
    assert decode_serving(encode_serving(record)) == record
    old_reader = decode_announcement(encode_serving(record))
    assert old_reader is not None
    assert (old_reader.name, old_reader.version, old_reader.job_id) == ("iris", "000007", "j")
    older = decode_serving(encode_announcement(ModelAnnouncement(name="iris", version="000002")))
    assert older is not None
    assert (older.version, older.previous, older.action) == ("000002", [], "announced")
    assert decode_serving(b"{}") is None
    assert decode_serving(None) is None


def test_retention_keeps_the_newest_and_the_protected() -> None:
    versions = [f"{n:06d}" for n in range(1, 11)]
    assert retention_plan(versions, 3, ["000002", "000005"]) == [
        "000001",
        "000003",
        "000004",
        "000006",
        "000007",
    ]
    assert retention_plan(versions, 20, []) == []
    assert retention_plan(reversed(versions), 9, []) == ["000001"]


def test_docstring_examples_run() -> None:
    failures, _ = doctest.testmod(rayml.models.promotion)
    assert failures == 0


def test_rollback_retires_the_version_and_only_a_promotion_by_hand_takes_it_back() -> None:
    v5 = ServingRecord(name="m", version="000005", previous=["000001", "000003"])
    back = rolled_back(v5)
    assert (back.version, back.retired) == ("000003", ["000005"])
    again = rolled_back(back)
    assert (again.version, again.retired) == ("000001", ["000005", "000003"])
    trained = served(again, name="m", version="000007", metrics={}, action="trained", reason="r")
    assert trained.retired == ["000005", "000003"]
    by_hand = served(trained, name="m", version="000005", metrics={}, action="promoted", reason="r")
    assert by_hand.retired == ["000003"]
    assert decode_serving(encode_serving(by_hand)) == by_hand
