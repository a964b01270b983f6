"""The live quality window: the join of answers and labels, the figures, and its bounds."""

from __future__ import annotations

import doctest
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rayml.rollouts.quality
from rayml.protocol.rollouts import Feedback, VersionAnswer
from rayml.rollouts.quality import (
    SAMPLE_SIZE,
    Agreement,
    QualityWindow,
    SeriesPoint,
    VersionStats,
    prediction,
    value_key,
)

HOUR_MS = 3_600_000


def ans(
    rid: str,
    version: str = "v1",
    output: Any = None,
    *,
    at: int = 0,
    model: str = "m",
    role: str = "serving",
    ok: bool = True,
    ms: float | None = 1.0,
) -> VersionAnswer:
    return VersionAnswer(
        id=rid,
        model=model,
        version=version,
        role=role,
        pipeline="m.predict",
        status="ok" if ok else "error",
        output=output if ok else None,
        error_type=None if ok else "pipeline_error",
        compute_ms=ms,
        at_ms=at,
    )


def fb(rid: str, label: Any) -> Feedback:
    return Feedback(id=rid, label=label)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.rollouts.quality).failed == 0


def test_a_label_joins_its_answer_in_either_order() -> None:
    w = QualityWindow(window_s=3600, max_tracked=100)
    w.add_answer(ans("after", output="cat", at=10))
    w.add_feedback(fb("after", "cat"), at_ms=20)
    w.add_feedback(fb("before", "dog"), at_ms=30)
    assert w.waiting_labels == 1, "a label without its answer waits"
    w.add_answer(ans("before", output="cat", at=40))
    assert w.waiting_labels == 0, "joined when the answer came"
    s = w.stats("m", now_ms=50)["v1"]
    assert (s.answers, s.labelled, s.correct, s.accuracy) == (2, 2, 1, 0.5)


def test_a_waiting_label_joins_every_version_of_its_request() -> None:
    w = QualityWindow(window_s=3600, max_tracked=100)
    w.add_feedback(fb("r", 1), at_ms=0)
    w.add_answer(ans("r", "v1", 1, at=1))
    w.add_answer(ans("r", "v2", 2, at=2, role="shadow"))
    stats = w.stats("m", now_ms=3)
    assert (stats["v1"].correct, stats["v1"].labelled) == (1, 1)
    assert (stats["v2"].correct, stats["v2"].labelled) == (0, 1)


def test_a_label_joins_the_request_in_every_model_that_has_its_id() -> None:
    w = QualityWindow(window_s=3600, max_tracked=100)
    w.add_answer(ans("r", output="a", model="m1"))
    w.add_answer(ans("r", output="b", model="m2"))
    w.add_feedback(fb("r", "a"), at_ms=5)
    assert w.stats("m1", 5)["v1"].accuracy == 1.0
    assert w.stats("m2", 5)["v1"].accuracy == 0.0
    assert w.models() == ["m1", "m2"]


def test_a_redelivered_answer_counts_once_and_the_first_wins() -> None:
    w = QualityWindow(window_s=3600, max_tracked=100)
    w.add_answer(ans("r", output="cat", at=1, ms=1.0))
    w.add_answer(ans("r", output="dog", at=2, ms=900.0, role="canary"))
    w.add_answer(ans("r", ok=False, at=3))
    w.add_feedback(fb("r", "cat"), at_ms=4)
    s = w.stats("m", now_ms=5)["v1"]
    assert (s.answers, s.errors, s.labelled, s.correct) == (1, 0, 1, 1)
    assert (s.roles, s.p99_ms) == (frozenset({"serving"}), 1.0)
    assert len(w) == 1


