"""The pipeline decorators: :func:`inference` and :func:`training` register a plain function.

Two kinds of pipeline, registered with a decorator each:

* :func:`inference` -- a *batch* function ``fn(model, batch) -> one output per request``. The
  executor micro-batches requests and makes one call per batch (one Ray call per batch, never one
  per message). A per-request function can be registered with ``batched=False``.
* :func:`training` -- ``fn(params, ctx) -> TrainedModel``, run as a Ray task with the declared
  resources; the runner stores the returned model as a new version.

The decorators check their options and the function's signature when they are applied
(:mod:`rayml.pipeline.signatures`), attach a :class:`~rayml.pipeline.spec.PipelineSpec` to the
function, add it to a :class:`~rayml.pipeline.registry.Registry` (by default
:data:`~rayml.pipeline.registry.default_registry`), and return the function unchanged, so a pipeline
stays a plain callable that can be unit-tested without Kafka or Ray. What the function receives
and returns is :mod:`rayml.pipeline.contract`. Pipeline authors import all of this from the
package, :mod:`rayml.pipeline`.

Example:
    >>> from pydantic import BaseModel
    >>> from rayml.pipeline import Registry
    >>> class Echo(BaseModel):
    ...     text: str
    >>> reg = Registry()
    >>> @inference("demo.echo", model="echo", params=Echo, registry=reg)
    ... def echo(model: object, batch: list[Echo]) -> list[str]:
    ...     return [p.text.upper() for p in batch]
    >>> echo(None, [Echo(text="hi")]), reg.names()
    (['HI'], ['demo.echo'])
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

import rayml.pipeline.registry as registry_module
from rayml.errors import RegistrationError
from rayml.pipeline.contract import TrainedModel, TrainingContext
from rayml.pipeline.registry import Registry
from rayml.pipeline.signatures import (
    batch_annotation_problem,
    check_common,
    checked_signature,
    first_paragraph,
    is_wrong_class,
    item_annotation_problem,
    type_hints,
    type_name,
)
from rayml.pipeline.spec import (
    DEFAULT_POOL,
    SPEC_ATTR,
    PipelineSpec,
    Pool,
    Resources,
    get_spec,
    import_path_of,
)

__all__ = ["TrainedModel", "TrainingContext", "inference", "training"]

F = TypeVar("F", bound=Callable[..., Any])


class _PerItem:
    """Batch form of a per-request (``batched=False``) inference function.

    A class rather than a closure so that a spec pickles by reference to the user's function.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, model: Any, batch: Sequence[Any], **kwargs: Any) -> list[Any]:
        return [self.fn(model, params, **kwargs) for params in batch]

    def __repr__(self) -> str:
        return f"_PerItem({import_path_of(self.fn)})"


# --- decorators ---------------------------------------------------------------------------


