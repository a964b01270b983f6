"""The cluster's resources as the trial scheduler asks about them: free, total, per node.

Read from Ray's GCS (``ray.available_resources()``, ``ray.cluster_resources()``,
``ray.nodes()``) at most once per interval however many trials ask, and never raising: a GCS
that is slow or away is logged and reads as nothing known (``{}``, ``[]``), which decides
nothing (:func:`rayml.training.watch.unplaceable` fails no trial on an empty node list).
"""

from __future__ import annotations

import logging

import ray

logger = logging.getLogger(__name__)

__all__ = ["ClusterResources"]

Amounts = dict[str, float]


class ClusterResources:
    """Cached reads of the cluster's resources. Loop thread only.

    Args:
        interval_s: Least time between two reads of each figure.
        owner: For log lines.
    """

    def __init__(self, interval_s: float, owner: str) -> None:
        self.interval_s = interval_s
        self.owner = owner
        self._resources: tuple[float, Amounts, Amounts] | None = None
        self._nodes: tuple[float, list[Amounts]] | None = None

    def free_and_total(self, now: float) -> tuple[Amounts, Amounts]:
        """The cluster's free and total resources, summed over its nodes."""
        cached = self._resources
        if cached is None or now - cached[0] >= self.interval_s:
            try:
                cached = (now, ray.available_resources(), ray.cluster_resources())
            except Exception as exc:  # the GCS is slow or away: say so, do not stop the loop
                logger.warning("runner=%s cannot read the cluster's resources: %s", self.owner, exc)
                cached = (now, {}, {})
            self._resources = cached
        return cached[1], cached[2]

    def nodes(self, now: float) -> list[Amounts]:
        """Each live node's *total* resources (``[]``: unknown)."""
        cached = self._nodes
        if cached is None or now - cached[0] >= self.interval_s:
            try:
                nodes = [
                    {str(k): float(v) for k, v in node.get("Resources", {}).items()}
                    for node in ray.nodes()
                    if node.get("Alive")
                ]
            except Exception as exc:  # as above
                logger.warning("runner=%s cannot read the cluster's nodes: %s", self.owner, exc)
                nodes = []
            cached = self._nodes = (now, nodes)
        return cached[1]
