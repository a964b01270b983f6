"""Unit tests for rayml.models.cache: an LRU bounded by count and by bytes."""

from __future__ import annotations

import doctest
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rayml.models.cache
from rayml.models.cache import CacheStats, ModelCache


def test_docstring_examples_run() -> None:
    result = doctest.testmod(rayml.models.cache)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize(("items", "size"), [(0, 10), (1, 0), (-1, 10)])
def test_bounds_must_be_positive(items: int, size: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        ModelCache(max_items=items, max_bytes=size)


def test_count_bound_evicts_the_least_recently_used() -> None:
    cache = ModelCache(max_items=2, max_bytes=1000)
    assert cache.put("a", "A", 1) == []
    assert cache.put("b", "B", 1) == []
    assert cache.get("a") == "A"  # "a" is now the most recently used
    assert cache.put("c", "C", 1) == ["b"]
    assert cache.cached() == ["a", "c"]
    assert len(cache) == 2


def test_byte_bound_evicts_as_many_as_needed() -> None:
    cache = ModelCache(max_items=10, max_bytes=100)
    for key in "abcd":
        cache.put(key, key.upper(), 25)
    assert cache.bytes == 100
    assert cache.put("e", "E", 60) == ["a", "b", "c"]
    assert cache.cached() == ["d", "e"]
    assert cache.bytes == 85


def test_a_single_oversize_model_is_kept_alone() -> None:
    cache = ModelCache(max_items=3, max_bytes=100)
    cache.put("a", "A", 10)
    cache.put("b", "B", 10)
    assert cache.put("huge", "H", 500) == ["a", "b"]
    assert cache.cached() == ["huge"]
    assert cache.get("huge") == "H"
    assert cache.bytes == 500
    # The next model pushes it out (it is the least recently used), and fits.
    assert cache.put("c", "C", 10) == ["huge"]
    assert cache.cached() == ["c"]
    assert cache.bytes == 10


def test_putting_a_key_again_replaces_it_without_counting_an_eviction() -> None:
    cache = ModelCache(max_items=2, max_bytes=100)
    cache.put("a", "A1", 40)
    cache.put("b", "B", 40)
    # The old "a" is replaced, not evicted: only its size is given back.
    assert cache.put("a", "A2", 50) == []
    assert (cache.cached(), cache.bytes, cache.stats.evictions) == (["b", "a"], 90, 0)
    assert cache.put("a", "A3", 70) == ["b"]  # 40 + 70 > 100
    assert cache.get("a") == "A3"
    assert cache.bytes == 70
    assert cache.stats.evictions == 1


def test_replacing_a_key_refreshes_its_recency() -> None:
    cache = ModelCache(max_items=2, max_bytes=1000)
    cache.put("a", "A", 1)
    cache.put("b", "B", 1)
    cache.put("a", "A again", 1)
    assert cache.put("c", "C", 1) == ["b"]
    assert cache.cached() == ["a", "c"]


def test_stats_count_hits_misses_and_evictions() -> None:
    cache = ModelCache(max_items=1, max_bytes=1000)
    assert cache.stats == CacheStats()
    assert cache.get("a") is None
    cache.put("a", "A", 1)
    assert cache.get("a") == "A"
    assert cache.get("a") == "A"
    cache.put("b", "B", 1)
    assert cache.get("a") is None
    assert cache.stats == CacheStats(hits=2, misses=2, evictions=1)


def test_keys_may_be_any_hashable() -> None:
    cache = ModelCache(max_items=2, max_bytes=1000)
    cache.put(("iris", "000001"), "v1", 1)
    assert cache.get(("iris", "000001")) == "v1"
    assert cache.get(("iris", "000002")) is None


operations = st.lists(
    st.tuples(
        st.sampled_from(["get", "put"]),
        st.integers(min_value=0, max_value=6),
        st.integers(min_value=1, max_value=60),
    ),
    max_size=60,
)


@given(
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=1, max_value=100),
    operations,
)
def test_behaves_like_a_reference_lru(
    max_items: int, max_bytes: int, ops: list[tuple[str, int, int]]
) -> None:
    cache = ModelCache(max_items=max_items, max_bytes=max_bytes)
    model: list[tuple[int, int]] = []  # (key, size), least recently used first
    hits = misses = evictions = 0
    for op, key, size in ops:
        present = [k for k, _ in model]
        if op == "get":
            got: Any = cache.get(key)
            if key in present:
                hits += 1
                model.append(model.pop(present.index(key)))
                assert got == f"v{key}"
            else:
                misses += 1
                assert got is None
            continue
        if key in present:
            model.pop(present.index(key))
        model.append((key, size))
        expected: list[int] = []
        while len(model) > 1 and (len(model) > max_items or sum(s for _, s in model) > max_bytes):
            expected.append(model.pop(0)[0])
        evictions += len(expected)
        assert cache.put(key, f"v{key}", size) == expected
        # Within both bounds, unless a single model is larger than the byte bound.
        assert len(cache) <= max_items
        assert cache.bytes <= max_bytes or len(cache) == 1
    assert cache.cached() == [k for k, _ in model]
    assert cache.bytes == sum(s for _, s in model)
    assert cache.stats == CacheStats(hits=hits, misses=misses, evictions=evictions)
