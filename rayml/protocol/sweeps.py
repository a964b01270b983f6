"""Sweeps: one training request, many parameter sets (pure; no Kafka, no Ray).

A training request's ``params`` is either one parameter set, or a *sweep envelope*: the
pipeline's own parameters plus one or both of two reserved keys,

* ``"sweep"``: a list of parameter objects, one trial each;
* ``"grid"``: an object mapping a parameter name to the list of values to try; the trials are
  the cartesian product, in key order then value order.

With both, every sweep entry is combined with every grid point. The other keys are shared by
all trials; a sweep entry overrides them and a grid value overrides both. A key is reserved only
if the pipeline's parameter model has no field of that name (a pipeline with a ``grid``
parameter keeps it, and cannot be swept by grid).

On the wire::

    {"id": "sweep-1", "pipeline": "breast_cancer.train",
     "params": {"n_estimators": 50,
                "grid": {"max_depth": [2, 4], "learning_rate": [0.1, 0.3]}}}

gives four trials, each with ``n_estimators=50``. Each trial's parameters are validated as one
ordinary request; an error names the field where the client wrote it (``params.grid.max_depth``,
``params.sweep[1].max_depth``) and the trial.

The best trial is the one with the best value of the pipeline's declared ``metric`` in its
``mode`` (:func:`select_best`); a sweep of a pipeline without a metric is refused.

Example:
    >>> plan = expand({"n": 1, "grid": {"d": [2, 4]}}, fields={"n", "d"}, max_trials=8)
    >>> [t.params for t in plan.trials]
    [{'n': 1, 'd': 2}, {'n': 1, 'd': 4}]
    >>> select_best([(0, {"acc": 0.9}), (1, {"acc": 0.95})], "acc", "max")
    1
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rayml.errors import InvalidParamsError, RecordError

__all__ = ["GRID_KEY", "SWEEP_KEY", "SweepPlan", "TrialParams", "expand", "select_best"]

SWEEP_KEY = "sweep"
GRID_KEY = "grid"


@dataclass(frozen=True)
class TrialParams:
    """One trial's raw parameters and where each of them came from (for error messages).

    Attributes:
        index: Trial number, from 0, in expansion order.
        params: The merged parameter object to validate.
        origin: Parameter name -> path in the request (``"params.grid.max_depth"``).
    """

    index: int
    params: dict[str, Any]
    origin: dict[str, str] = field(default_factory=dict)

    def field_path(self, field_path: str) -> str:
        """Map a validation error's ``params.x...`` path to where the client wrote ``x``.

        Example:
            >>> TrialParams(0, {"d": 2}, {"d": "params.grid.d"}).field_path("params.d")
            'params.grid.d'
        """
        head, _, rest = field_path.removeprefix("params.").partition(".")
        where = self.origin.get(head)
        if where is None:
            return field_path
        return f"{where}.{rest}" if rest else where


@dataclass(frozen=True)
class SweepPlan:
    """What a request asks to train: one trial, or a sweep of several.

    Attributes:
        trials: The trials, in order (exactly one when ``is_sweep`` is False).
        is_sweep: Whether the request used the sweep envelope (even with one trial).
    """

    trials: list[TrialParams]
    is_sweep: bool


def expand(params: Any, *, fields: Collection[str], max_trials: int) -> SweepPlan:
    """Expand a request's ``params`` into trials (see the module docstring).

    Args:
        params: The request's raw ``params``.
        fields: Names of the pipeline's parameter fields (reserved keys that are fields are
            ordinary parameters).
        max_trials: Most trials one request may ask for.

    Raises:
        InvalidParamsError: Malformed ``sweep``/``grid`` or too many trials; the message names
            the field.

    Example:
        >>> expand({"x": 1}, fields={"x"}, max_trials=4).is_sweep
        False
        >>> p = expand({"sweep": [{"x": 1}, {"x": 2}], "grid": {"y": [0, 1]}}, fields={"x", "y"},
        ...            max_trials=4)
        >>> [t.params for t in p.trials]
        [{'x': 1, 'y': 0}, {'x': 1, 'y': 1}, {'x': 2, 'y': 0}, {'x': 2, 'y': 1}]
        >>> p.trials[3].field_path("params.x")
        'params.sweep[1].x'
    """
    if not isinstance(params, dict):
        # Left to the pipeline's validation, which says "must be an object".
        return SweepPlan([TrialParams(0, params)], is_sweep=False)
    has_sweep = SWEEP_KEY in params and SWEEP_KEY not in fields
    has_grid = GRID_KEY in params and GRID_KEY not in fields
    if not (has_sweep or has_grid):
        return SweepPlan([TrialParams(0, dict(params))], is_sweep=False)
    base = {k: v for k, v in params.items() if not (k == SWEEP_KEY and has_sweep)}
    base = {k: v for k, v in base.items() if not (k == GRID_KEY and has_grid)}
    entries = _sweep_entries(params[SWEEP_KEY]) if has_sweep else [None]
    grid = _grid_points(params[GRID_KEY]) if has_grid else [{}]
    total = len(entries) * len(grid)
    if total > max_trials:
        raise _invalid(
            "params"
            if has_sweep and has_grid
            else f"params.{SWEEP_KEY if has_sweep else GRID_KEY}",
            f"the sweep has {total} trials, more than the limit of {max_trials}",
        )
    trials = []
    for n, (entry, point) in enumerate(itertools.product(entries, grid)):
        merged: dict[str, Any] = dict(base)
        origin = {k: f"params.{k}" for k in base}
        if entry is not None:
            position, values = entry
            merged.update(values)
            origin.update({k: f"params.{SWEEP_KEY}[{position}].{k}" for k in values})
        merged.update(point)
        origin.update({k: f"params.{GRID_KEY}.{k}" for k in point})
        trials.append(TrialParams(n, merged, origin))
    return SweepPlan(trials, is_sweep=True)


def validate_trials(
    plan: SweepPlan, validate: Callable[[dict[str, Any]], Any], pipeline: str
) -> list[Any]:
    """Validate every trial with ``validate`` (the registry's); return the validated params.

    Raises:
        InvalidParamsError: A trial does not validate. For a sweep the message names the trial
            and the fields as the client wrote them; ``details`` has ``trial`` and ``errors``.

    Example:
        >>> def check(p):
        ...     if p.get("d", 0) > 3:
        ...         raise InvalidParamsError("bad", {"errors": [
        ...             {"field": "params.d", "message": "too deep", "type": "le"}]})
        ...     return p
        >>> plan = expand({"grid": {"d": [2, 4]}}, fields={"d"}, max_trials=4)
        >>> try:
        ...     validate_trials(plan, check, "demo.train")
        ... except InvalidParamsError as exc:
        ...     print(exc)
        invalid params for pipeline 'demo.train' in trial 1 of 2: params.grid.d: too deep
    """
    validated = []
    for trial in plan.trials:
        try:
            validated.append(validate(trial.params))
        except InvalidParamsError as exc:
            if not plan.is_sweep:
                raise
            errors = [
                {**err, "field": trial.field_path(str(err.get("field", "params")))}
                for err in exc.details.get("errors", [])
            ]
            summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or str(exc)
            raise InvalidParamsError(
                f"invalid params for pipeline {pipeline!r} in trial {trial.index} of "
                f"{len(plan.trials)}: {summary}",
                {
                    "pipeline": pipeline,
                    "trial": trial.index,
                    "trial_params": trial.params,
                    "errors": errors,
                },
            ) from exc
    return validated


def select_best(
    results: Iterable[tuple[int, Mapping[str, float]]],
    metric: str,
    mode: Literal["max", "min"],
) -> int:
    """Return the index of the trial with the best ``metric``; ties go to the earliest trial.

    A trial without the metric, or with a NaN, ranks last.

    Raises:
        RecordError: ``results`` is empty.

    Example:
        >>> select_best([(0, {"loss": 0.3}), (1, {"loss": float("nan")}), (2, {"loss": 0.2})],
        ...             "loss", "min")
        2
    """
    best: tuple[float, int] | None = None
    for index, metrics in results:
        value = metrics.get(metric)
        score = -math.inf
        if isinstance(value, int | float) and not math.isnan(value):
            score = float(value) if mode == "max" else -float(value)
        # Strictly better only: among equals the earliest trial stays.
        if best is None or score > best[0] or (score == best[0] and index < best[1]):
            best = (score, index)
    if best is None:
        raise RecordError("no trial of the sweep succeeded; there is nothing to promote")
    return best[1]


def _invalid(path: str, message: str) -> InvalidParamsError:
    return InvalidParamsError(
        f"invalid sweep: {path}: {message}",
        {"errors": [{"field": path, "message": message, "type": "sweep"}]},
    )


def _sweep_entries(value: Any) -> list[tuple[int, dict[str, Any]] | None]:
    path = f"params.{SWEEP_KEY}"
    if not isinstance(value, list) or not value:
        raise _invalid(path, "must be a non-empty list of parameter objects")
    entries: list[tuple[int, dict[str, Any]] | None] = []
    for position, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise _invalid(f"{path}[{position}]", "must be an object of parameters")
        entries.append((position, entry))
    return entries


def _grid_points(value: Any) -> list[dict[str, Any]]:
    path = f"params.{GRID_KEY}"
    if not isinstance(value, dict) or not value:
        raise _invalid(path, "must be a non-empty object mapping a parameter to a list of values")
    for key, values in value.items():
        if not isinstance(values, list) or not values:
            raise _invalid(f"{path}.{key}", "must be a non-empty list of values")
    keys = list(value)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*value.values())]
