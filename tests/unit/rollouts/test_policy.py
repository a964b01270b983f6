"""The rollout policy: wait for min_labels of each version, then promote or abort, and why."""

from __future__ import annotations

import doctest

import pytest

import rayml.rollouts.policy
from rayml.config import RolloutSettings
from rayml.rollouts.policy import RolloutDecision, decide, progress
from rayml.rollouts.quality import Agreement, VersionStats


def stats(
    version: str,
    *,
    labelled: int = 200,
    accuracy: float = 0.9,
    errors: int = 0,
    answers: int = 1_000,
    p99: float | None = 3.0,
) -> VersionStats:
    correct = round(accuracy * labelled)
    return VersionStats(
        version=version,
        roles=frozenset({"serving"}),
        answers=answers,
        errors=errors,
        error_rate=errors / answers,
        labelled=labelled,
        correct=correct,
        accuracy=correct / labelled if labelled else None,
        p50_ms=None if p99 is None else p99 / 2,
        p99_ms=p99,
    )


SETTINGS = RolloutSettings(min_labels=200)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.rollouts.policy).failed == 0


def test_no_decision_while_a_version_is_missing_or_short_of_labels() -> None:
    serving, candidate = stats("000003"), stats("000004")
    assert decide(None, candidate, SETTINGS) is None
    assert decide(serving, None, SETTINGS) is None
    assert decide(None, None, SETTINGS) is None
    assert decide(stats("000003", labelled=199), candidate, SETTINGS) is None
    assert decide(serving, stats("000004", labelled=199, accuracy=0.0), SETTINGS) is None
    assert decide(serving, stats("000004", labelled=0), SETTINGS) is None
    decision = decide(serving, candidate, SETTINGS)
    assert decision is not None, "exactly min_labels of each decides"
    assert decision.action == "promote"


def test_a_candidate_as_good_on_every_figure_is_promoted_and_the_reason_names_them() -> None:
    serving = stats("000003", accuracy=0.91, p99=2.9)
    candidate = stats("000004", accuracy=0.95, p99=3.1)
    assert decide(serving, candidate, SETTINGS) == RolloutDecision(
        "promote",
        "accuracy 0.95 >= 0.91 - 0 of serving 000003; error rate 0 <= 0 + 0.01; "
        "p99 3.1 ms <= 2 x 2.9 ms",
    )


def test_worse_accuracy_than_the_tolerance_aborts() -> None:
    serving = stats("000003", accuracy=0.91)
    decision = decide(serving, stats("000004", accuracy=0.9), SETTINGS)
    assert decision == RolloutDecision(
        "abort",
        "accuracy 0.9 < 0.91 - 0 of serving 000003; error rate 0 <= 0 + 0.01; p99 3 ms <= 2 x 3 ms",
    )
    within = RolloutSettings(min_labels=200, tolerance=0.01)
    decision = decide(serving, stats("000004", accuracy=0.9), within)
    assert decision is not None
    assert decision.action == "promote"
    assert decision.reason.startswith("accuracy 0.9 >= 0.91 - 0.01 of serving 000003;")
    beyond = decide(serving, stats("000004", accuracy=0.895), within)
    assert beyond is not None
    assert (beyond.action, beyond.reason[:36]) == ("abort", "accuracy 0.895 < 0.91 - 0.01 of serv")


def test_float_rounding_never_decides() -> None:
    # 0.8 - 0.1 == 0.7000000000000001 in floats: 0.7 is exactly at the tolerance
    serving = stats("000003", labelled=1_000, accuracy=0.8)
    candidate = stats("000004", labelled=1_000, accuracy=0.7)
    assert candidate.accuracy is not None
    assert serving.accuracy is not None
    assert candidate.accuracy < serving.accuracy - 0.1
    loose = RolloutSettings(min_labels=200, tolerance=0.1)
    decision = decide(serving, candidate, loose)
    assert decision is not None
    assert decision.action == "promote"
    # one labelled answer fewer right than that is beyond it
    decision = decide(serving, stats("000004", labelled=1_000, accuracy=0.699), loose)
    assert decision is not None
    assert decision.action == "abort"


def test_a_higher_error_rate_than_allowed_aborts_and_the_bound_itself_passes() -> None:
    serving = stats("000003", errors=10)  # 1 %
    at_bound = decide(serving, stats("000004", errors=20), SETTINGS)  # 2 % <= 1 % + 1 %
    assert at_bound is not None
    assert at_bound.action == "promote"
    assert "error rate 0.02 <= 0.01 + 0.01" in at_bound.reason
    over = decide(serving, stats("000004", errors=21, accuracy=1.0), SETTINGS)
    assert over is not None
    assert over.action == "abort"
    assert "; error rate 0.021 > 0.01 + 0.01;" in over.reason


