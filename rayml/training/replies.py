"""Where a job's result goes: its ``reply_to``, unless that topic cannot be written.

A training request may name a ``reply_to`` its tenant may write (checked at intake); the topic
need not exist. A write to a topic the broker does not have fails only after librdkafka has
waited for it to appear (``topic.metadata.propagation.max.ms``, 30 s); exactly-once, the write
(outside the transaction, with a short ``message.timeout.ms``:
:func:`rayml.kafka.clients.reply_producer`) fails first, as ``_MSG_TIMED_OUT``, and aborts the
runner's transaction; at-least-once, once librdkafka knows the topic is missing, ``produce()``
itself raises ``_UNKNOWN_TOPIC``. So, as the
ingest's :class:`~rayml.delivery.result_writer.ResultWriter` does, :class:`ReplyRoutes` **asks
before writing** (:class:`~rayml.delivery.reply_topics.ReplyTopics` over
:func:`~rayml.kafka.topic_checks.topic_verdicts`): a result whose ``reply_to`` the broker does not
have goes to the tenant's result topic at once, in both delivery modes, and nothing is written to
the named topic.

A broker that did not answer decides nothing: the write is tried. If it fails,
:meth:`ReplyRoutes.learn` takes what the failure says: an error that blames the topic
(:data:`~rayml.kafka.topic_checks.TOPIC_ERRORS`) makes it unwritable at once; a timeout says
nothing of the cause (the broker away, or the topic missing), so the topic is *suspect* and
:meth:`ReplyRoutes.settle` asks the broker about it afresh (the job runner calls it after an
aborted transaction, before the redo). What is learnt is bounded and expires
(:class:`~rayml.delivery.recent.RecentSet`): a request can name a fresh bogus topic every time,
and a topic created later is written again.

One :class:`ReplyRoutes` serves every tenant's publisher of a runner. A result topic (any
tenant's) is never learnt as unwritable: it is where results go when nothing else can take them;
nor are rayml's own topics (DLQ, models, events), which no ``reply_to`` may name.

Example:
    >>> def broker(names):  # what topic_verdicts answers
    ...     return {n: None if n == "replies" else "the broker has no such topic" for n in names}
    >>> routes = ReplyRoutes(broker, {"out"})
    >>> routes.topic_for("replies", "out"), routes.topic_for("bogus", "out")
    ('replies', 'out')
    >>> routes.topic_for(None, "out"), routes.rerouted
    ('out', 1)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError

from rayml.delivery.recent import RecentSet
from rayml.delivery.reply_topics import Ask, ReplyTopics
from rayml.kafka.topic_checks import TOPIC_ERRORS

logger = logging.getLogger(__name__)

__all__ = ["METADATA_TIMEOUT_S", "ReplyRoutes"]

#: How long one metadata question may wait for the broker (as the ingest's writer asks).
METADATA_TIMEOUT_S = 5.0

_MAX_REMEMBERED = 10_000
_REMEMBER_S = 600.0
#: Exactly-once: a reply topic whose writes timed out this many times is given up on.
GIVE_UP_TIMEOUTS = 3
_MAX_SUSPECTS = 1_000  # asked about in one round; more are not remembered (bounded memory)


class ReplyRoutes:
    """Which ``reply_to`` topics results may go to; what failed writes taught. Loop thread only.

    Args:
        ask: Asks the broker about topic names (:data:`~rayml.delivery.reply_topics.Ask`).
        own_topics: Every tenant's result topic and rayml's own topics (never learnt as
            unwritable: a failed write to one of them is retried where it belongs).
        owner: For log lines.
    """

    def __init__(self, ask: Ask, own_topics: Iterable[str], owner: str = "") -> None:
        self._ask = ask
        self.own_topics = frozenset(own_topics)
        self.owner = owner
        self.reply_topics = ReplyTopics(ask)
        self.unwritable = RecentSet(_MAX_REMEMBERED, _REMEMBER_S)
        self._timeouts: dict[str, int] = {}  # exactly-once: timed-out writes per topic
        self.suspects: set[str] = set()  # timed out: ask again at the next settle()
        self.rerouted = 0  # results answered on their result topic instead of their reply_to

    def topic_for(self, reply_to: str | None, result_topic: str) -> str:
        """Where a result goes: ``reply_to``, unless none, one found unwritable, or one the
        broker says it does not have; then ``result_topic``."""
        if not reply_to or reply_to == result_topic:
            return result_topic
        if reply_to in self.unwritable:  # until it expires: then tried again
            self.rerouted += 1
            return result_topic
        if not self.reply_topics.known(reply_to) and self.reply_topics.check([reply_to]):
            why = self.reply_topics.missing(reply_to)
            if why is not None:
                logger.warning(
                    "runner=%s reply_to %s cannot be written (%s); its results go to the "
                    "tenant's result topic",
                    self.owner,
                    reply_to,
                    why,
                )
        if self.reply_topics.missing(reply_to) is not None:
            self.rerouted += 1
            return result_topic
        return reply_to

    def learn(
        self, topic: str, err: KafkaError, *, suspect_timeouts: bool = True, once: bool = False
    ) -> None:
        """A write to ``topic`` failed with ``err``: remember the topic as unwritable if the
        error blames it, as suspect if it timed out (unless ``suspect_timeouts`` is false:
        nobody will :meth:`settle`); anything else teaches nothing. With ``once`` (exactly-once,
        where each failed write costs an aborted transaction and a redo) any refusal makes the
        topic unwritable (one bounded try, then the result topic), and so do
        ``GIVE_UP_TIMEOUTS`` timeouts (a topic that exists and never acknowledges)."""
        if topic in self.own_topics or topic in self.unwritable:
            return
        timed_out = err.code() == KafkaError._MSG_TIMED_OUT
        if once and timed_out:
            if len(self._timeouts) >= _MAX_SUSPECTS:
                self._timeouts.clear()
            self._timeouts[topic] = self._timeouts.get(topic, 0) + 1
            if self._timeouts[topic] >= GIVE_UP_TIMEOUTS:
                del self._timeouts[topic]
                self._unwritable(topic, f"{GIVE_UP_TIMEOUTS} writes timed out: {err.str()}")
                return
        if (once and not timed_out) or err.code() in TOPIC_ERRORS:
            self._unwritable(topic, err.str())
        elif (
            suspect_timeouts
            and err.code() == KafkaError._MSG_TIMED_OUT
            and len(self.suspects) < _MAX_SUSPECTS
        ):
            self.suspects.add(topic)

    def settle(self) -> list[str]:
        """Ask the broker about the suspect topics (one round); those it does not have become
        unwritable. Returns them. A broker that does not answer decides nothing: the suspects
        are forgotten, and a write that times out again makes them suspect again."""
        suspects, self.suspects = sorted(self.suspects), set()
        if not suspects:
            return []
        try:
            verdicts = self._ask(suspects)
        except Exception:  # a question must never stop the loop: the write is tried instead
            logger.exception("runner=%s asking the broker about %s failed", self.owner, suspects)
            return []
        missing = [topic for topic, why in verdicts.items() if why is not None]
        for topic in missing:
            self._unwritable(topic, str(verdicts[topic]))
        return missing

    def _unwritable(self, topic: str, why: str) -> None:
        logger.warning(
            "runner=%s cannot write to %s (%s); its results go to the tenant's result topic",
            self.owner,
            topic,
            why,
        )
        self.unwritable.add(topic)
