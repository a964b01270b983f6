"""Pipelines by name: a registry of plain Python functions, never ``eval``.

A request names a pipeline (``"iris.predict"``) and carries its params. The executor looks the
name up here, validates the params with the pipeline's pydantic model, and calls the function.
Nothing in a request is ever turned into code.

Two kinds of pipeline, registered with a decorator each:

* :func:`inference` -- a *batch* function ``fn(model, batch) -> one output per request``. The
  executor micro-batches requests and makes one call per batch (one Ray call per batch, never one
  per message). A per-request function can be registered with ``batched=False``.
* :func:`training` -- ``fn(params, ctx) -> TrainedModel``, run as a Ray task with the declared
  resources; the runner stores the returned model as a new version.

The decorators check the function's signature when they are applied and return the function
unchanged, so a pipeline stays a plain callable that can be unit-tested without Kafka or Ray.

Example:
    >>> from pydantic import BaseModel
    >>> from rayml.registry import Registry, inference, run_inference
    >>> class Echo(BaseModel):
    ...     text: str
    >>> reg = Registry()
    >>> @inference("demo.echo", model="echo", params=Echo, registry=reg)
    ... def echo(model: object, batch: list[Echo]) -> list[str]:
    ...     return [p.text.upper() for p in batch]
    >>> batch = [reg.validate_params("demo.echo", {"text": "hi"})]
    >>> run_inference(reg.get("demo.echo"), None, batch)
    ['HI']
"""

from __future__ import annotations

import collections.abc
import dataclasses
import importlib
import importlib.metadata
import inspect
import logging
import math
import pkgutil
import re
import threading
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from rayml.errors import (
    InvalidModelNameError,
    InvalidParamsError,
    PipelineFailedError,
    RaymlError,
    RegistrationError,
    UnknownPipelineError,
)
from rayml.models import validate_model_name

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PACKAGE",
    "ENTRY_POINT_GROUP",
    "SPEC_ATTR",
    "PipelineKind",
    "PipelineSpec",
    "Registry",
    "Resources",
    "TrainedModel",
    "TrainingContext",
    "default_registry",
    "get_spec",
    "inference",
    "load_spec_by_path",
    "run_inference",
    "run_training",
    "training",
]

PipelineKind = Literal["inference", "training"]

#: Attribute under which the decorators attach the :class:`PipelineSpec` to the function.
SPEC_ATTR = "__rayml_pipeline__"
#: Entry-point group through which installed packages contribute pipelines.
ENTRY_POINT_GROUP = "rayml.pipelines"
#: Top-level package whose modules :meth:`Registry.discover` imports by default.
DEFAULT_PACKAGE = "pipelines"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
# ``module:qualname`` with dotted identifiers on both sides; anything else is refused before an
# import is attempted.
_IMPORT_PATH_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_DEVICE_RE = re.compile(r"^(cpu|cuda(:[0-9]+)?)$")

F = TypeVar("F", bound=Callable[..., Any])


# --- what a training function receives and returns -------------------------------------------


@dataclass
class TrainedModel:
    """What a training pipeline returns; the runner stores ``model`` as a new version.

    Attributes:
        model: The fitted estimator (XGBoost model or scikit-learn estimator for safe storage).
        metrics: Evaluation results, e.g. ``{"accuracy": 0.97}``; a sweep ranks by one of them.
        data_fingerprint: Hash of the training data, stored with the version for lineage.
        extra: Anything else worth recording in the version's metadata (JSON-serialisable).

    Example:
        >>> TrainedModel(model=None, metrics={"accuracy": 0.9}).metrics["accuracy"]
        0.9
    """

    model: Any
    metrics: dict[str, float]
    data_fingerprint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _no_progress(fraction: float, message: str) -> None:
    """Default progress callback: training outside rayml reports to nobody."""


