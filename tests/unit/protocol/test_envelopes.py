"""Envelopes: strict request decoding (Request / Rejected / Undecodable), requests, results."""

from __future__ import annotations

import doctest
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import rayml.protocol.envelopes
import rayml.protocol.fields
from rayml.errors import InvalidParamsError, RecordError, UnknownPipelineError
from rayml.protocol.envelopes import (
    ErrorInfo,
    ModelRef,
    Rejected,
    Request,
    Result,
    Timings,
    Undecodable,
    decode_request,
    decode_result,
    encode_request,
    encode_result,
    error_info_from,
)

MAX = 1_000_000


def decode(obj: Any, *, max_bytes: int = MAX) -> Request | Undecodable | Rejected:
    return decode_request(json.dumps(obj).encode(), max_bytes=max_bytes)


def rejected(obj: Any, *, max_bytes: int = MAX) -> Rejected:
    out = decode(obj, max_bytes=max_bytes)
    assert isinstance(out, Rejected), out
    return out


@pytest.mark.parametrize("module", [rayml.protocol.envelopes, rayml.protocol.fields])
def test_docstring_examples_run(module: Any) -> None:
    assert doctest.testmod(module).failed == 0


# --- valid requests ------------------------------------------------------------------------


def test_minimal_request_gets_defaults() -> None:
    req = decode({"id": "r1", "pipeline": "iris.predict"})
    assert isinstance(req, Request)
    assert (req.v, req.id, req.pipeline, req.params) == (1, "r1", "iris.predict", {})
    assert req.deadline is None
    assert req.sent_at_ms is None
    assert (req.reply_to, req.model_version, req.tenant) == (None, None, None)


def test_full_request() -> None:
    req = decode(
        {
            "v": 1,
            "id": "r1",
            "pipeline": "iris.predict",
            "params": {"features": [0.5] * 30},
            "reply_to": "team-a.results_2",
            "deadline": "2025-11-26T10:00:00+01:00",
            "model_version": "3",
            "tenant": "team-a",
            "sent_at_ms": 1764150000000,
        }
    )
    assert isinstance(req, Request)
    assert req.params == {"features": [0.5] * 30}
    assert req.reply_to == "team-a.results_2"
    assert req.deadline == datetime(2025, 11, 26, 9, 0, tzinfo=UTC)
    assert (req.model_version, req.tenant, req.sent_at_ms) == ("3", "team-a", 1764150000000)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1764000000000, datetime(2025, 11, 24, 16, 0, tzinfo=UTC)),
        # Small integers are milliseconds too, not seconds (pydantic alone would guess seconds).
        (1500, datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        ("2025-11-24T16:00:00Z", datetime(2025, 11, 24, 16, 0, tzinfo=UTC)),
    ],
)
def test_deadline_accepts_rfc3339_and_epoch_millis(value: object, expected: datetime) -> None:
    req = decode({"id": "r1", "pipeline": "p", "deadline": value})
    assert isinstance(req, Request)
    assert req.deadline == expected


@pytest.mark.parametrize(
    "value",
    [
        1764000000000.0,  # floats are ambiguous (seconds? ms?), so refused
        True,
        "1764000000000",  # a quoted number
        "2025-11-24T16:00:00",  # no offset: whose local time?
        "tomorrow",
        10**20,  # out of datetime's range
    ],
)
def test_deadline_refuses_ambiguous_values(value: object) -> None:
    out = rejected({"id": "r1", "pipeline": "p", "deadline": value})
    assert out.error.details["fields"] == ["deadline"]


def test_request_is_frozen_and_forbids_extra_fields_in_python_too() -> None:
    req = Request(id="r1", pipeline="p")
    with pytest.raises(ValidationError):
        req.id = "r2"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        Request(id="r1", pipeline="p", colour="red")  # type: ignore[call-arg]


@pytest.mark.parametrize("topic", ["a", "ml.pipeline.output", "A-b_c.9", "x" * 249])
def test_reply_to_accepts_kafka_topic_names(topic: str) -> None:
    assert isinstance(decode({"id": "r", "pipeline": "p", "reply_to": topic}), Request)