def inference(
    name: str,
    *,
    model: str,
    params: type[BaseModel],
    batched: bool = True,
    max_batch_size: int | None = None,
    batch_timeout_s: float | None = None,
    pool: Pool | None = None,
    doc: str | None = None,
    registry: Registry | None = None,
) -> Callable[[F], F]:
    """Register an inference pipeline.

    Batched (the default): ``fn(model, batch: list[Params]) -> Sequence`` with one output per
    request, in order. ``batched=False``: ``fn(model, params: Params) -> output``; rayml calls
    it once per request of a batch.

    Args:
        name: Pipeline name, lowercase dotted identifiers (``"iris.predict"``).
        model: Name of the model in the store that is loaded and passed as ``model``.
        params: pydantic model class validating each request's ``params``.
        batched: Whether ``fn`` takes a whole batch.
        max_batch_size: Largest batch to pass (``None``: the executor's setting).
        batch_timeout_s: How long one batch may run on a worker, model load included, before
            the worker is ended and replaced (``None``: ``executor.batch_timeout_s``). Give a
            slow pipeline, or one with a large model, room for its largest batch.
        pool: Workers of its own (:class:`~rayml.pipeline.spec.Pool`: CPUs, GPUs, memory,
            replicas, batch size and wait, scale to zero), autoscaled on this pipeline's own
            backlog; ``None``: the ingest's default pool, shared with other pipelines.
        doc: Description to publish; defaults to the docstring's first paragraph.
        registry: Registry to add to (default :data:`rayml.pipeline.registry.default_registry`).

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        RegistrationError: A bad name or option, or a signature that does not fit.

    Example:
        >>> from pydantic import BaseModel
        >>> from rayml.pipeline import Registry
        >>> class Square(BaseModel):
        ...     x: float
        >>> @inference("demo.square", model="none", params=Square, batched=False,
        ...            registry=Registry())
        ... def square(model: object, params: Square) -> float:
        ...     return params.x ** 2
        >>> square(None, Square(x=3))
        9.0
    """
    check_common(name, model, params, doc)
    if not isinstance(batched, bool):
        raise RegistrationError(f"pipeline {name!r}: batched must be True or False")
    if max_batch_size is not None and (
        isinstance(max_batch_size, bool)
        or not isinstance(max_batch_size, int)
        or max_batch_size < 1
    ):
        raise RegistrationError(
            f"pipeline {name!r}: max_batch_size must be an int >= 1 or None, got {max_batch_size!r}"
        )
    _check_timeout(name, "batch_timeout_s", batch_timeout_s)
    if pool is not None and not isinstance(pool, Pool):
        raise RegistrationError(
            f"pipeline {name!r}: pool must be a rayml.pipeline.Pool or None, got {pool!r}"
        )
    if pool is not None and name == DEFAULT_POOL:
        raise RegistrationError(
            f"pipeline {name!r} cannot declare a pool of its own: {DEFAULT_POOL!r} names the "
            "pool the pipelines without one share"
        )

    def decorate(fn: F) -> F:
        sig = checked_signature(name, fn, "inference")
        # A `ctx` keyword gets the worker's InferenceContext (device, threads).
        takes_context = "ctx" in sig.parameters and sig.parameters["ctx"].kind in (
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )
        hints = type_hints(fn)
        params_param = list(sig.parameters.values())[1]
        ann = hints.get(params_param.name, inspect.Parameter.empty)
        problem = (
            batch_annotation_problem(ann, params)
            if batched
            else item_annotation_problem(ann, params)
        )
        if problem:
            raise RegistrationError(
                f"pipeline {name!r} ({import_path_of(fn)}): "
                f"parameter {params_param.name!r} {problem}"
            )
        batch_fn: Callable[..., Any] = fn if batched else _PerItem(fn)
        spec = PipelineSpec(
            name=name,
            kind="inference",
            model=model,
            params=params,
            fn=fn,
            batch_fn=batch_fn,
            import_path=import_path_of(fn),
            batched=batched,
            max_batch_size=max_batch_size,
            batch_timeout_s=None if batch_timeout_s is None else float(batch_timeout_s),
            doc=doc if doc is not None else first_paragraph(fn),
            pool=pool,
            takes_context=takes_context,
        )
        return _attach(fn, spec, registry)

    return decorate


