"""Which version of a model is served: the serving record, the promotion gate, retention.

Pure: pydantic and plain values, no Kafka, no store I/O. The I/O around these rules lives with
their callers: the job runner's gate (:mod:`rayml.training.gate`), the follower of the models
topic (:mod:`rayml.training.serving`), ``rayml models promote|rollback|gc``
(:mod:`rayml.client.promotion`, :mod:`rayml.cli.training`).

**The serving record** is the value on the compacted models topic, key = model name, so the
topic keeps the newest one per model and every executor that starts reads it from the
beginning. It is a superset of the older model announcement (``name``, ``version``,
``metrics``...), where ``version`` is the version *served*; old readers keep working::

    {"v": 1, "name": "iris", "version": "000007", "metrics": {"accuracy": 0.97},
     "created_at": "...", "pipeline": "iris.train", "job_id": "job-7", "promoted_from": null,
     "previous": ["000002", "000005"], "action": "trained",
     "reason": "metric accuracy 0.97 >= 0.95 of served version 000005", "at_ms": 1764150000000}

``previous`` lists the versions served before, oldest first: ``rollback`` serves the last of
them and drops it from the list. ``retired`` lists the versions rolled back away from: the gate
never serves one of them again (a training job answered again from the store included); only
``rayml models promote`` does, which takes it off the list. Every record holds the whole state,
so the last one per key is all a reader needs; writers read the current record and write the
next (last writer wins: two promotions of one model at the same instant keep only one of the
two histories).

**Promoted** versions are marked in the model store as well (``promoted.json`` in the version's
directory, :meth:`rayml.models.store.ModelStore.mark_promoted`), written before the serving
record, so a worker that is asked for a version can tell from the store alone whether it may
serve it (:mod:`rayml.models.versions`).

Example:
    >>> served_now = ("000003", {"accuracy": 0.93})
    >>> d = decide("metric", "accuracy", "max", 0.01, {"accuracy": 0.91}, served_now)
    >>> d.promoted, d.reason
    (False, 'metric accuracy 0.91 < 0.93 - 0.01 of served version 000003: stored, not served')
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rayml.errors import RaymlError
from rayml.protocol.rollouts import Rollout

__all__ = [
    "MAX_PREVIOUS",
    "Decision",
    "NothingToRollBackError",
    "ServingAction",
    "ServingRecord",
    "decide",
    "decode_serving",
    "encode_serving",
    "retention_plan",
    "rolled_back",
    "rollout_ended",
    "rollout_started",
    "served",
]

#: Versions kept in a serving record's ``previous`` (older ones cannot be rolled back to).
MAX_PREVIOUS = 100

ServingAction = Literal[
    "trained", "promoted", "rolled_back", "announced", "rollout_started", "rollout_aborted"
]


class ServingRecord(BaseModel):
    """The served version of one model and the versions served before it (key = ``name``)."""

    model_config = ConfigDict(extra="ignore", frozen=True, title="rayml serving record")

    v: Literal[1] = 1
    name: str = Field(min_length=1)
    version: str = Field(min_length=1, description="The version served.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Its metrics.")
    created_at: str | None = None
    pipeline: str | None = None
    job_id: str | None = Field(default=None, description="The training job that stored it.")
    promoted_from: str | None = Field(
        default=None, description="For a sweep: the best trial's version this one copies."
    )
    previous: list[str] = Field(
        default_factory=list, description="Versions served before, oldest first."
    )
    retired: list[str] = Field(
        default_factory=list,
        description="Versions rolled back away from, oldest first: the gate never serves them "
        "again (only `rayml models promote` does).",
    )
    # "announced": a record of an older rayml, which served every new version.
    action: ServingAction = "announced"
    reason: str | None = Field(default=None, description="Why this version is served.")
    at_ms: int | None = Field(default=None, description="When, epoch milliseconds.")
    rollout: Rollout | None = Field(
        default=None,
        description="A candidate version being rolled out beside the served one (shadow or "
        "canary); a record that serves another version ends it (docs/rollouts.md).",
    )


def encode_serving(record: ServingRecord) -> bytes:
    """Serialise a serving record as compact JSON (absent fields left out)."""
    return record.model_dump_json(exclude_none=True).encode()


def decode_serving(raw: bytes | None) -> ServingRecord | None:
    """Parse a serving record (or an older announcement); ``None`` for a tombstone or junk.

    Example:
        >>> decode_serving(b'{"name": "iris", "version": "000002"}').previous
        []
        >>> decode_serving(b"nope") is None, decode_serving(None) is None
        (True, True)
    """
    if not raw:
        return None
    try:
        return ServingRecord.model_validate_json(raw)
    except ValidationError:
        return None


# --- the gate ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Whether a new version is served, and why (the training result's ``promotion``)."""

    promoted: bool
    reason: str


