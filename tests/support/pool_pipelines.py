"""Pipelines with pools of their own, for the pool tests (tests/integration/test_pools.py).

They use the example ``breast_cancer`` model (the tests store it) and answer with where they
ran: the worker's node, its device and its process, so a test can see which pool served it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from rayml.pipeline import InferenceContext, Pool, inference


class Row(BaseModel):
    features: list[float]


def _where(ctx: InferenceContext | None) -> dict[str, Any]:
    import ray

    return {
        "node": ray.get_runtime_context().get_node_id(),
        "device": None if ctx is None else ctx.device,
        "pid": os.getpid(),
    }


#: Seconds one batch of ``pools.hot`` takes (a model-bound pipeline whose cost is not CPU, so
#: that more workers answer more on a loaded 2-core machine).
HOT_BATCH_S = 0.05

_Pipeline = Callable[..., list[dict[str, Any]]]


def _where_as(
    attr: str, name: str, pool: Pool | None, doc: str, *, batch_s: float = 0.0
) -> _Pipeline:
    """A pipeline ``name`` on ``pool`` that answers each request with where it ran, after
    ``batch_s`` seconds a batch.

    Workers import a pipeline by its ``module:qualname`` and discovery registers this module's
    decorated attributes, so each call builds a function of its own (one function, one
    pipeline), named ``attr`` before the decorator reads its import path: bind it to this
    module's attribute ``attr``.
    """

    def where(
        model: Any, batch: list[Row], ctx: InferenceContext | None = None
    ) -> list[dict[str, Any]]:
        if batch_s:
            time.sleep(batch_s)
        return [_where(ctx)] * len(batch)

    where.__name__ = where.__qualname__ = attr
    where.__doc__ = doc
    return inference(name, model="breast_cancer", params=Row, pool=pool)(where)


hot = _where_as(
    "hot",
    "pools.hot",
    Pool(num_cpus=0.1, min_replicas=1, max_replicas=3, max_batch_size=8),
    "Takes HOT_BATCH_S per batch of at most 8.",
    batch_s=HOT_BATCH_S,
)
cold = _where_as(
    "cold",
    "pools.cold",
    Pool(num_cpus=0.1, min_replicas=0, max_replicas=1, idle_timeout_s=2.0),
    "Used now and then: its pool goes to zero when idle.",
)
gpu = _where_as(
    "gpu",
    "pools.gpu",
    Pool(num_cpus=0.1, num_gpus=1, min_replicas=0, max_replicas=1, idle_timeout_s=600.0),
    "Declares a GPU: placed on a GPU node, or on CPU where the cluster has none.",
)
shared = _where_as("shared", "pools.shared", None, "No pool of its own: the ingest's default pool.")
never = _where_as(
    "never",
    "pools.never",
    Pool(num_cpus=0.1, num_gpus=1, gpu_fallback=False, min_replicas=0, max_replicas=1),
    "Waits for a GPU node: on a cluster without one, none of its workers ever starts.",
)
