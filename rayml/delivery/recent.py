"""A set that forgets: bounded in size (oldest first) and in time (entries expire).

What the result writer learns from failed writes (unwritable ``reply_to`` topics, results too
large for their topic) must not grow without bound under hostile traffic -- a request can name a
fresh bogus topic every time -- and must not hold for ever: a topic created later becomes
writable again. Pure.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

__all__ = ["RecentSet"]


class RecentSet:
    """At most ``max_items`` keys, each forgotten ``ttl_s`` after it was (last) added.

    >>> s = RecentSet(max_items=2, ttl_s=60)
    >>> s.add("a"); s.add("b"); s.add("c")
    >>> sorted(s), "a" in s
    (['b', 'c'], False)
    """

    def __init__(
        self, max_items: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_items = max_items
        self.ttl_s = ttl_s
        self._clock = clock
        self._added: OrderedDict[str, float] = OrderedDict()

    def add(self, key: str) -> None:
        self._added.pop(key, None)
        self._added[key] = self._clock()
        while len(self._added) > self.max_items:
            self._added.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        added = self._added.get(key)  # type: ignore[call-overload]
        if added is None:
            return False
        if self._clock() - added > self.ttl_s:
            del self._added[key]  # type: ignore[arg-type]
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        now = self._clock()
        return iter([k for k, added in self._added.items() if now - added <= self.ttl_s])

    def __len__(self) -> int:
        return sum(1 for _ in self)
