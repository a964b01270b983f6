"""Model-affinity routing (pure): which worker runs a batch for a given model.

Each model key maps, by rendezvous (highest-random-weight) hashing, to a short, stable list of
preferred workers; a batch goes to the least-loaded of the first ``replicas`` of them. So a model
is warm on a few workers instead of loaded everywhere, adding or removing a worker moves only
the models that ranked it first, and a hot model still spreads over ``replicas`` workers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence


def _weight(model_key: str, worker_id: str) -> int:
    digest = hashlib.blake2b(f"{model_key}\x00{worker_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def preferred_workers(model_key: str, workers: Sequence[str]) -> list[str]:
    """All workers, best first, for ``model_key`` (stable under adding/removing others)."""
    return sorted(workers, key=lambda w: _weight(model_key, w), reverse=True)


def pick_worker(
    model_key: str,
    workers: Sequence[str],
    load: Mapping[str, int],
    replicas: int = 2,
) -> str:
    """The worker to run the next batch of ``model_key``.

    Args:
        model_key: e.g. ``"breast_cancer@000003"``.
        workers: ids of the workers that accept work (not draining).
        load: batches in flight per worker id (missing means 0).
        replicas: how many workers may hold this model warm.

    Raises:
        ValueError: if there is no worker.

    Example:
        >>> pick_worker("m@1", ["a", "b", "c"], {}, replicas=1) in {"a", "b", "c"}
        True
    """
    if not workers:
        raise ValueError("no worker to route to")
    candidates = preferred_workers(model_key, workers)[: max(1, replicas)]
    # min() keeps the first of equal loads, i.e. the most preferred: ties stay sticky.
    return min(candidates, key=lambda w: load.get(w, 0))
