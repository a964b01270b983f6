"""A polled Kafka record as rayml's pure steps read it, without importing a Kafka client.

confluent-kafka's ``Message`` satisfies :class:`PolledRecord`; triage and the unit tests' fake
records do too, so the steps that only read records stay free of ``confluent_kafka``.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

# Record headers as rayml writes them: (name, value) pairs.
Headers = list[tuple[str, str | bytes | None]]


class PolledRecord(Protocol):
    """What rayml reads of a consumed record (the methods of confluent-kafka's ``Message``)."""

    def value(self) -> bytes | None: ...

    def key(self) -> bytes | None: ...

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def headers(self) -> Any: ...  # a list of (name, value) pairs, or None

    def timestamp(self) -> tuple[int, int]: ...


def timestamp_ms(msg: PolledRecord, default_ms: float | None = None) -> float:
    """The record's timestamp (producer create time) in ms, else ``default_ms`` (else now)."""
    kind, ts = msg.timestamp()
    if kind != 0 and ts > 0:
        return float(ts)
    return time.time() * 1000.0 if default_ms is None else default_ms


def headers_of(msg: PolledRecord) -> Headers:
    """A record's headers as a list (confluent-kafka may give a list, a dict or None).

    A header whose *name* is not UTF-8 (any producer can write one) makes confluent-kafka
    raise instead of returning the headers: such a record reads as having none, so one
    hostile record can never stop a loop that reads headers.
    """
    try:
        headers = msg.headers()
    except (SystemError, UnicodeDecodeError):
        return []
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return [(k, v) for k, v in headers]
