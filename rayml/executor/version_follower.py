"""Which version of each model is served, as the ingest sees it: a follower of the models
topic, with the store as the fallback for models that have no serving record.

The ingest pins every micro-batch to a concrete version before dispatch, so a batch finishes on
the version it started with even if another is served meanwhile, and workers never list the
store on the hot path. :meth:`LatestVersions.get` is therefore a plain dict lookup; a background
thread (a :class:`~rayml.training.serving.ServingState`) keeps the dict fresh from two sources:

* **Serving records** on the compacted models topic (``settings.topics.models``, see
  :mod:`rayml.models.promotion`): read from the beginning at start (also after a restart), and
  each new one within about 0.1 s of its write. A model with a record is served at exactly the
  record's version: a promotion, and a rollback to an older version, take effect at once.
* **The store**, every ``refresh_s`` for each model asked about that has *no* record: the
  newest version saved outside training jobs, or promoted
  (:func:`rayml.models.versions.newest_servable`): a model copied in by hand, a test fixture, a
  store whose topic was lost. A version a training job stored is never served from here unless
  it was promoted; a sweep's trials never.

Only the first ``get`` of a model reads the store on the caller's thread; every later one is
answered from memory.

Example:
    >>> import tempfile
    >>> versions = LatestVersions(tempfile.mkdtemp())   # store only, no topic
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

from rayml.config import Settings
from rayml.errors import ModelStoreError
from rayml.models.promotion import ServingRecord
from rayml.models.store import ModelStore
from rayml.models.versions import newest_servable
from rayml.protocol.rollouts import Rollout
from rayml.training.serving import ServingState

logger = logging.getLogger(__name__)

__all__ = ["LatestVersions"]


class LatestVersions:
    """``model name -> served version``, kept fresh by a background thread.

    Args:
        source: The settings (store root, Kafka, models topic), or just a store root to use
            the store alone (no serving records).
        refresh_s: How often the store is re-read for each model asked about without a record.
        listen: Whether to follow the models topic (needs ``source`` to be settings).
    """

    def __init__(self, source: Settings | str, refresh_s: float = 1.0, *, listen: bool = True):
        if isinstance(source, str):
            root, kafka, topic = source, None, None
        else:
            root, kafka, topic = source.models.root, source.kafka, source.topics.models
        self._store = ModelStore(root)
        self._lock = threading.Lock()
        self._known: dict[str, str | None] = {}  # what get() answers
        # The models under rollout and their rollout (replaced whole, never mutated: the loop
        # thread reads it without the lock).
        self.rollouts: dict[str, Rollout] = {}
        self._stored: dict[str, str | None] = {}  # the store's answer, for models asked about
        self._state = ServingState(
            kafka if listen else None,
            topic,
            on_record=self._settle,
            on_tick=self._refresh,
            tick_s=refresh_s,
            start=False,
        )
        self._state.start()  # its callbacks use the attributes above

    # -- reading (any thread) -------------------------------------------------------------------

    def get(self, model: str) -> str | None:
        """The served version of ``model``, or ``None`` if there is none (yet)."""
        try:
            return self._known[model]
        except KeyError:
            return self._first_look(model)

    def announce(self, model: str, version: str) -> None:
        """Serve ``version`` of ``model`` from now on, as a serving record saying so would."""
        self._state.apply(ServingRecord(name=model, version=version))

    def record(self, model: str) -> ServingRecord | None:
        """``model``'s serving record, if one was read."""
        return self._state.get(model)

    @property
    def records_read(self) -> int:
        """Serving records read from the models topic so far."""
        return self._state.records_read

    def snapshot(self) -> dict[str, str | None]:
        """A copy of what :meth:`get` answers now, for status and tests."""
        return dict(self._known)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the background thread (and its consumer)."""
        self._state.close(timeout_s)

    # -- internals ------------------------------------------------------------------------------

    def _first_look(self, model: str) -> str | None:
        # Once per model: later reads come from the dict, refreshed by the thread.
        if self._state.get(model) is None:
            self._refresh_from_store(model)
        self._settle(model)
        return self._known[model]

    def _settle(self, model: str) -> None:
        record = self._state.get(model)
        with self._lock:
            rollout = record.rollout if record is not None else None
            if record is not None and rollout is not None and rollout.candidate != record.version:
                self.rollouts = {**self.rollouts, model: rollout}
            elif model in self.rollouts:
                self.rollouts = {m: r for m, r in self.rollouts.items() if m != model}
            if record is not None:
                self._known[model] = record.version
                return
            # No record (or a tombstone): the store answers, refreshed from now on.
            self._stored.setdefault(model, None)
            self._known[model] = self._stored[model]

    def _refresh(self) -> None:
        for model in list(self._stored):
            if self._state.get(model) is None:
                self._refresh_from_store(model)
                self._settle(model)

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
