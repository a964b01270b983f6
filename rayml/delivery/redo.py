"""Exactly-once: what an aborted transaction's failed writes teach its redo.

With ``executor.delivery = "exactly_once"`` the
:class:`~rayml.delivery.result_writer.ResultWriter` stages each input record's writes (its
result, or dead letter, or result *and* DLQ copy) in
:class:`rayml.delivery.transactions.TransactionalOutput` instead of producing them. A failed
write there cannot be produced again on its own: the transaction aborts and its records are
redone from their input offsets. :meth:`RedoLessons.note_failed_delivery` remembers why, and
:meth:`RedoLessons.staged_results` applies it to what the redo stages, so that the redo does
not fail the same way: the tenant's result topic instead of an unwritable ``reply_to``
(:class:`~rayml.delivery.result_routes.ResultRoutes` learns it), an error result instead of
one too large. Every lesson has an end, so there is no abort loop: a result refused as too
large is shrunk, then sent to the result topic, then not written at all; a ``reply_to`` whose
writes keep timing out is given up on after ``reply_give_up_probes`` aborted transactions.
What is learnt is bounded and forgetful (:class:`~rayml.delivery.recent.RecentSet`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaError

from rayml.delivery.out_records import Answer, OutRecord, too_large_result
from rayml.delivery.recent import RecentSet
from rayml.delivery.result_routes import MAX_REMEMBERED, REMEMBER_S, ResultRoutes
from rayml.kafka.records import Headers
from rayml.kafka.topic_checks import TOPIC_ERRORS, TopicChecks

__all__ = ["RedoLessons"]

logger = logging.getLogger(__name__)


class RedoLessons:
    """What failed transactional writes taught, applied to the results the redo stages.

    Args:
        routes: Where results go; learns the ``reply_to`` topics that cannot be written.
        checks: Asks the broker, off the loop thread, whether a timed-out topic is to blame.
        dlq_topic: Dead letters (redone as they are).
        result_topics: The tenants' result topics (never learnt unwritable).
        owner: A name for log lines.
        clock: Monotonic seconds (tests inject one).
        give_up_probes: A ``reply_to`` whose writes timed out in this many loop turns (aborted
            transactions) is given up on.
    """

    def __init__(
        self,
        routes: ResultRoutes,
        checks: TopicChecks,
        *,
        dlq_topic: str,
        result_topics: frozenset[str],
        owner: str,
        clock: Callable[[], float] = time.monotonic,
        give_up_probes: int = 3,
    ) -> None:
        self._routes = routes
        self._checks = checks
        self._dlq_topic = dlq_topic
        self._result_topics = result_topics
        self._owner = owner
        self._clock = clock
        self._give_up_probes = give_up_probes
        # Results too large for their topic; request ids whose reply topic refused even the
        # small error result (the redo writes it to the result topic); those whose result
        # topic refused it too (the redo writes nothing for them).
        self.too_large = RecentSet(MAX_REMEMBERED, REMEMBER_S)
        self.refused_small = RecentSet(MAX_REMEMBERED, REMEMBER_S)
        self.unanswerable = RecentSet(MAX_REMEMBERED, REMEMBER_S)
        # reply_to topics whose writes failed (not by a topic error) this turn, and in how many
        # turns (aborted transactions) each did, since when: given up on at give_up_probes.
        self._timed_out: set[str] = set()
        self._timeouts: dict[str, tuple[int, float]] = {}

    def note_failed_delivery(self, topic: str, key: bytes | None, err: KafkaError) -> None:
        """Learn from a write that failed in an (aborted) transaction, for the redo.

        A result too large for its topic is answered with an error result, and an unwritable
        ``reply_to`` topic is replaced by the result topic (as at-least-once does). A timed-out
        write's topic is asked about off the loop thread, as at-least-once asks; if the answer
        comes after the redo, the redo fails once more and aborts again. A ``reply_to`` that
        exists but whose writes keep timing out is given up on once they did in
        ``give_up_probes`` loop turns (:meth:`count_timeouts`), as at-least-once gives up on
        one after as many failed probes: no abort loop.
        """
        if topic == self._dlq_topic:
            return  # nothing to change: redone as it is (at-least-once retries it too)
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and key is not None:
            rid = key.decode(errors="replace")
            # First refusal: the redo sends the small error result instead; second (the topic
            # refuses even that): the redo sends it to the tenant's result topic; third (the
            # result topic refuses it too): the redo writes nothing for it. No abort loop.
            if rid in self.refused_small:
                self.unanswerable.add(rid)
            elif rid in self.too_large:
                self.refused_small.add(rid)
                if topic not in self._result_topics:  # a reply_to (the DLQ returned above)
                    # A reply topic that refuses even a small error: every later result for
                    # it goes to the result topic at once, not two aborts per request.
                    self._routes.learn_unwritable(topic, err)
            else:
                self.too_large.add(rid)
        elif topic not in self._result_topics and topic not in self._routes.unwritable:
            if err.code() in TOPIC_ERRORS:
                self._routes.learn_unwritable(topic, err)
            else:
                self._checks.ask(topic)  # answered in ResultWriter.settle()
                self._timed_out.add(topic)  # counted once per turn (count_timeouts)

    def count_timeouts(self) -> None:
        """One more turn in which each of the reply topics noted this turn had its writes fail
        without blaming the topic (a timeout: an aborted transaction); at ``give_up_probes``
        such turns the topic is given up on. A count older than REMEMBER_S starts again."""
        if not self._timed_out:
            return
        now = self._clock()
        for topic in self._timed_out:
            turns, since = self._timeouts.get(topic, (0, now))
            if now - since > REMEMBER_S:
                turns, since = 0, now
            turns += 1
            if turns >= self._give_up_probes:
                self._timeouts.pop(topic, None)
                self._routes.learn_unwritable(topic, f"its writes failed in {turns} transactions")
            else:
                self._timeouts[topic] = (turns, since)
        self._timed_out = set()
        if len(self._timeouts) > MAX_REMEMBERED:
            self._timeouts.clear()  # a flood of names: bounded, at the price of counting again

    def staged_results(
        self, topic: str, value: bytes, answer: Answer, headers: Headers | None = None
    ) -> list[OutRecord]:
        """The result record(s) to stage, after what failed writes taught."""
        if answer.request_id in self.unanswerable:
            logger.error(
                "ingest=%s the result topic %s refuses even the error result of %s: it is not "
                "answered",
                self._owner,
                answer.result_topic,
                answer.request_id,
            )
            return []
        if answer.request_id in self.too_large:
            value = too_large_result(answer, len(value), topic)
        if topic in self._routes.unwritable or answer.request_id in self.refused_small:
            topic = answer.result_topic
        return [OutRecord(topic, value, answer.request_id.encode(), headers)]
