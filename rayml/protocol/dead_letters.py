"""Dead letters: what a record on the dead-letter topic says about itself, in Kafka headers.

A message that nobody can be answered for (see :class:`rayml.protocol.envelopes.Undecodable`), or a
request that failed on every attempt, is copied to the dead-letter topic. The record's value and
key are the original message's, untouched, so it can be replayed; the ``rayml.*`` headers built
here say why it is there and where it came from. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DeadLetter", "dead_letter_from_headers", "dead_letter_headers"]

_H_TYPE: Final = "rayml.error.type"
_H_MESSAGE: Final = "rayml.error.message"
_H_TOPIC: Final = "rayml.source.topic"
_H_PARTITION: Final = "rayml.source.partition"
_H_OFFSET: Final = "rayml.source.offset"
_H_REQUEST_ID: Final = "rayml.request.id"


class DeadLetter(BaseModel):
    """What a dead-letter record says about itself, carried in Kafka headers.

    The record's value is the original message bytes, untouched, so it can be replayed; its key is
    the original key. Each field travels as one UTF-8 header (named in the field's description)
    next to the original headers (e.g. ``traceparent``).

    Example:
        >>> dl = DeadLetter(error_type="invalid_json", error_message="bad",
        ...                 source_topic="ml.pipeline.input", source_partition=0, source_offset=7)
        >>> dead_letter_from_headers(dead_letter_headers(dl)) == dl
        True
    """

    model_config = ConfigDict(extra="forbid", frozen=True, title="rayml dead letter")

    error_type: str = Field(description=f"Header {_H_TYPE}: stable error code.")
    error_message: str = Field(description=f"Header {_H_MESSAGE}: human-readable explanation.")
    source_topic: str = Field(description=f"Header {_H_TOPIC}: topic the message came from.")
    source_partition: int = Field(ge=0, description=f"Header {_H_PARTITION}: decimal.")
    source_offset: int = Field(ge=0, description=f"Header {_H_OFFSET}: decimal.")
    request_id: str | None = Field(
        default=None, description=f"Header {_H_REQUEST_ID}: absent when there was no usable id."
    )


def dead_letter_headers(dl: DeadLetter) -> list[tuple[str, bytes]]:
    """The ``rayml.*`` headers describing a dead letter, to add to the original headers."""
    headers = [
        (_H_TYPE, dl.error_type.encode()),
        (_H_MESSAGE, dl.error_message.encode()),
        (_H_TOPIC, dl.source_topic.encode()),
        (_H_PARTITION, str(dl.source_partition).encode()),
        (_H_OFFSET, str(dl.source_offset).encode()),
    ]
    if dl.request_id is not None:
        headers.append((_H_REQUEST_ID, dl.request_id.encode()))
    return headers


_HEADER_FIELDS: Final = {
    _H_TYPE: "error_type",
    _H_MESSAGE: "error_message",
    _H_TOPIC: "source_topic",
    _H_PARTITION: "source_partition",
    _H_OFFSET: "source_offset",
    _H_REQUEST_ID: "request_id",
}


def dead_letter_from_headers(
    headers: Iterable[tuple[str, bytes | str | None]] | None,
) -> DeadLetter:
    """Read a :class:`DeadLetter` back from a record's headers; other headers are ignored.

    When a header repeats, the last one wins (as with Kafka's ``Headers.lastHeader``).

    Raises:
        pydantic.ValidationError: A required ``rayml.*`` header is missing or malformed.
    """
    fields: dict[str, str] = {}
    for name, value in headers or ():
        field = _HEADER_FIELDS.get(name)
        if field is None or value is None:
            continue
        # Headers come from other producers too; a bad byte must not make the letter unreadable.
        fields[field] = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return DeadLetter.model_validate(fields)
