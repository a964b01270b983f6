"""What the client knows about pipelines, and how it checks params before sending (no I/O).

The executor publishes each pipeline's description (``PipelineSpec.describe()``, with a JSON
Schema of its parameters) to the compacted registry topic. The client reads it into
:class:`PipelineInfo` objects and checks every request's ``params`` against that schema before
the request leaves the process, so a typo fails at once, in the caller's stack, with the same
error the executor would have answered much later (:class:`~rayml.errors.InvalidParamsError`,
fields named ``params.<field>``).

**Why ``jsonschema-rs``.** The schema is all a client has: the pydantic model it came from lives
in the executor's code, which a client does not import, and pydantic cannot validate against a
JSON Schema document. The schemas use ``$ref``/``$defs`` and draft 2020-12 keywords, so a
hand-rolled checker would cover a subset and drift. Of the full implementations, the pure-Python
reference (``jsonschema``) takes ~0.2 ms for one 30-float request -- it would cap ``submit_many``
at a few thousand requests/s, below what the executor serves -- while ``jsonschema-rs`` (Rust,
MIT, binary wheels) takes well under a microsecond and reports the same paths and keywords.

**What is checked is what goes on the wire.** The params are first turned into plain JSON
(numpy arrays and scalars become lists and numbers, NaN and infinities are refused because JSON
cannot carry them), then validated, and the plain form is what the request carries.

The JSON Schema is a little stricter than pydantic's lax mode (``"3"`` is not an integer here;
the executor would coerce it): pass ``validate=False`` to the client to leave checking to the
executor.

Example:
    >>> info = PipelineInfo.from_description({
    ...     "name": "demo.p", "kind": "inference", "model": "m",
    ...     "params_schema": {"type": "object", "additionalProperties": False,
    ...                       "properties": {"x": {"type": "number"}}, "required": ["x"]}})
    >>> checker = ParamsChecker(info)
    >>> checker.check({"x": 1.5})
    {'x': 1.5}
    >>> try:
    ...     checker.check({"y": 1})
    ... except InvalidParamsError as exc:
    ...     print(exc)
    invalid params for pipeline 'demo.p': params.x: required field is missing; params.y: \
unexpected field (the pipeline takes: x)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jsonschema_rs

from rayml.errors import InvalidParamsError
from rayml.protocol.sweeps import expand, validate_trials

logger = logging.getLogger(__name__)

__all__ = ["ParamsChecker", "PipelineInfo", "to_wire"]

# The executor enforces its own limit on sweep size; the client only expands to check each
# trial, so it must never refuse a sweep the executor would accept.
_CLIENT_MAX_TRIALS: Final = 100_000
_MAX_ERRORS: Final = 3  # in the message; details['errors'] has them all
_MAX_MESSAGE: Final = 160


@dataclass(frozen=True)
class PipelineInfo:
    """One pipeline as the executor published it.

    Attributes:
        name: Registered name, e.g. ``"iris.predict"``.
        kind: ``"inference"`` or ``"training"``.
        model: The model it reads (inference) or writes (training).
        doc: One-line description.
        params_schema: JSON Schema of its ``params``.
        metric: For training: the metric a sweep optimises (or ``None``).
        mode: ``"max"`` or ``"min"``: the direction in which ``metric`` improves.
        description: Everything the executor published, as it published it.
        served_by: The executors whose live lease lists it (``[]``: none, nothing serves it
            now); ``None`` when the registry has no leases (older executors): unknown.
    """

    name: str
    kind: str
    model: str
    doc: str = ""
    params_schema: dict[str, Any] = field(default_factory=dict)
    metric: str | None = None
    mode: str = "max"
    description: dict[str, Any] = field(default_factory=dict, repr=False)
    served_by: list[str] | None = None

    @property
    def live(self) -> bool:
        """Whether a running executor serves it (``True`` when that is unknown)."""
        return self.served_by is None or bool(self.served_by)

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> PipelineInfo:
        """Build from one registry record's JSON (unknown keys are kept in ``description``)."""
        schema = description.get("params_schema")
        return cls(
            name=str(description["name"]),
            kind=str(description.get("kind", "inference")),
            model=str(description.get("model", "")),
            doc=str(description.get("doc") or ""),
            params_schema=dict(schema) if isinstance(schema, Mapping) else {},
            metric=description.get("metric"),
            mode=str(description.get("mode") or "max"),
            description=dict(description),
        )

    @property
    def fields(self) -> dict[str, dict[str, Any]]:
        """The parameters by name, each with its JSON Schema (``description``, ``default``...).

        Example:
            >>> PipelineInfo("p", "inference", "m",
            ...              params_schema={"properties": {"x": {"type": "number"}}}).fields
            {'x': {'type': 'number'}}
        """
        properties = self.params_schema.get("properties")
        return dict(properties) if isinstance(properties, Mapping) else {}

    @property
    def required(self) -> list[str]:
        """Names of the parameters without a default."""
        required = self.params_schema.get("required")
        return [str(r) for r in required] if isinstance(required, list) else []