class TrainingContext:
    """What the training runner tells a training pipeline about where it runs.

    Attributes:
        nthread: Threads the task may use (its Ray ``num_cpus``); pass it to XGBoost's or
            scikit-learn's ``n_jobs`` so a task does not oversubscribe a shared node.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"`` also accepted); pass it to XGBoost's
            ``device``.

    Args:
        nthread: See above; an int >= 1.
        device: See above.
        report_progress: Callback ``(fraction, message) -> None`` that the runner provides
            (e.g. to publish job progress); by default progress goes nowhere.

    Raises:
        ValueError: ``nthread`` or ``device`` is not valid.

    Example:
        >>> seen = []
        >>> ctx = TrainingContext(nthread=2, report_progress=lambda f, m: seen.append((f, m)))
        >>> ctx.report_progress(1.5, "done")
        >>> ctx.report_progress(0.5)
        >>> seen
        [(1.0, 'done'), (0.5, '')]
    """

    __slots__ = ("_callback", "_warned", "device", "nthread")

    def __init__(
        self,
        nthread: int = 1,
        device: str = "cpu",
        report_progress: Callable[[float, str], None] | None = None,
    ) -> None:
        if isinstance(nthread, bool) or not isinstance(nthread, int) or nthread < 1:
            raise ValueError(f"nthread must be an int >= 1, got {nthread!r}")
        if not isinstance(device, str) or not _DEVICE_RE.match(device):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        self.nthread = nthread
        self.device = device
        self._callback = report_progress if report_progress is not None else _no_progress
        self._warned = False

    def report_progress(self, fraction: float, message: str = "") -> None:
        """Report that ``fraction`` (0..1) of the training is done; never raises.

        Progress is advisory: a full producer queue or a dead listener must not throw away
        hours of training. Fractions are clamped to ``[0, 1]``; a failing callback is logged
        (as a warning the first time, then at debug level so it does not flood the log once
        per boosting round).
        """
        try:
            value = float(fraction)
        except (TypeError, ValueError):
            logger.debug("ignoring non-numeric progress fraction %r", fraction)
            return
        value = 0.0 if math.isnan(value) else min(1.0, max(0.0, value))
        try:
            self._callback(value, message)
        except Exception:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            logger.log(level, "progress callback failed; training goes on", exc_info=True)

    def __repr__(self) -> str:
        return f"TrainingContext(nthread={self.nthread}, device={self.device!r})"


# --- the spec ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    """Resources a pipeline's task needs, in Ray's terms (``memory`` in bytes).

    Example:
        >>> Resources(num_cpus=2, memory=2**30).to_ray_options()
        {'num_cpus': 2, 'num_gpus': 0, 'memory': 1073741824}
    """

    num_cpus: float = 1
    num_gpus: float = 0
    memory: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_cpus", "num_gpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise RegistrationError(f"{name} must be a number >= 0, got {value!r}")
        if self.memory is not None and (
            isinstance(self.memory, bool) or not isinstance(self.memory, int) or self.memory <= 0
        ):
            raise RegistrationError(
                f"memory must be a positive int (bytes) or None, got {self.memory!r}"
            )

    def to_ray_options(self) -> dict[str, Any]:
        """Return the options to pass to ``ray.remote(...).options(...)``."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory is not None:
            options["memory"] = self.memory
        return options


class _PerItem:
    """Batch form of a per-request (``batched=False``) inference function.

    A class rather than a closure so that a spec pickles by reference to the user's function.
    """

    def __init__(self, fn: Callable[[Any, Any], Any]) -> None:
        self.fn = fn

    def __call__(self, model: Any, batch: Sequence[Any]) -> list[Any]:
        return [self.fn(model, params) for params in batch]

    def __repr__(self) -> str:
        return f"_PerItem({_import_path(self.fn)})"


