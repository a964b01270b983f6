"""Model versions as plain values: their order, which are sweep trials, the newest servable one
in a store, and a request's pinned version in canonical form.

Pure (the store's file I/O aside): no Kafka. The follower of the models topic, which tells the
ingest the newest version of each model, is :mod:`rayml.executor.version_follower`.
"""

from __future__ import annotations

from rayml.errors import InvalidModelNameError, InvalidRequestError
from rayml.models.store import ModelStore, ModelVersion, validate_version
from rayml.protocol.envelopes import Request

__all__ = ["TRIAL_ROLE", "is_trial", "newest_servable", "pinned_version", "version_number"]

#: ``extra["role"]`` of a sweep trial's version: stored, listed, but not served by default.
TRIAL_ROLE = "trial"


def version_number(version: str | None) -> int:
    """Order of a version string (``-1`` for ``None``); numbers, not strings, are compared."""
    return -1 if version is None else int(version)


def is_trial(version: ModelVersion) -> bool:
    """Whether ``version`` is an unpromoted sweep trial."""
    extra = version.metadata.get("extra")
    return isinstance(extra, dict) and extra.get("role") == TRIAL_ROLE


def newest_servable(store: ModelStore, model: str) -> ModelVersion | None:
    """The newest complete version of ``model`` that is not an unpromoted sweep trial.

    Reads one metadata file in the common case; walks back only past trial versions.
    """
    latest = store.latest(model)
    if latest is None or not is_trial(latest):
        return latest
    for version in reversed(store.versions(model)):
        if not is_trial(version):
            return version
    return None


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
