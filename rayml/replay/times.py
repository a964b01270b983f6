"""The times ``rayml replay`` takes: ISO-8601 instants and times relative to now. Pure.

Two forms, both turned into epoch milliseconds (Kafka's record time):

* ISO-8601, as :meth:`datetime.datetime.fromisoformat` reads it (``2026-12-06T10:00:00Z``,
  ``2026-12-06T11:00:00+01:00``, ``2026-12-06``); a time without an offset is **UTC**, never
  the machine's zone, so a command gives the same range wherever it runs;
* relative to now: ``-15m``, ``-2h``, ``-90s``, ``-1d``, ``-1w`` (``-1.5h`` too), and ``now``.

Example:
    >>> parse_time("2026-12-06T10:00:00Z", now_ms=0)
    1796551200000
    >>> parse_time("-15m", now_ms=1_000_000_000)
    999100000
    >>> parse_time("now", now_ms=42)
    42
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

__all__ = ["format_time", "parse_time"]

_RELATIVE: Final = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_MS: Final = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_time(text: str, now_ms: int) -> int:
    """``text`` (ISO-8601, ``-<n><s|m|h|d|w>`` or ``now``) as epoch milliseconds.

    Raises:
        ValueError: Neither form; the message says what is accepted.
    """
    value = text.strip()
    if value.lower() == "now":
        return now_ms
    relative = _RELATIVE.match(value)
    if relative is not None:
        amount, unit = relative.groups()
        return now_ms - round(float(amount) * _UNIT_MS[unit])
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO-8601 (2026-12-06T10:00:00Z; UTC without an "
            "offset), a time before now (-15m, -2h, -1d, -90s, -1w) or 'now'"
        ) from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return round(instant.timestamp() * 1000)


def format_time(epoch_ms: int) -> str:
    """``epoch_ms`` as an ISO-8601 UTC time, for summaries.

    Example:
        >>> format_time(1796551200000)
        '2026-12-06T10:00:00.000Z'
    """
    instant = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")