def test_a_second_label_replaces_the_first() -> None:
    w = QualityWindow(window_s=3600, max_tracked=100)
    w.add_answer(ans("r", "v1", "cat"))
    w.add_answer(ans("r", "v2", "dog", role="shadow"))
    w.add_feedback(fb("r", "cat"), at_ms=1)
    w.add_feedback(fb("r", "dog"), at_ms=2)
    stats = w.stats("m", now_ms=3)
    assert (stats["v1"].labelled, stats["v1"].correct) == (1, 0)
    assert (stats["v2"].labelled, stats["v2"].correct) == (1, 1)
    # also while it waits for its answer
    w.add_feedback(fb("w", "cat"), at_ms=4)
    w.add_feedback(fb("w", "dog"), at_ms=5)
    assert w.waiting_labels == 1
    w.add_answer(ans("w", "v1", "dog", at=6))
    assert w.stats("m", now_ms=7)["v1"].correct == 1


def test_numbers_compare_by_value_and_booleans_are_not_numbers() -> None:
    w = QualityWindow(window_s=3600, max_tracked=100)
    cases = [
        (1, 1.0, True),
        (2.0, 2, True),
        (0, -0.0, True),
        (0.5, 0.5, True),
        (True, 1, False),
        (1, True, False),
        (False, 0.0, False),
        (True, True, True),
        ("1", 1, False),
        (None, None, True),
        (None, 0, False),
    ]
    for n, (label, output, correct) in enumerate(cases):
        w.add_answer(ans(f"r{n}", output=output, model=f"m{n}"))
        w.add_feedback(fb(f"r{n}", label), at_ms=1)
        assert w.stats(f"m{n}", 1)["v1"].correct == int(correct), (label, output)


def test_dict_outputs_predict_their_label_and_other_shapes_compare_whole() -> None:
    assert prediction({"label": 3, "proba": [0.1]}) == 3
    assert prediction({"score": 3}) == {"score": 3}
    assert prediction([{"label": 1}]) == [{"label": 1}], "only an object's own label"
    w = QualityWindow(window_s=3600, max_tracked=100)
    outputs_labels = [
        ({"label": "cat", "proba": [0.9, 0.1]}, "cat", True),
        ({"label": 1.0}, 1, True),
        ({"label": [1, 2]}, [1.0, 2.0], True),
        ({"score": 0.5, "id": 1}, {"id": 1.0, "score": 0.5}, True),
        ([1, [2, {"a": None}]], [1.0, [2, {"a": None}]], True),
        ([1, 2], [2, 1], False),
        ({"a": 1}, {"a": True}, False),
        ({"label": None}, None, True),
    ]
    for n, (output, label, correct) in enumerate(outputs_labels):
        w.add_answer(ans(f"r{n}", output=output, model=f"m{n}"))
        w.add_feedback(fb(f"r{n}", label), at_ms=1)
        assert w.stats(f"m{n}", 1)["v1"].correct == int(correct), (output, label)


def test_odd_values_never_raise_and_what_has_no_form_equals_nothing() -> None:
    deep: Any = []
    for _ in range(5_000):
        deep = [deep]
    huge = 10**5_000  # too long for str(): ValueError inside json.dumps
    assert value_key(deep) != value_key(deep)
    assert value_key(huge) != value_key(huge)
    assert value_key({1: "a", "b": {2, 3}}) == value_key({"1": "a", "b": {2, 3}})
    assert value_key(float("nan")) == value_key(float("nan"))
    assert value_key(float("inf")) != value_key(float("-inf"))
    w = QualityWindow(window_s=3600, max_tracked=100)
    for n, odd in enumerate([deep, huge, {"label": deep}, object(), {(1, 2): 3}]):
        w.add_answer(ans(f"r{n}", output=odd))
        w.add_feedback(fb(f"r{n}", odd), at_ms=1)
    s = w.stats("m", now_ms=1)["v1"]
    assert (s.answers, s.labelled) == (5, 5)
    assert s.correct == 2, "object() (as its str()) and {(1, 2): 3} (as {'(1, 2)': 3}) match"


