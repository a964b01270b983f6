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
    "DEFAULT_POOL",
    "SPEC_ATTR",
    "PipelineKind",
    "PipelineSpec",
    "Pool",
    "Resources",
    "get_spec",
    "import_path_of",
]

PipelineKind = Literal["inference", "training"]

#: Attribute under which the decorators attach the :class:`PipelineSpec` to the function.
SPEC_ATTR = "__rayml_pipeline__"

#: The name of the pool shared by the inference pipelines without one of their own (so no
#: pipeline of that name may declare a pool).
DEFAULT_POOL = "default"


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
class Pool:
    """The model-worker pool of one inference pipeline: its shape, its size bounds, its batches.

    A pipeline declared with ``pool=Pool(...)`` gets workers of its own in every ingest,
    autoscaled on its own backlog (docs/autoscaling.md); a pipeline without one shares the
    ingest's default pool (``executor.num_workers`` workers of ``executor.worker_num_cpus``).

    Attributes:
        num_cpus: CPUs each worker reserves (``None``: ``executor.worker_num_cpus``).
        num_gpus: GPUs each worker reserves. Workers are then placed only on nodes with that
            many GPUs free (Ray's ``GPU`` resource), and the pipeline's ``ctx.device`` is
            ``"cuda"``.
        memory: Memory (bytes) each worker reserves, or ``None``.
        min_replicas: Workers per ingest at least. ``0`` lets an idle pool go to zero after
            ``idle_timeout_s``; its next request starts a worker (a cold start, measured).
        max_replicas: Workers per ingest at most (the autoscaler's bound).
        max_batch_size: Requests per Ray call at most (``None``: the pipeline's or the
            executor's).
        max_batch_wait_ms: How long a batch may wait to fill (``None``: the executor's).
        idle_timeout_s: With ``min_replicas=0``: how long the pool must have had nothing to do
            before its workers are released.
        gpu_fallback: With ``num_gpus``: when no node of the cluster has a GPU at all, start
            the workers without one (``ctx.device == "cpu"``) rather than wait for a GPU node
            (``False``: wait, e.g. for the cluster autoscaler to add one).

    Example:
        >>> Pool(num_gpus=1, min_replicas=0).scales_to_zero
        True
        >>> Pool(min_replicas=3, max_replicas=2)
        Traceback (most recent call last):
        ...
        rayml.errors.RegistrationError: pool: max_replicas (2) must be >= min_replicas (3)
    """

    num_cpus: float | None = None
    num_gpus: float = 0
    memory: int | None = None
    min_replicas: int = 1
    max_replicas: int = 4
    max_batch_size: int | None = None
    max_batch_wait_ms: float | None = None
    idle_timeout_s: float = 300.0
    gpu_fallback: bool = True

    def __post_init__(self) -> None:
        def number(name: str, value: object, *, low: float, none_ok: bool) -> None:
            if value is None and none_ok:
                return
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not low <= value < float("inf")
            ):
                raise RegistrationError(f"pool: {name} must be a number >= {low}, got {value!r}")

        number("num_cpus", self.num_cpus, low=0, none_ok=True)
        number("num_gpus", self.num_gpus, low=0, none_ok=False)
        for name in ("num_cpus", "num_gpus"):
            value = getattr(self, name)
            # Ray refuses amounts finer than 0.0001 when the worker starts, which would fail
            # the first request's start instead of the registration.
            if value is not None and abs(value * 10_000 - round(value * 10_000)) > 1e-6:
                raise RegistrationError(
                    f"pool: {name} must be a multiple of 0.0001 (Ray's granularity), got {value!r}"
                )
        number("max_batch_wait_ms", self.max_batch_wait_ms, low=0, none_ok=True)
        if self.max_batch_wait_ms is not None and self.max_batch_wait_ms > 60_000:
            raise RegistrationError(
                f"pool: max_batch_wait_ms must be at most 60000, got {self.max_batch_wait_ms!r}"
            )
        number("idle_timeout_s", self.idle_timeout_s, low=0, none_ok=False)
        for name in ("memory", "min_replicas", "max_replicas", "max_batch_size"):
            value = getattr(self, name)
            if value is None and name in ("memory", "max_batch_size"):
                continue
            low = 0 if name == "min_replicas" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise RegistrationError(f"pool: {name} must be an int >= {low}, got {value!r}")
        if self.max_replicas < self.min_replicas:
            raise RegistrationError(
                f"pool: max_replicas ({self.max_replicas}) must be >= min_replicas "
                f"({self.min_replicas})"
            )
        if self.max_replicas > 10_000:
            raise RegistrationError(f"pool: max_replicas above 10000: {self.max_replicas}")
        if not isinstance(self.gpu_fallback, bool):
            raise RegistrationError("pool: gpu_fallback must be True or False")

    @property
    def scales_to_zero(self) -> bool:
        """Whether an idle pool releases all its workers."""
        return self.min_replicas == 0


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
        pool: Inference: the pipeline's own worker pool (``None``: the ingest's default pool).
        takes_context: Inference: whether ``fn`` takes a ``ctx`` keyword
            (:class:`~rayml.pipeline.contract.InferenceContext`: its worker's device, threads).

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
    pool: Pool | None = None
    takes_context: bool = False

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
            "pool": None if self.pool is None else dataclasses.asdict(self.pool),
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
