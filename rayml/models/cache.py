"""A least-recently-used cache of loaded models, bounded by count and by bytes (pure)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any


@dataclass
class CacheStats:
    """Counters a worker reports (and exports as metrics)."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0


class ModelCache:
    """Keeps at most ``max_items`` models and about ``max_bytes`` of them, evicting the oldest.

    Sizes are estimates given by the caller (the artifact's size on disk is a fair proxy). A
    single model larger than ``max_bytes`` is still kept, alone: refusing it would make every
    request for it reload it.

    Example:
        >>> cache = ModelCache(max_items=1, max_bytes=100)
        >>> cache.put("a", "model-a", 10)
        []
        >>> cache.put("b", "model-b", 10)
        ['a']
        >>> cache.get("a") is None, cache.get("b")
        (True, 'model-b')
    """

    def __init__(self, max_items: int, max_bytes: int) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("max_items and max_bytes must be positive")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self.stats = CacheStats()

    def get(self, key: Hashable) -> Any | None:
        entry = self._items.get(key)
        if entry is None:
            self.stats.misses += 1
            return None
        self._items.move_to_end(key)
        self.stats.hits += 1
        return entry[0]

    def put(self, key: Hashable, value: Any, size: int) -> list[Hashable]:
        """Insert ``value``; returns the keys evicted to make room."""
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._items[key] = (value, size)
        self._bytes += size
        evicted: list[Hashable] = []
        while len(self._items) > 1 and (
            len(self._items) > self.max_items or self._bytes > self.max_bytes
        ):
            victim, (_, victim_size) = self._items.popitem(last=False)
            self._bytes -= victim_size
            evicted.append(victim)
        self.stats.evictions += len(evicted)
        return evicted

    def cached(self) -> list[Hashable]:
        """Cached keys, least recently used first."""
        return list(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
