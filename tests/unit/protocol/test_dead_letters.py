"""Dead letters: the ``rayml.*`` Kafka headers that say why a record is on the DLQ."""

from __future__ import annotations

import doctest

import pytest
from pydantic import ValidationError

import rayml.protocol.dead_letters
import rayml.protocol.envelopes
from rayml.protocol.dead_letters import DeadLetter, dead_letter_from_headers, dead_letter_headers


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.protocol.dead_letters).failed == 0


def test_messages_re_exports_dead_letters() -> None:
    # The ingest (and older code) imports them from rayml.protocol.envelopes.
    assert rayml.protocol.envelopes.DeadLetter is DeadLetter
    assert rayml.protocol.envelopes.dead_letter_headers is dead_letter_headers
    assert rayml.protocol.envelopes.dead_letter_from_headers is dead_letter_from_headers


def test_dead_letter_headers_round_trip_and_names() -> None:
    dl = DeadLetter(
        error_type="invalid_json",
        error_message="the message is not JSON: ünïcode",
        source_topic="ml.pipeline.input",
        source_partition=3,
        source_offset=123456789012,
        request_id="r1",
    )
    headers = dead_letter_headers(dl)
    assert dict(headers) == {
        "rayml.error.type": b"invalid_json",
        "rayml.error.message": "the message is not JSON: ünïcode".encode(),
        "rayml.source.topic": b"ml.pipeline.input",
        "rayml.source.partition": b"3",
        "rayml.source.offset": b"123456789012",
        "rayml.request.id": b"r1",
    }
    assert dead_letter_from_headers(headers) == dl


def test_dead_letter_without_request_id_omits_the_header() -> None:
    dl = DeadLetter(
        error_type="missing_id",
        error_message="no id",
        source_topic="in",
        source_partition=0,
        source_offset=0,
    )
    headers = dead_letter_headers(dl)
    assert "rayml.request.id" not in dict(headers)
    assert dead_letter_from_headers(headers) == dl


def test_dead_letter_from_headers_ignores_other_headers_and_takes_the_last_repeat() -> None:
    headers: list[tuple[str, bytes | str | None]] = [
        ("traceparent", b"00-abc-def-01"),
        ("rayml.error.type", b"first"),
        ("rayml.error.type", "second"),
        ("rayml.error.message", b"bad \xff byte"),
        ("rayml.source.topic", b"in"),
        ("rayml.source.partition", b"1"),
        ("rayml.source.offset", b"2"),
        ("rayml.request.id", None),
    ]
    dl = dead_letter_from_headers(headers)
    assert dl.error_type == "second"
    assert dl.error_message == "bad \ufffd byte"
    assert (dl.source_topic, dl.source_partition, dl.source_offset) == ("in", 1, 2)
    assert dl.request_id is None


def test_dead_letter_from_headers_needs_the_rayml_headers() -> None:
    with pytest.raises(ValidationError, match="source_offset"):
        dead_letter_from_headers(
            [
                ("rayml.error.type", b"x"),
                ("rayml.error.message", b"m"),
                ("rayml.source.topic", b"t"),
                ("rayml.source.partition", b"0"),
            ]
        )
    with pytest.raises(ValidationError):
        dead_letter_from_headers(None)