def _tolist(value: Any) -> Any:
    # numpy arrays and scalars (what users hold) have .tolist(); duck typing keeps numpy out.
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"a value of type {type(value).__qualname__} is not JSON-serialisable")


def to_wire(pipeline: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``params`` as plain JSON values, exactly as the request will carry them.

    Raises:
        InvalidParamsError: Something cannot be sent as JSON (an object, NaN, an infinity).

    Example:
        >>> to_wire("p", {"x": (1, 2)})
        {'x': [1, 2]}
        >>> try:
        ...     to_wire("p", {"x": float("nan")})
        ... except InvalidParamsError as exc:
        ...     print(exc)
        invalid params for pipeline 'p': params: NaN and infinities cannot be sent as JSON
    """
    try:
        text = json.dumps(params, default=_tolist, allow_nan=False)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        if "out of range float" in message.lower():
            message = "NaN and infinities cannot be sent as JSON"
        raise _invalid(pipeline, [_problem("params", message, "json")]) from exc
    wire: dict[str, Any] = json.loads(text)
    return wire


def _problem(path: str, message: str, kind: str) -> dict[str, str]:
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return {"field": path, "message": message, "type": kind}


def _invalid(pipeline: str, errors: list[dict[str, str]]) -> InvalidParamsError:
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:_MAX_ERRORS])
    if len(errors) > _MAX_ERRORS:
        summary += f"; and {len(errors) - _MAX_ERRORS} more"
    return InvalidParamsError(
        f"invalid params for pipeline {pipeline!r}: {summary}",
        {"pipeline": pipeline, "errors": errors, "checked_by": "client"},
    )


def _path(parts: Any) -> str:
    out = "params"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _describe(error: Any, fields: list[str]) -> list[dict[str, str]]:
    """One schema violation as ``{"field", "message", "type"}`` items, in the executor's words."""
    base = list(error.instance_path)
    kind = str(error.kind.name)
    detail = error.kind.as_dict()
    if kind == "required":
        return [_problem(_path([*base, detail["property"]]), "required field is missing", kind)]
    if kind == "additionalProperties":
        takes = ", ".join(fields) or "none"
        return [
            _problem(_path([*base, name]), f"unexpected field (the pipeline takes: {takes})", kind)
            for name in detail.get("unexpected", [])
        ]
    if kind in {"minItems", "maxItems"} and isinstance(error.instance, list):
        bound = "at least" if kind == "minItems" else "at most"
        message = f"expected {bound} {detail['limit']} items, got {len(error.instance)}"
        return [_problem(_path(base), message, kind)]
    if kind == "type":
        expected = " or ".join(str(t) for t in detail.get("types", [])) or "another type"
        got = type(error.instance).__name__
        return [_problem(_path(base), f"expected {expected}, got {got}", kind)]
    return [_problem(_path(base), str(error.message), kind)]


def _sort_key(problem: dict[str, str]) -> tuple[Any, ...]:
    # Numeric order for list positions: features[2] before features[10].
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in problem["field"].replace("[", ".").replace("]", "").split(".")
    )


class ParamsChecker:
    """Checks params against one pipeline's published JSON Schema.

    A training pipeline's params may be a sweep (``"grid"``/``"sweep"`` keys, see
    :mod:`rayml.protocol.sweeps`): then every trial is checked, and an error names the trial and the
    field as the caller wrote it (``params.grid.max_depth``), as the executor would.

    A schema the client cannot use (a newer draft, a bug) is logged once and not enforced: the
    executor validates every request anyway, so a client-side gap only delays the error.
    """

    def __init__(self, info: PipelineInfo) -> None:
        self.info = info
        self._fields = sorted(info.fields)
        self._validator: Any = None
        schema = info.params_schema
        if schema:
            try:
                self._validator = jsonschema_rs.validator_for(schema)
            except (jsonschema_rs.ValidationError, ValueError) as exc:
                logger.warning(
                    "pipeline=%s params schema not usable on the client, not checked: %s",
                    info.name,
                    str(exc).splitlines()[0],
                )

    def check(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Return the params as sent on the wire, or raise naming every bad field.

        Raises:
            InvalidParamsError: The params do not match the schema, or are not JSON.
        """
        wire = to_wire(self.info.name, params)
        if self._validator is None:
            return wire
        if self.info.kind == "training":
            plan = expand(wire, fields=set(self.info.fields), max_trials=_CLIENT_MAX_TRIALS)
            validate_trials(plan, self._check_one, self.info.name)
        else:
            self._check_one(wire)
        return wire

    def _check_one(self, params: dict[str, Any]) -> dict[str, Any]:
        if self._validator.is_valid(params):
            return params
        problems = sorted(
            (
                p
                for error in self._validator.iter_errors(params)
                for p in _describe(error, self._fields)
            ),
            key=_sort_key,
        )
        raise _invalid(self.info.name, problems)
