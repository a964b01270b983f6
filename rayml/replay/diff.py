"""``rayml replay diff``'s statistics: two result topics compared by request id. Pure.

Each side is a :class:`ResultSet`: the results read from one topic, the last one per request id
(a topic written at least once may hold a result twice; ``duplicates`` counts the extra ones).
:func:`compare` joins the two sides by id and reports:

* **counts**: results each side, ids in both, only in the left, only in the right;
* **agreement**: among the ids whose results are ``ok`` on both sides, how many have the same
  value: the whole ``result``, or one field of it (``field``, a dotted path into a result
  that is a JSON object, e.g. ``label``); values compare as JSON values, so ``1`` and ``1.0``
  agree and a float must match exactly;
* **changed labels**: for the ids that disagree where both values are scalars (string, number,
  boolean, null; a missing ``field`` shows as ``"<missing>"``, and a pair missing on both sides
  is not a change), the count of each (left value, right value) pair, the ``top`` most
  frequent;
* **status changes**: ok on the left and an error on the right, and the reverse;
* **errors** each side, by ``error.type`` (over all of a side's results, not only the joined);
* **metrics**, over the ids in both: the mean ``timings.total_ms`` and ``timings.compute_ms``
  each side and their delta (right - left), and the models (``name@version``) that answered.

Example:
    >>> from rayml.protocol.envelopes import ModelRef, Result, Timings
    >>> def r(i, label, v, ms):
    ...     return Result.ok(i, "p", {"label": label}, model=ModelRef(name="m", version=v),
    ...                      timings=Timings(total_ms=ms))
    >>> left = ResultSet.of([r("a", 0, "1", 10.0), r("b", 1, "1", 20.0), r("c", 1, "1", 5.0)])
    >>> right = ResultSet.of([r("a", 0, "2", 12.0), r("b", 0, "2", 22.0)])
    >>> d = compare(left, right, field="label")
    >>> d.both, d.only_left, d.agree, d.both_ok, d.changed
    (2, 1, 1, 2, [((1, 0), 1)])
    >>> d.mean_total_ms, d.models
    ((15.0, 17.0), ({'m@1': 2}, {'m@2': 2}))
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from rayml.protocol.envelopes import Result

__all__ = ["Diff", "ResultSet", "compare", "value_at"]

_MISSING: Final = object()


@dataclass
class ResultSet:
    """One topic's results: the last per request id, and what else was read.

    Attributes:
        by_id: The last result read for each request id.
        records: Records read (results, duplicates and unreadable ones).
        duplicates: Results whose id had a result already.
        unreadable: Records that were not result envelopes.
    """

    by_id: dict[str, Result] = field(default_factory=dict)
    records: int = 0
    duplicates: int = 0
    unreadable: int = 0

    def add(self, result: Result | None) -> None:
        """Count one record read: a result, or ``None`` for one that was not a result."""
        self.records += 1
        if result is None:
            self.unreadable += 1
            return
        if result.id in self.by_id:
            self.duplicates += 1
        self.by_id[result.id] = result

    @classmethod
    def of(cls, results: Iterable[Result | None]) -> ResultSet:
        """A set of ``results``, in the order read."""
        found = cls()
        for result in results:
            found.add(result)
        return found


def value_at(result: Any, path: str | None) -> Any:
    """The value ``compare`` reads from a result: the whole of it, or the field at ``path``
    (``_MISSING`` when a step is not an object or lacks the key).

    Example:
        >>> value_at({"a": {"b": 2}}, "a.b"), value_at([1], None), value_at(3, "a") is _MISSING
        (2, [1], True)
    """
    if path is None:
        return result
    value = result
    for step in path.split("."):
        if not isinstance(value, dict) or step not in value:
            return _MISSING
        value = value[step]
    return value


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _label(value: Any) -> Any:
    """A value as a JSON scalar for the changed-labels table (``_MISSING`` as ``"<missing>"``)."""
    return "<missing>" if value is _MISSING else value


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class Diff:
    """Two result topics compared (see the module doc for each figure).

    Pairs are ``(left, right)``; ``changed`` is ``[((left value, right value), count), ...]``,
    most frequent first.
    """

    left: str
    right: str
    field: str | None
    results: tuple[int, int]
    duplicates: tuple[int, int]
    unreadable: tuple[int, int]
    both: int
    only_left: int
    only_right: int
    both_ok: int
    agree: int
    changed: list[tuple[tuple[Any, Any], int]]
    changed_pairs: int
    ok_to_error: int
    error_to_ok: int
    errors: tuple[dict[str, int], dict[str, int]]
    mean_total_ms: tuple[float | None, float | None]
    mean_compute_ms: tuple[float | None, float | None]
    models: tuple[dict[str, int], dict[str, int]]

    @property
    def agreement(self) -> float | None:
        """``agree / both_ok`` (None when no id is ok on both sides)."""
        return self.agree / self.both_ok if self.both_ok else None

    def to_json(self) -> dict[str, Any]:
        """The figures as a JSON object (what ``--json`` prints)."""

        def delta(pair: tuple[float | None, float | None]) -> float | None:
            left, right = pair
            return None if left is None or right is None else right - left

        def sides(pair: tuple[Any, Any]) -> dict[str, Any]:
            return {"left": pair[0], "right": pair[1]}

        return {
            "left": self.left,
            "right": self.right,
            "field": self.field,
            "results": sides(self.results),
            "duplicates": sides(self.duplicates),
            "unreadable": sides(self.unreadable),
            "both": self.both,
            "only_left": self.only_left,
            "only_right": self.only_right,
            "both_ok": self.both_ok,
            "agree": self.agree,
            "disagree": self.both_ok - self.agree,
            "agreement": self.agreement,
            "changed": [{"left": a, "right": b, "count": n} for (a, b), n in self.changed],
            "changed_pairs": self.changed_pairs,
            "ok_to_error": self.ok_to_error,
            "error_to_ok": self.error_to_ok,
            "errors": sides(self.errors),
            "mean_total_ms": {**sides(self.mean_total_ms), "delta": delta(self.mean_total_ms)},
            "mean_compute_ms": {
                **sides(self.mean_compute_ms),
                "delta": delta(self.mean_compute_ms),
            },
            "models": sides(self.models),
        }

    def table(self) -> list[str]:
        """The figures as lines of a plain-text table, for a person."""
        width = max(24, len(self.left) + 2)
        rows: list[tuple[str, str, str]] = [
            ("", self.left, self.right),
            ("results", str(self.results[0]), str(self.results[1])),
            ("only here", str(self.only_left), str(self.only_right)),
            ("duplicates", str(self.duplicates[0]), str(self.duplicates[1])),
        ]
        if any(self.unreadable):
            rows.append(("unreadable", str(self.unreadable[0]), str(self.unreadable[1])))
        rows += [
            ("errors", _counts(self.errors[0]), _counts(self.errors[1])),
            ("mean total_ms", _ms(self.mean_total_ms[0]), _ms(self.mean_total_ms[1])),
            ("mean compute_ms", _ms(self.mean_compute_ms[0]), _ms(self.mean_compute_ms[1])),
            ("models", _counts(self.models[0]), _counts(self.models[1])),
        ]
        lines = [f"{name:18}{a:{width}}{b}".rstrip() for name, a, b in rows]
        what = "result" if self.field is None else f"result.{self.field}"
        share = "-" if self.agreement is None else f"{self.agreement:.1%}"
        lines += [
            "",
            f"in both: {self.both}; ok in both: {self.both_ok}",
            f"agreement ({what}): {self.agree}/{self.both_ok} ({share})",
            f"ok -> error: {self.ok_to_error}; error -> ok: {self.error_to_ok}",
        ]
        for name, pair in (("total_ms", self.mean_total_ms), ("compute_ms", self.mean_compute_ms)):
            if pair[0] is not None and pair[1] is not None:
                lines.append(f"mean {name} delta (right - left): {pair[1] - pair[0]:+.2f}")
        if self.changed:
            lines.append(f"changed labels (left -> right), top {len(self.changed)}:")
            for (a, b), n in self.changed:
                lines.append(f"  {json.dumps(a)} -> {json.dumps(b)}: {n}")
        return lines


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def compare(
    left: ResultSet,
    right: ResultSet,
    *,
    field: str | None = None,
    top: int = 10,
    names: tuple[str, str] = ("left", "right"),
) -> Diff:
    """Join ``left`` and ``right`` by request id and compute the figures of :class:`Diff`."""
    a, b = left.by_id, right.by_id
    both = sorted(a.keys() & b.keys())
    both_ok = agree = ok_to_error = error_to_ok = 0
    changed: Counter[tuple[Any, Any]] = Counter()
    totals: tuple[list[float], list[float]] = ([], [])
    computes: tuple[list[float], list[float]] = ([], [])
    models: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
    for rid in both:
        pair = (a[rid], b[rid])
        for side, result in enumerate(pair):
            if result.timings.total_ms is not None:
                totals[side].append(result.timings.total_ms)
            if result.timings.compute_ms is not None:
                computes[side].append(result.timings.compute_ms)
            if result.model is not None:
                models[side][f"{result.model.name}@{result.model.version}"] += 1
        old, new = pair
        if old.status == "ok" and new.status == "error":
            ok_to_error += 1
        elif old.status == "error" and new.status == "ok":
            error_to_ok += 1
        if old.status != "ok" or new.status != "ok":
            continue
        both_ok += 1
        was, now = value_at(old.result, field), value_at(new.result, field)
        if was is not _MISSING and now is not _MISSING and was == now:
            agree += 1
        elif (was, now) != (_MISSING, _MISSING) and _scalar(_label(was)) and _scalar(_label(now)):
            changed[(_label(was), _label(now))] += 1
    ranked = sorted(changed.items(), key=lambda item: (-item[1], json.dumps(item[0])))
    return Diff(
        left=names[0],
        right=names[1],
        field=field,
        results=(len(a), len(b)),
        duplicates=(left.duplicates, right.duplicates),
        unreadable=(left.unreadable, right.unreadable),
        both=len(both),
        only_left=len(a) - len(both),
        only_right=len(b) - len(both),
        both_ok=both_ok,
        agree=agree,
        changed=ranked[:top],
        changed_pairs=len(changed),
        ok_to_error=ok_to_error,
        error_to_ok=error_to_ok,
        errors=(_error_types(a.values()), _error_types(b.values())),
        mean_total_ms=(_mean(totals[0]), _mean(totals[1])),
        mean_compute_ms=(_mean(computes[0]), _mean(computes[1])),
        models=(dict(models[0]), dict(models[1])),
    )


def _error_types(results: Iterable[Result]) -> dict[str, int]:
    return dict(Counter(r.error.type for r in results if r.error is not None))
