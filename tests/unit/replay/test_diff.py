"""``replay diff``'s statistics over two sets of results joined by request id."""

from __future__ import annotations

import doctest
import json

import rayml.replay.diff
from rayml.errors import RetriesExhaustedError, UnknownPipelineError
from rayml.protocol.envelopes import ModelRef, Result, Timings, error_info_from
from rayml.replay.diff import ResultSet, compare, value_at


def ok(rid: str, value: object, version: str = "1", total: float | None = 10.0) -> Result:
    return Result.ok(
        rid,
        "p",
        value,
        model=ModelRef(name="m", version=version),
        timings=Timings(total_ms=total, compute_ms=1.0 if total else None),
    )


def failed(rid: str, exc: Exception) -> Result:
    return Result.failed(rid, "p", error_info_from(exc))


def test_counts_duplicates_and_unreadable_records() -> None:
    left = ResultSet.of([ok("a", 1), ok("a", 2), None, ok("b", 1), ok("c", 1)])
    right = ResultSet.of([ok("b", 1), ok("d", 1)])
    assert (left.records, left.duplicates, left.unreadable, len(left.by_id)) == (5, 1, 1, 3)
    assert left.by_id["a"].result == 2, "the last result of an id counts"
    d = compare(left, right)
    assert (d.results, d.both, d.only_left, d.only_right) == ((3, 2), 1, 2, 1)
    assert (d.duplicates, d.unreadable) == ((1, 0), (1, 0))


def test_agreement_changed_labels_and_status_changes() -> None:
    left = ResultSet.of(
        [ok(f"s{n}", "cat") for n in range(5)]
        + [ok(f"d{n}", "cat") for n in range(3)]
        + [ok(f"e{n}", "dog") for n in range(2)]
        + [ok("x", "cat"), failed("y", UnknownPipelineError("p"))]
        + [ok("f", 1), ok("g", {"label": 1})]
    )
    right = ResultSet.of(
        [ok(f"s{n}", "cat") for n in range(5)]
        + [ok(f"d{n}", "dog") for n in range(3)]
        + [ok(f"e{n}", "cat") for n in range(2)]
        + [failed("x", RetriesExhaustedError("x")), ok("y", "cat")]
        + [ok("f", 1.0), ok("g", {"label": 2})]
    )
    d = compare(left, right, top=1)
    assert (d.both, d.both_ok) == (14, 12)
    assert d.agree == 6, "1 and 1.0 agree: JSON values"
    assert d.agreement == 0.5
    assert d.changed == [(("cat", "dog"), 3)], "the most frequent pair first, top 1"
    assert d.changed_pairs == 2, "a dict result is no label: counted in agreement only"
    assert (d.ok_to_error, d.error_to_ok) == (1, 1)
    assert d.errors == ({"unknown_pipeline": 1}, {"retries_exhausted": 1})


def test_a_field_of_the_result_is_compared_and_missing_fields_never_agree() -> None:
    left = ResultSet.of(
        [ok("a", {"label": 1, "p": 0.9}), ok("b", {"label": 0, "p": 0.6}), ok("c", {})]
    )
    right = ResultSet.of(
        [ok("a", {"label": 1, "p": 0.7}), ok("b", {"label": 1, "p": 0.8}), ok("c", {})]
    )
    whole = compare(left, right)
    assert (whole.agree, whole.changed) == (1, []), "only c's {} == {}"
    d = compare(left, right, field="label")
    assert (d.agree, d.both_ok) == (1, 3)
    assert d.changed == [((0, 1), 1)], "missing on both sides is no change of label"
    gone = compare(left, ResultSet.of([ok("a", {"p": 1})]), field="label")
    assert gone.changed == [((1, "<missing>"), 1)]
    assert value_at({"a": {"b": [1]}}, "a.b") == [1]


def test_metrics_are_means_over_the_joined_ids() -> None:
    left = ResultSet.of(
        [ok("a", 1, total=10.0), ok("b", 1, total=20.0), ok("only", 1, total=999.0)]
    )
    right = ResultSet.of([ok("a", 1, "2", total=12.0), ok("b", 1, "2", total=None)])
    d = compare(left, right)
    assert d.mean_total_ms == (15.0, 12.0)
    assert d.mean_compute_ms == (1.0, 1.0)
    assert d.models == ({"m@1": 2}, {"m@2": 2})
    out = d.to_json()
    assert out["mean_total_ms"] == {"left": 15.0, "right": 12.0, "delta": -3.0}
    assert json.loads(json.dumps(out)) == out, "the --json object is plain JSON"
    empty = compare(ResultSet(), ResultSet())
    assert empty.agreement is None
    assert empty.to_json()["mean_total_ms"] == {"left": None, "right": None, "delta": None}


def test_the_table_names_both_topics_and_the_agreement() -> None:
    d = compare(
        ResultSet.of([ok("a", 0), ok("b", 1)]),
        ResultSet.of([ok("a", 0, "2"), ok("b", 0, "2")]),
        names=("t.v1", "t.v2"),
    )
    table = "\n".join(d.table())
    assert table.splitlines()[0].split() == ["t.v1", "t.v2"]
    assert "agreement (result): 1/2 (50.0%)" in table
    assert "  1 -> 0: 1" in table
    assert "models            m@1 2" in table


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.replay.diff).failed == 0
