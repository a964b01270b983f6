"""Wire envelopes: the request and the result, and how they are decoded and encoded. No I/O here.

Everything that crosses Kafka is defined here or in the modules this one re-exports
(:mod:`rayml.protocol.fields` for the field types, :mod:`rayml.protocol.dead_letters` for the
dead-letter headers), so the published JSON Schemas (``schemas/*.schema.json``, written by
``python -m rayml.protocol.schemas``) and the code cannot drift.

Decoding a request sorts every message into exactly one of three outcomes, because each needs a
different answer from the ingest:

* :class:`Request` -- a valid envelope; route it.
* :class:`Rejected` -- the envelope is bad but carries a usable ``id``: the client can be told, so
  the ingest produces an error :class:`Result` keyed by that id.
* :class:`Undecodable` -- nobody can be answered (no usable id): the original bytes go to the
  dead-letter topic with :func:`dead_letter_headers`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from rayml.errors import InvalidRequestError, RecordError, RequestTooLargeError
from rayml.protocol.dead_letters import DeadLetter, dead_letter_from_headers, dead_letter_headers
from rayml.protocol.fields import Deadline, RequestId, TopicName

__all__ = [
    "ENVELOPE_VERSION",
    "DeadLetter",
    "ErrorInfo",
    "ModelRef",
    "Rejected",
    "Request",
    "Result",
    "Timings",
    "Undecodable",
    "UndecodableType",
    "dead_letter_from_headers",
    "dead_letter_headers",
    "decode_request",
    "decode_result",
    "encode_request",
    "encode_result",
    "error_info_from",
    "public_error",
]

ENVELOPE_VERSION: Final = 1
"""The envelope version this code writes and accepts (the ``v`` field)."""


# --- envelopes -----------------------------------------------------------------------------


class Request(BaseModel):
    """A request to run one pipeline, as a client puts it on the input topic (key = ``id``).

    Example:
        On the wire::

            {"v": 1, "id": "req-42", "pipeline": "iris.predict",
             "params": {"features": [5.1, 3.5, 1.4, 0.2]},
             "reply_to": "team-a.results", "deadline": "2025-11-26T10:00:00Z",
             "tenant": "team-a", "sent_at_ms": 1764150000000}

        In Python::

            >>> Request(id="req-42", pipeline="iris.predict", params={"features": [5.1]}).v
            1
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="rayml request",
        json_schema_extra={
            "examples": [
                {
                    "v": 1,
                    "id": "req-42",
                    "pipeline": "iris.predict",
                    "params": {"features": [5.1, 3.5, 1.4, 0.2]},
                    "reply_to": "team-a.results",
                    "deadline": "2025-11-26T10:00:00Z",
                    "tenant": "team-a",
                    "sent_at_ms": 1764150000000,
                }
            ]
        },
    )

    v: Literal[1] = Field(default=1, description="Envelope version.")
    id: RequestId
    pipeline: str = Field(
        min_length=1, max_length=200, description="Name of a registered pipeline."
    )
    params: dict[str, Any] = Field(
        default={}, description="Pipeline parameters, validated against the pipeline's model."
    )
    reply_to: TopicName | None = Field(
        default=None,
        description="Kafka topic for the result (default: the executor's result topic).",
    )
    deadline: Deadline | None = None
    model_version: str | None = Field(
        default=None, description="Pin this model version (default: the newest)."
    )
    tenant: str | None = Field(
        default=None,
        description=(
            "Optional. The executor takes a request's tenant from the topic it came from; a "
            "tenant named here that is not that topic's tenant is refused (tenant_mismatch)."
        ),
    )
    sent_at_ms: int | None = Field(
        default=None,
        ge=0,
        strict=True,
        description="Client clock at send time, epoch milliseconds (end-to-end latency).",
    )


class ErrorInfo(BaseModel):
    """Why a request failed: a stable code, a human message, and machine-readable details."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="Stable error code, e.g. 'invalid_params'.")
    message: str = Field(description="Human-readable explanation.")
    details: dict[str, Any] = Field(default={}, description="Structured context (fields, ...).")


class ModelRef(BaseModel):
    """The model (name and version) that produced a result."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str


