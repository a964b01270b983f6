"""Which version is "the newest" of each model, as the ingest sees it.

The ingest pins every micro-batch to a concrete version before dispatch, so a batch finishes on
the version it started with even if a newer one appears meanwhile, and workers never list the
store on the hot path. The newest versions are re-read from the model store at most every
``refresh_s`` seconds per model.
"""

from __future__ import annotations

import logging
import time

from rayml.errors import ModelStoreError
from rayml.models import ModelStore

logger = logging.getLogger(__name__)


class LatestVersions:
    """A small time-bounded cache of ``model name -> newest complete version``."""

    def __init__(self, store_root: str, refresh_s: float = 1.0) -> None:
        self._store = ModelStore(store_root)
        self._refresh_s = refresh_s
        self._known: dict[str, tuple[str | None, float]] = {}

    def get(self, model: str) -> str | None:
        """The newest version of ``model``, or None if the store has none (yet)."""
        now = time.monotonic()
        cached = self._known.get(model)
        if cached is not None and now - cached[1] < self._refresh_s:
            return cached[0]
        try:
            latest = self._store.latest(model)
        except ModelStoreError as exc:
            logger.warning("cannot read versions of model=%s: %s", model, exc)
            return cached[0] if cached else None
        version = latest.version if latest else None
        self._known[model] = (version, now)
        return version

    def announce(self, model: str, version: str) -> None:
        """Learn of a new version at once (e.g. from an announcement) instead of on refresh."""
        current = self._known.get(model, (None, 0.0))[0]
        if current is None or version > current:
            self._known[model] = (version, time.monotonic())
