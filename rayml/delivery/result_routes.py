"""Where the ingest's results go: their ``reply_to``, or their tenant's result topic. Pure.

Triage has authorised a request's ``reply_to`` already; :class:`ResultRoutes` decides whether
its result can go there. It goes to the tenant's result topic instead when the request names
none, when the broker does not have the topic (asked before writing,
:class:`~rayml.delivery.reply_topics.ReplyTopics`: no 30 s wait in librdkafka, no aborted
transaction), or when failed writes taught that it cannot be written
(:attr:`ResultRoutes.unwritable`, learnt by :mod:`rayml.delivery.at_least_once` and
:mod:`rayml.delivery.redo`). What is learnt is bounded and forgetful
(:class:`~rayml.delivery.recent.RecentSet`): a hostile request can name a fresh bogus topic each
time, and a topic created later becomes writable again.

The decision is made once per name and loop turn, not per result (a batch's results name a few
topics between them); :meth:`ResultRoutes.new_turn` forgets the turn's decisions, as what the
writer learnt since may change them. The job runner's results are routed alike by
:class:`rayml.training.replies.ReplyRoutes`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from rayml.delivery.recent import RecentSet
from rayml.delivery.reply_topics import ReplyTopics

__all__ = ["MAX_REMEMBERED", "REMEMBER_S", "ResultRoutes"]

logger = logging.getLogger(__name__)

# What failed writes teach (unwritable topics, too-large results) is kept this long, at most
# this many of each.
REMEMBER_S = 600.0
MAX_REMEMBERED = 10_000
_MISSING_LOG_INTERVAL_S = 30.0

# Where a reply_to's results go this loop turn (ResultRoutes._routes).
_TO_REPLY_TO, _UNWRITABLE, _MISSING = 0, 1, 2


class ResultRoutes:
    """Where each result goes, decided once per ``reply_to`` and loop turn.

    Args:
        reply_topics: Which ``reply_to`` topics exist (asked of the broker).
        owner: A name for log lines.
        clock: Monotonic seconds (tests inject one).
    """

    def __init__(
        self, reply_topics: ReplyTopics, owner: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.reply_topics = reply_topics
        self._owner = owner
        self._clock = clock
        # reply_to topics that cannot be written (both delivery modes): their results go to
        # their tenant's result topic until the topic is forgotten.
        self.unwritable = RecentSet(MAX_REMEMBERED, REMEMBER_S)
        # Where each reply_to named this loop turn goes (_TO_REPLY_TO, _UNWRITABLE, _MISSING):
        # decided once per name and turn, not per result; emptied by new_turn() every turn.
        self._routes: dict[str, int] = {}
        self.rerouted = 0  # results whose reply_to did not exist: on the result topic
        self._missing_logged = -_MISSING_LOG_INTERVAL_S

    def result_topic(self, reply_to: str | None, result_topic: str) -> str:
        """Where a result goes: its ``reply_to``, unless none, one the broker does not have, or
        one found unwritable; then its tenant's ``result_topic``. Decided once per name and
        loop turn (a batch's results name a few topics between them)."""
        if not reply_to or reply_to == result_topic:
            return result_topic
        route = self._routes.get(reply_to)
        if route is None:
            route = self._routes[reply_to] = self._route(reply_to)
        if route == _TO_REPLY_TO:
            return reply_to
        if route == _MISSING:
            self.rerouted += 1
        return result_topic

    def check(self, topics: Iterable[str]) -> None:
        """Ask the broker about these ``reply_to`` topics in one round."""
        if self.reply_topics.check(topics):
            self._log_missing()

    def new_turn(self) -> None:
        """A new loop turn: what the writer learnt since may change the routes."""
        if self._routes:
            self._routes = {}

    def learn_unwritable(self, topic: str, why: object) -> None:
        """``topic`` cannot be written: its results go to their tenant's result topic (logged
        once, when it is learnt)."""
        self._routes.pop(topic, None)
        if topic in self.unwritable:
            return
        self.unwritable.add(topic)
        logger.warning(
            "ingest=%s cannot write to %s (%s); its results go to their tenant's result topic",
            self._owner,
            topic,
            why,
        )

    def give_up(self, topic: str) -> None:
        """Learn ``topic`` unwritable without a log line (the caller's log says it)."""
        self.unwritable.add(topic)
        self._routes.pop(topic, None)

    def _route(self, reply_to: str) -> int:
        if reply_to in self.unwritable:  # until it expires: then tried again
            return _UNWRITABLE
        if not self.reply_topics.known(reply_to):
            self.check([reply_to])
        if self.reply_topics.missing(reply_to) is not None:
            return _MISSING
        return _TO_REPLY_TO

    def _log_missing(self) -> None:
        """One line per interval about reply_to topics that do not exist (a flood of bogus
        names is one line, not one per request)."""
        now = self._clock()
        missing = self.reply_topics.missing_count
        if missing and now - self._missing_logged >= _MISSING_LOG_INTERVAL_S:
            self._missing_logged = now
            logger.warning(
                "ingest=%s %d reply_to topics named by requests do not exist or cannot be "
                "written (e.g. %s: %s); their results go to their tenant's result topic",
                self._owner,
                missing,
                self.reply_topics.last_missing,
                self.reply_topics.missing(self.reply_topics.last_missing),
            )
