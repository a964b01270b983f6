"""What the ingest reads now: priority lanes and per-tenant shares of its in-flight window. Pure.

A Kafka partition is a queue: a priority field inside a record cannot overtake the backlog in
front of it. So a lane is a topic (:mod:`rayml.tenancy.rules`): each tenant sends interactive
requests on its ``input_topic`` and bulk ones (``priority="batch"``, ``rayml replay``) on its
``batch_topic``, and the ingest decides, from what it holds, which of those topics it reads.
Not reading a topic is pausing its assigned partitions
(:meth:`rayml.delivery.consumer_loop.ConsumerLoop.hold`); the records wait in Kafka, where they
are safe and their lag is visible, and nothing the ingest took in is ever put back.

:class:`Intake` counts the records in flight (polled, not yet done) per topic, so per tenant and
lane, from the offset tracker's per-partition counts, summed over the assigned partitions at
most every :data:`DECIDE_EVERY_S` and after each poll that took records: never a step per
message. From those counts and the window's size (``executor.max_in_flight``) it holds:

* **the bulk lanes** while interactive work is in flight (or was, less than
  ``lanes.interactive_linger_s`` ago: a steady trickle of interactive requests has gaps) and the
  bulk lanes together hold at least ``lanes.batch_share`` of the window. Below that share they
  are always read, so bulk never starves; with no interactive work they may take the whole
  window (work-conserving).
* **a tenant's two lanes**, with two tenants or more configured and two or more of them with
  records in flight (or less than ``shares.active_linger_s`` ago), while it holds more than its
  weighted share: window x its ``weight`` / the sum of the weights of those tenants, at least
  ``shares.min_share_records``. A tenant alone uses the whole window.

A poll takes records of every topic it reads at once, so between two decisions one poll could
carry a lane far past its share. So while a lane or tenant with a share is read, a poll takes at
most what that share has room for (at least :data:`MIN_POLL` records, so that a lane at its share
does not hold a poll to a trickle): a share is overshot by one such poll at most.

What this does not do: preempt. Requests of a lane already taken in stay queued in the
dispatcher and running on workers; the dispatcher's order (lane, then tenant) decides which of
those goes next. The whole-window pause of :mod:`rayml.executor.window` composes with this one:
it pauses everything while the window is full, and its resume leaves the held topics paused.

Example:
    >>> intake = Intake(
    ...     {"in": ("default", "interactive"), "in.batch": ("default", "batch")},
    ...     {"default": 1.0},
    ...     window=1_000,
    ...     batch_share=0.25,
    ... )
    >>> intake.update([(("in.batch", 0), 900)], now=0.0)  # bulk alone: the whole window
    False
    >>> intake.held, intake.poll_limit(500)
    (frozenset(), 500)
    >>> intake.update([(("in.batch", 0), 900), (("in", 0), 1)], now=0.1)  # interactive waits
    True
    >>> sorted(intake.held)
    ['in.batch']
    >>> intake.update([(("in.batch", 0), 200)], now=0.2)  # under its share: read again
    True
    >>> intake.held, intake.poll_limit(500)  # a poll takes what the share has room for
    (frozenset(), 64)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from rayml.config import Settings
from rayml.kafka.partitions import TP
from rayml.tenancy.rules import LANES, Lane, Tenancy

__all__ = ["DECIDE_EVERY_S", "MIN_POLL", "Intake"]

#: Least time between two decisions without a poll in between (the counts only fall then).
DECIDE_EVERY_S = 0.005
#: A poll takes at least this many records while a lane or tenant with a share is read.
MIN_POLL = 64

_NEVER = -math.inf


class Intake:
    """Which request topics the ingest holds (pauses), from the records it holds per topic.

    Args:
        topics: Each request topic's tenant and lane.
        weights: Each tenant's weight (every tenant of the settings).
        window: The in-flight window's record budget (``executor.max_in_flight``).
        batch_share: The share of the window the bulk lanes keep while interactive work is in
            flight (0 < share <= 1).
        interactive_linger_s: Interactive work counts as in flight this long after its last
            record was done.
        min_share_records: A tenant's share is at least this many records.
        active_linger_s: A tenant counts as having records in flight this long after its last
            one was done.

    Raises:
        ValueError: a window < 1, a share outside (0, 1], a topic of a tenant without a weight.
    """

    def __init__(
        self,
        topics: Mapping[str, tuple[str, Lane]],
        weights: Mapping[str, float],
        *,
        window: int,
        batch_share: float,
        interactive_linger_s: float = 1.0,
        min_share_records: int = 256,
        active_linger_s: float = 1.0,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0 < batch_share <= 1:
            raise ValueError(f"batch_share must be in (0, 1], got {batch_share}")
        unknown = {tenant for tenant, _lane in topics.values()} - weights.keys()
        if unknown:
            raise ValueError(f"tenants without a weight: {sorted(unknown)}")
        self.window = window
        self.batch_share = batch_share
        # The bulk lanes' share in records: at least one, so bulk is always read at some pace.
        self.batch_cap = max(1, math.floor(window * batch_share))
        self._topics = dict(topics)
        self._weights = dict(weights)
        self._interactive_linger_s = interactive_linger_s
        self._min_share = min_share_records
        self._active_linger_s = active_linger_s
        self._shared = len(weights) >= 2  # tenant shares only with two tenants or more
        self._bulk = frozenset(t for t, (_tenant, lane) in topics.items() if lane == "batch")
        self._of_tenant: dict[str, frozenset[str]] = {
            name: frozenset(t for t, (tenant, _lane) in topics.items() if tenant == name)
            for name in weights
        }
        self._interactive_seen = _NEVER
        self._tenant_seen = dict.fromkeys(weights, _NEVER)
        self._next = 0.0
        self._dirty = True
        self._cap: int | None = None
        # What status() reads from other threads: replaced whole, never mutated, except the
        # pause counters, whose keys are all there from the start.
        self.held: frozenset[str] = frozenset()
        self.in_flight: dict[tuple[str, str], int] = {
            (tenant, lane): 0 for tenant in weights for lane in LANES
        }
        self.interactive_active = False
        self.shares: dict[str, int] = {}
        self.batch_peak = 0
        self.batch_pauses = 0
        self.tenant_pauses = dict.fromkeys(weights, 0)

    @classmethod
    def of(cls, settings: Settings, tenancy: Tenancy) -> Intake:
        """The intake of an ingest that reads ``tenancy``'s inference topics."""
        topics = {
            topic: (tenancy.of_topic(topic).name, tenancy.lane_of(topic))
            for topic in tenancy.input_topics
        }
        return cls(
            topics,
            {t.name: t.weight for t in tenancy.tenants},
            window=settings.executor.max_in_flight,
            batch_share=settings.lanes.batch_share,
            interactive_linger_s=settings.lanes.interactive_linger_s,
            min_share_records=settings.shares.min_share_records,
            active_linger_s=settings.shares.active_linger_s,
        )

    # -- when to decide -------------------------------------------------------------------

    def due(self, now: float) -> bool:
        """Whether to decide again: a poll took records since, or :data:`DECIDE_EVERY_S`
        passed (records finishing only free room)."""
        return self._dirty or now >= self._next

    def polled(self) -> None:
        """A poll took records: decide before the next one."""
        self._dirty = True

    # -- the decision ---------------------------------------------------------------------

    def update(self, pending: Iterable[tuple[TP, int]], now: float) -> bool:
        """Decide from the records in flight per assigned partition; return whether the held
        set changed (:attr:`held`).

        Args:
            pending: ``((topic, partition), records in flight)`` of each assigned partition;
                partitions of other topics are ignored.
            now: Monotonic seconds.
        """
        self._dirty = False
        self._next = now + DECIDE_EVERY_S
        per_topic = dict.fromkeys(self._topics, 0)
        for (topic, _partition), n in pending:
            if topic in per_topic:
                per_topic[topic] += n
        in_flight = dict.fromkeys(self.in_flight, 0)
        for topic, n in per_topic.items():
            in_flight[self._topics[topic]] += n
        interactive = bulk = 0
        per_tenant = dict.fromkeys(self._weights, 0)
        for (tenant, lane), n in in_flight.items():
            per_tenant[tenant] += n
            if lane == "batch":
                bulk += n
            else:
                interactive += n
        self.in_flight = in_flight
        self.batch_peak = max(self.batch_peak, bulk)

        # Lanes: the bulk lanes keep to their share while interactive work is about.
        if interactive:
            self._interactive_seen = now
        active = interactive > 0 or now - self._interactive_seen < self._interactive_linger_s
        self.interactive_active = active
        bulk_held = active and bulk >= self.batch_cap
        held: set[str] = set(self._bulk) if bulk_held else set()
        rooms: list[int] = []
        if active and not bulk_held and self.batch_cap < self.window:
            rooms.append(self.batch_cap - bulk)

        # Tenants: a weighted share each while two or more have records in flight.
        shares: dict[str, int] = {}
        if self._shared:
            seen = self._tenant_seen
            for tenant, n in per_tenant.items():
                if n:
                    seen[tenant] = now
            busy = [t for t, at in seen.items() if now - at < self._active_linger_s]
            if len(busy) >= 2:
                total = sum(self._weights[t] for t in busy)
                for tenant in busy:
                    share = max(
                        self._min_share, math.floor(self.window * self._weights[tenant] / total)
                    )
                    shares[tenant] = share
                    if per_tenant[tenant] > share:
                        held |= self._of_tenant[tenant]
                        if not self.held >= self._of_tenant[tenant]:
                            self.tenant_pauses[tenant] += 1
                    else:
                        rooms.append(share - per_tenant[tenant])
        self.shares = shares
        self._cap = max(MIN_POLL, min(rooms)) if rooms else None

        if bulk_held and not self.held >= self._bulk:
            self.batch_pauses += 1
        new = frozenset(held)
        changed = new != self.held
        self.held = new
        return changed

    def poll_limit(self, limit: int) -> int:
        """``limit``, or less while a lane or tenant with a share is read (see the module doc)."""
        cap = self._cap
        return limit if cap is None or cap >= limit else cap

    @property
    def why(self) -> str:
        """Why the held topics are held (for a log line)."""
        if not self.held:
            return "nothing held"
        parts = []
        bulk = sum(n for (_t, lane), n in self.in_flight.items() if lane == "batch")
        if self._bulk <= self.held and self.interactive_active and bulk >= self.batch_cap:
            parts.append(f"bulk lanes at {bulk} of their {self.batch_cap} records")
        for tenant, share in self.shares.items():
            n = sum(self.in_flight[(tenant, lane)] for lane in LANES)
            if n > share:
                parts.append(f"tenant {tenant} at {n} of its {share} records")
        return "; ".join(parts)

    def status(self) -> dict[str, Any]:
        """What the ingest's ``status()`` shows under ``"intake"`` (safe from any thread)."""
        in_flight = self.in_flight
        tenants: dict[str, dict[str, int]] = {}
        for (tenant, lane), n in in_flight.items():
            tenants.setdefault(tenant, {})[lane] = n
        return {
            "window": self.window,
            # Records in flight per tenant and lane, as of the last decision.
            "in_flight": tenants,
            "interactive_active": self.interactive_active,
            # The bulk lanes' share of the window while interactive work is in flight.
            "batch_share_records": self.batch_cap,
            "batch_peak": self.batch_peak,
            "batch_pauses": self.batch_pauses,
            # Each tenant's share now (empty unless two or more have records in flight).
            "tenant_shares": dict(self.shares),
            "tenant_pauses": dict(self.tenant_pauses),
            "held": sorted(self.held),
        }
