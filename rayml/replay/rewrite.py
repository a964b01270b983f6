"""Which requests of a time range ``rayml replay range`` re-scores, and how it rewrites them. Pure.

``--pin MODEL@VERSION`` names a model and a version; a request names a *pipeline*, and each
inference pipeline reads one model (``@inference(model=...)``, published on the registry topic).
So a request is re-scored only when its pipeline reads ``MODEL``; the copy pins the version in
the envelope's ``model_version`` and the executor serves it like any pinned request.

:func:`rescore` decides per record, in this order (the first that applies is the skip reason):

* ``replayed``: the record is itself a range replay (header ``rayml.replay.kind: range``): a
  later range run never re-scores an earlier run's copies, even when its window covers them;
* ``outside_window``: its own timestamp is outside ``[start, stop)`` (a producer's clock can
  put a record out of order inside the offsets read);
* ``not_a_request``: not a valid request envelope (the executor answered or dead-lettered it);
* ``pipeline``: ``--pipeline`` (an fnmatch pattern) does not match its pipeline;
* ``unknown_pipeline``: no executor published its pipeline;
* ``other_model``: its pipeline reads another model than ``MODEL``.

The copy keeps the request's ``id`` (results join by id), params and ``tenant``; it gets
``model_version`` = the pinned version, ``reply_to`` = the side topic, no ``deadline`` (the
original's has passed; a replay is not answered ``deadline_exceeded``) and ``sent_at_ms`` =
the replay's send time, so its ``timings.total_ms`` measures the replay, not the hours since
the original was sent.

Example:
    >>> pin = parse_pin("iris@3")
    >>> rule = RangeRule(pin=pin, reply_to="side.v3", start_ms=0, stop_ms=10,
    ...                  models={"iris.predict": "iris"}, max_request_bytes=1_000_000)
    >>> raw = b'{"id": "r1", "pipeline": "iris.predict", "params": {"x": 1}}'
    >>> copy = rewritten(rescore(raw, [], 5, rule), rule, now_ms=5)
    >>> copy.model_version, copy.reply_to, copy.id
    ('000003', 'side.v3', 'r1')
    >>> rescore(raw, [], 10, rule)
    'outside_window'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from rayml.protocol.envelopes import Request, decode_request
from rayml.protocol.model_names import validate_model_name, validate_version
from rayml.replay.letters import REPLAY_KIND, header_value

__all__ = ["SKIP_REASONS", "Pin", "RangeRule", "parse_pin", "rescore", "rewritten"]

#: Every reason :func:`rescore` may give, in the order it checks them.
SKIP_REASONS = (
    "replayed",
    "outside_window",
    "not_a_request",
    "pipeline",
    "unknown_pipeline",
    "other_model",
)


@dataclass(frozen=True)
class Pin:
    """A model and one of its versions (canonical, zero-padded)."""

    model: str
    version: str

    def __str__(self) -> str:
        return f"{self.model}@{self.version}"


def parse_pin(text: str) -> Pin:
    """``MODEL@VERSION`` as a :class:`Pin`.

    Raises:
        ValueError: Not ``MODEL@VERSION``, or an invalid model name or version.

    Example:
        >>> parse_pin("iris@000012")
        Pin(model='iris', version='000012')
    """
    model, at, version = text.partition("@")
    if not at or not model or not version:
        raise ValueError(f"{text!r} is not MODEL@VERSION (e.g. iris@3)")
    try:
        return Pin(validate_model_name(model), validate_version(version))
    except Exception as exc:  # InvalidModelNameError: the name or the version
        raise ValueError(str(exc)) from exc


@dataclass(frozen=True)
class RangeRule:
    """What a range run re-scores and where its copies' results go.

    Attributes:
        pin: The model and version to pin.
        reply_to: The side topic the copies' results go to.
        start_ms: First record time re-scored (inclusive, epoch ms).
        stop_ms: End of the range (exclusive, epoch ms).
        models: Inference pipeline name -> the model it reads (the published registry).
        max_request_bytes: Largest request the executor accepts (``executor.max_request_bytes``).
        pipeline: An fnmatch pattern of pipeline names (None: every pipeline reading the model).
    """

    pin: Pin
    reply_to: str
    start_ms: int
    stop_ms: int
    models: Mapping[str, str]
    max_request_bytes: int
    pipeline: str | None = None


def rescore(
    raw: bytes | None,
    headers: Iterable[tuple[str, str | bytes | None]] | None,
    timestamp_ms: int,
    rule: RangeRule,
) -> Request | str:
    """The request to re-score from one input record, or why it is skipped (a code of
    :data:`SKIP_REASONS`); the copy is :func:`rewritten` when it is sent."""
    if header_value(headers, REPLAY_KIND) == "range":
        return "replayed"
    if not rule.start_ms <= timestamp_ms < rule.stop_ms:
        return "outside_window"
    request = decode_request(raw, max_bytes=rule.max_request_bytes)
    if not isinstance(request, Request):
        return "not_a_request"
    if rule.pipeline is not None and not fnmatchcase(request.pipeline, rule.pipeline):
        return "pipeline"
    model = rule.models.get(request.pipeline)
    if model is None:
        return "unknown_pipeline"
    if model != rule.pin.model:
        return "other_model"
    return request


def rewritten(request: Request, rule: RangeRule, now_ms: int) -> Request:
    """The copy of ``request`` a range run sends (see the module doc).

    Example:
        >>> rule = RangeRule(pin=Pin("iris", "000002"), reply_to="side", start_ms=0,
        ...                  stop_ms=1, models={}, max_request_bytes=1_000_000)
        >>> old = Request(id="r1", pipeline="p", deadline="2020-01-01T00:00:00Z", sent_at_ms=1)
        >>> new = rewritten(old, rule, now_ms=99)
        >>> new.id, new.model_version, new.reply_to, new.deadline, new.sent_at_ms
        ('r1', '000002', 'side', None, 99)
    """
    return request.model_copy(
        update={
            "model_version": rule.pin.version,
            "reply_to": rule.reply_to,
            "deadline": None,
            "sent_at_ms": now_ms,
        }
    )
