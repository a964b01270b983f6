"""Drift per version: the reference of training rows, the window of answers, and the PSI."""

from __future__ import annotations

import doctest
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import rayml.rollouts.drift
from rayml.protocol.rollouts import VersionAnswer
from rayml.rollouts.drift import (
    EPSILON,
    MAX_CATEGORIES,
    MAX_FEATURES,
    MAX_REFERENCE_ROWS,
    MODERATE,
    OTHER,
    SIGNIFICANT,
    DriftFigures,
    DriftReference,
    DriftWindow,
    FeatureBins,
    label_key,
    level,
    reference_from_rows,
    sample_rows,
)

HOUR_MS = 3_600_000


def psi(observed: list[float], expected: list[float]) -> float:
    """The index by its definition, written out."""
    total = 0.0
    for o, e in zip(observed, expected, strict=True):
        o, e = max(o, EPSILON), max(e, EPSILON)
        total += (o - e) * math.log(o / e)
    return total


def fill(
    window: DriftWindow, rows: Any, *, version: str = "v1", at: int = 1_000, **kw: Any
) -> None:
    for i, row in enumerate(np.asarray(rows).tolist()):
        window.add("m", version, at + i, row, **kw)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.rollouts.drift).failed == 0


def test_the_training_rows_themselves_drift_by_nothing() -> None:
    rows = np.random.default_rng(1).normal(size=(3_000, 5))
    ref = reference_from_rows(rows)
    window = DriftWindow(3600)
    fill(window, rows)
    d = window.psi("m", "v1", ref, now_ms=10_000)
    assert d.rows == 3_000
    assert d.features is not None
    assert max(d.features) < 1e-4  # shares rounded to 6 digits in the reference
    assert d.level == "stable"


def test_another_sample_of_the_same_population_stays_under_moderate() -> None:
    rng = np.random.default_rng(2)
    ref = reference_from_rows(rng.normal(size=(5_000, 8)))
    window = DriftWindow(3600)
    fill(window, rng.normal(size=(5_000, 8)))
    d = window.psi("m", "v1", ref, now_ms=10_000)
    # Two samples of 5,000: about 9 x (2 / 5,000) = 0.004 per feature.
    assert d.max_psi is not None
    assert d.max_psi < 0.02 < MODERATE


def test_a_shifted_feature_is_significant_and_named() -> None:
    rng = np.random.default_rng(3)
    train = rng.normal(size=(4_000, 6))
    ref = reference_from_rows(train)
    shifted = rng.normal(size=(4_000, 6))
    shifted[:, 4] *= 3.0  # spread three times wider
    window = DriftWindow(3600)
    fill(window, shifted)
    d = window.psi("m", "v1", ref, now_ms=10_000)
    assert d.features is not None
    assert d.max_feature == 4
    assert d.max_psi == d.features[4] > SIGNIFICANT
    assert all(p < MODERATE for i, p in enumerate(d.features) if i != 4)
    assert d.level == "significant"


def test_the_index_is_the_formula_over_the_reference_bins() -> None:
    # One feature, values 0..9: the deciles 1, 2, ..., 9 split them one per bin.
    ref = reference_from_rows([[float(v)] for v in range(10)])
    (bins,) = ref.features
    assert bins.edges == [float(v) for v in range(1, 10)]
    assert bins.shares == [0.1] * 10
    window = DriftWindow(3600)
    observed = [0.0] * 5 + [9.0] * 3 + [4.0] * 2  # bins 0, 9 and 4
    for i, v in enumerate(observed):
        window.add("m", "v1", 1_000 + i, [v])
    d = window.psi("m", "v1", ref, now_ms=2_000)
    shares = [0.5, 0, 0, 0, 0.2, 0, 0, 0, 0, 0.3]
    assert d.features == [pytest.approx(psi(shares, [0.1] * 10), abs=1e-6)]


