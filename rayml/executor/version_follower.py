"""Which version is "the newest" of each model, as the ingest sees it: a follower of the
models topic.

The ingest pins every micro-batch to a concrete version before dispatch, so a batch finishes on
the version it started with even if a newer one appears meanwhile, and workers never list the
store on the hot path. :meth:`LatestVersions.get` is therefore a plain dict lookup; a background
thread keeps the dict fresh from two sources:

* **Announcements** on the compacted models topic (``settings.topics.models``): the thread is
  assigned every partition from the beginning, with no consumer group, so it learns each
  model's newest announced version at start (also after a restart) and every new one within
  milliseconds of its announcement.
* **The store**, every ``refresh_s`` for each model asked about: a fallback for versions saved
  without an announcement (a model copied in by hand, a test fixture, a broker that was away).
  Versions marked as unpromoted sweep trials (``extra.role == "trial"``) are skipped: a sweep
  stores every trial, but only the promoted copy of the best one is meant to be served.

The newest of the two wins (by version number). Only the first ``get`` of a model reads the
store on the caller's thread; every later one is answered from memory.

Example:
    >>> import tempfile
    >>> versions = LatestVersions(tempfile.mkdtemp())   # store only, no announcements
    >>> versions.get("iris") is None
    True
    >>> versions.announce("iris", "000002")
    >>> versions.get("iris")
    '000002'
    >>> versions.close()
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from rayml.config import KafkaSettings, Settings
from rayml.errors import InvalidModelNameError, ModelStoreError
from rayml.kafka import clients as kafka_clients
from rayml.models.store import ModelStore, validate_model_name, validate_version
from rayml.models.versions import newest_servable, version_number
from rayml.protocol.training import decode_announcement

logger = logging.getLogger(__name__)

__all__ = ["LatestVersions"]

# How often the listener looks for partitions added to the models topic (or the topic itself).
_METADATA_RECHECK_S = 30.0


class LatestVersions:
    """``model name -> newest servable version``, kept fresh by a background thread.

    Args:
        source: The settings (store root, Kafka, models topic), or just a store root to use
            the store alone (no announcements).
        refresh_s: How often the store is re-read for each model asked about.
        listen: Whether to consume announcements (needs ``source`` to be settings).
    """

    def __init__(self, source: Settings | str, refresh_s: float = 1.0, *, listen: bool = True):
        if isinstance(source, str):
            root, kafka, topic = source, None, None
        else:
            root, kafka, topic = source.models.root, source.kafka, source.topics.models
        self._store = ModelStore(root)
        self._refresh_s = refresh_s
        self._kafka: KafkaSettings | None = kafka if listen else None
        self._topic = topic
        self._lock = threading.Lock()
        self._known: dict[str, str | None] = {}  # what get() answers
        self._announced: dict[str, str] = {}
        self._stored: dict[str, str | None] = {}
        self.announcements = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latest-versions", daemon=True)
        self._thread.start()

    # -- reading (any thread) -------------------------------------------------------------------

    def get(self, model: str) -> str | None:
        """The newest servable version of ``model``, or ``None`` if there is none (yet)."""
        try:
            return self._known[model]
        except KeyError:
            return self._first_look(model)

    def announce(self, model: str, version: str) -> None:
        """Learn of a new version at once (what the announcement listener calls)."""
        with self._lock:
            current = self._announced.get(model)
            if version_number(version) > version_number(current):
                self._announced[model] = version
            # Watch the store for this model too (versions saved without an announcement).
            self._stored.setdefault(model, None)
            self._settle(model)

    def snapshot(self) -> dict[str, str | None]:
        """A copy of what :meth:`get` answers now, for status and tests."""
        return dict(self._known)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the background thread (and its consumer)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    # -- internals ------------------------------------------------------------------------------

    def _first_look(self, model: str) -> str | None:
        # Once per model: later reads come from the dict, refreshed by the thread.
        self._refresh_from_store(model)
        with self._lock:
            if model not in self._known:
                self._settle(model)
            return self._known[model]

    def _settle(self, model: str) -> None:
        # Call with the lock held.
        announced = self._announced.get(model)
        stored = self._stored.get(model)
        self._known[model] = (
            announced if version_number(announced) >= version_number(stored) else stored
        )

    def _refresh_from_store(self, model: str) -> None:
        try:
            found = newest_servable(self._store, model)
        except (ModelStoreError, OSError) as exc:
            # An unreadable store keeps the last known answer rather than forgetting it.
            logger.warning("cannot read versions of model=%s: %s", model, exc)
            if model in self._stored:
                return
            found = None
        with self._lock:
            self._stored[model] = found.version if found else None
            self._settle(model)

    def _run(self) -> None:
        consumer: Any = None
        assigned: set[int] = set()
        next_refresh = time.monotonic() + self._refresh_s
        next_metadata = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if self._kafka is not None and now >= next_metadata:
                    next_metadata = now + _METADATA_RECHECK_S
                    consumer = consumer or self._consumer()
                    self._assign_new_partitions(consumer, assigned)
                if consumer is not None and assigned:
                    self._consume(consumer)
                else:
                    self._stop.wait(min(0.2, self._refresh_s))
                if time.monotonic() >= next_refresh:
                    next_refresh = time.monotonic() + self._refresh_s
                    for model in list(self._stored):
                        self._refresh_from_store(model)
        except Exception:
            # Announcements are an accelerator; the store refresh in get()'s first look and the
            # ingest's pinned versions keep serving. Log loudly and keep the process alive.
            logger.exception("model version listener stopped")
        finally:
            if consumer is not None:
                consumer.close()

    def _consumer(self) -> Any:
        assert self._kafka is not None
        # A throwaway group id: librdkafka wants one, but the listener only uses assign() and
        # never commits, so no group is joined and every start reads the topic from the start.
        return kafka_clients.consumer(
            self._kafka,
            f"rayml-versions-{uuid.uuid4().hex[:12]}",
            **{"fetch.wait.max.ms": 100, "enable.partition.eof": False},
        )

    def _assign_new_partitions(self, consumer: Any, assigned: set[int]) -> None:
        assert self._topic is not None
        try:
            meta = consumer.list_topics(self._topic, timeout=5)
        except Exception as exc:  # KafkaException: broker away; try again later
            logger.warning("cannot read metadata of %s: %s", self._topic, exc)
            return
        topic = meta.topics.get(self._topic)
        if topic is None or topic.error is not None:
            logger.info("models topic %s not available yet", self._topic)
            return
        new = sorted(set(topic.partitions) - assigned)
        if new:
            consumer.incremental_assign(
                [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in new]
            )
            assigned.update(new)

    def _consume(self, consumer: Any) -> None:
        for msg in consumer.consume(500, timeout=0.2):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    logger.warning("models topic consumer error: %s", err)
                continue
            announcement = decode_announcement(msg.value())
            if announcement is None:
                continue  # a tombstone or a record that is not ours
            try:
                name = validate_model_name(announcement.name)
                version = validate_version(announcement.version)
            except InvalidModelNameError:
                logger.warning("ignoring announcement with a bad name or version: %r", msg.value())
                continue
            self.announcements += 1
            self.announce(name, version)