def test_errors_count_in_the_error_rate_not_in_the_accuracy() -> None:
    w = QualityWindow(window_s=3600, max_tracked=100)
    for n in range(4):
        w.add_answer(ans(f"r{n}", output="cat", ok=n != 0))
        w.add_feedback(fb(f"r{n}", "cat"), at_ms=1)
    s = w.stats("m", now_ms=1)["v1"]
    assert (s.answers, s.errors, s.error_rate) == (4, 1, 0.25)
    assert (s.labelled, s.correct, s.accuracy) == (3, 3, 1.0)


def test_without_labels_or_compute_times_the_figures_are_none() -> None:
    w = QualityWindow(window_s=3600, max_tracked=100)
    w.add_answer(ans("r", output=1, ms=None))
    w.add_answer(ans("q", output=1, ms=float("nan")))
    w.add_answer(ans("p", output=1, ms=-1.0))
    s = w.stats("m", now_ms=1)["v1"]
    assert (s.labelled, s.accuracy, s.p50_ms, s.p99_ms) == (0, None, None, None)
    assert s.as_dict() == {
        "version": "v1",
        "roles": ["serving"],
        "answers": 3,
        "errors": 0,
        "error_rate": 0.0,
        "labelled": 0,
        "correct": 0,
        "accuracy": None,
        "p50_ms": None,
        "p99_ms": None,
    }
    assert w.stats("other", now_ms=1) == {}


def test_percentiles_are_nearest_rank_over_the_last_sample_size_answers() -> None:
    w = QualityWindow(window_s=3600, max_tracked=100_000)
    for n in range(1, 101):
        w.add_answer(ans(f"r{n}", output=1, ms=float(101 - n)))
    s = w.stats("m", now_ms=1)["v1"]
    assert (s.p50_ms, s.p99_ms) == (50.0, 99.0)
    # 10,050 more: the first 50 of them (1,000 ms) and the 100 above fall out of the sample
    for n in range(SAMPLE_SIZE + 50):
        w.add_answer(ans(f"s{n}", output=1, ms=1_000.0 if n < 50 else 2.0))
    s = w.stats("m", now_ms=1)["v1"]
    assert s.answers == SAMPLE_SIZE + 150
    assert (s.p50_ms, s.p99_ms) == (2.0, 2.0)


def test_the_sample_skips_the_answers_of_forgotten_requests() -> None:
    w = QualityWindow(window_s=10, max_tracked=100)
    w.add_answer(ans("old", output=1, at=0, ms=500.0))
    w.add_answer(ans("new", output=1, at=5_000, ms=1.0))
    assert w.stats("m", now_ms=9_999)["v1"].p99_ms == 500.0
    assert w.stats("m", now_ms=10_000)["v1"].p99_ms == 1.0


def test_roles_seen_by_a_version() -> None:
    w = QualityWindow(window_s=3600, max_tracked=100)
    w.add_answer(ans("a", "v2", 1, role="shadow"))
    w.add_answer(ans("b", "v2", 1, role="canary"))
    assert w.stats("m", now_ms=1)["v2"].roles == frozenset({"shadow", "canary"})


def test_a_request_leaves_figures_and_memory_window_s_after_its_first_answer() -> None:
    w = QualityWindow(window_s=60, max_tracked=100)
    w.add_answer(ans("r", "v1", 1, at=1_000))
    w.add_answer(ans("r", "v2", 1, at=1_500, role="shadow"))
    w.add_answer(ans("s", "v1", 1, at=30_000))
    w.add_feedback(fb("r", 1), at_ms=50_000)
    assert w.stats("m", now_ms=60_999)["v1"].answers == 2
    assert len(w) == 2
    stats = w.stats("m", now_ms=61_000)
    assert set(stats) == {"v1"}, "v2 answered only the expired request"
    assert (stats["v1"].answers, stats["v1"].labelled) == (1, 0)
    assert len(w) == 1
    assert w.agreement("m", "v1", "v2", now_ms=61_000) == Agreement(0, 0)
    w.stats("m", now_ms=90_000)
    assert (len(w), w.models()) == (0, []), "the model itself is forgotten"


