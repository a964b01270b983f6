"""What ``replay range`` re-scores of a time range, and the copy it sends."""

from __future__ import annotations

import doctest
import json

import pytest

import rayml.replay.rewrite
from rayml.protocol.envelopes import Request, decode_request, encode_request
from rayml.replay.rewrite import Pin, RangeRule, parse_pin, rescore, rewritten

MODELS = {"iris.predict": "iris", "iris.explain": "iris", "wine.predict": "wine"}
RULE = RangeRule(
    pin=Pin("iris", "000003"),
    reply_to="iris.replay.v3",
    start_ms=1_000,
    stop_ms=2_000,
    models=MODELS,
    max_request_bytes=10_000,
)


def raw(pipeline: str = "iris.predict", **extra: object) -> bytes:
    return json.dumps({"id": "r1", "pipeline": pipeline, "params": {"x": 1}, **extra}).encode()


def test_pins_parse_to_a_model_and_a_canonical_version() -> None:
    assert parse_pin("iris@3") == Pin("iris", "000003")
    assert str(parse_pin("iris@000003")) == "iris@000003"
    for bad, why in [
        ("iris", "is not MODEL@VERSION"),
        ("@3", "is not MODEL@VERSION"),
        ("iris@", "is not MODEL@VERSION"),
        ("iris@v3", "model version 'v3' is not valid"),
        ("../x@3", "model name '../x' is not valid"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_pin(bad)


def test_each_skip_reason_in_order() -> None:
    replayed = [("rayml.replay.kind", b"range")]
    assert rescore(raw(), replayed, 1_500, RULE) == "replayed"
    assert rescore(raw(), [], 999, RULE) == "outside_window"
    assert rescore(raw(), [], 2_000, RULE) == "outside_window"
    assert rescore(b"nope", [], 1_500, RULE) == "not_a_request"
    assert rescore(raw(bogus=1), [], 1_500, RULE) == "not_a_request"
    assert rescore(b"x" * 10_001, [], 1_500, RULE) == "not_a_request"
    only = RangeRule(**{**RULE.__dict__, "pipeline": "iris.pred*"})
    assert rescore(raw("iris.explain"), [], 1_500, only) == "pipeline"
    assert rescore(raw("nobody.published"), [], 1_500, RULE) == "unknown_pipeline"
    assert rescore(raw("wine.predict"), [], 1_500, RULE) == "other_model"
    # A dead-letter replay's copy is traffic like any other: it is re-scored.
    dlq_copy = [("rayml.replay.kind", b"dlq")]
    assert isinstance(rescore(raw("iris.explain"), dlq_copy, 1_000, RULE), Request)


def test_the_copy_keeps_the_id_and_params_pins_and_drops_the_deadline() -> None:
    original = rescore(
        raw(deadline="2020-01-01T00:00:00Z", tenant="team-a", sent_at_ms=5, reply_to="mine"),
        [],
        1_500,
        RULE,
    )
    assert isinstance(original, Request)
    copy = rewritten(original, RULE, now_ms=1_234)
    again = decode_request(encode_request(copy), max_bytes=10_000)
    assert again == copy
    assert copy.model_dump(exclude_none=True) == {
        "v": 1,
        "id": "r1",
        "pipeline": "iris.predict",
        "params": {"x": 1},
        "reply_to": "iris.replay.v3",
        "model_version": "000003",
        "tenant": "team-a",
        "sent_at_ms": 1_234,
    }


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.replay.rewrite).failed == 0
