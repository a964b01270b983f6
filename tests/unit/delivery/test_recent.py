"""RecentSet: what failed writes teach is bounded in size and in time."""

from __future__ import annotations

import doctest

import rayml.delivery.recent
from rayml.delivery.recent import RecentSet


def test_at_most_max_items_oldest_forgotten_first() -> None:
    s = RecentSet(max_items=100, ttl_s=600)
    for n in range(10_000):  # a hostile stream of fresh bogus reply topics
        s.add(f"bogus-{n}")
    assert len(s) == 100
    assert "bogus-9999" in s
    assert "bogus-0" not in s


def test_entries_expire_and_a_new_add_renews_them() -> None:
    now = [0.0]
    s = RecentSet(max_items=10, ttl_s=5, clock=lambda: now[0])
    s.add("topic")
    now[0] = 4.0
    assert "topic" in s
    s.add("topic")
    now[0] = 8.0
    assert "topic" in s
    now[0] = 14.0
    assert "topic" not in s
    assert len(s) == 0


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.delivery.recent).failed == 0
