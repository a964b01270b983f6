"""A consumed request's first look, shared by the ingest's triage and the job runner.

Every record on an input topic is hostile until decoded. :func:`screen` decodes it once and
sorts out what cannot become work:

* no usable id (not JSON, not an object, no string id, too large): nobody can be answered, so
  the original record goes to the dead-letter topic (:func:`dead_letter_record` builds its
  headers: the original ones plus the error and the source topic/partition/offset);
* a usable id but a bad envelope: an error answer naming the problem;
* otherwise the :class:`~rayml.protocol.envelopes.Request`, for the caller's own next step
  (the ingest batches or hands off; the job runner plans trials).

Pure: the writes go through the caller's :class:`RejectSink`.
"""

from __future__ import annotations

from typing import Protocol

from rayml.kafka.partitions import TP
from rayml.kafka.records import Headers, PolledRecord, headers_of
from rayml.protocol.dead_letters import DeadLetter, dead_letter_headers
from rayml.protocol.envelopes import Rejected, Request, Undecodable, decode_request

__all__ = ["RejectSink", "dead_letter_record", "screen"]


class RejectSink(Protocol):
    """Where :func:`screen` sends what cannot become work."""

    def dead_letter(self, msg: PolledRecord, error_type: str, message: str) -> None:
        """The record has no usable id: dead-letter it as it came."""

    def reject(self, msg: PolledRecord, tp: TP, offset: int, rejected: Rejected) -> None:
        """The record has a usable id but a bad envelope: answer it with ``rejected.error``."""


def screen(
    msg: PolledRecord, tp: TP, offset: int, raw: bytes, max_bytes: int, sink: RejectSink
) -> Request | None:
    """Decode ``raw`` (the record's value); the request, or None once ``sink`` has it."""
    decoded = decode_request(raw, max_bytes=max_bytes)
    if isinstance(decoded, Undecodable):
        sink.dead_letter(msg, decoded.error_type, decoded.message)
        return None
    if isinstance(decoded, Rejected):
        sink.reject(msg, tp, offset, decoded)
        return None
    return decoded


def dead_letter_record(msg: PolledRecord, error_type: str, message: str) -> tuple[TP, int, Headers]:
    """Where a dead-lettered record came from, and the headers of its dead-letter copy."""
    tp: TP = (msg.topic(), msg.partition())  # type: ignore[assignment]
    offset: int = msg.offset()  # type: ignore[assignment]
    letter = DeadLetter(
        error_type=error_type,
        error_message=message,
        source_topic=tp[0],
        source_partition=tp[1],
        source_offset=offset,
        request_id=None,
    )
    return tp, offset, headers_of(msg) + list(dead_letter_headers(letter))
