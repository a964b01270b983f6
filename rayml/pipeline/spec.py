"""What a registered pipeline is: its :class:`PipelineSpec` and the resources it needs.

A spec is plain data. The decorators (:mod:`rayml.pipeline.decorators`) build one and attach it to
the user's function under :data:`SPEC_ATTR`; :mod:`rayml.pipeline.registry` keeps specs by name;
workers find a spec again by importing the function by its ``import_path``. Nothing here imports the
registry or the decorators, so every other pipeline module can depend on this one.

Example:
    >>> from pydantic import BaseModel
    >>> class P(BaseModel):
    ...     x: float
    >>> def f(model: object, batch: list[P]) -> list[float]:
    ...     return [p.x for p in batch]
    >>> spec = PipelineSpec(name="demo.f", kind="inference", model="m", params=P, fn=f,
    ...                     batch_fn=f, import_path=import_path_of(f))
    >>> spec.importable, get_spec(f) is None
    (True, True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from rayml.errors import RegistrationError

__all__ = [
    "SPEC_ATTR",
    "PipelineKind",
    "PipelineSpec",
    "Resources",
    "get_spec",
    "import_path_of",
]

PipelineKind = Literal["inference", "training"]

#: Attribute under which the decorators attach the :class:`PipelineSpec` to the function.
SPEC_ATTR = "__rayml_pipeline__"


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
        batch_timeout_s: Inference: time bound of one batch on a worker (``None``: the
            executor's setting).
        trial_timeout_s: Training: time bound of one trial from when its task starts running
            (``None``: ``training.trial_timeout_s``).
        metric: Metric a sweep optimises (training only; may be ``None``).
        mode: ``"max"`` or ``"min"``: the direction in which ``metric`` improves.
        doc: Short description published with the registry.

    Example:
        >>> from pydantic import BaseModel
        >>> from rayml.pipeline import Registry, inference
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
    # Time bound of one batch of this pipeline on a worker (None: the executor's setting).
    batch_timeout_s: float | None = None
    # Time bound of one trial of this training pipeline (None: the training setting).
    trial_timeout_s: float | None = None
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


def import_path_of(fn: Any) -> str:
    """Return ``module:qualname`` of ``fn``, the path by which workers import it.

    Example:
        >>> import_path_of(get_spec)
        'rayml.pipeline.spec:get_spec'
    """
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "?")
    return f"{module}:{qualname}"