def test_an_empty_bin_counts_as_epsilon_on_either_side() -> None:
    ref = DriftReference(rows=100, features=[FeatureBins(edges=[0.0, 1.0], shares=[0.5, 0.5, 0.0])])
    window = DriftWindow(3600)
    for i in range(10):  # all in the bin the training rows never reached
        window.add("m", "v1", 1_000 + i, [5.0])
    d = window.psi("m", "v1", ref, now_ms=2_000)
    want = psi([0.0, 0.0, 1.0], [0.5, 0.5, 0.0])
    assert d.features == [pytest.approx(want, abs=1e-6)]
    assert math.isfinite(want)
    assert want > SIGNIFICANT


def test_tied_values_make_fewer_bins_and_the_same_rule_on_both_sides() -> None:
    binary = np.array([[0.0, 7.0]] * 700 + [[1.0, 7.0]] * 300)
    ref = reference_from_rows(binary)
    assert ref.features[0].edges == [0.0, 1.0]
    assert ref.features[0].shares == [0.0, 0.7, 0.3]
    assert ref.features[1].edges == [7.0]  # a constant: one edge, all in the bin at or above
    assert ref.features[1].shares == [0.0, 1.0]
    window = DriftWindow(3600)
    fill(window, binary)
    d = window.psi("m", "v1", ref, now_ms=10_000)
    assert d.features == [0.0, 0.0]
    flipped = DriftWindow(3600)
    fill(flipped, 1.0 - binary[:, :1])  # 30% zeros, 70% ones
    (only,) = flipped.psi("m", "v1", reference_from_rows(binary[:, :1]), 10_000).features or []
    assert only == pytest.approx(psi([0, 0.3, 0.7], [0, 0.7, 0.3]), abs=1e-6)


def test_output_psi_compares_predicted_labels_as_values() -> None:
    outputs = [{"label": 1, "p": 0.9}] * 60 + [{"label": 0, "p": 0.8}] * 40
    ref = reference_from_rows([[0.0]] * 100, outputs=outputs)
    assert ref.outputs == {"1": 0.6, "0": 0.4}
    same = DriftWindow(3600)
    for i in range(100):  # 1.0 is the label 1; the output may be a bare value too
        same.add("m", "v1", 1_000 + i, None, {"label": 1.0} if i < 60 else 0)
    d = same.psi("m", "v1", ref, now_ms=2_000)
    assert (d.outputs, d.output_psi, d.rows, d.features) == (100, 0.0, 0, None)
    assert d.level == "stable"
    moved = DriftWindow(3600)
    for i in range(100):  # all 0, and some labels the training rows never got
        moved.add("m", "v1", 1_000 + i, None, {"label": "cat"} if i < 10 else {"label": 0})
    d = moved.psi("m", "v1", ref, now_ms=2_000)
    want = psi([0.9, 0.0, 0.1], [0.4, 0.6, 0.0])  # labels 0, 1, (other)
    assert d.output_psi == pytest.approx(want, abs=1e-5)
    assert d.level == "significant"


def test_a_reference_keeps_at_most_max_categories_labels_the_rest_as_other() -> None:
    n = MAX_CATEGORIES + 10
    ref = reference_from_rows([[0.0]] * n, outputs=list(range(n)))
    assert ref.outputs is not None
    assert len(ref.outputs) == MAX_CATEGORIES
    assert ref.outputs[OTHER] == pytest.approx(11 / n, abs=1e-6)


def test_errors_count_no_output_and_an_ok_answer_without_inputs_counts_its_output() -> None:
    ref = reference_from_rows([[0.0], [1.0]], outputs=[0, 1])
    window = DriftWindow(3600)

    def answer(rid: str, status: str, inputs: list[float] | None) -> VersionAnswer:
        return VersionAnswer(
            id=rid,
            model="m",
            version="v1",
            role="serving",
            pipeline="m.predict",
            status=status,  # type: ignore[arg-type]
            output=1 if status == "ok" else None,
            at_ms=1_000,
            inputs=inputs,
        )

    window.add_answer(answer("a", "error", [0.5]))
    window.add_answer(answer("b", "ok", None))
    d = window.psi("m", "v1", ref, now_ms=2_000)
    assert (d.rows, d.outputs) == (1, 1)


