"""Whether a rollout's candidate is promoted or aborted, from the figures of the two versions.

The rule is :class:`rayml.config.RolloutSettings`'. Nothing is decided until the serving version
and the candidate each have ``min_labels`` labelled answers (:mod:`rayml.rollouts.quality`
counts them). Then the candidate is promoted when all of these hold, and aborted otherwise:

* accuracy: ``candidate >= serving - tolerance``;
* error rate: ``candidate <= serving + max_error_rate_increase``;
* p99 compute time: ``candidate <= max_p99_ratio x serving``, when both versions have one (a
  version without compute times is not held back by them).

Rates are compared to within 1e-9, so float rounding (``0.8 - 0.1`` is not ``0.7``) never
decides. The reason names every figure compared, with the sign that held, so the record on the
models topic says why. Pure: plain values.

Example:
    >>> from rayml.config import RolloutSettings
    >>> from rayml.rollouts.quality import VersionStats
    >>> def stats(version, correct, errors, p99):
    ...     return VersionStats(version, frozenset({"serving"}), 200 + errors, errors,
    ...         errors / (200 + errors), 200, correct, correct / 200, 1.0, p99)
    >>> serving, candidate = stats("000003", 182, 0, 2.9), stats("000004", 190, 0, 3.1)
    >>> decide(serving, candidate, RolloutSettings(min_labels=200))
    RolloutDecision(action='promote', reason='accuracy 0.95 >= 0.91 - 0 of serving 000003; \
error rate 0 <= 0 + 0.01; p99 3.1 ms <= 2 x 2.9 ms')
    >>> decide(serving, candidate, RolloutSettings(min_labels=201)) is None
    True
    >>> progress(serving, candidate, RolloutSettings(min_labels=201))
    'serving 200/201 labels, candidate 200/201 labels'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from rayml.config import RolloutSettings
from rayml.rollouts.quality import Agreement, VersionStats

__all__ = ["RolloutAction", "RolloutDecision", "decide", "progress"]

RolloutAction = Literal["promote", "abort"]

_SLACK: Final = 1e-9


@dataclass(frozen=True)
class RolloutDecision:
    """Promote or abort the candidate, and why."""

    action: RolloutAction
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    serving: VersionStats | None,
    candidate: VersionStats | None,
    settings: RolloutSettings,
    *,
    agreement: Agreement | None = None,
) -> RolloutDecision | None:
    """The policy's decision on ``candidate`` against ``serving``, or ``None`` to wait.

    Args:
        serving: The serving version's figures (``None``: none yet).
        candidate: The candidate's figures (``None``: none yet).
        settings: ``rollout.*``: ``min_labels``, ``tolerance``, ``max_error_rate_increase``,
            ``max_p99_ratio``.
        agreement: The two versions' agreement, only quoted at the end of the reason (shadow
            mode has one; a canary's requests are split, so it has none).

    Returns:
        ``None`` while either version is missing or has fewer than ``min_labels`` labelled
        answers; else the decision (see the module doc for the rule).
    """
    if serving is None or candidate is None:
        return None
    if min(serving.labelled, candidate.labelled) < settings.min_labels:
        # Errors need no labels: a candidate that fails (raises, times out, kills its workers)
        # over min_labels answers is aborted, labelled or not (an error answer is never
        # labelled, so it would otherwise never reach min_labels and fail callers for ever).
        limit = serving.error_rate + settings.max_error_rate_increase
        if candidate.answers >= settings.min_labels and candidate.error_rate > limit + _SLACK:
            return RolloutDecision(
                "abort",
                f"error rate {_n(candidate.error_rate)} > {_n(serving.error_rate)} + "
                f"{_n(settings.max_error_rate_increase)} over {candidate.answers} answers "
                f"(of serving {serving.version}), before enough labels",
            )
        return None
    # Both have labelled answers (min_labels >= 1), so both have an accuracy.
    cand_acc = candidate.accuracy if candidate.accuracy is not None else 0.0
    serv_acc = serving.accuracy if serving.accuracy is not None else 0.0
    tol = settings.tolerance
    accuracy_ok = cand_acc >= serv_acc - tol - _SLACK
    errors_ok = (
        candidate.error_rate <= serving.error_rate + settings.max_error_rate_increase + _SLACK
    )
    parts = [
        f"accuracy {_n(cand_acc)} {'>=' if accuracy_ok else '<'} {_n(serv_acc)} - {_n(tol)} "
        f"of serving {serving.version}",
        f"error rate {_n(candidate.error_rate)} {'<=' if errors_ok else '>'} "
        f"{_n(serving.error_rate)} + {_n(settings.max_error_rate_increase)}",
    ]
    p99_ok = True
    if candidate.p99_ms is not None and serving.p99_ms is not None:
        p99_ok = candidate.p99_ms <= settings.max_p99_ratio * serving.p99_ms
        parts.append(
            f"p99 {_n(candidate.p99_ms)} ms {'<=' if p99_ok else '>'} "
            f"{_n(settings.max_p99_ratio)} x {_n(serving.p99_ms)} ms"
        )
    else:
        parts.append("p99 not compared (no compute times)")
    if agreement is not None and agreement.rate is not None:
        parts.append(f"agreement {_n(agreement.rate)} over {agreement.compared} requests")
    action: RolloutAction = "promote" if accuracy_ok and errors_ok and p99_ok else "abort"
    return RolloutDecision(action, "; ".join(parts))


def progress(
    serving: VersionStats | None, candidate: VersionStats | None, settings: RolloutSettings
) -> str:
    """How far each version is towards ``min_labels``, for status output.

    Example:
        >>> progress(None, None, RolloutSettings(min_labels=200))
        'serving 0/200 labels, candidate 0/200 labels'
    """
    need = settings.min_labels
    return ", ".join(
        f"{name} {stats.labelled if stats else 0}/{need} labels"
        for name, stats in (("serving", serving), ("candidate", candidate))
    )


def _n(value: float) -> str:
    return f"{value:.4g}"