@pytest.mark.parametrize("topic", ["", "has space", "a/b", "é", "x" * 250, ".", ".."])
def test_reply_to_refuses_invalid_topic_names(topic: str) -> None:
    out = rejected({"id": "r", "pipeline": "p", "reply_to": topic})
    assert out.error.type == "invalid_request"
    assert out.error.details["fields"] == ["reply_to"]
    assert "reply_to" in out.error.message


def test_id_of_256_chars_is_fine_and_257_is_rejected_but_answered() -> None:
    assert isinstance(decode({"id": "i" * 256, "pipeline": "p"}), Request)
    out = rejected({"id": "i" * 257, "pipeline": "p"})
    assert out.request_id == "i" * 257
    assert out.error.details["fields"] == ["id"]


@pytest.mark.parametrize("bad_id", ["a\nb", "\x00", "tab\there", "del\x7f", "c1\x85"])
def test_id_with_control_characters_is_rejected(bad_id: str) -> None:
    out = rejected({"id": bad_id, "pipeline": "p"})
    assert out.request_id == bad_id
    assert out.error.details["fields"] == ["id"]


def test_unicode_id_is_fine() -> None:
    req = decode({"id": "zürich-東京-🚀", "pipeline": "p"})
    assert isinstance(req, Request)
    assert req.id == "zürich-東京-🚀"


# --- rejected: usable id, bad envelope -----------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"params": [1, 2]}, "params"),
        ({"reply_to": 5}, "reply_to"),
        ({"v": 2}, "v"),
        ({"sent_at_ms": "123"}, "sent_at_ms"),  # strict: no string-to-int coercion
        ({"sent_at_ms": 1.5}, "sent_at_ms"),
        ({"sent_at_ms": -1}, "sent_at_ms"),
        ({"tenant": 7}, "tenant"),
    ],
)
def test_bad_field_is_rejected_naming_the_field(extra: dict[str, object], field: str) -> None:
    out = rejected({"id": "r1", "pipeline": "iris.predict", **extra})
    assert out.request_id == "r1"
    assert out.pipeline == "iris.predict"
    assert out.error.type == "invalid_request"
    assert out.error.details["fields"] == [field]
    assert out.error.message.startswith(f"invalid request envelope: {field}: ")


def test_every_bad_field_is_named() -> None:
    out = rejected({"id": "r1", "pipeline": "p", "reply_to": "a b", "extra": 1, "v": 3})
    assert sorted(out.error.details["fields"]) == ["extra", "reply_to", "v"]
    for problem in out.error.details["errors"]:
        assert set(problem) == {"field", "type", "message"}


@pytest.mark.parametrize("pipeline", [None, 5, "", "p" * 201])
def test_bad_or_missing_pipeline_is_rejected(pipeline: object) -> None:
    obj: dict[str, object] = {"id": "r1"}
    if pipeline is not None:
        obj["pipeline"] = pipeline
    out = rejected(obj)
    assert out.error.details["fields"] == ["pipeline"]
    # The rejection carries the pipeline name only when it was a string, for the result.
    assert out.pipeline == (pipeline if isinstance(pipeline, str) else None)


def test_rejection_details_do_not_echo_input_values() -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    out = rejected({"id": "r1", "pipeline": "p", "reply_to": secret + " x"})
    assert secret not in json.dumps(out.error.details)


def test_oversize_request_with_id_is_rejected_as_too_large() -> None:
    raw = json.dumps({"id": "big", "pipeline": "p", "params": {"x": "a" * 500}}).encode()
    out = decode_request(raw, max_bytes=100)
    assert isinstance(out, Rejected)
    assert (out.request_id, out.pipeline) == ("big", "p")
    assert out.error.type == "request_too_large"
    assert out.error.details == {"size": len(raw), "max_bytes": 100}


def test_oversize_is_checked_before_validity() -> None:
    raw = json.dumps({"id": "big", "pipeline": "p", "unknown": "a" * 500}).encode()
    out = decode_request(raw, max_bytes=100)
    assert isinstance(out, Rejected)
    assert out.error.type == "request_too_large"


def test_request_of_exactly_max_bytes_is_accepted() -> None:
    raw = json.dumps({"id": "r", "pipeline": "p"}).encode()
    assert isinstance(decode_request(raw, max_bytes=len(raw)), Request)
    assert isinstance(decode_request(raw, max_bytes=len(raw) - 1), Rejected)