def decide(
    policy: Literal["metric", "manual"],
    metric: str | None,
    mode: Literal["max", "min"],
    tolerance: float,
    candidate: Mapping[str, float],
    serving: tuple[str, Mapping[str, float]] | None,
) -> Decision:
    """The promotion gate: is a newly trained version served instead of ``serving``?

    Args:
        policy: ``"metric"`` (compare) or ``"manual"`` (never by itself).
        metric: The pipeline's metric (``@training(metric=...)``), or ``None``.
        mode: ``"max"`` or ``"min"``: the direction in which ``metric`` improves.
        tolerance: How much worse (in the metric's units) the new version may be.
        candidate: The new version's metrics.
        serving: The served version and its metrics, or ``None`` if nothing is served.

    The gate fails closed: ``manual`` holds even a model's first version until someone
    promotes it; a version without a finite value of the metric, or a served version without
    one to compare with, is stored, not served.

    Example:
        >>> decide("metric", "acc", "max", 0.0, {"acc": 0.5}, None).reason
        'the first version of the model: nothing to compare'
        >>> decide("manual", "acc", "max", 0.0, {"acc": 1.0}, None).promoted
        False
        >>> decide("metric", "loss", "min", 0.0, {"loss": 0.2}, ("000001", {"loss": 0.3})).promoted
        True
    """
    if policy == "manual":
        held = f"version {serving[0]} stays served" if serving else "nothing is served"
        return Decision(
            False,
            f"promotion is manual for this model: stored, not served ({held} until "
            "`rayml models promote`)",
        )
    if serving is None:
        return Decision(True, "the first version of the model: nothing to compare")
    served_version, served_metrics = serving
    if metric is None:
        return Decision(
            False,
            "the pipeline declares no metric to compare (@training(metric=..., mode=...)): "
            "stored, not served",
        )
    value = candidate.get(metric)
    if value is None or not math.isfinite(value):
        return Decision(
            False, f"the new version has no finite value of metric {metric}: not served"
        )
    baseline = served_metrics.get(metric)
    if baseline is None or not math.isfinite(baseline):
        return Decision(
            False,
            f"served version {served_version} has no value of metric {metric} to compare "
            "with: stored, not served (`rayml models promote` decides)",
        )
    if mode == "max":
        ok = value >= baseline - tolerance
        bound = f"{baseline:.4g} - {tolerance:.4g}" if tolerance else f"{baseline:.4g}"
        sign = ">=" if ok else "<"
    else:
        ok = value <= baseline + tolerance
        bound = f"{baseline:.4g} + {tolerance:.4g}" if tolerance else f"{baseline:.4g}"
        sign = "<=" if ok else ">"
    reason = f"metric {metric} {value:.4g} {sign} {bound} of served version {served_version}"
    return Decision(ok, reason if ok else f"{reason}: stored, not served")


# --- serving records ---------------------------------------------------------------------------


def served(
    current: ServingRecord | None,
    *,
    name: str,
    version: str,
    metrics: Mapping[str, float],
    action: ServingAction,
    reason: str,
    fallback: str | None = None,
    created_at: str | None = None,
    pipeline: str | None = None,
    job_id: str | None = None,
    promoted_from: str | None = None,
    at_ms: int | None = None,
) -> ServingRecord:
    """The record that serves ``version`` next, after ``current``.

    The version served now (``current.version``, else ``fallback``: what the store alone
    serves when no record exists yet) joins ``previous``, so ``rollback`` comes back to it.

    Example:
        >>> first = served(None, name="m", version="000002", metrics={}, action="trained",
        ...                reason="r", fallback="000001")
        >>> served(first, name="m", version="000004", metrics={}, action="promoted",
        ...        reason="r").previous
        ['000001', '000002']
    """
    if current is not None:
        history = [*current.previous, current.version]
    else:
        history = [fallback] if fallback is not None else []
    history = [v for v in history if v != version][-MAX_PREVIOUS:]
    retired = [v for v in current.retired if v != version] if current is not None else []
    return ServingRecord(
        name=name,
        version=version,
        metrics=dict(metrics),
        created_at=created_at,
        pipeline=pipeline,
        job_id=job_id,
        promoted_from=promoted_from,
        previous=history,
        retired=retired,
        action=action,
        reason=reason,
        at_ms=int(time.time() * 1000) if at_ms is None else at_ms,
    )