def training(
    name: str,
    *,
    model: str,
    params: type[BaseModel],
    num_cpus: float = 1,
    num_gpus: float = 0,
    memory: int | None = None,
    metric: str | None = None,
    mode: Literal["max", "min"] = "max",
    timeout_s: float | None = None,
    doc: str | None = None,
    registry: Registry | None = None,
) -> Callable[[F], F]:
    """Register a training pipeline: ``fn(params: Params, ctx: TrainingContext) -> TrainedModel``.

    Args:
        name: Pipeline name, lowercase dotted identifiers (``"iris.train"``).
        model: Name under which the trained model is stored (a new version per run).
        params: pydantic model class validating the request's ``params``.
        num_cpus: CPUs the Ray task reserves; ``ctx.nthread`` follows it.
        num_gpus: GPUs the Ray task reserves; with one, ``ctx.device`` is ``"cuda"``.
        memory: Memory (bytes) the Ray task reserves, or ``None``.
        metric: Key of ``TrainedModel.metrics`` a sweep optimises (required only for sweeps).
        mode: ``"max"`` if a larger ``metric`` is better, ``"min"`` otherwise.
        timeout_s: How long one trial may run, counted from when its task starts (time spent
            waiting for resources does not count); past it the task is cancelled and the trial
            fails with ``trial_timeout`` (``None``: ``training.trial_timeout_s``, 1 hour by
            default). Give a long training room for its largest run.
        doc: Description to publish; defaults to the docstring's first paragraph.
        registry: Registry to add to (default :data:`rayml.pipeline.registry.default_registry`).

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        RegistrationError: A bad name or option, or a signature that does not fit.

    Example:
        >>> from pydantic import BaseModel
        >>> from rayml.pipeline import Registry
        >>> class Fit(BaseModel):
        ...     c: float = 1.0
        >>> @training("demo.fit", model="demo", params=Fit, metric="score", registry=Registry())
        ... def fit(params: Fit, ctx: TrainingContext) -> TrainedModel:
        ...     return TrainedModel(model={"c": params.c}, metrics={"score": 1.0})
        >>> fit(Fit(), TrainingContext()).metrics
        {'score': 1.0}
    """
    check_common(name, model, params, doc)
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise RegistrationError(f"pipeline {name!r}: metric must be a non-empty string or None")
    if mode not in ("max", "min"):
        raise RegistrationError(f"pipeline {name!r}: mode must be 'max' or 'min', got {mode!r}")
    _check_timeout(name, "timeout_s", timeout_s)
    try:
        resources = Resources(num_cpus=num_cpus, num_gpus=num_gpus, memory=memory)
    except RegistrationError as exc:
        raise RegistrationError(f"pipeline {name!r}: {exc}") from None

    def decorate(fn: F) -> F:
        sig = checked_signature(name, fn, "training")
        hints = type_hints(fn)
        first, second = list(sig.parameters.values())[:2]
        where = f"pipeline {name!r} ({import_path_of(fn)})"
        problem = item_annotation_problem(hints.get(first.name, inspect.Parameter.empty), params)
        if problem:
            raise RegistrationError(f"{where}: parameter {first.name!r} {problem}")
        ctx_ann = hints.get(second.name, inspect.Parameter.empty)
        if is_wrong_class(ctx_ann, TrainingContext):
            raise RegistrationError(
                f"{where}: parameter {second.name!r} is annotated {type_name(ctx_ann)}; "
                f"it receives a TrainingContext: write `{second.name}: TrainingContext`"
            )
        ret = hints.get("return", inspect.Parameter.empty)
        if is_wrong_class(ret, TrainedModel):
            raise RegistrationError(
                f"{where}: returns {type_name(ret)}; a training pipeline returns "
                f"`TrainedModel(model=..., metrics={{...}})`"
            )
        spec = PipelineSpec(
            name=name,
            kind="training",
            model=model,
            params=params,
            fn=fn,
            batch_fn=fn,
            import_path=import_path_of(fn),
            resources=resources,
            batched=False,
            metric=metric,
            mode=mode,
            trial_timeout_s=None if timeout_s is None else float(timeout_s),
            doc=doc if doc is not None else first_paragraph(fn),
        )
        return _attach(fn, spec, registry)

    return decorate


# --- registering ---------------------------------------------------------------------------


def _check_timeout(name: str, option: str, value: object) -> None:
    """A time bound option is a number of seconds > 0, or None."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
    ):
        raise RegistrationError(
            f"pipeline {name!r}: {option} must be a number of seconds > 0 or None, got {value!r}"
        )


def _attach(fn: F, spec: PipelineSpec, registry: Registry | None) -> F:
    previous = get_spec(fn)
    if previous is not None and previous.name != spec.name:
        # One function, one pipeline: workers find the spec through the function's attribute.
        raise RegistrationError(
            f"{spec.import_path} is already pipeline {previous.name!r}; it cannot also be "
            f"{spec.name!r}. Wrap it in a second function for the second name."
        )
    if registry is None:
        # Looked up on each call so that replacing rayml.pipeline.registry.default_registry (as
        # tests do) redirects the decorators.
        registry = registry_module.default_registry
    registry.register(spec)
    setattr(fn, SPEC_ATTR, spec)
    return fn