@dataclass(frozen=True)
class PipelineSpec:
    """Everything the executor needs to know about one registered pipeline.

    Attributes:
        name: Registered name, e.g. ``"iris.predict"``.
        kind: ``"inference"`` or ``"training"``.
        model: Name of the model in the model store that the pipeline reads or writes.
        params: The pydantic model that validates a request's ``params``.
        fn: The user's function, exactly as written.
        batch_fn: For inference, the batch form ``(model, list[params]) -> outputs`` (``fn``
            itself when ``batched``); for training, ``fn``.
        import_path: ``module:qualname``; workers import the pipeline by it.
        resources: What a task running it needs.
        batched: Whether ``fn`` takes a whole batch.
        max_batch_size: Largest batch the pipeline accepts (``None``: executor's choice).
        metric: Metric a sweep optimises (training only; may be ``None``).
        mode: ``"max"`` or ``"min"``: the direction in which ``metric`` improves.
        doc: Short description published with the registry.

    Example:
        >>> from pydantic import BaseModel
        >>> class P(BaseModel):
        ...     x: float
        >>> reg = Registry()
        >>> @inference("demo.spec", model="m", params=P, registry=reg)
        ... def f(model: object, batch: list[P]) -> list[float]:
        ...     "Doubles x."
        ...     return [2 * p.x for p in batch]
        >>> spec = reg.get("demo.spec")
        >>> spec.kind, spec.model, spec.doc, spec.import_path.endswith(":f")
        ('inference', 'm', 'Doubles x.', True)
    """

    name: str
    kind: PipelineKind
    model: str
    params: type[BaseModel]
    fn: Callable[..., Any]
    batch_fn: Callable[..., Any]
    import_path: str
    resources: Resources = field(default_factory=Resources)
    batched: bool = True
    max_batch_size: int | None = None
    metric: str | None = None
    mode: Literal["max", "min"] = "max"
    doc: str = ""

    @property
    def importable(self) -> bool:
        """Whether a worker can re-import this pipeline by ``import_path``.

        Functions defined in ``__main__`` (a notebook, a script) or inside another function
        cannot be; move them to a module to run them on a cluster.
        """
        module, _, qualname = self.import_path.partition(":")
        return module != "__main__" and "<locals>" not in qualname

    def describe(self) -> dict[str, Any]:
        """Return the JSON-serialisable description published to the registry topic."""
        return {
            "name": self.name,
            "kind": self.kind,
            "model": self.model,
            "doc": self.doc,
            "params_schema": self.params.model_json_schema(),
            "resources": dataclasses.asdict(self.resources),
            "batched": self.batched,
            "max_batch_size": self.max_batch_size,
            "metric": self.metric,
            "mode": self.mode,
            "import_path": self.import_path,
        }


def get_spec(fn: object) -> PipelineSpec | None:
    """Return the spec a decorator attached to ``fn``, or ``None`` if it is not a pipeline.

    Example:
        >>> get_spec(print) is None
        True
    """
    spec = getattr(fn, SPEC_ATTR, None)
    return spec if isinstance(spec, PipelineSpec) else None


# --- the registry -------------------------------------------------------------------------