def test_answers_advance_the_clock_and_late_ones_are_ignored() -> None:
    w = QualityWindow(window_s=1, max_tracked=100)
    w.add_answer(ans("a", output=1, at=0))
    w.add_answer(ans("b", output=1, at=1_000))
    assert len(w) == 1, "a's first answer is 1 s old"
    w.add_answer(ans("c", output=1, at=0))
    w.add_answer(ans("b", "v2", output=1, at=0, role="shadow"))
    s = w.stats("m", now_ms=0)
    assert (s["v1"].answers, s["v2"].answers) == (1, 1), "c too old; b's request still kept"


def test_waiting_labels_leave_window_s_after_they_arrived_and_never_move_the_clock() -> None:
    w = QualityWindow(window_s=10, max_tracked=100)
    w.add_answer(ans("keep", output=1, at=0))
    w.add_feedback(fb("x", 1), at_ms=10**15)  # a producer's clock far ahead
    assert w.stats("m", now_ms=9_999)["v1"].answers == 1
    w.add_feedback(fb("y", 1), at_ms=5_000)
    assert w.waiting_labels == 2
    w.stats("m", now_ms=14_999)
    assert w.waiting_labels == 2
    w.stats("m", now_ms=15_000)
    assert w.waiting_labels == 1
    w.add_feedback(fb("z", 1), at_ms=5_000)
    assert w.waiting_labels == 1, "already out of the window"
    w.add_answer(ans("y", output=1, at=15_000))
    assert w.stats("m", now_ms=15_000)["v1"].labelled == 0, "y's label was forgotten"


def test_at_most_max_tracked_requests_per_model_oldest_by_time_first() -> None:
    w = QualityWindow(window_s=3600, max_tracked=3)
    for rid, at in [("c", 30), ("a", 10), ("b", 20)]:
        w.add_answer(ans(rid, output=1, at=at))
    w.add_answer(ans("d", output=1, at=40))
    w.add_answer(ans("too-old", output=1, at=5))
    w.add_answer(ans("other", output=1, at=1, model="m2"))
    assert len(w) == 4
    for rid in "abcd":
        w.add_feedback(fb(rid, 1), at_ms=50)
    assert w.waiting_labels == 1, "a was forgotten first, its label waits"
    assert w.stats("m", now_ms=50)["v1"].labelled == 3
    w.add_answer(ans("a", output=1, at=41))
    assert w.stats("m", now_ms=50)["v1"].labelled == 3, "a came back and took its label"
    assert w.waiting_labels == 0


def test_at_equal_times_the_one_that_came_first_is_forgotten_first() -> None:
    w = QualityWindow(window_s=3600, max_tracked=2)
    for rid in "abc":
        w.add_answer(ans(rid, output=1, at=7))
    for rid in "abc":
        w.add_feedback(fb(rid, 1), at_ms=8)
    assert w.waiting_labels == 1, "a was forgotten for c"
    assert w.stats("m", now_ms=8)["v1"].labelled == 2


def test_at_most_max_tracked_waiting_labels_in_all() -> None:
    w = QualityWindow(window_s=3600, max_tracked=3)
    for n, at in enumerate([30, 10, 20, 40]):
        w.add_feedback(fb(f"l{n}", n), at_ms=at)
    w.add_feedback(fb("too-old", 0), at_ms=5)
    assert w.waiting_labels == 3
    w.add_answer(ans("l1", output=1, at=50))
    assert w.stats("m", now_ms=50)["v1"].labelled == 0, "l1 (time 10) was forgotten first"
    w.add_answer(ans("l0", output=0, at=50))
    assert w.stats("m", now_ms=50)["v1"].correct == 1