def test_a_slower_p99_than_the_ratio_aborts_and_the_bound_itself_passes() -> None:
    serving = stats("000003", p99=2.5)
    at_bound = decide(serving, stats("000004", p99=5.0), SETTINGS)
    assert at_bound is not None
    assert (at_bound.action, at_bound.reason.rsplit("; ", 1)[1]) == (
        "promote",
        "p99 5 ms <= 2 x 2.5 ms",
    )
    over = decide(serving, stats("000004", p99=5.01, accuracy=1.0), SETTINGS)
    assert over is not None
    assert (over.action, over.reason.rsplit("; ", 1)[1]) == ("abort", "p99 5.01 ms > 2 x 2.5 ms")
    ratio = decide(serving, stats("000004", p99=25.0), RolloutSettings(max_p99_ratio=10))
    assert ratio is not None
    assert ratio.action == "promote"


@pytest.mark.parametrize(("serving_p99", "candidate_p99"), [(None, 900.0), (2.0, None)])
def test_without_compute_times_on_either_side_p99_is_not_compared(
    serving_p99: float | None, candidate_p99: float | None
) -> None:
    decision = decide(
        stats("000003", p99=serving_p99), stats("000004", p99=candidate_p99), SETTINGS
    )
    assert decision is not None
    assert decision.action == "promote"
    assert decision.reason.endswith("; p99 not compared (no compute times)")


def test_every_failing_figure_shows_in_an_abort() -> None:
    decision = decide(
        stats("000003", accuracy=0.9, errors=0, p99=1.0),
        stats("000004", accuracy=0.5, errors=100, p99=10.0),
        SETTINGS,
    )
    assert decision == RolloutDecision(
        "abort",
        "accuracy 0.5 < 0.9 - 0 of serving 000003; error rate 0.1 > 0 + 0.01; p99 10 ms > 2 x 1 ms",
    )
    assert decision.as_dict() == {"action": "abort", "reason": decision.reason}


def test_agreement_is_quoted_but_never_decides() -> None:
    serving, candidate = stats("000003"), stats("000004")
    quoted = decide(serving, candidate, SETTINGS, agreement=Agreement(1_000, 120))
    assert quoted is not None
    assert quoted.action == "promote"
    assert quoted.reason.endswith("; agreement 0.12 over 1000 requests")
    none = decide(serving, candidate, SETTINGS, agreement=Agreement(0, 0))
    assert none == decide(serving, candidate, SETTINGS), "nothing compared: nothing quoted"


def test_progress_counts_each_version_towards_min_labels() -> None:
    assert progress(stats("000003", labelled=250), stats("000004", labelled=120), SETTINGS) == (
        "serving 250/200 labels, candidate 120/200 labels"
    )
    assert progress(stats("000003"), None, SETTINGS) == (
        "serving 200/200 labels, candidate 0/200 labels"
    )


def test_a_candidate_that_only_fails_is_aborted_without_labels() -> None:
    """Error answers are never labelled: without this rule a candidate that always fails would
    never reach min_labels, and would answer its share of callers with errors for ever."""
    from rayml.config import RolloutSettings
    from rayml.protocol.rollouts import VersionAnswer
    from rayml.rollouts.policy import decide
    from rayml.rollouts.quality import QualityWindow

    window = QualityWindow(3600, 10_000)
    for i in range(200):
        for version, status in (("000001", "ok"), ("000002", "error")):
            window.add_answer(
                VersionAnswer(
                    id=f"r{i}",
                    model="m",
                    version=version,
                    role="serving" if version == "000001" else "canary",
                    pipeline="p",
                    status=status,  # type: ignore[arg-type]
                    output={"label": 1} if status == "ok" else None,
                    error_type=None if status == "ok" else "pipeline_error",
                    at_ms=1_000 + i,
                )
            )
    stats = window.stats("m", 2_000)
    decision = decide(stats["000001"], stats["000002"], RolloutSettings(min_labels=200))
    assert decision is not None
    assert decision.action == "abort"
    assert decision.reason.startswith("error rate 1 > 0 + 0.01 over 200 answers")
    assert decision.reason.endswith("before enough labels")
    # Fewer answers than min_labels: not yet.
    assert decide(stats["000001"], stats["000002"], RolloutSettings(min_labels=201)) is None
