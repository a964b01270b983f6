"""``rayml replay diff``: read two result topics to their end and compare them by request id.

The reading is :func:`rayml.replay.reading.read_results` (``read_committed``, from the
beginning to the end each topic has when it is read); the figures are
:func:`rayml.replay.diff.compare`'s.

Example:
    >>> d = diff_topics(settings, "iris.replay.v1", "iris.replay.v2",    # doctest: +SKIP
    ...                 field="label")
    >>> d.agree, d.both_ok                                                # doctest: +SKIP
    (1432, 1500)
"""

from __future__ import annotations

from rayml.config import Settings
from rayml.replay.diff import Diff, compare
from rayml.replay.reading import read_results

__all__ = ["diff_topics"]


def diff_topics(
    settings: Settings,
    left: str,
    right: str,
    *,
    field: str | None = None,
    top: int = 10,
    timeout_s: float = 30.0,
) -> Diff:
    """Compare the results on ``left`` and ``right`` (see :mod:`rayml.replay.diff`).

    Args:
        field: A dotted path into each ``ok`` result to compare (default: the whole result).
        top: How many changed-label pairs to keep.

    Raises:
        ReplayError: A topic does not exist or could not be read to its end.
    """
    a = read_results(settings.kafka, left, timeout_s)
    b = read_results(settings.kafka, right, timeout_s)
    return compare(a, b, field=field, top=top, names=(left, right))