class Timings(BaseModel):
    """Where the time went, in milliseconds; a field is absent when it was not measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queued_ms: float | None = Field(default=None, description="From poll to compute start.")
    compute_ms: float | None = Field(default=None, description="Pipeline run (per batch).")
    total_ms: float | None = Field(
        default=None, description="From the client's sent_at_ms (or poll) to result produced."
    )


class Result(BaseModel):
    """The one logical answer to a request, put on the result topic (key = ``id``).

    ``status`` is ``ok`` with ``result`` set, or ``error`` with ``error`` set.

    On the wire::

        {"v": 1, "id": "req-42", "pipeline": "iris.predict", "status": "ok",
         "result": [0.1, 0.9], "model": {"name": "iris", "version": "3"},
         "timings": {"queued_ms": 0.4, "compute_ms": 1.2, "total_ms": 3.0}, "attempts": 1}

    Example:
        >>> r = Result.ok("req-42", "iris.predict", [0.1, 0.9])
        >>> decode_result(encode_result(r)) == r
        True
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="rayml result",
        json_schema_extra={
            "examples": [
                {
                    "v": 1,
                    "id": "req-42",
                    "pipeline": "iris.predict",
                    "status": "ok",
                    "result": [0.1, 0.9],
                    "model": {"name": "iris", "version": "3"},
                    "timings": {"queued_ms": 0.4, "compute_ms": 1.2, "total_ms": 3.0},
                    "attempts": 1,
                },
                {
                    "v": 1,
                    "id": "req-43",
                    "pipeline": "iris.predict",
                    "status": "error",
                    "error": {
                        "type": "invalid_params",
                        "message": "features: Field required",
                        "details": {"fields": ["features"]},
                    },
                    "timings": {},
                    "attempts": 1,
                },
            ]
        },
    )

    v: Literal[1] = Field(default=1, description="Envelope version.")
    # Not constrained like Request.id: a rejected request's id may break those rules and still
    # deserves its answer under the very id the client sent.
    id: str = Field(min_length=1, description="The request's id.")
    pipeline: str = Field(description="The pipeline the request named.")
    status: Literal["ok", "error"]
    result: Any = Field(default=None, description="The pipeline's output when status is 'ok'.")
    error: ErrorInfo | None = Field(default=None, description="Set when status is 'error'.")
    model: ModelRef | None = Field(default=None, description="Model used, if any.")
    timings: Timings = Field(default_factory=Timings)
    attempts: int = Field(default=1, ge=1, description="How many times the request was run.")
    tenant: str | None = Field(
        default=None, description="The request's tenant: the tenant of the topic it came from."
    )

    @model_validator(mode="after")
    def _status_matches_error(self) -> Self:
        if self.status == "ok" and self.error is not None:
            raise ValueError("a result with status 'ok' must not carry an error")
        if self.status == "error" and self.error is None:
            raise ValueError("a result with status 'error' must carry an error")
        return self

    @classmethod
    def ok(
        cls,
        request_id: str,
        pipeline: str,
        result: Any,
        *,
        model: ModelRef | None = None,
        timings: Timings | None = None,
        attempts: int = 1,
        tenant: str | None = None,
    ) -> Self:
        """Build a successful result.

        Example:
            >>> Result.ok("req-1", "iris.predict", 2).status
            'ok'
        """
        return cls(
            id=request_id,
            pipeline=pipeline,
            status="ok",
            result=result,
            model=model,
            timings=timings or Timings(),
            attempts=attempts,
            tenant=tenant,
        )

    @classmethod
    def failed(
        cls,
        request_id: str,
        pipeline: str,
        error: ErrorInfo,
        *,
        model: ModelRef | None = None,
        timings: Timings | None = None,
        attempts: int = 1,
        tenant: str | None = None,
    ) -> Self:
        """Build an error result.

        Example:
            >>> from rayml.errors import UnknownPipelineError
            >>> info = error_info_from(UnknownPipelineError("nope"))
            >>> Result.failed("req-1", "nope", info).error.type
            'unknown_pipeline'
        """
        return cls(
            id=request_id,
            pipeline=pipeline,
            status="error",
            error=error,
            model=model,
            timings=timings or Timings(),
            attempts=attempts,
            tenant=tenant,
        )


def error_info_from(exc: RecordError) -> ErrorInfo:
    """Describe a record failure for a result envelope.

    Example:
        >>> from rayml.errors import InvalidParamsError
        >>> error_info_from(InvalidParamsError("x: field required", {"fields": ["x"]})).type
        'invalid_params'
    """
    return ErrorInfo(type=exc.type, message=str(exc), details=dict(exc.details))


