"""Pipelines by name: a registry of plain Python functions, never ``eval``.

A request names a pipeline (``"iris.predict"``) and carries its params. The executor looks the
name up here, validates the params with the pipeline's pydantic model, and calls the function.
Nothing in a request is ever turned into code: workers find a pipeline again by importing its
``module:qualname`` (:func:`load_spec_by_path`), and :meth:`Registry.discover` imports the
modules that define pipelines.

This module holds the :class:`Registry` and :data:`default_registry`, the registry the decorators
(:mod:`rayml.pipeline.decorators`) add to unless given ``registry=``. Within the subpackage it
depends only on :mod:`rayml.pipeline.spec`: the decorators import it, never the other way round.
Pipeline authors import all of this from the package, :mod:`rayml.pipeline`.
The package docstring has a runnable example.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import pkgutil
import re
import threading
import types
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from rayml.errors import (
    InvalidParamsError,
    RaymlError,
    RegistrationError,
    UnknownPipelineError,
)
from rayml.pipeline.spec import PipelineSpec, get_spec

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PACKAGE",
    "ENTRY_POINT_GROUP",
    "Registry",
    "default_registry",
    "load_spec_by_path",
    "validate_batch_params",
    "validate_spec_params",
]

#: Entry-point group through which installed packages contribute pipelines.
ENTRY_POINT_GROUP = "rayml.pipelines"
#: Top-level package whose modules :meth:`Registry.discover` imports by default.
DEFAULT_PACKAGE = "pipelines"

# ``module:qualname`` with dotted identifiers on both sides; anything else is refused before an
# import is attempted.
_IMPORT_PATH_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


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
            UnknownPipelineError: No such pipeline. It names only ``name``, never the others:
                its message reaches whoever sent the request (the executor logs what it serves
                when it starts, and publishes it on the registry topic).

        Example:
            >>> Registry().get("nope")
            Traceback (most recent call last):
            ...
            rayml.errors.UnknownPipelineError: no pipeline named 'nope' is registered
        """
        try:
            return self._specs[name]
        except (KeyError, TypeError):
            raise UnknownPipelineError(str(name)) from None

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
            >>> from rayml.pipeline.decorators import inference
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
        return validate_spec_params(self.get(name), raw)

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


#: The registry the decorators use unless given ``registry=``. They look it up on each call, so
#: replacing this attribute (as tests do) redirects them.
default_registry = Registry()


class _Refused:
    """What the batch adapter keeps of an item that does not validate (its error)."""

    __slots__ = ("error",)

    def __init__(self, error: ValidationError | None) -> None:
        self.error = error  # None: not a JSON object


def _each(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    if not isinstance(value, dict):
        return _Refused(None)
    try:
        return handler(value)
    except ValidationError as exc:
        return _Refused(exc)


@functools.lru_cache(maxsize=256)
def _batch_adapter(params: type[BaseModel]) -> TypeAdapter[list[Any]]:
    # Each item validated once, its error kept in its place: the list never fails as a whole,
    # so no item is validated twice (a validator may change the dict it is given).
    return TypeAdapter(list[Annotated[params, WrapValidator(_each)]])  # type: ignore[valid-type]


def validate_batch_params(
    spec: PipelineSpec, raws: list[Any]
) -> list[BaseModel | InvalidParamsError]:
    """Validate a batch's raw ``params`` against ``spec``'s parameter model: one model or one
    :class:`~rayml.errors.InvalidParamsError` per request, in order (workers call it once per
    batch).

    The whole batch goes through pydantic in one call (a third cheaper a request than one call
    each), each request validated once, with the model and the error
    :func:`validate_spec_params` gives it. A parameter model that overrides ``model_validate``
    is asked request by request, through its override.
    """
    params = spec.params
    if getattr(params.model_validate, "__func__", None) is not _BASE_VALIDATE:
        out: list[BaseModel | InvalidParamsError] = []
        for raw in raws:
            try:
                out.append(validate_spec_params(spec, raw))
            except InvalidParamsError as exc:
                out.append(exc)
        return out
    checked: list[Any] = _batch_adapter(params).validate_python(raws)
    return [
        item if not isinstance(item, _Refused) else _invalid(spec, raw, item.error)
        for raw, item in zip(raws, checked, strict=True)
    ]


_BASE_VALIDATE = BaseModel.model_validate.__func__  # type: ignore[attr-defined]


def _invalid(spec: PipelineSpec, raw: Any, error: ValidationError | None) -> InvalidParamsError:
    """The error :func:`validate_spec_params` raises for ``raw`` (``error``: pydantic's)."""
    if error is None:
        return InvalidParamsError(
            f"invalid params for pipeline {spec.name!r}: params must be a JSON object, "
            f"got {type(raw).__name__}",
            {
                "pipeline": spec.name,
                "errors": [{"field": "params", "message": "must be an object", "type": "type"}],
            },
        )
    errors = [
        {
            "field": ".".join(["params", *(str(part) for part in err["loc"])]),
            "message": err["msg"],
            "type": err["type"],
        }
        for err in error.errors(include_url=False, include_input=False)
    ]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return InvalidParamsError(
        f"invalid params for pipeline {spec.name!r}: {summary}",
        {"pipeline": spec.name, "errors": errors},
    )


def validate_spec_params(spec: PipelineSpec, raw: Any) -> BaseModel:
    """Validate raw ``params`` against ``spec``'s parameter model (see
    :meth:`Registry.validate_params`); workers validate whole batches
    (:func:`validate_batch_params`).

    Raises:
        InvalidParamsError: naming each bad field (``params.x``).
    """
    if not isinstance(raw, dict):
        raise _invalid(spec, raw, None)
    try:
        return spec.params.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(spec, raw, exc) from exc


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
