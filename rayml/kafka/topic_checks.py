"""Whether writes to a topic fail because of the topic: the broker is asked, off the loop thread.

librdkafka fails a write to a topic that does not exist with ``UNKNOWN_TOPIC_OR_PART`` once
``topic.metadata.propagation.max.ms`` (30 s) has passed, and such errors blame the topic at once
(:data:`TOPIC_ERRORS`). A write that times out (``_MSG_TIMED_OUT``, after
``message.timeout.ms``) says nothing of the cause: the broker was away, or the topic could not
take it. Delivery reports say ``retriable() == False`` for both; only the broker's metadata tells
them apart. Asking takes up to ``timeout_s`` when the broker is away, and a long outage times
out every result waiting in the producer at once: asked in the ingest's loop thread, one
question per failed result would stop the loop that long each. So :class:`TopicChecks` asks on
a background thread, at most one question per topic at a time, all the open questions in one
round (which gives up on the rest when the broker does not answer one: a round takes at most
``timeout_s`` however many reply topics wait), and the writer parks the failed writes until the
answer is in (:meth:`rayml.delivery.result_writer.ResultWriter.settle`).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, wait
from typing import Any

from confluent_kafka import KafkaError

logger = logging.getLogger(__name__)

#: Errors that blame the topic itself (missing, not allowed, invalid), whatever the broker says.
TOPIC_ERRORS = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,
    }
)

#: (topic, why it cannot be written, or None when the topic is not to blame)
Verdict = tuple[str, str | None]


def unwritable_topics(client: Any, topics: list[str], timeout_s: float) -> list[Verdict]:
    """Why each of ``topics`` cannot be written, per the broker's metadata (None: it can).

    ``client`` is anything with confluent-kafka's ``list_topics`` (a producer). A broker that
    does not answer in ``timeout_s`` blames nothing, for that topic and the ones after it: their
    writes are retried where they belong.
    """
    verdicts: list[Verdict] = []
    for i, topic in enumerate(topics):
        try:
            meta = client.list_topics(topic, timeout=timeout_s)
        except Exception:  # KafkaException: the broker is away; asking the rest would wait too
            return verdicts + [(t, None) for t in topics[i:]]
        found = meta.topics.get(topic)
        if found is None:
            verdicts.append((topic, "the broker has no such topic"))
        elif found.error is not None and found.error.code() in TOPIC_ERRORS:
            verdicts.append((topic, str(found.error)))
        else:
            verdicts.append((topic, None))
    return verdicts


#: Above this many names in one question, one listing of every topic is cheaper.
PER_TOPIC_LIMIT = 4


def topic_verdicts(client: Any, topics: list[str], timeout_s: float) -> dict[str, str | None]:
    """Why each of ``topics`` cannot be written (None: the broker has it), asked in one go.

    Up to :data:`PER_TOPIC_LIMIT` names are asked one metadata request each; more, with one
    listing of every topic (a flood of fresh names costs one request). Topics the broker did not
    answer about (it is away) are left out of the answer: nothing is decided for them.
    """
    if len(topics) <= PER_TOPIC_LIMIT:
        verdicts: dict[str, str | None] = {}
        for topic in topics:
            try:
                meta = client.list_topics(topic, timeout=timeout_s)
            except Exception:  # KafkaException: the broker is away; asking the rest would wait
                return verdicts
            verdicts[topic] = _verdict(meta.topics.get(topic))
        return verdicts
    try:
        meta = client.list_topics(timeout=timeout_s)
    except Exception:  # KafkaException: the broker is away; nothing is decided
        return {}
    return {topic: _verdict(meta.topics.get(topic)) for topic in topics}


def _verdict(found: Any) -> str | None:
    if found is None:
        return "the broker has no such topic"
    if found.error is not None and found.error.code() in TOPIC_ERRORS:
        return str(found.error)
    return None


class TopicChecks:
    """Questions to the broker about topics, answered in rounds on a background thread.

    Not thread-safe: :meth:`ask`, :meth:`answered` and :meth:`close` belong to one thread (the
    ingest's loop); only the metadata calls run on the daemon thread of each round.

    Args:
        client: Has ``list_topics`` (the ingest's producer; librdkafka handles are thread-safe).
        timeout_s: How long one metadata call may wait for the broker.

    Example:
        >>> from types import SimpleNamespace
        >>> broker = SimpleNamespace(list_topics=lambda t, timeout: SimpleNamespace(topics={}))
        >>> checks = TopicChecks(broker, timeout_s=1.0)
        >>> checks.ask("replies"); checks.ask("replies")  # one question per topic at a time
        >>> checks.answered(wait_s=5.0)
        [('replies', 'the broker has no such topic')]
        >>> checks.close()
    """

    def __init__(self, client: Any, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._waiting: list[str] = []  # asked while a round runs: the next round's
        self._round: Future[list[Verdict]] | None = None
        self._in_round: set[str] = set()
        self._closed = False

    def ask(self, topic: str) -> None:
        """Ask whether ``topic`` can be written, unless that question is open already."""
        if self._closed or topic in self._in_round or topic in self._waiting:
            return
        self._waiting.append(topic)
        self._start_round()

    @property
    def open(self) -> int:
        """Questions not answered yet (or answered but not collected)."""
        return len(self._in_round) + len(self._waiting)

    def answered(self, wait_s: float = 0.0) -> list[Verdict]:
        """The verdicts of the round that ended since the last call (else none).

        Waits up to ``wait_s`` for the running round to end (never when none runs).
        """
        current = self._round
        if current is None:
            return []
        if wait_s > 0:
            wait([current], timeout=wait_s)
        if not current.done():
            return []
        self._round, self._in_round = None, set()
        verdicts = current.result()
        self._start_round()
        return verdicts

    def _start_round(self) -> None:
        if self._round is not None or not self._waiting or self._closed:
            return
        topics, self._waiting = self._waiting, []
        done: Future[list[Verdict]] = Future()
        self._round, self._in_round = done, set(topics)
        # A daemon thread: a metadata call under way never holds up the process's exit.
        threading.Thread(
            target=self._run_round, args=(done, topics), name="rayml-topic-check", daemon=True
        ).start()

    def _run_round(self, done: Future[list[Verdict]], topics: list[str]) -> None:
        try:
            verdicts = unwritable_topics(self._client, topics, self._timeout_s)
        except Exception:  # never leave a round unanswered: its parked writes would wait forever
            logger.exception("asking the broker about %s failed", ", ".join(topics))
            verdicts = [(t, None) for t in topics]
        done.set_result(verdicts)

    def close(self) -> None:
        """Ask nothing more; a round under way ends on its own (within ``timeout_s`` a topic)."""
        self._closed = True
        self._waiting.clear()
