"""Whether a ``reply_to`` topic exists, asked of the broker *before* a result is written there.

A request may name any ``reply_to``. A write to a topic the broker does not have fails only
after librdkafka has waited for the topic to appear (``topic.metadata.propagation.max.ms``, 30 s
by default); in exactly-once that failure aborts the open transaction and rewinds every
partition, so each fresh bogus name would stall the whole ingest for seconds -- 100 of them, for
minutes. So the writer asks first: :class:`ReplyTopics` keeps which names the broker has
(remembered ``remember_s``) and which it has not (``missing_s``: a topic created later is
written again soon), asks about the others in one round per batch of answers, and a result
whose ``reply_to`` is missing goes to the result topic at once, in both delivery modes. A name the
broker did not answer about (it is away) is not asked about again for ``undecided_s``: one
question per name per few seconds at most, so a broker outage costs the loop one metadata
timeout per round, not one per result.

One round costs one metadata request per unknown name, or one listing of every topic when more
than a few are unknown at once (:func:`rayml.kafka.topic_checks.topic_verdicts`: a flood of
fresh bogus names costs one request per batch, not one per request). A broker that does not answer
decides nothing: the write is tried, and the failure paths of the result writer apply as before.
Both sets are bounded (:class:`~rayml.delivery.recent.RecentSet`), so hostile names cannot grow
memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from rayml.delivery.recent import RecentSet

logger = logging.getLogger(__name__)

__all__ = ["ReplyTopics"]

#: ``ask(names)``: for each name, why it cannot be written (None: it exists; absent from the
#: answer: the broker did not say).
Ask = Callable[[list[str]], dict[str, str | None]]


class ReplyTopics:
    """Known and missing reply topics, learned from the broker in rounds.

    Args:
        ask: Asks the broker about a list of topic names (see :data:`Ask`).
        max_topics: Bound of each set.
        remember_s: How long a topic found to exist is trusted without asking again.
        missing_s: How long a topic found missing (or not writable) is not asked about again.
        undecided_s: How long a topic the broker did not answer about is not asked about again
            (its results are written to it meanwhile; the writer's failure paths apply).

    >>> rt = ReplyTopics(lambda names: {n: None if n == "ok" else "no such topic" for n in names})
    >>> rt.check(["ok", "nope", "ok"]), rt.check(["ok", "nope"])  # asked once each
    (2, 0)
    >>> rt.missing("ok"), rt.missing("nope"), rt.missing("never-asked")
    (None, 'no such topic', None)
    """

    def __init__(
        self,
        ask: Ask,
        *,
        max_topics: int = 10_000,
        remember_s: float = 600.0,
        missing_s: float = 30.0,
        undecided_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ask = ask
        self._exists = RecentSet(max_topics, remember_s, clock)
        self._missing: dict[str, str] = {}
        self._missing_set = RecentSet(max_topics, missing_s, clock)
        self._undecided = RecentSet(max_topics, undecided_s, clock)
        self.rounds = 0
        self.missing_count = 0  # topics found missing, in all (for status and logs)
        self.last_missing = ""

    def known(self, topic: str) -> bool:
        """Whether ``topic`` was asked about recently (answered, or left undecided)."""
        return topic in self._exists or topic in self._missing_set or topic in self._undecided

    def check(self, topics: Iterable[str]) -> int:
        """Ask about the names not known yet, in one round; returns how many were asked."""
        unknown = sorted({t for t in topics if t and not self.known(t)})
        if not unknown:
            return 0
        self.rounds += 1
        try:
            verdicts = self._ask(unknown)
        except Exception:  # never let a question stop the answers: the write is tried instead
            logger.exception("asking the broker about reply topics %s failed", unknown[:5])
            verdicts = {}
        for topic in unknown:
            if topic not in verdicts:
                self._undecided.add(topic)
        for topic, why in verdicts.items():
            if why is None:
                self._exists.add(topic)
            else:
                self._missing_set.add(topic)
                self._missing[topic] = why
                self.missing_count += 1
                self.last_missing = topic
        if len(self._missing) > 2 * self._missing_set.max_items:
            self._missing = {t: w for t, w in self._missing.items() if t in self._missing_set}
        return len(unknown)

    def missing(self, topic: str) -> str | None:
        """Why ``topic`` cannot be written, if the broker said so recently (else None)."""
        if topic in self._missing_set:
            return self._missing.get(topic, "not writable")
        return None
