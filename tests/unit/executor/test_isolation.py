"""Isolation after a worker failure: only a request that fails alone is charged.

A simulated pool runs batches; a batch containing the poison request fails its worker. The
guarantee in docs/architecture.md: with one poison request in a batch of 1,024, all 1,023 others
get their normal results, the poison gives up after ``max_attempts`` charged failures, and it
costs O(log n) calls.
"""

from __future__ import annotations

import doctest
import math
from types import SimpleNamespace

import pytest

import rayml.executor.isolation
from rayml.executor.isolation import after_failure
from rayml.executor.work import Pending


def requests(n: int) -> list[Pending]:
    spec = SimpleNamespace(max_batch_size=None)
    return [
        Pending(("in", 0), o, b"", SimpleNamespace(params=o), spec, 0.0)  # type: ignore[arg-type]
        for o in range(n)
    ]


def run_until_settled(
    batch: list[Pending], poison: set[int], max_attempts: int
) -> tuple[set[int], set[int], int]:
    """Run ``batch`` (and what its failures resend) to the end; (ok, gave up, calls)."""
    queue = [batch]
    ok: set[int] = set()
    gave_up: set[int] = set()
    calls = 0
    while queue:
        part = queue.pop(0)
        calls += 1
        if not poison & {p.offset for p in part}:
            ok |= {p.offset for p in part}
            continue
        parts, exhausted = after_failure(part, culprit=True, max_attempts=max_attempts)
        gave_up |= {p.offset for p in exhausted}
        queue = parts + queue
    return ok, gave_up, calls


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_one_poison_in_1024_spares_the_other_1023_in_log_n_calls(max_attempts: int) -> None:
    batch = requests(1024)
    ok, gave_up, calls = run_until_settled(batch, {517}, max_attempts)
    assert gave_up == {517}
    assert ok == set(range(1024)) - {517}
    assert all(p.failures == 0 for p in batch if p.offset != 517)
    # Each of the log2(1024) = 10 halvings sends two halves; then the poison's charged retries.
    assert calls <= 1 + 2 * math.ceil(math.log2(1024)) + (max_attempts - 1)


def test_two_poisons_give_up_and_only_they() -> None:
    batch = requests(256)
    ok, gave_up, _calls = run_until_settled(batch, {3, 200}, max_attempts=3)
    assert gave_up == {3, 200}
    assert ok == set(range(256)) - {3, 200}


def test_a_batch_not_known_to_be_the_culprit_is_resent_whole_and_uncharged() -> None:
    batch = requests(8)
    parts, exhausted = after_failure(batch, culprit=False, max_attempts=1)
    assert parts == [batch]
    assert exhausted == []
    assert [p.failures for p in batch] == [0] * 8


def test_a_request_failing_alone_is_charged_until_it_gives_up() -> None:
    [alone] = requests(1)
    assert after_failure([alone], culprit=True, max_attempts=2) == ([[alone]], [])
    assert alone.failures == 1
    assert after_failure([alone], culprit=True, max_attempts=2) == ([], [alone])
    assert alone.failures == 2


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.executor.isolation).failed == 0
