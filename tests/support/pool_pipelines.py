"""Pipelines with pools of their own, for the pool tests (tests/integration/test_pools.py).

They use the example ``breast_cancer`` model (the tests store it) and answer with where they
ran: the worker's node, its device and its process, so a test can see which pool served it.
"""

from __future__ import annotations

import os
import time
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


@inference(
    "pools.hot",
    model="breast_cancer",
    params=Row,
    pool=Pool(num_cpus=0.1, min_replicas=1, max_replicas=3, max_batch_size=8),
)
def hot(model: Any, batch: list[Row], ctx: InferenceContext | None = None) -> list[dict[str, Any]]:
    """Takes HOT_BATCH_S per batch of at most 8."""
    time.sleep(HOT_BATCH_S)
    return [_where(ctx)] * len(batch)


@inference(
    "pools.cold",
    model="breast_cancer",
    params=Row,
    pool=Pool(num_cpus=0.1, min_replicas=0, max_replicas=1, idle_timeout_s=2.0),
)
def cold(model: Any, batch: list[Row], ctx: InferenceContext | None = None) -> list[dict[str, Any]]:
    """Used now and then: its pool goes to zero when idle."""
    return [_where(ctx)] * len(batch)


@inference(
    "pools.gpu",
    model="breast_cancer",
    params=Row,
    pool=Pool(num_cpus=0.1, num_gpus=1, min_replicas=0, max_replicas=1, idle_timeout_s=600.0),
)
def gpu(model: Any, batch: list[Row], ctx: InferenceContext | None = None) -> list[dict[str, Any]]:
    """Declares a GPU: placed on a GPU node, or on CPU where the cluster has none."""
    return [_where(ctx)] * len(batch)


@inference("pools.shared", model="breast_cancer", params=Row)
def shared(
    model: Any, batch: list[Row], ctx: InferenceContext | None = None
) -> list[dict[str, Any]]:
    """No pool of its own: the ingest's default pool."""
    return [_where(ctx)] * len(batch)


@inference(
    "pools.never",
    model="breast_cancer",
    params=Row,
    pool=Pool(num_cpus=0.1, num_gpus=1, gpu_fallback=False, min_replicas=0, max_replicas=1),
)
def never(
    model: Any, batch: list[Row], ctx: InferenceContext | None = None
) -> list[dict[str, Any]]:
    """Waits for a GPU node: on a cluster without one, none of its workers ever starts."""
    return [_where(ctx)] * len(batch)