@pytest.mark.parametrize(
    "inputs",
    [
        [float("nan"), 1.0],
        [1.0, float("inf")],
        [1.0, -float("inf")],
        [0.0] * (MAX_FEATURES + 1),
        [],
        ["1.0", 2.0],
        [[1.0], 2.0],
        [True, 2.0],
        "12",
        {"a": 1.0},
        [10**400, 1.0],
    ],
    ids=lambda v: repr(v)[:30],
)
def test_hostile_inputs_are_never_binned(inputs: Any) -> None:
    ref = reference_from_rows([[0.0, 0.0], [1.0, 1.0]])
    window = DriftWindow(3600)
    window.add("m", "v1", 1_000, inputs, {"label": 1})
    d = window.psi("m", "v1", ref, now_ms=2_000)
    assert d.rows == 0
    assert d.features is None
    assert d.outputs == 1  # the prediction still counts


def test_vectors_of_another_length_are_counted_not_binned() -> None:
    ref = reference_from_rows([[0.0, 0.0], [1.0, 1.0]])
    window = DriftWindow(3600)
    window.add("m", "v1", 1_000, [0.5, 0.5])
    window.add("m", "v1", 1_001, [0.5])
    window.add("m", "v1", 1_002, [0.5, 0.5, 0.5])
    d = window.psi("m", "v1", ref, now_ms=2_000)
    assert (d.rows, d.mismatched) == (1, 2)


def test_a_window_keeps_the_newest_max_rows_per_version() -> None:
    window = DriftWindow(3600, max_rows=50)
    ref = reference_from_rows([[float(v)] for v in range(10)])
    for i in range(200):
        window.add("m", "v1", 1_000 + i, [0.0 if i < 150 else 9.0])
        window.add("m", "v2", 1_000 + i, [0.0])
    assert len(window) == 100
    d = window.psi("m", "v1", ref, now_ms=2_000)
    assert d.rows == 50
    assert d.features == [pytest.approx(psi([0] * 9 + [1.0], [0.1] * 10), abs=1e-6)]


def test_answers_leave_the_window_after_window_s() -> None:
    window = DriftWindow(window_s=60, max_rows=100)
    ref = reference_from_rows([[0.0], [1.0]], outputs=[0, 1])
    window.add("m", "v1", 1_000, [0.0], 0)
    window.add("m", "v1", 30_000, [1.0], 1)
    assert window.psi("m", "v1", ref, now_ms=60_999).rows == 2
    d = window.psi("m", "v1", ref, now_ms=61_000)  # the first is 60 s old: gone
    assert (d.rows, d.outputs) == (1, 1)
    window.add("m", "v1", 500, [0.0], 0)  # older than the window: never kept
    assert window.psi("m", "v1", ref, now_ms=61_000).rows == 1
    assert window.psi("m", "v1", ref, now_ms=90_000 + 1).rows == 0
    assert len(window) == 0


def test_a_shadow_takes_the_served_versions_inputs_and_its_own_predictions() -> None:
    ref = reference_from_rows([[0.0], [1.0]], outputs=[0, 1])
    window = DriftWindow(3600)
    for i in range(10):
        window.add("m", "served", 1_000 + i, [float(i % 2)], i % 2)
        window.add("m", "cand", 1_000 + i, None, 1)
    assert window.psi("m", "cand", ref, now_ms=2_000).rows == 0
    d = window.psi("m", "cand", ref, now_ms=2_000, inputs_of="served")
    assert (d.rows, d.outputs) == (10, 10)
    assert d.max_psi == 0.0
    assert d.output_psi == pytest.approx(psi([0, 1], [0.5, 0.5]), abs=1e-5)


