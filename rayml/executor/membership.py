"""Whether an ingest should be in its consumer group: only while its pool can serve.

Each ingest owns its worker pool. After a node loss without spare capacity, a restarted ingest's
workers wait for a node with room (until Ray's autoscaler adds one) while the consumer group
hands the ingest its share of the partitions: those partitions would stall, their records
polled and queued with no worker to run them. So an ingest whose pool has had no serving worker
for ``leave_after_s`` leaves the group (its partitions go to ingests that can serve them) and
rejoins as soon as a worker serves.

Pure policy (no clock, no Kafka, no Ray): the ingest feeds it the serving count and the time.

Example:
    >>> watch = ServingWatch(leave_after_s=30.0, now=0.0)  # a new ingest, workers starting
    >>> watch.update(serving=0, now=10.0) is None         # still within the grace period
    True
    >>> watch.update(serving=0, now=30.0)
    'leave'
    >>> watch.update(serving=2, now=95.0)                  # a node with room came up
    'join'
"""

from __future__ import annotations

from typing import Literal

Change = Literal["leave", "join"]


class ServingWatch:
    """Tells the ingest when to leave its consumer group and when to join it again.

    Args:
        leave_after_s: How long the pool may have no serving worker before the ingest leaves
            (0: never leave).
        now: The current time (the ingest's start: its workers are not serving yet).
    """

    __slots__ = ("_unserved_since", "in_group", "leave_after_s")

    def __init__(self, leave_after_s: float, now: float) -> None:
        if leave_after_s < 0:
            raise ValueError("leave_after_s must be >= 0")
        self.leave_after_s = leave_after_s
        self.in_group = True
        self._unserved_since: float | None = now

    def update(self, serving: int, now: float) -> Change | None:
        """The change to make now, given how many workers serve; ``None``: none."""
        if serving > 0:
            self._unserved_since = None
            if not self.in_group:
                self.in_group = True
                return "join"
            return None
        if self._unserved_since is None:
            self._unserved_since = now
        if (
            self.in_group
            and self.leave_after_s > 0
            and now - self._unserved_since >= self.leave_after_s
        ):
            self.in_group = False
            return "leave"
        return None

    def unserved_for(self, now: float) -> float:
        """Seconds since the pool last had a serving worker (0 while it has one)."""
        return 0.0 if self._unserved_since is None else now - self._unserved_since