def rollout_started(
    current: ServingRecord, rollout: Rollout, reason: str, *, at_ms: int | None = None
) -> ServingRecord:
    """``current`` with ``rollout`` under way (the served version unchanged).

    Example:
        >>> rec = ServingRecord(name="m", version="000003")
        >>> r = Rollout(candidate="000004", mode="canary", fraction=0.2, started_at_ms=1)
        >>> nxt = rollout_started(rec, r, "by hand", at_ms=2)
        >>> nxt.version, nxt.rollout.candidate, nxt.action
        ('000003', '000004', 'rollout_started')
    """
    return current.model_copy(
        update={
            "rollout": rollout,
            "action": "rollout_started",
            "reason": reason,
            "at_ms": int(time.time() * 1000) if at_ms is None else at_ms,
        }
    )


def rollout_ended(
    current: ServingRecord, reason: str, *, at_ms: int | None = None
) -> ServingRecord:
    """``current`` without its rollout: aborted, the served version unchanged. (A promoted
    candidate is served by :func:`served` instead, which ends the rollout too.)"""
    return current.model_copy(
        update={
            "rollout": None,
            "action": "rollout_aborted",
            "reason": reason,
            "at_ms": int(time.time() * 1000) if at_ms is None else at_ms,
        }
    )


class NothingToRollBackError(RaymlError):
    """Raised when a model has no earlier served version that is still in the store."""

    def __init__(self, name: str, why: str) -> None:
        self.name = name
        super().__init__(f"cannot roll back model {name!r}: {why}")


def rolled_back(
    current: ServingRecord,
    exists: Mapping[str, Mapping[str, float]] | None = None,
    *,
    at_ms: int | None = None,
) -> ServingRecord:
    """The record that serves the version served before ``current.version`` again.

    Args:
        current: The model's serving record.
        exists: The metrics of each version still in the store (keyed by version); earlier
            versions that were deleted are skipped. ``None``: take them all as present.

    Raises:
        NothingToRollBackError: No earlier version is left.

    Example:
        >>> rec = ServingRecord(name="m", version="000005", previous=["000001", "000003"])
        >>> back = rolled_back(rec, {"000001": {}, "000003": {"acc": 0.9}})
        >>> back.version, back.previous, back.metrics, back.reason
        ('000003', ['000001'], {'acc': 0.9}, 'rolled back from 000005')
        >>> back.retired
        ['000005']
    """
    history = list(current.previous)
    while history:
        target = history.pop()
        if exists is None or target in exists:
            metrics = dict(exists[target]) if exists is not None else {}
            return ServingRecord(
                name=current.name,
                version=target,
                metrics=metrics,
                previous=history,
                retired=[
                    *[v for v in current.retired if v not in (current.version, target)],
                    current.version,
                ][-MAX_PREVIOUS:],
                action="rolled_back",
                reason=f"rolled back from {current.version}",
                at_ms=int(time.time() * 1000) if at_ms is None else at_ms,
            )
    raise NothingToRollBackError(
        current.name, f"no version served before {current.version} is left in the store"
    )


# --- retention ---------------------------------------------------------------------------------


def retention_plan(versions: Iterable[str], keep_last: int, keep: Iterable[str]) -> list[str]:
    """The versions ``rayml models gc`` deletes: all but the newest ``keep_last`` and ``keep``.

    Args:
        versions: The model's versions (any order; zero-padded strings).
        keep_last: How many of the newest to keep.
        keep: Versions kept whatever their age (promoted, served, served before).

    Example:
        >>> retention_plan(["000001", "000002", "000003", "000004", "000005"], 2, ["000001"])
        ['000002', '000003']
    """
    ordered = sorted(set(versions), key=int)
    newest = set(ordered[-keep_last:]) if keep_last > 0 else set()
    kept = newest | set(keep)
    return [v for v in ordered if v not in kept]
