"""The promotion gate, where the job runner answers a training job: is its version served?

Every trained version is stored. It is **served** only if the policy allows
(``settings.promotion``, rules in :func:`rayml.models.promotion.decide`): by default when its
held-out metric is no worse than the served version's (the pipeline's
``@training(metric=..., mode=...)``, ``promotion.tolerance``), never by itself with ``manual``
(until ``rayml models promote``); the first version of a model always. The served version is
the model's serving record on the models topic, read by a
:class:`~rayml.training.serving.ServingState`; a model with no record yet is compared with what
the store alone serves (:func:`rayml.models.versions.newest_servable`), which the record then
lists as served before, so ``rollback`` comes back to it.

A version let through is marked promoted in the store *first* (workers check pins there), then
its serving record is written by :class:`~rayml.training.publish.JobPublisher` with the result.

A version rolled back away from (the serving record's ``retired``) or served before and
replaced (``previous``) is never served again by the gate; only ``rayml models promote`` does.

A job answered again from the store (after a crash, an aborted transaction, or a request that
replays the job id with the same tenant, pipeline and params: :func:`~rayml.training.task.find_job`)
is **not judged again**: it is answered with the first decision as the store and the serving
record keep it. A version marked promoted (the first decision served it) is served if the
record does not list it yet (the crash came before the record was written), and is left as it
is if it is served; one not marked promoted was not served the first time, and is not now
(``rayml models promote`` serves it). So a version whose first judgement was lost to a crash
stays stored, not served: the gate fails closed.

Example:
    >>> from rayml.config import Settings
    >>> from rayml.training.serving import ServingState
    >>> import tempfile
    >>> settings = Settings(models={"root": tempfile.mkdtemp()})
    >>> gate = PromotionGate(settings, ServingState(None, None))
    >>> gate.wait_s
    10.0
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from rayml.config import Settings
from rayml.errors import ModelStoreError
from rayml.models.promotion import Decision, ServingRecord, decide, served
from rayml.models.store import ModelStore
from rayml.models.versions import newest_servable
from rayml.pipeline import PipelineSpec
from rayml.training.serving import ServingSource
from rayml.training.task import TrialOutcome

logger = logging.getLogger(__name__)

__all__ = ["PromotionGate", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """The gate's answer for one trained version.

    Attributes:
        promoted: Whether it is served (the result's ``promoted``).
        reason: Why (the result's ``promotion``).
        record: The serving record to write, or ``None`` (not promoted, or already served).
    """

    promoted: bool
    reason: str
    record: ServingRecord | None = None


class PromotionGate:
    """Judges trained versions against the served ones. Use from the runner's loop thread.

    Args:
        settings: ``promotion`` (policy, tolerance), the store, the models topic.
        serving: The serving records (a :class:`~rayml.training.serving.ServingState`).
        wait_s: How long the first judgement may wait for the records to be read.
    """

    def __init__(self, settings: Settings, serving: ServingSource, wait_s: float = 10.0) -> None:
        self.settings = settings
        self.serving = serving
        self.wait_s = wait_s
        self.store = ModelStore(settings.models.root, allow_pickle=settings.models.allow_pickle)

    def judge(
        self,
        spec: PipelineSpec,
        outcome: TrialOutcome,
        job_id: str,
        promoted_from: str | None,
        *,
        reused: bool = False,
    ) -> Verdict:
        """Decide whether ``outcome``'s version is served; mark it promoted in the store if so.

        ``reused``: the job was answered from the store; its first decision stands (see the
        module docstring).
        """
        model, version = spec.model, outcome.version
        not_served = f"version {version} is stored, not served"
        if not self.serving.wait_caught_up(self.wait_s):
            return Verdict(
                False,
                f"the serving state on {self.settings.topics.models} could not be read within "
                f"{self.wait_s:g}s: {not_served} (`rayml models promote {model} {version}`)",
            )
        current = self.serving.get(model)
        if current is not None and current.version == version:
            return Verdict(True, f"already served: {current.reason or current.action}")
        if current is not None and version in current.retired:
            return Verdict(
                False, f"rolled back before: {not_served} (only `rayml models promote` serves it)"
            )
        if current is not None and version in current.previous:
            return Verdict(
                False, f"served before and replaced: {not_served} (promote it by hand again)"
            )
        first: dict[str, object] | None = None
        if reused:
            try:
                first = self.store.promotion(model, version)
            except (ModelStoreError, OSError) as exc:
                logger.warning("cannot read the promotion of model=%s: %s", model, exc)
                return Verdict(False, f"the model store could not be read: {not_served}")
            if first is None:
                return Verdict(
                    False,
                    f"answered from the store: it was not promoted when the job was first "
                    f"answered: {not_served} (`rayml models promote {model} {version}`)",
                )
        fallback: str | None = None
        try:
            if current is not None:
                baseline: tuple[str, dict[str, float]] | None = (current.version, current.metrics)
            else:
                # Passing over this version: an earlier attempt may have marked it already.
                found = newest_servable(self.store, model, other_than=version)
                baseline = (found.version, found.metrics) if found is not None else None
                fallback = found.version if found is not None else None
        except (ModelStoreError, OSError) as exc:
            logger.warning("cannot read the served version of model=%s: %s", model, exc)
            return Verdict(False, f"the model store could not be read: {not_served}")
        promotion = self.settings.promotion
        if first is not None:
            # Promoted the first time; the serving record was not written then.
            why = first.get("reason")
            decision = Decision(True, why if isinstance(why, str) else "promoted when trained")
        else:
            decision = decide(
                promotion.policy(model),
                spec.metric,
                spec.mode,
                promotion.tolerance,
                outcome.metrics,
                baseline,
            )
        if not decision.promoted:
            return Verdict(False, decision.reason)
        try:
            self.store.mark_promoted(
                model,
                version,
                {
                    "at": dt.datetime.now(dt.UTC).isoformat(),
                    "by": "gate",
                    "job_id": job_id,
                    "reason": decision.reason,
                },
            )
        except (ModelStoreError, OSError) as exc:
            logger.warning("cannot mark model=%s version=%s promoted: %s", model, version, exc)
            return Verdict(
                False, f"{decision.reason}, but marking it promoted failed: {not_served}"
            )
        record = served(
            current,
            name=model,
            version=version,
            metrics=outcome.metrics,
            action="trained",
            reason=decision.reason,
            fallback=fallback,
            created_at=outcome.created_at,
            pipeline=spec.name,
            job_id=job_id,
            promoted_from=promoted_from,
        )
        return Verdict(True, decision.reason, record)
