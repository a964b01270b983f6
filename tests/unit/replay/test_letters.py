"""Which dead letters ``replay dlq`` replays, skips or refuses, and the copies' headers."""

from __future__ import annotations

import doctest

import rayml.replay.letters
from rayml.config import TenantSettings, load_settings
from rayml.protocol.dead_letters import DeadLetter, dead_letter_headers
from rayml.replay.letters import (
    LetterFilter,
    header_value,
    judge_letter,
    replay_headers,
    replay_targets,
)

INPUT = "ml.pipeline.input"
BULK = "ml.pipeline.input.batch"
# Each request topic a letter may name, and where its copy goes: both lanes to the bulk lane.
TARGETS = {INPUT: BULK, BULK: BULK, "ml.pipeline.jobs": "ml.pipeline.jobs"}


def letter_headers(error_type: str = "retries_exhausted", source: str = INPUT) -> list:
    meta = DeadLetter(
        error_type=error_type,
        error_message="m",
        source_topic=source,
        source_partition=1,
        source_offset=9,
        request_id="r1",
    )
    return [("traceparent", b"00-a-b-01"), *dead_letter_headers(meta)]


def test_the_filter_is_by_error_type_and_a_half_open_time_window() -> None:
    f = LetterFilter(
        error_types=frozenset({"retries_exhausted", "invalid_json"}), since_ms=100, until_ms=200
    )
    assert f.skip_reason("retries_exhausted", 100) is None
    assert f.skip_reason("invalid_json", 199) is None
    assert f.skip_reason("missing_id", 150) == "error_type"
    assert f.skip_reason("invalid_json", 99) == "before_since"
    assert f.skip_reason("invalid_json", 200) == "at_or_after_until"
    assert LetterFilter().skip_reason("anything", 0) is None


def test_a_letter_of_either_lane_is_replayed_on_the_bulk_lane_and_training_stays() -> None:
    verdict = judge_letter(letter_headers(), 0, LetterFilter(), TARGETS)
    assert verdict.action == "replay"
    assert verdict.letter is not None
    assert verdict.letter.source_topic == INPUT
    assert verdict.to == BULK
    assert judge_letter(letter_headers(source=BULK), 0, LetterFilter(), TARGETS).to == BULK
    jobs = judge_letter(letter_headers(source="ml.pipeline.jobs"), 0, LetterFilter(), TARGETS)
    assert jobs.to == "ml.pipeline.jobs"


def test_the_filter_comes_before_the_refusal() -> None:
    """A letter the filter leaves out is skipped even if it could not be replayed."""
    headers = letter_headers(error_type="invalid_json", source="ml.pipeline.output")
    only = LetterFilter(error_types=frozenset({"retries_exhausted"}))
    assert judge_letter(headers, 0, only, TARGETS).action == "skip"
    assert judge_letter(headers, 0, LetterFilter(), TARGETS).action == "refuse"


def test_letters_naming_no_request_topic_or_without_headers_are_refused() -> None:
    for source, reason in [
        ("ml.pipeline.output", "source topic 'ml.pipeline.output' is not a request topic"),
        ("ml.pipeline.dlq", "source topic 'ml.pipeline.dlq' is not a request topic"),
        ("bad topic/..", "source topic 'bad topic/..' is not a topic name"),
    ]:
        verdict = judge_letter(letter_headers(source=source), 0, LetterFilter(), TARGETS)
        assert verdict.action == "refuse"
        assert verdict.reason.startswith(reason), verdict.reason
    bare = judge_letter([("traceparent", b"x")], 0, LetterFilter(), TARGETS)
    assert bare.action == "refuse"
    assert bare.reason.startswith("not a dead letter")
    assert "source_topic" in bare.reason


def test_targets_are_every_tenants_request_topics_and_nothing_of_raymls_own() -> None:
    assert replay_targets(load_settings()) == TARGETS
    a = {"input_topic": "a.in", "training_topic": "a.train", "result_topic": "a.out"}
    b = {"input_topic": "b.in", "result_topic": "b.out"}
    tenants = [
        TenantSettings(name="a", reply_prefix="a.replies.", **a),
        TenantSettings(name="b", reply_prefix="b.replies.", **b),
    ]
    targets = replay_targets(load_settings(tenants=tenants))
    assert targets == {
        "a.in": "a.in.batch",
        "a.in.batch": "a.in.batch",
        "a.train": "a.train",
        "b.in": "b.in.batch",
        "b.in.batch": "b.in.batch",
    }
    # Every destination is a tenant's request topic: the rule "only where a client could have
    # sent it" holds for the bulk lanes too.
    assert set(targets.values()) <= set(targets)


def test_the_copy_keeps_foreign_headers_and_replaces_raymls_own() -> None:
    earlier = [("rayml.replay.kind", b"dlq"), ("rayml.replay.from", b"x/0/1")]
    headers = [*letter_headers(), ("tracestate", "k=v"), *earlier, ("empty", None)]
    copy = replay_headers(headers, kind="dlq", topic="ml.pipeline.dlq", partition=2, offset=40)
    assert copy == [
        ("traceparent", b"00-a-b-01"),
        ("tracestate", "k=v"),
        ("empty", None),
        ("rayml.replay.kind", b"dlq"),
        ("rayml.replay.from", b"ml.pipeline.dlq/2/40"),
    ]
    assert header_value(copy, "rayml.replay.from") == "ml.pipeline.dlq/2/40"


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.replay.letters).failed == 0
