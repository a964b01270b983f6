"""Writes to a topic that keeps failing: exponential backoff per topic, one probe at a time. Pure.

librdkafka retries a write on its own (a broker away, a leader moving) until
``message.timeout.ms``; a failed delivery report is what is left after that, or an error no
retry cures soon: the topic was deleted, the ACL that let rayml write it was removed. Producing
such a write again at once fails again at once, for every write waiting, in a loop. So a topic
whose write failed is *failing* until a write to it succeeds:

* its failed writes, and every new write for it, wait in its queue (their input offsets stay
  unfinished, so uncommitted; the ingest's in-flight window pauses the partitions once full);
* one write at a time, the oldest, is sent again as a probe, after a delay that starts at
  ``initial_s`` and doubles up to ``max_s`` with each failed probe, with *equal jitter* (half
  the delay, plus a random share of the other half: AWS's "Exponential Backoff And Jitter"),
  so that the ingests of a cluster do not probe in step;
* the first successful delivery to the topic (the probe's, or an older write's) ends it: the
  waiting writes are handed back, in order, to be produced;
* it is logged when it starts failing, at most once per ``log_interval_s`` while it fails
  (with the failures counted since the last line), and when it works again: never per write;
* every outcome of a probe ends it explicitly: delivered (:meth:`FailingTopics.delivered`),
  failed again (:meth:`FailingTopics.failed` with the same write: a longer delay), refused
  without a word about the topic (:meth:`FailingTopics.release`: the next oldest write probes at
  once), or the topic given up on (:meth:`FailingTopics.give_up`: its writes go elsewhere). As a
  safety net, a probe out for longer than ``probe_lost_s`` is let go and the next oldest write
  probes: a topic is never left without a probe while writes wait for it;
* a topic that has failed ``probes`` probes or for ``seconds`` is named by
  :meth:`FailingTopics.exhausted`, for a caller that has somewhere else to send its writes (a
  ``reply_to`` has its tenant's result topic; rayml's own topics have nowhere else and wait);
* :attr:`FailingTopics.held_bytes` is what the waiting writes weigh (``size_of`` each, the probe
  included), kept as they come and go: the ingest counts it in its byte budget;
* :attr:`FailingTopics.status` is rebuilt at most once per second, and names at most
  :data:`STATUS_TOPICS` topics (those with the most writes waiting): a flood of failing topics
  costs the loop no more than a few.

The caller (:class:`~rayml.delivery.result_writer.ResultWriter`) owns the writes (``T``): this
module only keeps them, so it is tested with a fake clock.

Example:
    >>> clock = [0.0]
    >>> topics = FailingTopics[str]("ingest=i0", 0.1, 30.0, 60.0, clock=lambda: clock[0],
    ...                             rng=lambda: 1.0)
    >>> topics.failed("out", "TOPIC_AUTHORIZATION_FAILED", "w1")
    >>> topics.hold("out", "w2"), topics.due()      # w2 waits too; no probe before 0.1 s
    (True, [])
    >>> clock[0] = 0.1
    >>> topics.due()                                 # the oldest write probes the topic
    [('out', 'w1')]
    >>> topics.failed("out", "TOPIC_AUTHORIZATION_FAILED", "w1")  # the probe failed: 0.2 s
    >>> clock[0] = 0.25; topics.due()
    []
    >>> clock[0] = 0.31; topics.due()
    [('out', 'w1')]
    >>> topics.delivered("out")                       # it worked: everything waiting goes
    ['w2']
    >>> "out" in topics
    False
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

__all__ = ["STATUS_TOPICS", "FailingTopics", "backoff_delay"]

#: At most this many failing topics are named in :attr:`FailingTopics.status`.
STATUS_TOPICS = 50
_PUBLISH_EVERY_S = 1.0

logger = logging.getLogger(__name__)

T = TypeVar("T")


def backoff_delay(
    attempt: int, initial_s: float, max_s: float, rng: Callable[[], float] = random.random
) -> float:
    """The delay before try ``attempt`` + 1: ``initial_s`` doubled per attempt, capped at
    ``max_s``, with equal jitter (between half of that and all of it).

    >>> [backoff_delay(n, 0.1, 30.0, rng=lambda: 1.0) for n in (0, 1, 2, 9, 50)]
    [0.1, 0.2, 0.4, 30.0, 30.0]
    >>> backoff_delay(3, 0.1, 30.0, rng=lambda: 0.0)
    0.4
    """
    ceiling = min(max_s, initial_s * 2.0 ** min(attempt, 64))
    return ceiling / 2 + rng() * ceiling / 2


@dataclass(eq=False)
class _Failing(Generic[T]):
    """One failing topic."""

    error: str  # the latest failure
    since: float  # clock time of the first failure
    since_wall: float  # the same, wall clock (for status)
    next_try: float  # when the next probe may go
    next_log: float  # when the next "still failing" line may be written
    attempt: int = 0  # failed probes
    failures: int = 0  # failed deliveries since it began failing
    logged: int = 0  # `failures` at the last log line
    probe: T | None = None  # the write sent to probe the topic, while it is out
    probe_sent: float = 0.0  # when the probe went
    waiting: deque[T] = field(default_factory=deque)
    nbytes: int = 0  # what the waiting writes and the probe weigh


class FailingTopics(Generic[T]):
    """The topics whose writes fail, each with its waiting writes and its backoff.

    Not thread-safe: one thread (the ingest's loop) calls everything but :attr:`status`,
    which is replaced, never mutated, so any thread may read it.

    Args:
        owner: How log lines name the writer (``ingest=...``).
        initial_s: The first probe's delay after a failure.
        max_s: The longest delay between two probes.
        log_interval_s: Least time between two "still failing" lines of one topic.
        probe_lost_s: How long a probe may be out before the next write probes instead
            (default: twice ``max_s``, at least a minute).
        size_of: What a write weighs, for :attr:`held_bytes` (default: nothing).
        clock: Monotonic seconds (injected by tests).
        wall: Wall-clock seconds, for the status's ``since``.
        rng: Uniform in [0, 1), for the jitter.
    """

    def __init__(
        self,
        owner: str,
        initial_s: float,
        max_s: float,
        log_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        probe_lost_s: float | None = None,
        wall: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        size_of: Callable[[T], int] | None = None,
    ) -> None:
        self.owner = owner
        self.initial_s = initial_s
        self.max_s = max_s
        self.log_interval_s = log_interval_s
        self._clock = clock
        self._wall = wall
        self._rng = rng
        self.probe_lost_s = probe_lost_s if probe_lost_s is not None else max(60.0, 2 * max_s)
        self._topics: dict[str, _Failing[T]] = {}
        self._size_of: Callable[[T], int] = size_of or (lambda _write: 0)
        #: What the writes held for failing topics weigh (``size_of``), their probes included.
        self.held_bytes = 0
        #: The failing topics as plain dicts (topic, error, since, failures, waiting), the
        #: :data:`STATUS_TOPICS` with the most writes waiting; rebuilt at most once a second.
        self.status: tuple[dict[str, Any], ...] = ()
        self._dirty = False
        self._published = float("-inf")

    def __bool__(self) -> bool:
        return bool(self._topics)

    def __contains__(self, topic: object) -> bool:
        return topic in self._topics

    @property
    def waiting(self) -> int:
        """Writes held for failing topics, their probes included."""
        return sum(len(f.waiting) + (f.probe is not None) for f in self._topics.values())

    def failed(self, topic: str, error: str, write: T) -> None:
        """A write to ``topic`` failed with ``error``: it waits for the topic to work again."""
        now = self._clock()
        failing = self._topics.get(topic)
        if failing is None:
            failing = self._topics[topic] = _Failing(
                error,
                now,
                self._wall(),
                now + self._delay(0),
                now + self.log_interval_s,
            )
            logger.warning(
                "%s delivery to %s failed (%s): its writes wait and the topic is tried again "
                "with backoff (%.1fs doubling up to %.0fs); nothing is committed past them",
                self.owner,
                topic,
                error,
                self.initial_s,
                self.max_s,
            )
        failing.error = error
        failing.failures += 1
        if write is failing.probe:
            # The probe failed: the topic still refuses; wait longer before the next one.
            failing.probe = None
            failing.attempt += 1
            failing.next_try = now + self._delay(failing.attempt)
            failing.waiting.appendleft(write)  # still the oldest (its bytes still held)
        else:
            failing.waiting.append(write)  # sent before the topic failed, failed since
            self._weigh(failing, self._size_of(write))
        self._changed()

    def hold(self, topic: str, write: T) -> bool:
        """Keep a new ``write`` if its topic is failing (it would fail the same way)."""
        failing = self._topics.get(topic)
        if failing is None:
            return False
        failing.waiting.append(write)
        self._weigh(failing, self._size_of(write))
        return True

    def release(self, topic: str, write: T) -> None:
        """``write``, if it is ``topic``'s probe, was refused without a word about the topic
        (e.g. by the producer itself, as too large): it is the caller's again, and the next
        oldest write probes at once, without a longer delay."""
        failing = self._topics.get(topic)
        if failing is None or write is not failing.probe:
            return
        failing.probe = None
        failing.next_try = self._clock()
        self._weigh(failing, -self._size_of(write))

    def give_up(self, topic: str) -> list[T]:
        """Stop waiting for ``topic``: its waiting writes, in order, for the caller to send
        elsewhere (a probe still out is not among them: its report comes back to the caller)."""
        failing = self._topics.pop(topic, None)
        if failing is None:
            return []
        self.held_bytes -= failing.nbytes
        logger.warning(
            "%s gave up on %s after %.1fs and %d failed probes (%s): its %d waiting writes go "
            "elsewhere",
            self.owner,
            topic,
            self._clock() - failing.since,
            failing.attempt,
            failing.error,
            len(failing.waiting),
        )
        self._changed()
        return list(failing.waiting)

    def exhausted(self, probes: int, seconds: float, among: Callable[[str], bool]) -> list[str]:
        """The failing topics ``among`` selects that have failed ``probes`` probes, or failed
        for ``seconds`` since their first failure."""
        deadline = self._clock() - seconds
        return [
            topic
            for topic, f in self._topics.items()
            if (f.attempt >= probes or f.since <= deadline) and among(topic)
        ]

    def due(self) -> list[tuple[str, T]]:
        """The probes to send now, one per failing topic whose delay has passed (and the
        "still failing" lines that are due are written)."""
        now = self._clock()
        probes: list[tuple[str, T]] = []
        changed = False
        for topic, failing in list(self._topics.items()):
            if failing.probe is not None and now - failing.probe_sent > self.probe_lost_s:
                # Its report never came back here (the safety net of the module docstring).
                self._weigh(failing, -self._size_of(failing.probe))
                failing.probe = None
                failing.next_try = min(failing.next_try, now)
            if failing.probe is None and now >= failing.next_try:
                changed = True
                if not failing.waiting:
                    # Nothing left to write there (forgotten with a revoked partition): no
                    # reason to call it failing. A new write finds out afresh.
                    del self._topics[topic]
                    continue
                failing.probe = failing.waiting.popleft()
                failing.probe_sent = now
                probes.append((topic, failing.probe))
            if now >= failing.next_log:
                self._log_still_failing(topic, failing, now)
        if changed:
            self._dirty = True
        if self._dirty and now - self._published >= _PUBLISH_EVERY_S:
            self._publish()
        return probes

    def delivered(self, topic: str) -> list[T]:
        """A write to ``topic`` succeeded: it works again; the writes that waited, in order."""
        failing = self._topics.pop(topic, None)
        if failing is None:
            return []
        self.held_bytes -= failing.nbytes
        logger.warning(
            "%s delivery to %s works again after %.1fs (%d failed deliveries); writing the %d "
            "that waited",
            self.owner,
            topic,
            self._clock() - failing.since,
            failing.failures,
            len(failing.waiting),
        )
        self._changed()
        return list(failing.waiting)

    def forget(self, drop: Callable[[T], bool]) -> int:
        """Drop the waiting writes ``drop`` selects (their partitions were let go of)."""
        dropped = 0
        for failing in self._topics.values():
            keep: deque[T] = deque()
            for write in failing.waiting:
                if drop(write):
                    self._weigh(failing, -self._size_of(write))
                else:
                    keep.append(write)
            dropped += len(failing.waiting) - len(keep)
            failing.waiting = keep
        if dropped:
            self._changed()
        return dropped

    def _weigh(self, failing: _Failing[T], nbytes: int) -> None:
        failing.nbytes += nbytes
        self.held_bytes += nbytes

    def _delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.initial_s, self.max_s, self._rng)

    def _log_still_failing(self, topic: str, failing: _Failing[T], now: float) -> None:
        logger.warning(
            "%s delivery to %s still failing after %.0fs (%s): %d failed deliveries since the "
            "last report, %d writes wait, next try in %.1fs",
            self.owner,
            topic,
            now - failing.since,
            failing.error,
            failing.failures - failing.logged,
            len(failing.waiting) + (failing.probe is not None),
            max(0.0, failing.next_try - now),
        )
        failing.logged = failing.failures
        failing.next_log = now + self.log_interval_s

    def _changed(self) -> None:
        """Rebuild the status now while few topics fail or a second has passed since the last
        time; else at the next :meth:`due` a second on."""
        self._dirty = True
        few = len(self._topics) <= STATUS_TOPICS
        if few or self._clock() - self._published >= _PUBLISH_EVERY_S:
            self._publish()

    def _publish(self) -> None:
        self._dirty = False
        self._published = self._clock()
        shown = sorted(self._topics.items(), key=lambda item: -(len(item[1].waiting) + 1))[
            :STATUS_TOPICS
        ]
        self.status = tuple(
            {
                "topic": topic,
                "error": f.error,
                "since": datetime.fromtimestamp(f.since_wall, UTC).isoformat(timespec="seconds"),
                "failures": f.failures,
                "waiting": len(f.waiting) + (f.probe is not None),
            }
            for topic, f in shown
        )