def test_a_flood_of_long_distinct_ids_keeps_memory_bounded() -> None:
    w = QualityWindow(window_s=3600, max_tracked=100)
    for n in range(5_000):
        rid = f"{n:06d}" + "x" * 994
        w.add_answer(ans(rid, output=[n], at=n, ms=float(n)))
        w.add_feedback(fb(f"label-{n}" + "y" * 180, {"deep": [n]}), at_ms=n)
    assert len(w) == 200
    assert w.waiting_labels == 100
    assert all(isinstance(k, bytes) for k in w._models["m"].requests._items), "digests"
    assert len(w._models["m"].requests._heap) <= 2 * 100 + 64
    assert len(w._labels._heap) <= 2 * 100 + 64
    rid = "004999" + "x" * 994
    w.add_answer(ans(rid, output=[-1], at=5_000))
    w.add_feedback(fb(rid[:200], [4999]), at_ms=5_000)
    s = w.stats("m", now_ms=5_000)["v1"]
    assert (s.answers, s.labelled) == (100, 0), "a duplicate; a 200-char prefix is another id"


def test_replacing_waiting_labels_again_and_again_keeps_the_heap_bounded() -> None:
    w = QualityWindow(window_s=3600, max_tracked=10)
    for n in range(10_000):
        w.add_feedback(fb(f"l{n % 5}", n), at_ms=n)
    assert w.waiting_labels == 5
    assert len(w._labels._heap) <= 2 * 5 + 64


def test_agreement_counts_requests_answered_ok_by_both() -> None:
    w = QualityWindow(window_s=3600, max_tracked=100)
    rows = [
        ("r1", {"label": "cat"}, "cat"),
        ("r2", "cat", "dog"),
        ("r3", 1, 1.0),
        ("r4", [1, 2], [1, 2]),
        ("r5", None, "x"),  # an error on v2 below: not compared
    ]
    for rid, v1, v2 in rows:
        w.add_answer(ans(rid, "v1", v1))
        w.add_answer(ans(rid, "v2", v2, role="shadow", ok=rid != "r5"))
    w.add_answer(ans("r6", "v1", 1))  # no v2 answer: not compared
    a = w.agreement("m", "v2", "v1", now_ms=1)
    assert (a.compared, a.agreed, a.rate) == (4, 3, 0.75)
    assert a == w.agreement("m", "v1", "v2", now_ms=1)
    assert a.as_dict() == {"compared": 4, "agreed": 3, "rate": 0.75}
    assert w.agreement("m", "v1", "v1", now_ms=1) == Agreement(6, 6)
    assert w.agreement("m", "v1", "v9", now_ms=1).rate is None
    assert w.agreement("nope", "v1", "v2", now_ms=1) == Agreement(0, 0)


def test_series_buckets_answers_by_answer_time() -> None:
    w = QualityWindow(window_s=3600, max_tracked=100)
    # v1: 2 answers in [0, 10 s), both labelled, one right; 1 in [20 s, 30 s) unlabelled
    w.add_answer(ans("a", "v1", "cat", at=1_000))
    w.add_answer(ans("b", "v1", "dog", at=9_999))
    w.add_answer(ans("c", "v1", "cat", at=25_000))
    w.add_answer(ans("a", "v2", "cat", at=10_000, role="shadow"))  # its own time: bucket 10 s
    w.add_feedback(fb("a", "cat"), at_ms=26_000)
    w.add_feedback(fb("b", "cat"), at_ms=26_000)
    series = w.series("m", bucket_s=10, now_ms=30_000)
    assert series == {
        "v1": [SeriesPoint(0, 2, 2, 1), SeriesPoint(20_000, 1, 0, 0)],
        "v2": [SeriesPoint(10_000, 1, 1, 1)],
    }
    assert [p.accuracy for p in series["v1"]] == [0.5, None]
    assert series["v2"][0].as_dict() == {
        "start_ms": 10_000,
        "answers": 1,
        "labelled": 1,
        "correct": 1,
        "accuracy": 1.0,
    }
    assert w.series("nope", bucket_s=10, now_ms=30_000) == {}
    with pytest.raises(ValueError, match="bucket_s"):
        w.series("m", bucket_s=0, now_ms=30_000)