@pytest.mark.parametrize(
    "raw", [b"[" + b"1," * 100 + b"1]", b'{"pipeline": "' + b"p" * 200 + b'"}', b"x" * 200]
)
def test_oversize_request_without_id_is_undecodable(raw: bytes) -> None:
    out = decode_request(raw, max_bytes=100)
    assert isinstance(out, Undecodable)
    assert out.error_type == "request_too_large"
    assert "100 bytes" in out.message


# --- undecodable: nobody to answer ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "error_type"),
    [
        (None, "empty_message"),
        (b"", "empty_message"),
        (b"\xff\xfe{}", "not_utf8"),
        ('{"id": "caf\u00e9"}'.encode("latin-1"), "not_utf8"),
        (b"not json", "invalid_json"),
        (b'{"id": "r1", "pipeline": "p"', "invalid_json"),
        (b'{"id": "r1"} trailing', "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"a string"', "not_an_object"),
        (b"null", "not_an_object"),
        (b"42", "not_an_object"),
        (b'{"pipeline": "p"}', "missing_id"),
        (b"{}", "missing_id"),
        (b'{"id": 7, "pipeline": "p"}', "invalid_id"),
        (b'{"id": "", "pipeline": "p"}', "invalid_id"),
        (b'{"id": null, "pipeline": "p"}', "invalid_id"),
        (b'{"id": ["r1"], "pipeline": "p"}', "invalid_id"),
    ],
)
def test_messages_without_usable_id_are_undecodable(raw: bytes | None, error_type: str) -> None:
    out = decode_request(raw, max_bytes=MAX)
    assert isinstance(out, Undecodable), out
    assert out.error_type == error_type
    assert out.message


# A fixed alphabet with the interesting characters: st.text()'s full Unicode table takes a second
# to build on a fresh checkout, which trips Hypothesis' too-slow health check in CI.
texts = st.text(alphabet="ab.-_ Z09\t\n\x00\x85é東🚀", max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)
envelope_keys = st.sampled_from(
    [
        "v",
        "id",
        "pipeline",
        "params",
        "reply_to",
        "deadline",
        "model_version",
        "tenant",
        "sent_at_ms",
        "other",
    ]
)


@given(st.binary(max_size=300))
def test_decode_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    out = decode_request(raw, max_bytes=200)
    assert isinstance(out, Request | Rejected | Undecodable)


@given(st.dictionaries(envelope_keys, json_values, max_size=8))
def test_decode_sorts_every_object_by_whether_it_has_a_usable_id(obj: dict[str, Any]) -> None:
    out = decode(obj)
    usable = isinstance(obj.get("id"), str) and obj["id"] != ""
    if usable:
        assert isinstance(out, Request | Rejected)
        if isinstance(out, Rejected):
            assert out.request_id == obj["id"]
            assert out.error.details["fields"]
            # The result for it must be buildable and encodable.
            encode_result(Result.failed(out.request_id, out.pipeline or "", out.error))
    else:
        assert isinstance(out, Undecodable)
        assert out.error_type in {"missing_id", "invalid_id"}


# --- requests on the wire ------------------------------------------------------------------


def test_encode_request_round_trips() -> None:
    req = Request(
        id="r1",
        pipeline="p",
        params={"a": [1.5, None, {"b": None}]},
        reply_to="out",
        deadline=1764000000000,
        tenant="t",
        sent_at_ms=5,
    )
    raw = encode_request(req)
    assert b" " not in raw  # compact
    assert json.loads(raw)["deadline"] == "2025-11-24T16:00:00Z"
    assert decode_request(raw, max_bytes=MAX) == req


def test_encode_request_leaves_out_unset_optionals_but_keeps_nested_nulls() -> None:
    raw = encode_request(Request(id="r1", pipeline="p", params={"x": None}))
    assert json.loads(raw) == {"v": 1, "id": "r1", "pipeline": "p", "params": {"x": None}}


# --- results -------------------------------------------------------------------------------


