"""What ``rayml rollout status`` and the monitor show of each rollout: the figures per version
(from a :class:`~rayml.rollouts.quality.QualityWindow`), their agreement, what the policy would
decide now, and drift against the reference stored with each version.

Kept apart from :mod:`rayml.rollouts.monitor` (a thread of the executor's driver, which also
exports Prometheus series through Ray): the client and the command line read the figures
without importing Ray.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from rayml.config import Settings
from rayml.errors import InvalidModelNameError, ModelStoreError
from rayml.models.promotion import ServingRecord
from rayml.models.store import ModelStore
from rayml.rollouts.drift import MAX_ROWS, REFERENCE_KEY, DriftReference, DriftWindow
from rayml.rollouts.policy import decide
from rayml.rollouts.quality import QualityWindow
from rayml.rollouts.reading import read_window

logger = logging.getLogger(__name__)

__all__ = ["DriftReferences", "drift_window", "figures", "rollout_status"]

ReferenceOf = Callable[[str, str], DriftReference | None]


def drift_window(settings: Settings) -> DriftWindow:
    """The drift window of ``settings``: ``rollout.window_s``, at most ``MAX_ROWS`` (10,000)
    answers per version (fewer with a smaller ``rollout.max_tracked``)."""
    r = settings.rollout
    return DriftWindow(r.window_s, min(r.max_tracked, MAX_ROWS))


class DriftReferences:
    """Each version's drift reference, from its metadata in the model store (cached).

    Returns ``None`` for a version without one (stored before references were, trained
    outside a training job, or by a pipeline that returned no ``reference_rows``), and for one
    whose reference does not parse. A store that cannot be read is asked again next time.
    """

    _MAX_CACHED = 1024

    def __init__(self, settings: Settings) -> None:
        self._store = ModelStore(settings.models.root, allow_pickle=settings.models.allow_pickle)
        self._cache: dict[tuple[str, str], DriftReference | None] = {}

    def __call__(self, model: str, version: str) -> DriftReference | None:
        key = (model, version)
        if key in self._cache:
            return self._cache[key]
        try:
            found = self._store.describe(model, version)
        except InvalidModelNameError:
            found = None  # no such version can be stored
        except (ModelStoreError, OSError) as exc:
            logger.warning("rollouts: drift reference of %s %s not read: %s", model, version, exc)
            return None
        reference = None
        extra = found.metadata.get("extra") if found is not None else None
        raw = extra.get(REFERENCE_KEY) if isinstance(extra, dict) else None
        if raw is not None:
            try:
                reference = DriftReference.model_validate(raw)
            except ValidationError as exc:
                logger.warning(
                    "rollouts: drift reference of model=%s version=%s is not valid: %s",
                    model,
                    version,
                    exc.errors()[0]["msg"] if exc.errors() else exc,
                )
        if len(self._cache) >= self._MAX_CACHED:
            self._cache.clear()
        self._cache[key] = reference
        return reference


def figures(
    window: QualityWindow,
    record: ServingRecord,
    settings: Settings,
    now_ms: int,
    drift: DriftWindow | None = None,
    reference_of: ReferenceOf | None = None,
) -> dict[str, Any]:
    """What ``rayml rollout status`` shows of one model: its rollout, each version's figures,
    the agreement of the two, what the policy would decide now and, with ``drift`` and
    ``reference_of``, each version's drift (``None``: no reference stored with it)."""
    out: dict[str, Any] = {"model": record.name, "served": record.version}
    rollout = record.rollout
    stats = window.stats(record.name, now_ms)
    out["versions"] = {v: s.as_dict() for v, s in sorted(stats.items())}
    if drift is not None and reference_of is not None:
        shadow = rollout.candidate if rollout is not None and rollout.mode == "shadow" else None
        out["drift"] = {}
        for version in sorted(stats):
            reference = reference_of(record.name, version)
            out["drift"][version] = (
                None
                if reference is None
                else drift.psi(
                    record.name,
                    version,
                    reference,
                    now_ms,
                    inputs_of=record.version if version == shadow else None,
                ).as_dict()
            )
    out["last_action"] = {"action": record.action, "reason": record.reason, "at_ms": record.at_ms}
    if rollout is None:
        out["rollout"] = None
        return out
    out["rollout"] = rollout.model_dump()
    agreement = window.agreement(record.name, record.version, rollout.candidate, now_ms)
    out["agreement"] = agreement.as_dict()
    serving, candidate = stats.get(record.version), stats.get(rollout.candidate)
    decision = decide(serving, candidate, settings.rollout, agreement=agreement)
    need = settings.rollout.min_labels
    out["labels"] = {
        "needed": need,
        "serving": serving.labelled if serving else 0,
        "candidate": candidate.labelled if candidate else 0,
    }
    out["decision"] = None if decision is None else decision.as_dict()
    return out


def rollout_status(
    settings: Settings, model: str | None = None, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """:func:`figures` of each model under rollout (or of ``model``, with or without one),
    drift included, rebuilt from the shadow, feedback and models topics and the model store
    (``rayml rollout status``, ``Client.rollout_status``).

    Raises:
        TimeoutError: The topics were not read to their end within ``timeout_s``.
    """
    drift = drift_window(settings)
    window, records = read_window(settings, timeout_s, drift=drift)
    reference_of = DriftReferences(settings)
    now_ms = int(time.time() * 1000)
    return [
        figures(window, record, settings, now_ms, drift, reference_of)
        for name, record in sorted(records.items())
        if (model is None and record.rollout is not None) or name == model
    ]
