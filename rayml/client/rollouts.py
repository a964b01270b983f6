"""Rollouts changed by hand: start one (shadow or canary), promote its candidate, abort it.

``rayml rollout start|promote|abort`` and :meth:`rayml.Client.start_rollout` (and the others)
use these. As with ``rayml models promote`` (:mod:`rayml.client.promotion`), a change is a new
serving record on the compacted models topic: every executor follows it within about a second,
and only a principal with **Write on the models topic** can make one. The rollout monitor of
each executor (:mod:`rayml.rollouts.monitor`) may promote or abort a rollout by itself, by the
policy in ``[rollout]`` (docs/rollouts.md).

Starting a rollout marks the candidate servable in the model store (as a promotion does: the
workers check every version they are given against that mark), so a version a training job
stored and the gate held back can be tried on live traffic. The mark stays after an abort:
requests may pin that version, as any version once served.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from rayml.client.promotion import promote, serving_records, write_serving_record
from rayml.config import Settings
from rayml.errors import RaymlError
from rayml.models.promotion import ServingRecord, rollout_ended, rollout_started
from rayml.models.store import ModelStore
from rayml.models.versions import VersionNotFoundError, needs_promotion
from rayml.protocol.model_names import validate_model_name, validate_version
from rayml.protocol.rollouts import Rollout, RolloutMode

logger = logging.getLogger(__name__)

__all__ = ["NoRolloutError", "abort_rollout", "promote_rollout", "start_rollout"]


class NoRolloutError(RaymlError):
    """Raised when a model has no rollout under way (to promote or abort)."""


def start_rollout(
    settings: Settings,
    model: str,
    version: str | int,
    mode: RolloutMode,
    *,
    fraction: float | None = None,
    reason: str | None = None,
    timeout_s: float = 30.0,
) -> ServingRecord:
    """Roll ``version`` of ``model`` out beside the served version.

    Args:
        mode: ``"shadow"``: it also runs on a copy of the traffic, its outputs go to the shadow
            topic only; ``"canary"``: it answers ``fraction`` of the requests (chosen by a hash
            of the request id, so a retry lands on the same side).
        fraction: The canary's share, in (0, 1]; not for a shadow.

    Returns:
        The serving record written (or the current one, if this rollout is under way already).

    Raises:
        VersionNotFoundError: No such version in the store.
        RaymlError: Nothing is served yet (promote a first version), the version is the one
            served, another rollout is under way (abort it first), a bad fraction, or the models
            topic could not be read or written.
    """
    model = validate_model_name(model)
    version = validate_version(version)
    if mode == "canary":
        if fraction is None or not 0.0 < fraction <= 1.0:
            raise RaymlError(f"a canary needs a fraction in (0, 1], got {fraction!r}")
    elif fraction is not None:
        raise RaymlError("a shadow answers no caller: it takes no fraction")
    store = ModelStore(settings.models.root, allow_pickle=settings.models.allow_pickle)
    found = store.describe(model, version)
    if found is None:
        raise VersionNotFoundError(model, version)
    current = serving_records(settings, timeout_s).get(model)
    if current is None:
        raise RaymlError(
            f"model {model!r} has no serving record: promote a first version "
            "(`rayml models promote`) before rolling another out beside it"
        )
    if current.version == version:
        raise RaymlError(f"version {version} of model {model!r} is the one served")
    wanted = Rollout(
        candidate=version,
        mode=mode,
        fraction=fraction or 0.0,
        started_at_ms=int(time.time() * 1000),
    )
    if current.rollout is not None:
        r = current.rollout
        if (r.candidate, r.mode, r.fraction) == (wanted.candidate, wanted.mode, wanted.fraction):
            return current
        raise RaymlError(
            f"model {model!r} already has a {r.mode} rollout of version {r.candidate}: "
            "promote or abort it first (`rayml rollout promote|abort`)"
        )
    if needs_promotion(found) and store.promotion(model, version) is None:
        store.mark_promoted(
            model,
            version,
            {
                "at": dt.datetime.now(dt.UTC).isoformat(),
                "by": f"rayml rollout start --mode {mode}",
                "reason": reason or "rolled out",
            },
        )
        # As for a promotion: a worker that refused this version remembers it this long.
        time.sleep(settings.models.version_check_ttl_s)
    why = reason or (
        f"{mode} of {version} started by hand"
        + (f" at {wanted.fraction:g} of requests" if mode == "canary" else "")
    )
    record = rollout_started(current, wanted, why)
    write_serving_record(settings, record, timeout_s)
    logger.info("model=%s %s rollout of %s started", model, mode, version)
    return record


def promote_rollout(
    settings: Settings, model: str, *, reason: str | None = None, timeout_s: float = 30.0
) -> ServingRecord:
    """Serve the rollout's candidate from now on (the rollout ends).

    Raises:
        NoRolloutError: No rollout is under way for ``model``.
    """
    current = _under_rollout(settings, model, timeout_s)
    assert current.rollout is not None
    r = current.rollout
    return promote(
        settings,
        model,
        r.candidate,
        reason=reason or f"{r.mode} rollout of {r.candidate} promoted by hand",
        timeout_s=timeout_s,
    )


def abort_rollout(
    settings: Settings, model: str, *, reason: str | None = None, timeout_s: float = 30.0
) -> ServingRecord:
    """End the rollout; the served version stays.

    Raises:
        NoRolloutError: No rollout is under way for ``model``.
    """
    current = _under_rollout(settings, model, timeout_s)
    assert current.rollout is not None
    r = current.rollout
    record = rollout_ended(current, reason or f"{r.mode} rollout of {r.candidate} aborted by hand")
    write_serving_record(settings, record, timeout_s)
    logger.info("model=%s rollout of %s aborted", model, r.candidate)
    return record


def _under_rollout(settings: Settings, model: str, timeout_s: float) -> ServingRecord:
    model = validate_model_name(model)
    current = serving_records(settings, timeout_s).get(model)
    if current is None or current.rollout is None:
        raise NoRolloutError(f"model {model!r} has no rollout under way")
    return current