def test_ok_result_round_trips_and_keeps_required_fields() -> None:
    r = Result.ok(
        "r1",
        "iris.predict",
        {"label": 2, "scores": [0.1, None]},
        model=ModelRef(name="iris", version="3"),
        timings=Timings(queued_ms=0.5, compute_ms=1.0),
        attempts=2,
        tenant="t",
    )
    raw = encode_result(r)
    wire = json.loads(raw)
    assert wire["status"] == "ok"
    assert wire["id"] == "r1"
    assert wire["attempts"] == 2
    assert wire["timings"] == {"queued_ms": 0.5, "compute_ms": 1.0}
    assert wire["result"] == {"label": 2, "scores": [0.1, None]}  # nested nulls survive
    assert "error" not in wire
    assert decode_result(raw) == r


def test_minimal_results_on_the_wire() -> None:
    ok = json.loads(encode_result(Result.ok("r1", "p", None)))
    assert ok == {"v": 1, "id": "r1", "pipeline": "p", "status": "ok", "timings": {}, "attempts": 1}
    info = ErrorInfo(type="pipeline_failed", message="boom")
    failed = json.loads(encode_result(Result.failed("r1", "p", info)))
    assert failed["status"] == "error"
    assert failed["error"] == {"type": "pipeline_failed", "message": "boom", "details": {}}
    assert failed["attempts"] == 1


def test_result_status_must_match_error() -> None:
    info = ErrorInfo(type="x", message="y")
    with pytest.raises(ValidationError, match="must not carry an error"):
        Result(id="r", pipeline="p", status="ok", error=info)
    with pytest.raises(ValidationError, match="must carry an error"):
        Result(id="r", pipeline="p", status="error")
    with pytest.raises(ValidationError, match="must carry an error"):
        decode_result(b'{"id": "r", "pipeline": "p", "status": "error", "attempts": 1}')


def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="attempts"):
        Result.ok("r", "p", 1, attempts=0)


def test_result_accepts_ids_that_requests_refuse() -> None:
    # A rejected request is answered under its own id, whatever its shape.
    assert Result.ok("x" * 1000, "p", None).id == "x" * 1000


class FakeArray:
    """Quacks like a numpy array or scalar: what pipelines typically return."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def tolist(self) -> list[float]:
        return self.values


def test_encode_result_converts_array_likes() -> None:
    raw = encode_result(Result.ok("r", "p", {"scores": FakeArray([0.25, 0.75])}))
    assert json.loads(raw)["result"] == {"scores": [0.25, 0.75]}


def test_encode_result_refuses_unserialisable_values_with_a_value_error() -> None:
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        encode_result(Result.ok("r", "p", object()))


def test_error_info_from_record_errors() -> None:
    info = error_info_from(UnknownPipelineError("nope", ["b", "a"]))
    assert info.type == "unknown_pipeline"
    assert "nope" in info.message
    assert info.details == {"pipeline": "nope"}, "never the other pipelines"
    assert "a" not in info.message.split("'")[0::2][-1]
    plain = error_info_from(RecordError("went wrong"))
    assert (plain.type, plain.message, plain.details) == ("record_error", "went wrong", {})


def test_error_info_does_not_share_the_exceptions_details() -> None:
    exc = InvalidParamsError("bad", {"fields": ["x"]})
    info = error_info_from(exc)
    exc.details["later"] = True
    assert "later" not in info.details


@pytest.mark.parametrize(
    ("leaky", "kept_out"),
    [
        ("open file:///srv/data/x.csv failed", "/srv/data"),
        ("fs:/srv/a missing", "/srv/a"),
        ("s3://bucket/models/x nope", "bucket"),
        ("postgres://user:secret@db.internal:5432/x refused", "secret"),
        ("host fe80::1ff:fe23:4567:890a down", "fe80"),
        ("worker pid 4242 died", "4242"),
        ("<Model object at 0x7f3a2b1c0d10>", "0x7f3a2b1c0d10"),
    ],
)
def test_public_error_cuts_urls_scheme_paths_ipv6_pids_and_pointers(
    leaky: str, kept_out: str
) -> None:
    from rayml.protocol.envelopes import public_error

    cut = public_error(ErrorInfo(type="pipeline_failed", message=leaky))
    assert kept_out not in cut.message
    assert public_error(ErrorInfo(type="x", message="bad row 3: value 12.5")).message == (
        "bad row 3: value 12.5"
    )