class Registry:
    """Registered pipelines by name.

    The decorators register into :data:`default_registry` unless given ``registry=``; tests
    create their own instances.

    Example:
        >>> reg = Registry()
        >>> reg.names()
        []
        >>> "iris.predict" in reg
        False
    """

    def __init__(self) -> None:
        self._specs: dict[str, PipelineSpec] = {}
        # Registration can happen from worker threads importing pipelines by path.
        self._lock = threading.Lock()

    def register(self, spec: PipelineSpec) -> PipelineSpec:
        """Add ``spec``; re-registering the same function (or import path) is a no-op update.

        A module imported twice (``importlib.reload``, a notebook cell run again) defines a new
        function object under the same import path: the newer definition replaces the older.
        A *different* function under a taken name is an error.

        Raises:
            RegistrationError: The name is taken by another function.

        Example:
            >>> from pydantic import BaseModel
            >>> class P(BaseModel):
            ...     x: float
            >>> def f(model: object, batch: list[P]) -> list[float]:
            ...     return [p.x for p in batch]
            >>> reg = Registry()
            >>> spec = PipelineSpec(name="demo.f", kind="inference", model="m", params=P, fn=f,
            ...                     batch_fn=f, import_path="demo:f")
            >>> reg.register(spec) is spec, reg.names()
            (True, ['demo.f'])
        """
        with self._lock:
            existing = self._specs.get(spec.name)
            if existing is not None and existing.fn is not spec.fn:
                if existing.import_path != spec.import_path:
                    raise RegistrationError(
                        f"pipeline name {spec.name!r} is already registered by "
                        f"{existing.import_path} (module {existing.fn.__module__!r}); "
                        f"{spec.import_path} (module {spec.fn.__module__!r}) cannot take it too. "
                        f"Pick another name, e.g. {spec.name + '_v2'!r}."
                    )
                logger.debug("pipeline=%s re-registered from %s", spec.name, spec.import_path)
            self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> PipelineSpec:
        """Return the spec registered as ``name``.

        Raises:
            UnknownPipelineError: No such pipeline; its ``details`` list the known names.

        Example:
            >>> Registry().get("nope")
            Traceback (most recent call last):
            ...
            rayml.errors.UnknownPipelineError: no pipeline named 'nope' is registered
        """
        try:
            return self._specs[name]
        except (KeyError, TypeError):
            raise UnknownPipelineError(str(name), self.names()) from None

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def validate_params(self, name: str, raw: Any) -> BaseModel:
        """Validate a request's raw ``params`` against pipeline ``name``'s parameter model.

        Raises:
            UnknownPipelineError: ``name`` is not registered.
            InvalidParamsError: The params do not validate. The message names each bad field;
                ``details["errors"]`` lists ``{"field": "params.x", "message", "type"}``.

        Example:
            >>> from pydantic import BaseModel
            >>> class P(BaseModel):
            ...     n: int
            >>> reg = Registry()
            >>> @inference("demo.n", model="m", params=P, registry=reg)
            ... def f(model: object, batch: list[P]) -> list[int]:
            ...     return [p.n for p in batch]
            >>> reg.validate_params("demo.n", {"n": "3"})
            P(n=3)
            >>> try:
            ...     reg.validate_params("demo.n", {"n": "x"})
            ... except InvalidParamsError as exc:
            ...     print(exc.details["errors"][0]["field"])
            params.n
        """
        spec = self.get(name)
        if not isinstance(raw, dict):
            raise InvalidParamsError(
                f"invalid params for pipeline {name!r}: params must be a JSON object, "
                f"got {type(raw).__name__}",
                {
                    "pipeline": name,
                    "errors": [{"field": "params", "message": "must be an object", "type": "type"}],
                },
            )
        try:
            return spec.params.model_validate(raw)
        except ValidationError as exc:
            errors = [
                {
                    "field": ".".join(["params", *(str(part) for part in err["loc"])]),
                    "message": err["msg"],
                    "type": err["type"],
                }
                for err in exc.errors(include_url=False, include_input=False)
            ]
            summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            raise InvalidParamsError(
                f"invalid params for pipeline {name!r}: {summary}",
                {"pipeline": name, "errors": errors},
            ) from exc

    def describe(self) -> list[dict[str, Any]]:
        """Return a JSON-serialisable description of every pipeline, sorted by name.

        This is what the executor publishes to the registry topic, so clients can list
        pipelines and validate requests (``params_schema`` is a JSON Schema) before sending.

        Example:
            >>> Registry().describe()
            []
        """
        with self._lock:
            specs = [self._specs[name] for name in sorted(self._specs)]
        return [spec.describe() for spec in specs]

    def discover(
        self,
        modules: Sequence[str] = (),
        *,
        include_default_package: bool = True,
        entry_points: bool = True,
    ) -> list[str]:
        """Import pipeline modules and register every pipeline they define into this registry.

        Sources, in order: every module of the top-level ``pipelines`` package (skipped with a
        log line if it is not installed), each module named in ``modules`` (packages are walked
        too), and each entry point in group ``rayml.pipelines`` (a module, a package, or a
        decorated function).

        Returns:
            The sorted names of the pipelines found.

        Raises:
            RegistrationError: A module or entry point failed to import, or two of them claim
                the same name. The cause is chained.

        Example:
            >>> reg = Registry()
            >>> "iris.predict" in reg.discover(entry_points=False)
            True
        """
        found: set[str] = set()
        if include_default_package:
            try:
                package = importlib.import_module(DEFAULT_PACKAGE)
            except ModuleNotFoundError as exc:
                if exc.name != DEFAULT_PACKAGE:
                    raise RegistrationError(
                        f"importing pipeline package {DEFAULT_PACKAGE!r} failed: {exc}"
                    ) from exc
                logger.info("no %r package installed; skipping default pipelines", DEFAULT_PACKAGE)
            else:
                found |= self._collect_tree(package)
        for module_name in modules:
            found |= self._collect_tree(_import_module(module_name, source="configuration"))
        if entry_points:
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                try:
                    obj = ep.load()
                except Exception as exc:
                    raise RegistrationError(
                        f"entry point {ep.name!r} = {ep.value!r} (group {ENTRY_POINT_GROUP!r}) "
                        f"failed to load: {exc}"
                    ) from exc
                if isinstance(obj, types.ModuleType):
                    found |= self._collect_tree(obj)
                elif (spec := get_spec(obj)) is not None:
                    found.add(self.register(spec).name)
                else:
                    raise RegistrationError(
                        f"entry point {ep.name!r} = {ep.value!r} is neither a module nor a "
                        f"function decorated with @inference/@training"
                    )
        names = sorted(found)
        logger.info("discovered %d pipelines: %s", len(names), ", ".join(names))
        return names

    def _collect_tree(self, module: types.ModuleType) -> set[str]:
        """Register the pipelines of ``module`` and, if it is a package, of all its submodules."""
        found = self._collect(module)
        path = getattr(module, "__path__", None)
        if path is not None:

            def onerror(name: str) -> None:
                # walk_packages swallows ImportErrors of subpackages unless told otherwise;
                # a pipeline module that does not import must be loud, not silently missing.
                raise RegistrationError(f"importing pipeline package {name!r} failed")

            prefix = module.__name__ + "."
            for info in pkgutil.walk_packages(path, prefix=prefix, onerror=onerror):
                found |= self._collect(_import_module(info.name, source=module.__name__))
        return found

    def _collect(self, module: types.ModuleType) -> set[str]:
        # Scanning the module (rather than diffing the default registry) makes discovery work
        # for any Registry instance and for modules that were already imported.
        found: set[str] = set()
        for value in list(vars(module).values()):
            spec = get_spec(value)
            if spec is not None:
                found.add(self.register(spec).name)
        return found


