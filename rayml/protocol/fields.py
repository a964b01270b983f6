"""Field types of the wire envelopes: request ids, topic names and deadlines.

Each type carries its constraint and the JSON Schema that clients see, so the envelope models
in :mod:`rayml.protocol.envelopes` stay declarations of which fields exist. No I/O here.

Example:
    >>> from pydantic import TypeAdapter
    >>> TypeAdapter(Deadline).validate_python(0).isoformat()
    '1970-01-01T00:00:00+00:00'
    >>> TypeAdapter(TopicName).validate_python("team-a.results")
    'team-a.results'
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    StringConstraints,
    WithJsonSchema,
)

__all__ = ["Deadline", "RequestId", "TopicName"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _deadline_input(value: Any) -> Any:
    """Turn integer epoch milliseconds into an aware datetime; leave other inputs to pydantic.

    Pydantic alone would read a number as *seconds* or milliseconds depending on its size, so a
    small or fractional number would silently mean something else. The wire format says integers
    are milliseconds, always, and nothing else numeric is accepted.
    """
    if isinstance(value, bool | float):
        raise ValueError("deadline must be an RFC 3339 string or integer epoch milliseconds")
    if isinstance(value, int):
        try:
            return _EPOCH + timedelta(milliseconds=value)
        except OverflowError as exc:
            raise ValueError(f"deadline {value} ms since the epoch is out of range") from exc
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        # A quoted number is most likely a client that meant milliseconds but sent a string;
        # guessing either way risks a wrong deadline, so say what is accepted instead.
        raise ValueError(
            "deadline must be an RFC 3339 string (e.g. 2025-11-26T10:00:00Z) or an integer "
            "(not a string) of epoch milliseconds"
        )
    return value


def _not_dot_topic(value: str) -> str:
    # Kafka refuses "." and ".." as topic names although they match the character class.
    if value in {".", ".."}:
        raise ValueError("'.' and '..' are not valid Kafka topic names")
    return value


RequestId = Annotated[
    str,
    # No control characters: ids end up in logs, headers and keys, where they would corrupt output.
    StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$"),
    Field(
        description=(
            "Client-made unique request id (1-256 characters, no control characters). "
            "Used as the Kafka key of the result."
        )
    ),
]

TopicName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,249}$"),
    AfterValidator(_not_dot_topic),
]

Deadline = Annotated[
    AwareDatetime,
    BeforeValidator(_deadline_input),
    # The validator widens the input beyond what pydantic's own datetime schema says, so the
    # published schema has to be stated by hand for clients to validate before sending.
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "integer", "description": "Milliseconds since the Unix epoch (UTC)."},
            ],
            "description": (
                "Absolute time after which the result is no longer wanted: an RFC 3339 "
                "timestamp with an offset, or integer epoch milliseconds."
            ),
        }
    ),
]
