"""The contract between rayml and a pipeline function, and the calls that enforce it.

What a pipeline receives and returns: an inference pipeline gets the model and a batch of
validated params and returns exactly one output per request, in order; a training pipeline gets
its params and a :class:`TrainingContext` and returns a :class:`TrainedModel`.
:func:`run_inference` and :func:`run_training` are how rayml calls a pipeline: they turn what it
raised into a record failure and check what it returned, so a buggy pipeline fails its own
requests and nothing else. Pipeline authors import all of this from the package,
:mod:`rayml.pipeline`.

Example:
    >>> from pydantic import BaseModel
    >>> from rayml.pipeline import Registry, inference
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

import dataclasses
import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from rayml.errors import PipelineFailedError, RaymlError
from rayml.pipeline.spec import PipelineSpec

logger = logging.getLogger(__name__)

__all__ = [
    "InferenceContext",
    "TrainedModel",
    "TrainingContext",
    "run_inference",
    "run_training",
]

_DEVICE_RE = re.compile(r"^(cpu|cuda(:[0-9]+)?)$")


# --- what a training function receives and returns -------------------------------------------


@dataclass
class TrainedModel:
    """What a training pipeline returns; the runner stores ``model`` as a new version.

    Attributes:
        model: The fitted estimator (XGBoost model or scikit-learn estimator for safe storage).
        metrics: Evaluation results, e.g. ``{"accuracy": 0.97}``; a sweep ranks by one of them.
        data_fingerprint: Hash of the training data, stored with the version for lineage.
        extra: Anything else worth recording in the version's metadata (JSON-serialisable).
        reference_rows: Optional training inputs, one numeric vector per row (a matrix: the
            order of the inference params' one list field, e.g. ``features``). The runner
            stores a drift reference computed from them with the version (at most 10,000 rows
            of 256 features; the inference pipeline of the same model, when there is one, runs
            on them for the output's share per label): docs/rollouts.md, "Drift".

    Example:
        >>> TrainedModel(model=None, metrics={"accuracy": 0.9}).metrics["accuracy"]
        0.9
    """

    model: Any
    metrics: dict[str, float]
    data_fingerprint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    reference_rows: Any = None


class InferenceContext:
    """What a model worker tells an inference pipeline about where it runs.

    An inference function receives it when it declares a ``ctx`` keyword parameter:
    ``def predict(model, batch, ctx: InferenceContext | None = None)``.

    Attributes:
        nthread: Threads the worker's BLAS/OpenMP pools have (``executor.worker_threads``).
        device: ``"cuda"`` when the worker's pool declares a GPU and Ray gave it one
            (``Pool(num_gpus=...)``), else ``"cpu"``; pass it to XGBoost's ``device``.

    Example:
        >>> InferenceContext(device="cuda")
        InferenceContext(nthread=1, device='cuda')
    """

    __slots__ = ("device", "nthread")

    def __init__(self, nthread: int = 1, device: str = "cpu") -> None:
        if isinstance(nthread, bool) or not isinstance(nthread, int) or nthread < 1:
            raise ValueError(f"nthread must be an int >= 1, got {nthread!r}")
        if not isinstance(device, str) or not _DEVICE_RE.match(device):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        self.nthread = nthread
        self.device = device

    def __repr__(self) -> str:
        return f"InferenceContext(nthread={self.nthread}, device={self.device!r})"


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


# --- calling pipelines --------------------------------------------------------------------


def run_inference(
    spec: PipelineSpec,
    model: Any,
    params_list: Sequence[BaseModel],
    ctx: InferenceContext | None = None,
) -> list[Any]:
    """Run an inference pipeline on one batch and return exactly one output per request.

    A pipeline that takes a ``ctx`` keyword gets ``ctx`` (a default
    :class:`InferenceContext` when none is given).

    Numpy arrays returned by a pipeline are converted with ``tolist()`` so results are JSON
    ready. An empty batch returns ``[]`` without calling the pipeline.

    Raises:
        PipelineFailedError: The pipeline raised, or returned the wrong number of outputs
            (then every request of the batch fails: the outputs cannot be matched up).

    Example:
        >>> from pydantic import BaseModel
        >>> from rayml.pipeline import Registry, inference
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
    if spec.takes_context:
        context = ctx if ctx is not None else InferenceContext()
        outputs = _call_pipeline(spec, spec.batch_fn, model, batch, ctx=context)
    else:
        outputs = _call_pipeline(spec, spec.batch_fn, model, batch)
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
        >>> from rayml.pipeline import Registry, training
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
    result = _call_pipeline(spec, spec.fn, params, ctx)
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


def _call_pipeline(spec: PipelineSpec, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a user's pipeline function; anything it raises becomes a record failure.

    rayml's own errors pass through unchanged (they already say what went wrong).
    """
    try:
        return fn(*args, **kwargs)
    except RaymlError:
        raise
    except Exception as exc:
        raise PipelineFailedError(
            f"pipeline {spec.name!r} raised {type(exc).__name__}: {exc}",
            {"pipeline": spec.name, "exception": type(exc).__name__},
        ) from exc
