"""Checks the pipeline decorators run when they are applied: names, options, signatures.

A pipeline that would fail on its first request should fail when its module is imported, with
a message that says what to write instead. Arity is checked strictly (the executor's call must
bind); annotations are checked only where they can be resolved and name a class, because they
are advice, not a contract.

These helpers raise :class:`~rayml.errors.RegistrationError` or return a problem description;
:mod:`rayml.pipeline.decorators` puts the pipeline's name and import path in front of it.

Example:
    >>> from pydantic import BaseModel
    >>> class P(BaseModel):
    ...     x: float
    >>> batch_annotation_problem(list[P], P) is None
    True
    >>> batch_annotation_problem(P, P).startswith("is annotated P, a single request")
    True
"""

from __future__ import annotations

import collections.abc
import inspect
import logging
import re
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from rayml.errors import InvalidModelNameError, RegistrationError
from rayml.pipeline.spec import PipelineKind, import_path_of
from rayml.protocol.model_names import validate_model_name

logger = logging.getLogger(__name__)

__all__ = [
    "NAME_RE",
    "batch_annotation_problem",
    "check_common",
    "checked_signature",
    "first_paragraph",
    "is_wrong_class",
    "item_annotation_problem",
    "type_hints",
    "type_name",
]

#: A pipeline name: lowercase dotted identifiers such as ``iris.predict``.
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")

_SEQUENCE_ORIGINS: tuple[object, ...] = (
    list,
    collections.abc.Sequence,
    collections.abc.Iterable,
    collections.abc.Collection,
)


def check_common(name: str, model: str, params: object, doc: object) -> None:
    """Check the options both decorators take.

    Raises:
        RegistrationError: A bad pipeline name, model name, params class or doc.
    """
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RegistrationError(
            f"pipeline name {name!r} is not valid: use lowercase dotted identifiers "
            f"such as 'iris.predict' (pattern {NAME_RE.pattern})"
        )
    try:
        validate_model_name(model)
    except InvalidModelNameError as exc:
        raise RegistrationError(f"pipeline {name!r}: model name is not valid: {exc}") from None
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise RegistrationError(
            f"pipeline {name!r}: params must be a pydantic BaseModel subclass (the class, not an "
            f"instance), got {params!r}; e.g. `class Params(BaseModel): x: float`"
        )
    if doc is not None and not isinstance(doc, str):
        raise RegistrationError(f"pipeline {name!r}: doc must be a string or None")


def checked_signature(name: str, fn: object, kind: PipelineKind) -> inspect.Signature:
    """Return ``fn``'s signature after checking that the executor can call it.

    Raises:
        RegistrationError: ``fn`` is not a plain function, is async, or cannot be called with
            two positional arguments.
    """
    expected = (
        "fn(model, batch: list[Params]) (or fn(model, params: Params) with batched=False; "
        "either may add a `ctx` keyword for its InferenceContext)"
        if kind == "inference"
        else "fn(params: Params, ctx: TrainingContext) -> TrainedModel"
    )
    if not callable(fn) or not hasattr(fn, "__qualname__") or not hasattr(fn, "__module__"):
        raise RegistrationError(
            f"pipeline {name!r}: @{kind} decorates a function defined with `def`, got {fn!r}"
        )
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise RegistrationError(
            f"pipeline {name!r} ({import_path_of(fn)}) is async; pipelines are plain functions "
            f"(the worker runs them off its event loop). Write `def`, not `async def`."
        )
    if inspect.isclass(fn):
        raise RegistrationError(
            f"pipeline {name!r}: @{kind} decorates a function, not class {fn.__qualname__}"
        )
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise RegistrationError(f"pipeline {name!r}: cannot read its signature: {exc}") from exc
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    try:
        # Binding two placeholder arguments is exactly the check the executor's call must pass:
        # it catches too few/too many parameters and required keyword-only parameters.
        # An inference function may add a `ctx` keyword (its InferenceContext).
        ctx = {"ctx": object()} if kind == "inference" and "ctx" in sig.parameters else {}
        sig.bind(object(), object(), **ctx)
    except TypeError as exc:
        raise RegistrationError(
            f"pipeline {name!r} ({import_path_of(fn)}) has signature {sig}, which cannot be "
            f"called with two arguments ({exc}); write {expected}"
        ) from None
    if len(positional) < 2:
        # Only *args: annotations cannot be checked and the call shape is unclear.
        raise RegistrationError(
            f"pipeline {name!r} ({import_path_of(fn)}) has signature {sig}; write {expected}"
        )
    return sig


def type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s resolved annotations, or ``{}`` if they cannot be resolved here."""
    try:
        return typing.get_type_hints(fn)
    except Exception:
        # Annotations that cannot be resolved here (names behind TYPE_CHECKING, local classes
        # with postponed evaluation) are not an error: arity was checked, the types are advice.
        logger.debug("cannot resolve annotations of %s; skipping type checks", import_path_of(fn))
        return {}


def batch_annotation_problem(ann: Any, params: type[BaseModel]) -> str | None:
    """What is wrong with ``ann`` as the annotation of a batched pipeline's batch, if anything."""
    if ann is inspect.Parameter.empty or ann is Any or ann in _SEQUENCE_ORIGINS:
        return None
    origin = typing.get_origin(ann)
    if origin in _SEQUENCE_ORIGINS:
        args = typing.get_args(ann)
        if not args or not is_wrong_class(args[0], params):
            return None
        return (
            f"is annotated {type_name(ann)}; the batch holds {params.__name__} instances: "
            f"write `batch: list[{params.__name__}]`"
        )
    if isinstance(ann, type):
        if issubclass(params, ann):
            return (
                f"is annotated {type_name(ann)}, a single request, but the pipeline is batched: "
                f"take `batch: list[{params.__name__}]` and return one output per request, or "
                f"register with batched=False"
            )
        return f"is annotated {type_name(ann)}; write `batch: list[{params.__name__}]`"
    return None


def item_annotation_problem(ann: Any, params: type[BaseModel]) -> str | None:
    """What is wrong with ``ann`` as the annotation of one request's params, if anything."""
    if typing.get_origin(ann) in _SEQUENCE_ORIGINS or ann in _SEQUENCE_ORIGINS:
        return (
            f"is annotated {type_name(ann)}, a batch, but this function gets one request: "
            f"write `params: {params.__name__}` (for inference, or drop batched=False)"
        )
    if is_wrong_class(ann, params):
        return f"is annotated {type_name(ann)}; write `params: {params.__name__}`"
    return None


def is_wrong_class(ann: Any, expected: type) -> bool:
    """Whether ``ann`` is a class that an ``expected`` instance would not satisfy."""
    # typing.Any is a class since Python 3.11; it (like object) accepts anything.
    return isinstance(ann, type) and ann not in (object, Any) and not issubclass(expected, ann)


def type_name(ann: Any) -> str:
    """A short name of an annotation for messages."""
    return ann.__qualname__ if isinstance(ann, type) else repr(ann)


def first_paragraph(fn: Callable[..., Any]) -> str:
    """The first paragraph of ``fn``'s docstring on one line (the published ``doc``)."""
    text = inspect.getdoc(fn) or ""
    return " ".join(text.split("\n\n", 1)[0].split())