def test_forget_model_drops_only_that_model() -> None:
    w = QualityWindow(window_s=3600, max_tracked=100)
    w.add_answer(ans("a", output=1, model="m1"))
    w.add_answer(ans("a", output=1, model="m2"))
    w.forget_model("m1")
    w.forget_model("never-seen")
    assert (w.models(), len(w)) == (["m2"], 1)
    assert w.stats("m1", now_ms=0) == {}


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="window_s"):
        QualityWindow(window_s=0, max_tracked=1)
    with pytest.raises(ValueError, match="window_s"):
        QualityWindow(window_s=float("nan"), max_tracked=1)
    with pytest.raises(ValueError, match="max_tracked"):
        QualityWindow(window_s=1, max_tracked=0)


# --- property: bounded, and the figures are a recomputation over what is kept ---------------


def same(a: Any, b: Any) -> bool:
    """JSON value equality, written out: numbers by value, booleans apart, containers deep."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@dataclass
class Req:
    time: int
    seq: int
    label: Any
    answers: dict[str, VersionAnswer] = field(default_factory=dict)


_NONE = object()


class Reference:
    """The window's rules done the slow, obvious way: lists, min() and full scans."""

    def __init__(self, window_s: float, max_tracked: int) -> None:
        self.window_ms, self.max = window_s * 1000, max_tracked
        self.clock = -math.inf
        self.seq = 0
        self.models: dict[str, dict[str, Req]] = {}
        self.labels: dict[str, tuple[int, int, Any]] = {}
        self.samples: list[tuple[str, str, str, int, float]] = []

    def advance(self, now: int) -> None:
        if now <= self.clock:
            return
        self.clock = now
        cut = now - self.window_ms
        for name, reqs in list(self.models.items()):
            for rid in [rid for rid, r in reqs.items() if r.time <= cut]:
                del reqs[rid]
            if not reqs:
                del self.models[name]
        self.labels = {k: v for k, v in self.labels.items() if v[0] > cut}

    def add_answer(self, a: VersionAnswer) -> None:
        self.advance(a.at_ms)
        reqs = self.models.get(a.model, {})
        r = reqs.get(a.id)
        if r is not None:
            if a.version in r.answers:
                return
        else:
            if a.at_ms <= self.clock - self.window_ms:
                return
            if len(reqs) >= self.max and a.at_ms < min(x.time for x in reqs.values()):
                return
            self.seq += 1
            label = self.labels.pop(a.id, (0, 0, _NONE))[2]
            r = reqs[a.id] = Req(a.at_ms, self.seq, label)
            self.models[a.model] = reqs
            while len(reqs) > self.max:
                del reqs[min(reqs, key=lambda k: (reqs[k].time, reqs[k].seq))]
        r.answers[a.version] = a
        if a.compute_ms is not None and math.isfinite(a.compute_ms) and a.compute_ms >= 0:
            self.samples.append((a.model, a.version, a.id, r.seq, a.compute_ms))

    def add_feedback(self, f: Feedback, at_ms: int) -> None:
        joined = [reqs[f.id] for reqs in self.models.values() if f.id in reqs]
        for r in joined:
            r.label = f.label
        if joined:
            return
        self.labels.pop(f.id, None)
        if at_ms <= self.clock - self.window_ms:
            return
        if len(self.labels) >= self.max and at_ms < min(v[0] for v in self.labels.values()):
            return
        self.seq += 1
        self.labels[f.id] = (at_ms, self.seq, f.label)
        while len(self.labels) > self.max:
            del self.labels[min(self.labels, key=lambda k: self.labels[k][:2])]

    def stats(self, model: str, now: int) -> dict[str, VersionStats]:
        self.advance(now)
        reqs = self.models.get(model, {})
        by_version: dict[str, list[tuple[Req, VersionAnswer]]] = {}
        for r in reqs.values():
            for v, a in r.answers.items():
                by_version.setdefault(v, []).append((r, a))
        out = {}
        for v, rows in sorted(by_version.items()):
            oks = [(r, a) for r, a in rows if a.status == "ok"]
            labelled = [(r, a) for r, a in oks if r.label is not _NONE]
            correct = sum(same(prediction(a.output), r.label) for r, a in labelled)
            times = sorted(
                ms
                for m, ver, rid, seq, ms in self.samples[-SAMPLE_SIZE:]
                if (m, ver) == (model, v) and rid in reqs and reqs[rid].seq == seq
            )
            errors = len(rows) - len(oks)
            out[v] = VersionStats(
                version=v,
                roles=frozenset(a.role for _, a in rows),
                answers=len(rows),
                errors=errors,
                error_rate=errors / len(rows),
                labelled=len(labelled),
                correct=correct,
                accuracy=correct / len(labelled) if labelled else None,
                p50_ms=times[math.ceil(len(times) * 0.5) - 1] if times else None,
                p99_ms=times[math.ceil(len(times) * 99 / 100) - 1] if times else None,
            )
        return out

    def agreement(self, model: str, a: str, b: str) -> Agreement:
        both = [
            r
            for r in self.models.get(model, {}).values()
            if all(v in r.answers and r.answers[v].status == "ok" for v in (a, b))
        ]
        agreed = sum(
            same(prediction(r.answers[a].output), prediction(r.answers[b].output)) for r in both
        )
        return Agreement(len(both), agreed)

    def __len__(self) -> int:
        return sum(len(r) for r in self.models.values()) + len(self.labels)


VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from([0, 1, 2, 0.0, 1.0, 2.0, 0.5, -0.0])
    | st.sampled_from(["a", "b"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["label", "p"]), inner, max_size=2)
    ),
    max_leaves=4,
)
IDS = st.sampled_from([f"r{n}" for n in range(8)])
TIMES = st.integers(0, 60).map(lambda n: n * 100)  # coarse: ties happen
ANSWERS = st.builds(
    ans,
    IDS,
    st.sampled_from(["v1", "v2", "v3"]),
    VALUES,
    at=TIMES,
    model=st.sampled_from(["m1", "m2"]),
    role=st.sampled_from(["serving", "canary", "shadow"]),
    ok=st.booleans(),
    ms=st.none() | st.floats(0, 100, allow_nan=False) | st.just(float("nan")),
)
OPS = st.lists(
    st.one_of(
        ANSWERS.map(lambda a: ("answer", a)),
        st.tuples(IDS, VALUES, TIMES).map(lambda t: ("label", fb(t[0], t[1]), t[2])),
        TIMES.map(lambda t: ("ask", t)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(OPS, st.sampled_from([0.5, 1.0, 3.0]), st.integers(1, 5))
def test_any_sequence_stays_bounded_and_matches_a_recomputation(
    ops: list[tuple[Any, ...]], window_s: float, max_tracked: int
) -> None:
    w, ref = QualityWindow(window_s, max_tracked), Reference(window_s, max_tracked)
    for op in ops:
        if op[0] == "answer":
            w.add_answer(op[1])
            ref.add_answer(op[1])
        elif op[0] == "label":
            w.add_feedback(op[1], at_ms=op[2])
            ref.add_feedback(op[1], at_ms=op[2])
        else:
            for model in ("m1", "m2"):
                assert w.stats(model, op[1]) == ref.stats(model, op[1])
        assert len(w) == len(ref) <= max_tracked * (len(w.models()) + 1)
        assert w.waiting_labels <= max_tracked
        assert all(len(w._models[m].requests) <= max_tracked for m in w.models())
    now = int(max(ref.clock, 0))
    for model in ("m1", "m2"):
        assert w.stats(model, now) == ref.stats(model, now)
        for a, b in [("v1", "v2"), ("v1", "v3"), ("v3", "v2")]:
            assert w.agreement(model, a, b, now) == ref.agreement(model, a, b)
    assert w.models() == sorted(ref.models)
