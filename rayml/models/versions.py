"""Model versions as plain values: their order, which may be served or pinned, the newest
servable one in a store, a request's pinned version in canonical form, and the workers' cache of
pin verdicts.

Pure (the store's file I/O aside): no Kafka. Which version is *served* is the serving record on
the models topic (:mod:`rayml.models.promotion`), followed by
:mod:`rayml.executor.version_follower`; the store alone answers only for models that have no
record yet, and for a worker asked for a version.

Which versions may be served or pinned:

* a version saved **outside training jobs** (by hand, a fixture, a migration: no
  ``extra.job_id``) is trusted as its writer's choice, as before the promotion gate existed;
* a version saved **by a training job** (``extra.job_id``; a sweep's trials carry
  ``extra.role == "trial"``) only once it is **promoted**: the gate let it through, or
  ``rayml models promote`` did (a ``promoted.json`` marker in the store).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Literal

from rayml.errors import InvalidModelNameError, InvalidRequestError, ModelNotFoundError, RecordError
from rayml.models.store import ModelStore, ModelVersion, validate_version
from rayml.protocol.envelopes import Request

__all__ = [
    "TRIAL_ROLE",
    "PinVerdict",
    "VerdictCache",
    "VersionNotAllowedError",
    "VersionNotFoundError",
    "is_trial",
    "needs_promotion",
    "newest_servable",
    "pin_verdict",
    "pinned_version",
    "version_number",
]

#: ``extra["role"]`` of a sweep trial's version: stored, listed, but not served by default.
TRIAL_ROLE = "trial"

#: A worker's answer for one (model, version): may it run it?
PinVerdict = Literal["allowed", "not_allowed", "not_found"]


class VersionNotFoundError(ModelNotFoundError):
    """Raised when a version asked for (pinned, or served) is not in the model store."""

    type = "version_not_found"


class VersionNotAllowedError(RecordError):
    """Raised when a request pins a version that was never promoted (and settings do not allow
    pinning such versions: ``models.allow_unpromoted_pins``)."""

    type = "version_not_allowed"

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        super().__init__(
            f"model {name!r} version {version!r} was never promoted, so it may not be pinned; "
            f"pin a promoted version or leave model_version out for the served one",
            {"model": name, "version": version},
        )


def version_number(version: str | None) -> int:
    """Order of a version string (``-1`` for ``None``); numbers, not strings, are compared."""
    return -1 if version is None else int(version)


def is_trial(version: ModelVersion) -> bool:
    """Whether ``version`` is a sweep trial (stored, never served unless promoted by hand)."""
    extra = version.metadata.get("extra")
    return isinstance(extra, dict) and extra.get("role") == TRIAL_ROLE


def needs_promotion(version: ModelVersion) -> bool:
    """Whether ``version`` was saved by a training job, so that only a promotion serves it.

    Example:
        >>> needs_promotion(ModelVersion("m", "000001", "/s", {"extra": {"job_id": "j"}}))
        True
        >>> needs_promotion(ModelVersion("m", "000001", "/s", {"extra": {}}))
        False
    """
    extra = version.metadata.get("extra")
    return isinstance(extra, dict) and (extra.get("role") == TRIAL_ROLE or "job_id" in extra)


def newest_servable(
    store: ModelStore, model: str, *, other_than: str | None = None
) -> ModelVersion | None:
    """The newest version of ``model`` the store alone would serve: the newest one saved
    outside training jobs or promoted (what serves a model that has no serving record).

    Reads one metadata file (and one marker) in the common case; walks back only past
    versions that are not promoted. ``other_than``: a version to pass over.
    """
    for version in store.newest_first(model):
        if version.version == other_than:
            continue
        if not needs_promotion(version) or store.promotion(model, version.version) is not None:
            return version
    return None


def pin_verdict(
    store: ModelStore, name: str, version: str, *, allow_unpromoted: bool = False
) -> PinVerdict:
    """May a worker run ``version`` of ``name``? One metadata read, and one marker read for a
    version saved by a training job.

    ``allow_unpromoted`` (``models.allow_unpromoted_pins``): any stored version may run.
    """
    found = store.describe(name, version)
    if found is None:
        return "not_found"
    if allow_unpromoted or not needs_promotion(found):
        return "allowed"
    return "allowed" if store.promotion(name, version) is not None else "not_allowed"


class VerdictCache:
    """A worker's pin verdicts, so that a version costs at most one store read per ``ttl_s``.

    Bounded (least recently used out first). ``allowed`` verdicts stay until pushed out (a
    version is never un-promoted; one deleted is learnt from its failed load); refusals
    (``not_found``, ``not_allowed``) expire after ``ttl_s``, since the version may be stored or
    promoted meanwhile.

    Example:
        >>> cache = VerdictCache(ttl_s=2.0, max_items=2)
        >>> cache.put(("m", "000009"), "not_found", now=0.0)
        >>> cache.get(("m", "000009"), now=1.0), cache.get(("m", "000009"), now=2.5)
        ('not_found', None)
    """

    def __init__(self, ttl_s: float, max_items: int = 4096) -> None:
        if ttl_s <= 0 or max_items < 1:
            raise ValueError("ttl_s and max_items must be positive")
        self.ttl_s = ttl_s
        self.max_items = max_items
        self._items: OrderedDict[Hashable, tuple[PinVerdict, float]] = OrderedDict()

    def get(self, key: Hashable, now: float) -> PinVerdict | None:
        entry = self._items.get(key)
        if entry is None:
            return None
        verdict, expires = entry
        if now >= expires:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return verdict

    def put(self, key: Hashable, verdict: PinVerdict, now: float) -> None:
        expires = float("inf") if verdict == "allowed" else now + self.ttl_s
        self._items[key] = (verdict, expires)
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def pinned_version(request: Request) -> str | None:
    """The request's pinned model version in canonical form ("3" and "000003" are one).

    Raises:
        InvalidRequestError: the version is not a valid one (naming ``model_version``).
    """
    if request.model_version is None:
        return None
    try:
        return validate_version(request.model_version)
    except InvalidModelNameError as exc:
        raise InvalidRequestError(str(exc), {"field": "model_version"}) from exc