def _import_module(name: str, *, source: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except RaymlError:
        raise
    except Exception as exc:
        raise RegistrationError(
            f"importing pipeline module {name!r} (from {source}) failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


#: The registry the decorators use unless given ``registry=``.
default_registry = Registry()


# --- decorators ---------------------------------------------------------------------------


def inference(
    name: str,
    *,
    model: str,
    params: type[BaseModel],
    batched: bool = True,
    max_batch_size: int | None = None,
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
        doc: Description to publish; defaults to the docstring's first paragraph.
        registry: Registry to add to (default :data:`default_registry`).

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        RegistrationError: A bad name or option, or a signature that does not fit.

    Example:
        >>> from pydantic import BaseModel
        >>> class Square(BaseModel):
        ...     x: float
        >>> @inference("demo.square", model="none", params=Square, batched=False,
        ...            registry=Registry())
        ... def square(model: object, params: Square) -> float:
        ...     return params.x ** 2
        >>> square(None, Square(x=3))
        9.0
    """
    _check_common(name, model, params, doc)
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

    def decorate(fn: F) -> F:
        sig = _checked_signature(name, fn, "inference")
        hints = _type_hints(fn)
        params_param = list(sig.parameters.values())[1]
        ann = hints.get(params_param.name, inspect.Parameter.empty)
        problem = (
            _batch_annotation_problem(ann, params)
            if batched
            else _item_annotation_problem(ann, params)
        )
        if problem:
            raise RegistrationError(
                f"pipeline {name!r} ({_import_path(fn)}): parameter {params_param.name!r} {problem}"
            )
        batch_fn: Callable[..., Any] = fn if batched else _PerItem(fn)
        spec = PipelineSpec(
            name=name,
            kind="inference",
            model=model,
            params=params,
            fn=fn,
            batch_fn=batch_fn,
            import_path=_import_path(fn),
            batched=batched,
            max_batch_size=max_batch_size,
            doc=doc if doc is not None else _first_paragraph(fn),
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
        doc: Description to publish; defaults to the docstring's first paragraph.
        registry: Registry to add to (default :data:`default_registry`).

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        RegistrationError: A bad name or option, or a signature that does not fit.

    Example:
        >>> from pydantic import BaseModel
        >>> class Fit(BaseModel):
        ...     c: float = 1.0
        >>> @training("demo.fit", model="demo", params=Fit, metric="score", registry=Registry())
        ... def fit(params: Fit, ctx: TrainingContext) -> TrainedModel:
        ...     return TrainedModel(model={"c": params.c}, metrics={"score": 1.0})
        >>> fit(Fit(), TrainingContext()).metrics
        {'score': 1.0}
    """
    _check_common(name, model, params, doc)
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise RegistrationError(f"pipeline {name!r}: metric must be a non-empty string or None")
    if mode not in ("max", "min"):
        raise RegistrationError(f"pipeline {name!r}: mode must be 'max' or 'min', got {mode!r}")
    try:
        resources = Resources(num_cpus=num_cpus, num_gpus=num_gpus, memory=memory)
    except RegistrationError as exc:
        raise RegistrationError(f"pipeline {name!r}: {exc}") from None

    def decorate(fn: F) -> F:
        sig = _checked_signature(name, fn, "training")
        hints = _type_hints(fn)
        first, second = list(sig.parameters.values())[:2]
        where = f"pipeline {name!r} ({_import_path(fn)})"
        problem = _item_annotation_problem(hints.get(first.name, inspect.Parameter.empty), params)
        if problem:
            raise RegistrationError(f"{where}: parameter {first.name!r} {problem}")
        ctx_ann = hints.get(second.name, inspect.Parameter.empty)
        if _is_wrong_class(ctx_ann, TrainingContext):
            raise RegistrationError(
                f"{where}: parameter {second.name!r} is annotated {_type_name(ctx_ann)}; "
                f"it receives a TrainingContext: write `{second.name}: TrainingContext`"
            )
        ret = hints.get("return", inspect.Parameter.empty)
        if _is_wrong_class(ret, TrainedModel):
            raise RegistrationError(
                f"{where}: returns {_type_name(ret)}; a training pipeline returns "
                f"`TrainedModel(model=..., metrics={{...}})`"
            )
        spec = PipelineSpec(
            name=name,
            kind="training",
            model=model,
            params=params,
            fn=fn,
            batch_fn=fn,
            import_path=_import_path(fn),
            resources=resources,
            batched=False,
            metric=metric,
            mode=mode,
            doc=doc if doc is not None else _first_paragraph(fn),
        )
        return _attach(fn, spec, registry)

    return decorate


# --- calling pipelines --------------------------------------------------------------------


def run_inference(spec: PipelineSpec, model: Any, params_list: Sequence[BaseModel]) -> list[Any]:
    """Run an inference pipeline on one batch and return exactly one output per request.

    Numpy arrays returned by a pipeline are converted with ``tolist()`` so results are JSON
    ready. An empty batch returns ``[]`` without calling the pipeline.

    Raises:
        PipelineFailedError: The pipeline raised, or returned the wrong number of outputs
            (then every request of the batch fails: the outputs cannot be matched up).

    Example:
        >>> from pydantic import BaseModel
        >>> class P(BaseModel):
        ...     x: int
        >>> reg = Registry()
        >>> @inference("demo.bad", model="m", params=P, registry=reg)
        ... def bad(model: object, batch: list[P]) -> list[int]:
        ...     return [p.x for p in batch][:1]  # drops requests: a bug
        >>> run_inference(reg.get("demo.bad"), None, [P(x=1)])
        [1]
        >>> run_inference(reg.get("demo.bad"), None, [P(x=1), P(x=2)])
        Traceback (most recent call last):
        ...
        rayml.errors.PipelineFailedError: pipeline 'demo.bad' returned 1 outputs for a batch of \
2 requests; it must return exactly one output per request, in order
    """
    if spec.kind != "inference":
        raise PipelineFailedError(
            f"pipeline {spec.name!r} is a {spec.kind} pipeline, not inference",
            {"pipeline": spec.name},
        )
    batch = list(params_list)
    if not batch:
        return []
    try:
        outputs = spec.batch_fn(model, batch)
    except RaymlError:
        raise
    except Exception as exc:
        raise PipelineFailedError(
            f"pipeline {spec.name!r} raised {type(exc).__name__}: {exc}",
            {"pipeline": spec.name, "exception": type(exc).__name__},
        ) from exc
    if hasattr(outputs, "tolist") and not isinstance(outputs, list):
        outputs = outputs.tolist()
    if isinstance(outputs, str | bytes | dict) or not isinstance(outputs, Iterable):
        raise PipelineFailedError(
            f"pipeline {spec.name!r} returned {type(outputs).__name__}; an inference pipeline "
            f"returns a list with one output per request",
            {"pipeline": spec.name, "returned": type(outputs).__name__},
        )
    result = list(outputs)
    if len(result) != len(batch):
        raise PipelineFailedError(
            f"pipeline {spec.name!r} returned {len(result)} outputs for a batch of "
            f"{len(batch)} requests; it must return exactly one output per request, in order",
            {"pipeline": spec.name, "expected": len(batch), "got": len(result)},
        )
    return result


def run_training(spec: PipelineSpec, params: BaseModel, ctx: TrainingContext) -> TrainedModel:
    """Run a training pipeline and check what it returned.

    Metrics are converted to plain ``float`` (numpy scalars are common) so they serialise.

    Raises:
        PipelineFailedError: The pipeline raised, did not return a :class:`TrainedModel`,
            returned a non-numeric metric, or left out its declared ``metric``.

    Example:
        >>> from pydantic import BaseModel
        >>> class P(BaseModel):
        ...     pass
        >>> reg = Registry()
        >>> @training("demo.t", model="m", params=P, metric="loss", mode="min", registry=reg)
        ... def t(params: P, ctx: TrainingContext) -> TrainedModel:
        ...     return TrainedModel(model=None, metrics={"loss": 1})
        >>> run_training(reg.get("demo.t"), P(), TrainingContext()).metrics
        {'loss': 1.0}
    """
    if spec.kind != "training":
        raise PipelineFailedError(
            f"pipeline {spec.name!r} is an {spec.kind} pipeline, not training",
            {"pipeline": spec.name},
        )
    try:
        result = spec.fn(params, ctx)
    except RaymlError:
        raise
    except Exception as exc:
        raise PipelineFailedError(
            f"pipeline {spec.name!r} raised {type(exc).__name__}: {exc}",
            {"pipeline": spec.name, "exception": type(exc).__name__},
        ) from exc
    if not isinstance(result, TrainedModel):
        raise PipelineFailedError(
            f"pipeline {spec.name!r} returned {type(result).__name__}; a training pipeline "
            f"returns TrainedModel(model=..., metrics={{...}})",
            {"pipeline": spec.name, "returned": type(result).__name__},
        )
    metrics: dict[str, float] = {}
    for key, value in dict(result.metrics).items():
        try:
            metrics[str(key)] = float(value)
        except (TypeError, ValueError) as exc:
            raise PipelineFailedError(
                f"pipeline {spec.name!r} returned metric {key!r} = {value!r}, not a number",
                {"pipeline": spec.name, "metric": str(key)},
            ) from exc
    if spec.metric is not None and spec.metric not in metrics:
        raise PipelineFailedError(
            f"pipeline {spec.name!r} declares metric {spec.metric!r} but returned only "
            f"{sorted(metrics)}",
            {"pipeline": spec.name, "metric": spec.metric},
        )
    return dataclasses.replace(result, metrics=metrics)


def load_spec_by_path(import_path: str) -> PipelineSpec:
    """Import a pipeline by its ``module:qualname`` path (as workers do) and return its spec.

    Only modules and attributes are looked up (``importlib`` + ``getattr``); nothing is
    evaluated. The path must come from a registered spec, not from a request.

    Raises:
        RegistrationError: Malformed path, a function in ``__main__`` or a local function (not
            importable on another process), a failed import, or an object that is not a
            decorated pipeline.

    Example:
        >>> load_spec_by_path("pipelines.iris:predict").name
        'iris.predict'
    """
    if not isinstance(import_path, str) or not _IMPORT_PATH_RE.match(import_path):
        raise RegistrationError(
            f"import path {import_path!r} is not of the form 'package.module:function'"
        )
    module_name, _, qualname = import_path.partition(":")
    if module_name == "__main__":
        raise RegistrationError(
            f"pipeline {import_path!r} is defined in __main__ (a script or notebook); workers "
            f"cannot import it. Move it to a module on the workers' path and import it from there."
        )
    obj: Any = _import_module(module_name, source=f"import path {import_path!r}")
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistrationError(
                f"import path {import_path!r}: {module_name!r} has no attribute {qualname!r}"
            ) from None
    spec = get_spec(obj)
    if spec is None:
        raise RegistrationError(
            f"import path {import_path!r} names {type(obj).__name__} that is not decorated "
            f"with @inference or @training"
        )
    return spec


# --- checks done at decoration time -------------------------------------------------------


def _check_common(name: str, model: str, params: object, doc: object) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RegistrationError(
            f"pipeline name {name!r} is not valid: use lowercase dotted identifiers "
            f"such as 'iris.predict' (pattern {_NAME_RE.pattern})"
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


def _checked_signature(name: str, fn: object, kind: PipelineKind) -> inspect.Signature:
    expected = (
        "fn(model, batch: list[Params]) (or fn(model, params: Params) with batched=False)"
        if kind == "inference"
        else "fn(params: Params, ctx: TrainingContext) -> TrainedModel"
    )
    if not callable(fn) or not hasattr(fn, "__qualname__") or not hasattr(fn, "__module__"):
        raise RegistrationError(
            f"pipeline {name!r}: @{kind} decorates a function defined with `def`, got {fn!r}"
        )
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise RegistrationError(
            f"pipeline {name!r} ({_import_path(fn)}) is async; pipelines are plain functions "
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
        sig.bind(object(), object())
    except TypeError as exc:
        raise RegistrationError(
            f"pipeline {name!r} ({_import_path(fn)}) has signature {sig}, which cannot be "
            f"called with two arguments ({exc}); write {expected}"
        ) from None
    if len(positional) < 2:
        # Only *args: annotations cannot be checked and the call shape is unclear.
        raise RegistrationError(
            f"pipeline {name!r} ({_import_path(fn)}) has signature {sig}; write {expected}"
        )
    return sig


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:
        # Annotations that cannot be resolved here (names behind TYPE_CHECKING, local classes
        # with postponed evaluation) are not an error: arity was checked, the types are advice.
        logger.debug("cannot resolve annotations of %s; skipping type checks", _import_path(fn))
        return {}


_SEQUENCE_ORIGINS: tuple[object, ...] = (
    list,
    collections.abc.Sequence,
    collections.abc.Iterable,
    collections.abc.Collection,
)


def _batch_annotation_problem(ann: Any, params: type[BaseModel]) -> str | None:
    if ann is inspect.Parameter.empty or ann is Any or ann in _SEQUENCE_ORIGINS:
        return None
    origin = typing.get_origin(ann)
    if origin in _SEQUENCE_ORIGINS:
        args = typing.get_args(ann)
        if not args or not _is_wrong_class(args[0], params):
            return None
        return (
            f"is annotated {_type_name(ann)}; the batch holds {params.__name__} instances: "
            f"write `batch: list[{params.__name__}]`"
        )
    if isinstance(ann, type):
        if issubclass(params, ann):
            return (
                f"is annotated {_type_name(ann)}, a single request, but the pipeline is batched: "
                f"take `batch: list[{params.__name__}]` and return one output per request, or "
                f"register with batched=False"
            )
        return f"is annotated {_type_name(ann)}; write `batch: list[{params.__name__}]`"
    return None


def _item_annotation_problem(ann: Any, params: type[BaseModel]) -> str | None:
    if typing.get_origin(ann) in _SEQUENCE_ORIGINS or ann in _SEQUENCE_ORIGINS:
        return (
            f"is annotated {_type_name(ann)}, a batch, but this function gets one request: "
            f"write `params: {params.__name__}` (for inference, or drop batched=False)"
        )
    if _is_wrong_class(ann, params):
        return f"is annotated {_type_name(ann)}; write `params: {params.__name__}`"
    return None


def _is_wrong_class(ann: Any, expected: type) -> bool:
    """Whether ``ann`` is a class that an ``expected`` instance would not satisfy."""
    # typing.Any is a class since Python 3.11; it (like object) accepts anything.
    return isinstance(ann, type) and ann not in (object, Any) and not issubclass(expected, ann)


def _type_name(ann: Any) -> str:
    return ann.__qualname__ if isinstance(ann, type) else repr(ann)


def _import_path(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "?")
    return f"{module}:{qualname}"


def _first_paragraph(fn: Callable[..., Any]) -> str:
    text = inspect.getdoc(fn) or ""
    return " ".join(text.split("\n\n", 1)[0].split())


def _attach(fn: F, spec: PipelineSpec, registry: Registry | None) -> F:
    previous = get_spec(fn)
    if previous is not None and previous.name != spec.name:
        # One function, one pipeline: workers find the spec through the function's attribute.
        raise RegistrationError(
            f"{spec.import_path} is already pipeline {previous.name!r}; it cannot also be "
            f"{spec.name!r}. Wrap it in a second function for the second name."
        )
    (registry if registry is not None else default_registry).register(spec)
    setattr(fn, SPEC_ATTR, spec)
    return fn
