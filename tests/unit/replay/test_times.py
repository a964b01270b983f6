"""The times ``rayml replay`` takes: ISO-8601 (UTC without an offset) and relative to now."""

from __future__ import annotations

import doctest

import pytest

import rayml.replay.times
from rayml.replay.times import format_time, parse_time

NOW = 1_800_000_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-15m", NOW - 15 * 60_000),
        ("-2h", NOW - 2 * 3_600_000),
        ("-90s", NOW - 90_000),
        ("-1d", NOW - 86_400_000),
        ("-1w", NOW - 7 * 86_400_000),
        ("-1.5h", NOW - 5_400_000),
        ("now", NOW),
        (" NOW ", NOW),
    ],
)
def test_relative_times_count_back_from_now(text: str, expected: int) -> None:
    assert parse_time(text, NOW) == expected


def test_iso_times_with_and_without_an_offset() -> None:
    utc = parse_time("2026-12-06T10:00:00Z", NOW)
    assert parse_time("2026-12-06T10:00:00+00:00", NOW) == utc
    assert parse_time("2026-12-06T11:00:00+01:00", NOW) == utc
    assert parse_time("2026-12-06T10:00:00", NOW) == utc, "no offset: UTC, not the local zone"
    assert parse_time("2026-12-06T10:00:00.250Z", NOW) == utc + 250
    assert parse_time("2026-12-06", NOW) == utc - 10 * 3_600_000
    assert format_time(utc) == "2026-12-06T10:00:00.000Z"


@pytest.mark.parametrize("text", ["15m", "+15m", "-15", "-15y", "yesterday", "", "-m"])
def test_anything_else_is_refused_saying_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a time: use ISO-8601 .*-15m"):
        parse_time(text, NOW)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.replay.times).failed == 0
