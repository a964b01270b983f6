"""Whether writes to a topic fail because of the topic: the broker is asked, off the loop thread.

librdkafka fails a write to a topic that does not exist with ``UNKNOWN_TOPIC_OR_PART`` once
``topic.metadata.propagation.max.ms`` (30 s) has passed, and such errors blame the topic at once
(:data:`TOPIC_ERRORS`). A write that times out (``_MSG_TIMED_OUT``, after
``message.timeout.ms``) says nothing of the cause: the broker was away, or the topic could not
take it. Delivery reports say ``retriable() == False`` for both; only the broker's metadata tells
them apart. Asking takes up to ``timeout_s`` when the broker is away, and a long outage times
out every result waiting in the producer at once: asked in the ingest's loop thread, one
question per failed result would stop the loop that long each. So :class:`TopicChecks` asks on
one background thread, at most one question per topic at a time, and the writer parks the
failed writes until the answer is in (:meth:`rayml.result_writer.ResultWriter.settle`).
"""

from __future__ import annotations

import logging
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
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


def topic_unwritable(client: Any, topic: str, timeout_s: float) -> bool:
    """Whether the broker's metadata says ``topic`` cannot be written (absent or in error).

    ``client`` is anything with confluent-kafka's ``list_topics`` (a producer). A broker that
    does not answer in ``timeout_s`` blames nothing: the write is retried where it belongs.
    """
    try:
        meta = client.list_topics(topic, timeout=timeout_s)
    except Exception:  # KafkaException: the broker is away
        return False
    found = meta.topics.get(topic)
    return found is None or (found.error is not None and found.error.code() in TOPIC_ERRORS)


class TopicChecks:
    """Questions to the broker about topics, each answered on a background thread.

    Args:
        client: Has ``list_topics`` (the ingest's producer; librdkafka handles are thread-safe).
        timeout_s: How long one question may wait for the broker.

    Example:
        >>> from types import SimpleNamespace
        >>> broker = SimpleNamespace(list_topics=lambda t, timeout: SimpleNamespace(topics={}))
        >>> checks = TopicChecks(broker, timeout_s=1.0)
        >>> checks.ask("replies"); checks.ask("replies")  # one question per topic at a time
        >>> checks.answered(wait_s=5.0)
        [('replies', True)]
        >>> checks.close()
    """

    def __init__(self, client: Any, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._pool: ThreadPoolExecutor | None = None
        self._asked: dict[str, Future[bool]] = {}

    def ask(self, topic: str) -> None:
        """Start asking whether ``topic`` is unwritable, unless that question is open already."""
        if topic in self._asked:
            return
        if self._pool is None:  # most ingests never need one
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rayml-topic-check")
        self._asked[topic] = self._pool.submit(
            topic_unwritable, self._client, topic, self._timeout_s
        )

    @property
    def open(self) -> int:
        """Questions not answered yet (or answered but not collected)."""
        return len(self._asked)

    def answered(self, wait_s: float = 0.0) -> list[tuple[str, bool]]:
        """(topic, unwritable) of the questions answered since the last call.

        Waits up to ``wait_s`` for a first answer when none is in (never when nothing is open).
        """
        if not self._asked:
            return []
        if wait_s > 0:
            wait(list(self._asked.values()), timeout=wait_s, return_when=FIRST_COMPLETED)
        done = [topic for topic, future in self._asked.items() if future.done()]
        return [(topic, self._asked.pop(topic).result()) for topic in done]

    def close(self) -> None:
        """Stop asking; a question under way finishes on its own (within ``timeout_s``)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._asked.clear()