# What an error result must not carry (docs/security.md, "error hygiene"): a traceback, the
# frames' file paths, Ray's "(pid=..., ip=...)" and "pid: ... ip: ..." lines, addresses, long
# hex ids (Ray's actor, task and node ids), absolute paths. The executor's logs keep them.
_TRACEBACK = re.compile(r"\s*Traceback \(most recent call last\):.*", re.DOTALL)
_FRAMES = re.compile(r"\s*File \"[^\"]*\", line \d+.*", re.DOTALL)
_RAY_WHERE = re.compile(r"\s*\(pid=\d+, ip=[^)]*\)")
_PID = re.compile(r"\bpid\s*[=:]?\s*\d+", re.IGNORECASE)
# A URL with a scheme (file://, s3://, a DSN with a password, an internal host name).
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>)]+")
# An fsspec-style "scheme:/path" (fs:/srv/a).
_SCHEME_PATH = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*:/[^\s'\"<>)]+")
# IPv6 addresses (at least three groups; times like 10:30:00 have no hex letters but are cut
# too, which is harmless in an error message).
_ADDRESS6 = re.compile(r"\b[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{0,4}){2,7}\b")
# Memory addresses of objects ("<object at 0x7f...>").
_POINTER = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")
_ADDRESS = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
_HEX_ID = re.compile(r"\b[0-9a-fA-F]{24,}\b")
_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.@+-]+/)+[\w.@+-]*")
_LEAKS = (
    (_TRACEBACK, ""),
    (_FRAMES, ""),
    (_RAY_WHERE, ""),
    (_URL, "<url>"),
    (_SCHEME_PATH, "<path>"),
    (_PID, "pid=<hidden>"),
    (_ADDRESS6, "<address>"),
    (_ADDRESS, "<address>"),
    (_POINTER, "<pointer>"),
    (_HEX_ID, "<id>"),
    (_PATH, "<path>"),
)


def _scrub(text: str) -> str:
    for pattern, replacement in _LEAKS:
        text = pattern.sub(replacement, text)
    return text


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    return value


def public_error(error: ErrorInfo) -> ErrorInfo:
    """``error`` as a caller may see it: without tracebacks, file paths, process ids,
    addresses or Ray's ids, in its message and details (``error`` itself when it has none).

    rayml builds its error messages for the caller; this is the net under the messages it
    passes on (a pipeline's exception, a library's). What it cuts stays in the executor's log.

    Example:
        >>> e = ErrorInfo(type="pipeline_failed", message="raised OSError: /srv/x/y.csv; "
        ...     "ray::run() (pid=41, ip=10.0.0.7)")
        >>> public_error(e).message
        'raised OSError: <path>; ray::run()'
        >>> ok = ErrorInfo(type="invalid_params", message="features: Field required")
        >>> public_error(ok) is ok
        True
    """
    message = _scrub(error.message)
    details = _scrub_value(error.details) if error.details else error.details
    if message == error.message and details == error.details:
        return error
    return ErrorInfo(type=error.type, message=message, details=details)


# --- decoding and encoding -----------------------------------------------------------------

UndecodableType = Literal[
    "empty_message",
    "not_utf8",
    "invalid_json",
    "not_an_object",
    "missing_id",
    "invalid_id",
    "request_too_large",
]
"""Error codes of messages that cannot be answered (used as the DLQ's ``rayml.error.type``)."""


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A message with no usable request id: it cannot be answered and goes to the DLQ."""

    error_type: UndecodableType
    message: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message with a usable id but a bad envelope: it gets an error result under that id."""

    request_id: str
    pipeline: str | None
    error: ErrorInfo


def decode_request(raw: bytes | None, *, max_bytes: int) -> Request | Undecodable | Rejected:
    """Decode one input message, strictly, without raising.

    The valid case costs a single parse-and-validate pass (pydantic's Rust JSON parser). Only a
    failure pays for a second, plain ``json.loads`` that finds the id to answer to.

    Args:
        raw: The Kafka message value (``None`` for a tombstone).
        max_bytes: Largest accepted message. A larger one is rejected as ``request_too_large``
            (still answered when its id can be found).

    Returns:
        The :class:`Request`, or :class:`Rejected` (answer with an error result), or
        :class:`Undecodable` (dead-letter it).

    Example:
        >>> decode_request(b'{"id": "r1", "pipeline": "p"}', max_bytes=1_000_000).id
        'r1'
        >>> bad = decode_request(b'{"id": "r1", "pipeline": "p", "x": 1}', max_bytes=1_000_000)
        >>> bad.request_id, bad.error.type, bad.error.details["fields"]
        ('r1', 'invalid_request', ['x'])
        >>> decode_request(b"nope", max_bytes=1_000_000).error_type
        'invalid_json'
    """
    if not raw:
        return Undecodable("empty_message", "the message has no value (empty or tombstone)")
    size = len(raw)
    if size > max_bytes:
        return _reject_oversize(raw, size, max_bytes)
    try:
        return Request.model_validate_json(raw)
    except ValidationError as exc:
        return _classify_failure(raw, exc)


