"""Several real Ray nodes on this machine, to lose one (or all) of them in tests.

Built on ``ray.cluster_utils.Cluster``: every node is its own raylet with its own object store
and worker processes, so removing a node SIGKILLs a real raylet and every actor on it, as a
lost machine would. The head has no CPUs: drivers (``rayml serve``) attach to it and no actor
that a test kills lives there by accident.

The test process never connects to these clusters (it stays a driver of the session's own Ray):
it reads actor placement from the GCS through the cluster's global state accessor.
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass
from typing import Any

import psutil
from ray._private import ray_constants
from ray.cluster_utils import Cluster

# Node death is noticed after period x threshold (Ray's defaults: 3 s x 5). A lost node's
# actors restart only once its death is known, so tests detect it sooner.
FAST_FAILURE_DETECTION = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 4,
}


@dataclass(frozen=True)
class ActorPlacement:
    """One actor of a cluster: its class, name, state, node and pid."""

    class_name: str
    name: str
    state: str
    node_id: str
    pid: int


class LocalRayCluster:
    """A head (no CPUs) plus ``worker_nodes`` nodes of ``cpus_per_node`` logical CPUs each."""

    def __init__(self, worker_nodes: int = 2, cpus_per_node: int = 2) -> None:
        started = time.monotonic()
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "object_store_memory": 100 * 1024 * 1024,
                "include_dashboard": False,
                "_system_config": FAST_FAILURE_DETECTION,
            },
        )
        self.cpus_per_node = cpus_per_node
        self._down = False
        for _ in range(worker_nodes):
            self.add_node()
        self.cluster.wait_for_nodes()
        self.start_s = time.monotonic() - started

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def add_node(self, num_gpus: int = 0, num_cpus: int | None = None) -> Any:
        """One more worker node; ``num_gpus``: a fake GPU resource (no device behind it)."""
        return self.cluster.add_node(
            num_cpus=self.cpus_per_node if num_cpus is None else num_cpus,
            num_gpus=num_gpus,
            object_store_memory=100 * 1024 * 1024,
        )

    def worker_node_ids(self) -> list[str]:
        return [node.node_id for node in self.cluster.worker_nodes]

    def remove_node(self, node_id: str) -> int:
        """SIGKILL every process of one worker node, as if its machine went away.

        Its worker processes (actors) first: killing only the raylet would leave them running
        for a while, still consuming from Kafka, which a lost machine would not. Then the
        raylet and the node's other processes. Returns how many worker processes were killed.
        """
        node = next(n for n in self.cluster.worker_nodes if n.node_id == node_id)
        raylet_pid = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        children = psutil.Process(raylet_pid).children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.send_signal(signal.SIGKILL)
        self.cluster.remove_node(node, allow_graceful=False)
        return len(children)

    def actors(
        self, class_name: str | None = None, alive_only: bool = True
    ) -> list[ActorPlacement]:
        """Actors from the GCS's actor table (no driver needed)."""
        table: dict[str, dict[str, Any]] = self.cluster.global_state.actor_table(None)
        out = []
        for info in table.values():
            placement = ActorPlacement(
                class_name=str(info.get("ActorClassName", "")),
                name=str(info.get("Name", "")),
                state=str(info.get("State", "")),
                node_id=str(info.get("Address", {}).get("NodeID", "")),
                pid=int(info.get("Pid", 0) or 0),
            )
            if class_name is not None and not placement.class_name.endswith(class_name):
                continue
            if alive_only and placement.state != "ALIVE":
                continue
            out.append(placement)
        return out

    def wait_for_actors(
        self, class_name: str, count: int, timeout_s: float = 60.0, off_node: str | None = None
    ) -> list[ActorPlacement]:
        """Wait for ``count`` live actors of ``class_name`` (not counting those on ``off_node``).

        ``off_node``: a removed node. Ray reports its actors alive until its health check
        fails, so a test that looks right after a removal must not count them.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            alive = [a for a in self.actors(class_name) if a.node_id != off_node]
            if len(alive) >= count or time.monotonic() > deadline:
                return alive
            time.sleep(0.2)

    def shutdown(self) -> None:
        """Every node down: all raylets, the GCS, every worker process of this cluster."""
        if not self._down:
            self._down = True
            self.cluster.shutdown()
