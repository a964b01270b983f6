"""The records the result writer owes, as plain data: what a write is, what a failed result
needs to be answered again, and the small error result that replaces one too large for its
topic. Shared by :mod:`rayml.delivery.result_writer` and :mod:`rayml.delivery.transactions`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from rayml.kafka.partitions import TP
from rayml.kafka.records import Headers
from rayml.protocol.envelopes import ErrorInfo, Result, encode_result

__all__ = ["Answer", "OutRecord", "Stage", "too_large_result"]


class OutRecord(NamedTuple):
    """One write owed for an input record (exactly-once: held until it may be produced)."""

    topic: str
    value: bytes
    key: bytes | None
    headers: Headers | None


Stage = Callable[[TP, int, list[OutRecord]], None]
"""Exactly-once: hands a finished record's writes to the transaction (in offset order)."""


class Answer(NamedTuple):
    """What a failed result delivery needs to answer again (the envelope's identity)."""

    tp: TP
    request_id: str
    pipeline: str
    attempts: int
    tenant: str | None
    result_topic: str  # the tenant's: where it goes when its reply_to cannot be written


def too_large_result(answer: Answer, size: int, topic: str) -> bytes:
    """The small ``result_too_large`` error result for a result of ``size`` bytes that
    ``topic`` refused (it still names the request, so the caller hears back)."""
    small = Result.failed(
        answer.request_id,
        answer.pipeline,
        ErrorInfo(
            type="result_too_large",
            message=f"the result is {size} bytes, more than {topic!r} accepts",
        ),
        attempts=answer.attempts,
        tenant=answer.tenant,
    )
    return encode_result(small)