def _parse_object(raw: bytes) -> dict[str, Any] | Undecodable:
    """Parse ``raw`` as a JSON object with the stdlib; the slow path for messages that failed."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Undecodable("not_utf8", f"the message is not UTF-8: {exc}")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return Undecodable("invalid_json", f"the message is not JSON: {exc}")
    if not isinstance(obj, dict):
        return Undecodable(
            "not_an_object", f"the message is JSON {type(obj).__name__}, not an object"
        )
    return obj


def _usable_id(obj: dict[str, Any]) -> str | Undecodable:
    if "id" not in obj:
        return Undecodable("missing_id", "the request has no 'id' field")
    request_id = obj["id"]
    if not isinstance(request_id, str) or not request_id:
        return Undecodable("invalid_id", "the request's 'id' is not a non-empty string")
    return request_id


def _pipeline_of(obj: dict[str, Any]) -> str | None:
    pipeline = obj.get("pipeline")
    return pipeline if isinstance(pipeline, str) else None


def _reject_oversize(raw: bytes, size: int, max_bytes: int) -> Undecodable | Rejected:
    # The message is already in memory (the broker bounds it), so parsing it once more to find
    # the id costs little and lets the client hear "too large" instead of waiting forever.
    too_large = RequestTooLargeError(size, max_bytes)
    obj = _parse_object(raw)
    if isinstance(obj, Undecodable):
        return Undecodable("request_too_large", f"{too_large}; and {obj.message}")
    request_id = _usable_id(obj)
    if isinstance(request_id, Undecodable):
        return Undecodable("request_too_large", f"{too_large}; and {request_id.message}")
    return Rejected(request_id, _pipeline_of(obj), error_info_from(too_large))


def _classify_failure(raw: bytes, exc: ValidationError) -> Undecodable | Rejected:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    # Only failures reach this point, so the second (stdlib) parse is off the hot path. It also
    # tells bad UTF-8 from bad JSON, which pydantic reports alike as "json_invalid".
    obj = _parse_object(raw)
    if isinstance(obj, Undecodable):
        return obj
    if any(err["type"] in {"json_invalid", "model_type"} and not err["loc"] for err in errors):
        # The two parsers disagree on an edge case (e.g. NaN, a lone surrogate). Pydantic's
        # verdict is the one the valid path applies, so keep to it: nobody can be answered.
        return Undecodable("invalid_json", f"the message is not valid JSON: {errors[0]['msg']}")
    request_id = _usable_id(obj)
    if isinstance(request_id, Undecodable):
        return request_id
    problems = [
        {
            "field": ".".join(str(part) for part in err["loc"]) or "(envelope)",
            "type": err["type"],
            "message": err["msg"],
        }
        for err in errors
    ]
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    invalid = InvalidRequestError(
        f"invalid request envelope: {summary}",
        {"errors": problems, "fields": [p["field"] for p in problems]},
    )
    return Rejected(request_id, _pipeline_of(obj), error_info_from(invalid))


_RESULT_ADAPTER: Final = TypeAdapter(Result)
_REQUEST_ADAPTER: Final = TypeAdapter(Request)


def _json_fallback(value: Any) -> Any:
    # Pipelines often return numpy arrays or numpy scalars (XGBoost does); both have .tolist().
    # Duck typing keeps numpy out of this module.
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"a value of type {type(value).__qualname__} is not JSON-serialisable")


def encode_result(r: Result) -> bytes:
    """Serialise a result as compact UTF-8 JSON; absent (``None``) fields are left out.

    numpy arrays and scalars in ``result`` or ``error.details`` become JSON lists and numbers.

    Raises:
        pydantic_core.PydanticSerializationError: Something in the result is not serialisable
            (a ``ValueError``).
    """
    return _RESULT_ADAPTER.dump_json(r, exclude_none=True, fallback=_json_fallback)


def decode_result(raw: bytes) -> Result:
    """Parse a result envelope (e.g. in a client).

    Raises:
        pydantic.ValidationError: ``raw`` is not a valid result envelope.
    """
    return Result.model_validate_json(raw)


def encode_request(r: Request) -> bytes:
    """Serialise a request as compact UTF-8 JSON (``deadline`` as an RFC 3339 string).

    Example:
        >>> encode_request(Request(id="r1", pipeline="p", params={"x": 1}))
        b'{"v":1,"id":"r1","pipeline":"p","params":{"x":1}}'
    """
    return _REQUEST_ADAPTER.dump_json(r, exclude_none=True, fallback=_json_fallback)
