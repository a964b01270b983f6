"""Ingest._poll against a scripted consumer: a record returned before a rebalance callback.

``_poll`` returns the first record of a poll at once and takes the rest with ``consume()``.
A rebalance callback may run inside that ``consume()``: librdkafka then drops the fetched
records of the partitions it revoked or rewound, but not the one ``poll()`` already returned.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from rayml.executor.ingest import Ingest
from tests.support.fake_records import Record


def polling(first: Record, rest: list[Record], callback_moves: set[tuple[str, int]]) -> Any:
    """A stand-in for the ingest: its consumer runs a callback that moves ``callback_moves``."""
    ingest = SimpleNamespace(_unsettled=set())

    def consume(limit: int, timeout: float) -> list[Record]:
        ingest._unsettled |= callback_moves  # what _on_revoke / _on_lost / _rewind record
        return rest

    ingest.consumer = SimpleNamespace(poll=lambda timeout: first, consume=consume)
    return ingest


def test_the_first_record_of_a_partition_moved_during_the_poll_is_not_taken() -> None:
    ingest = polling(Record(1, 10), [Record(0, 5)], callback_moves={("in", 1)})
    got = Ingest._poll(ingest, limit=10, timeout=0.1)  # type: ignore[arg-type]
    assert [(r.partition(), r.offset()) for r in got] == [(0, 5)]


def test_records_of_other_partitions_are_all_taken() -> None:
    ingest = polling(Record(1, 10), [Record(1, 11), Record(0, 5)], callback_moves={("in", 2)})
    got = Ingest._poll(ingest, limit=10, timeout=0.1)  # type: ignore[arg-type]
    assert [(r.partition(), r.offset()) for r in got] == [(1, 10), (1, 11), (0, 5)]


def test_a_move_before_this_poll_does_not_drop_its_first_record() -> None:
    ingest = polling(Record(1, 10), [], callback_moves=set())
    ingest._unsettled = {("in", 1)}  # revoked and assigned again before this poll began
    got = Ingest._poll(ingest, limit=10, timeout=0.1)  # type: ignore[arg-type]
    assert [(r.partition(), r.offset()) for r in got] == [(1, 10)]
