"""How long Python's garbage collector stops the ingest, per generation.

The ingest holds every request in flight as a few Python objects (its envelope, its params, its
place in a batch); tens of thousands of them make each full (generation 2) collection a pause of
the one loop thread that polls, dispatches and answers: a latency tail that no profile of the
loop's own code shows. :class:`GcPauses` times every collection (``gc.callbacks``), so the
ingest's status says how many there were and how long they stopped the process, and
:func:`tune_for_throughput` is what the ingest does about it once started: the objects alive
after start-up (modules, Ray's, the registry) are moved out of the collector's sight
(``gc.freeze``), and young collections run less often.

Example:
    >>> pauses = GcPauses()
    >>> pauses.install()
    >>> import gc
    >>> _ = gc.collect()
    >>> pauses.snapshot()["collections"][2] >= 1
    True
    >>> pauses.uninstall()
"""

from __future__ import annotations

import gc
import time
from typing import Any

__all__ = ["GcPauses", "tune_for_throughput"]

# Young collections every 50,000 net allocations of tracked objects instead of CPython's 700:
# a micro-batch of 1,024 requests allocates several thousand, so the default runs a collection
# every few requests' worth of work, each one walking the batch's live objects again.
YOUNG_THRESHOLD = 50_000


class GcPauses:
    """Counts collections and sums their pauses per generation (any thread may read it)."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.pause_s = [0.0, 0.0, 0.0]
        self.max_pause_s = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = int(info.get("generation", 2))
        self.collections[generation] += 1
        self.pause_s[generation] += pause
        self.max_pause_s = max(self.max_pause_s, pause)

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def snapshot(self) -> dict[str, Any]:
        return {
            "collections": list(self.collections),
            "pause_s": [round(p, 4) for p in self.pause_s],
            "max_pause_ms": round(self.max_pause_s * 1000.0, 2),
        }


def tune_for_throughput() -> None:
    """Freeze what start-up left alive and make young collections rarer (see the module)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
