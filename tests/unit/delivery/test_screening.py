"""screen(): the first look at a consumed request, shared by the ingest's triage and the job
runner: dead letter (no usable id), error answer (usable id, bad envelope), or the request."""

from __future__ import annotations

import json
from typing import Any

from rayml.delivery.screening import dead_letter_record, screen
from rayml.protocol.dead_letters import dead_letter_from_headers
from rayml.protocol.envelopes import Rejected


class Msg:
    def __init__(self, value: bytes, headers: Any = None) -> None:
        self._value, self._headers = value, headers

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes | None:
        return None

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return 42

    def headers(self) -> Any:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000)


class Sink:
    def __init__(self) -> None:
        self.dead: list[tuple[str, str]] = []
        self.rejected: list[tuple[tuple[str, int], int, Rejected]] = []

    def dead_letter(self, msg: Any, error_type: str, message: str) -> None:
        self.dead.append((error_type, message))

    def reject(self, msg: Any, tp: tuple[str, int], offset: int, rejected: Rejected) -> None:
        self.rejected.append((tp, offset, rejected))


def test_a_record_without_a_usable_id_is_dead_lettered() -> None:
    sink = Sink()
    raw = b"not json"
    assert screen(Msg(raw), ("in", 3), 42, raw, 1_000_000, sink) is None
    assert [error_type for error_type, _ in sink.dead] == ["invalid_json"]
    assert sink.rejected == []


def test_a_bad_envelope_with_an_id_is_answered_with_an_error() -> None:
    sink = Sink()
    raw = json.dumps({"id": "r-1", "pipeline": 7}).encode()
    assert screen(Msg(raw), ("in", 3), 42, raw, 1_000_000, sink) is None
    assert sink.dead == []
    [(tp, offset, rejected)] = sink.rejected
    assert (tp, offset, rejected.request_id) == (("in", 3), 42, "r-1")
    assert rejected.error.type == "invalid_request"


def test_a_valid_request_is_returned() -> None:
    sink = Sink()
    raw = json.dumps({"id": "r-2", "pipeline": "iris.predict", "params": {}}).encode()
    request = screen(Msg(raw), ("in", 3), 42, raw, 1_000_000, sink)
    assert request is not None
    assert (request.id, request.pipeline) == ("r-2", "iris.predict")
    assert sink.dead == sink.rejected == []


def test_the_dead_letter_record_keeps_the_original_headers_and_names_its_source() -> None:
    tp, offset, headers = dead_letter_record(
        Msg(b"x", headers=[("traceparent", b"00-abc")]), "not_json", "boom"
    )
    assert (tp, offset) == (("in", 3), 42)
    assert headers[0] == ("traceparent", b"00-abc")
    letter = dead_letter_from_headers(headers)
    assert (letter.error_type, letter.source_topic, letter.source_partition) == (
        "not_json",
        "in",
        3,
    )
    assert letter.source_offset == 42