def test_forget_model_drops_only_that_model() -> None:
    window = DriftWindow(3600)
    window.add("a", "v1", 1_000, [1.0])
    window.add("b", "v1", 1_000, [1.0])
    window.forget_model("a")
    assert len(window) == 1


def test_a_reference_round_trips_as_json_and_refuses_nonsense() -> None:
    rng = np.random.default_rng(4)
    ref = reference_from_rows(rng.normal(size=(500, 3)), outputs=[i % 3 for i in range(500)])
    again = DriftReference.model_validate_json(ref.model_dump_json())
    assert again == ref
    assert again.rows == 500
    for bad in (
        {"rows": 1, "features": [{"edges": [1.0, 0.0], "shares": [0.2, 0.3, 0.5]}]},
        {"rows": 1, "features": [{"edges": [0.0], "shares": [1.0]}]},
        {"rows": 1, "features": [{"edges": [0.0], "shares": [1.5, -0.5]}]},
        {"rows": 1, "features": [{"edges": [float("nan")], "shares": [0.5, 0.5]}]},
        {"rows": 1, "features": []},
        {"rows": 1, "features": [{"edges": [], "shares": [1.0]}] * (MAX_FEATURES + 1)},
    ):
        with pytest.raises(ValidationError):
            DriftReference.model_validate(bad)


def test_sample_rows_caps_rows_drops_non_finite_and_refuses_what_is_not_a_matrix() -> None:
    big = np.arange(MAX_REFERENCE_ROWS * 3, dtype=np.float64).reshape(-1, 1)
    kept = sample_rows(big)
    assert kept.shape == (MAX_REFERENCE_ROWS, 1)
    assert kept[0, 0] == 0  # evenly spaced over all of them
    assert kept[-1, 0] == big[-1, 0]
    assert reference_from_rows(big).rows == MAX_REFERENCE_ROWS
    for bad, why in (
        ([1.0, 2.0], "matrix of 1 to"),
        ([[1.0] * (MAX_FEATURES + 1)], "matrix of 1 to"),
        ([], "matrix of 1 to"),
        ([["a"]], "not a numeric matrix"),
        ([[float("nan")]], "no reference row"),
    ):
        with pytest.raises(ValueError, match=why):
            sample_rows(bad)
    with pytest.raises(ValueError, match="one per row"):
        reference_from_rows([[1.0], [float("inf")], [2.0]], outputs=[0, 1, 0])


def test_level_and_label_key() -> None:
    assert [level(p) for p in (0.0, 0.099, 0.1, 0.25, 0.2501)] == [
        "stable",
        "stable",
        "moderate",
        "moderate",
        "significant",
    ]
    assert DriftFigures(0, 0, None, None, None, 0, None).level is None
    assert DriftFigures(1, 0, [0.3], 0.3, 0, 1, 0.01).as_dict()["level"] == "significant"
    assert label_key(np.int64(2)) == label_key(2.0) == "2"
    assert label_key(True) != label_key(1)
    assert label_key("x" * 100).startswith("#")
    assert label_key([1, 2]) == label_key([1.0, 2.0])
    assert label_key(10**400).startswith("#")


@settings(max_examples=60, deadline=None)
@given(
    reference=st.lists(
        st.lists(st.floats(-1e6, 1e6), min_size=3, max_size=3), min_size=1, max_size=60
    ),
    observed=st.lists(
        st.lists(st.floats(-1e9, 1e9), min_size=3, max_size=3), min_size=1, max_size=60
    ),
)
def test_the_index_is_finite_and_never_negative(
    reference: list[list[float]], observed: list[list[float]]
) -> None:
    ref = reference_from_rows(reference)
    window = DriftWindow(3600)
    fill(window, observed)
    d = window.psi("m", "v1", ref, now_ms=10_000)
    assert d.features is not None
    assert all(math.isfinite(p) and p >= 0 for p in d.features)
    assert d.rows == len(observed)
