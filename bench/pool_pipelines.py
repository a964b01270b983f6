"""The pipelines of the pools row (:mod:`bench.pools`): the example model, three pools.

Each is the example ``breast_cancer.predict`` (same params, same answer, so the result reader
checks every label against the model's offline prediction) registered under another name with
a pool of its own (docs/autoscaling.md, "Pools per pipeline"):

* ``bench.pools.hot`` -- most of the traffic: one worker at least, two at most;
* ``bench.pools.cold`` -- a share of it: no worker while idle for :data:`COLD_IDLE_S`;
* ``bench.pools.gpu`` -- declares a GPU and no minimum; on a machine without a GPU its worker
  starts on CPU (``gpu_fallback``, counted as ``on_cpu_instead_of_gpu`` in status).

The executor imports this module by name (``executor.pipeline_modules``) and Ray's workers by
each pipeline's import path, as the bench's ``PYTHONPATH`` allows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The module, not its function: a decorated function among this module's names would be
# registered a second time when the executor discovers this module.
from pipelines import breast_cancer as example
from pipelines.breast_cancer import PredictParams
from rayml.pipeline import InferenceContext, Pool, inference

HOT = "bench.pools.hot"
COLD = "bench.pools.cold"
GPU = "bench.pools.gpu"

#: How long the cold pool may be idle before its worker is released.
COLD_IDLE_S = 3.0

# CPUs each worker reserves in Ray. The bench's Ray has the machine's 2 CPUs; the hot pool at
# its largest (2 x 0.5), the cold and GPU pools (0.25 each) and the default pool's worker
# (bench.pools: 0.25) fit in them, so no worker waits for a CPU reservation.
HOT_CPUS = 0.5
SMALL_CPUS = 0.25


_Pipeline = Callable[..., list[dict[str, Any]]]


def _predict_as(attr: str, name: str, pool: Pool, doc: str) -> _Pipeline:
    """``breast_cancer.predict`` registered as pipeline ``name`` on ``pool``.

    Workers import a pipeline by its ``module:qualname`` and discovery registers this module's
    decorated attributes, so each call builds a function of its own (one function, one
    pipeline), named ``attr`` before the decorator reads its import path: bind it to this
    module's attribute ``attr``.
    """

    def predict(
        model: Any, batch: list[PredictParams], ctx: InferenceContext | None = None
    ) -> list[dict[str, Any]]:
        return example.predict(model, batch, ctx=ctx)

    predict.__name__ = predict.__qualname__ = attr
    predict.__doc__ = doc
    return inference(name, model=example.MODEL, params=PredictParams, pool=pool)(predict)


hot = _predict_as(
    "hot",
    HOT,
    Pool(num_cpus=HOT_CPUS, min_replicas=1, max_replicas=2),
    "The hot pipeline: ``breast_cancer.predict`` on a pool of one or two workers.",
)
cold = _predict_as(
    "cold",
    COLD,
    Pool(num_cpus=SMALL_CPUS, min_replicas=0, max_replicas=1, idle_timeout_s=COLD_IDLE_S),
    "The cold pipeline: ``breast_cancer.predict`` on a pool that goes to zero when idle.",
)
gpu = _predict_as(
    "gpu",
    GPU,
    Pool(num_cpus=SMALL_CPUS, num_gpus=1, min_replicas=0, max_replicas=1),
    """The GPU-declared pipeline: ``breast_cancer.predict`` on ``ctx.device`` ("cuda" on a
    worker that got a GPU, "cpu" where the cluster has none).""",
)
