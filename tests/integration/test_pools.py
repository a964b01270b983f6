"""Pools per pipeline (docs/autoscaling.md): each pipeline that declares a pool gets workers of
its own, sized on its own backlog; an idle pool goes to zero and its next request starts it; a
pool that declares a GPU runs only where there is one, and on CPU where the cluster has none.

Real broker, real Ray: the session's local Ray (2 CPUs, no GPU) for the executor in this
process, and a cluster of two local nodes, one with a (fake) GPU resource, for placement.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rayml.cli.status import pools_summary
from rayml.config import Settings
from rayml.executor.service import Executor
from rayml.kafka.topics import create_topics
from tests.support.executor_process import ExecutorProcess
from tests.support.kafka_io import ResultCollector, predict_request, send_requests
from tests.support.models import breast_cancer_rows, store_breast_cancer
from tests.support.ray_cluster import LocalRayCluster
from tests.support.served import module_settings
from tests.support.waiting import Budget, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

MODULES = ["tests.support.pool_pipelines"]


@pytest.fixture
def pool_settings(bootstrap_servers: str, tmp_path: Path) -> Settings:
    """One worker of 0.1 CPU in the default pool, autoscaled at once and never shrunk."""
    return module_settings(
        {"bootstrap_servers": bootstrap_servers},
        tmp_path,
        "pools",
        topics={"input_partitions": 4, "output_partitions": 4, "jobs_partitions": 2},
        executor={
            "pipeline_modules": MODULES,
            "num_workers": 1,
            "worker_num_cpus": 0.1,
            "pool_start_timeout_s": 3.0,
        },
        autoscale={
            "enabled": True,
            "min_workers": 1,
            "max_workers": 2,
            "target_lag_s": 1.0,
            "upscale_delay_s": 1.0,
            # No shrinking while the test watches the sizes.
            "downscale_delay_s": 3600.0,
            "interval_s": 0.5,
        },
    )


@pytest.fixture
def running(pool_settings: Settings, ray_runtime: str) -> Iterator[tuple[Settings, Executor]]:
    settings = pool_settings
    create_topics(settings.kafka, settings.topics)
    store_breast_cancer(settings.models.root, n_estimators=5)
    executor = Executor(settings)
    executor.start()
    try:
        yield settings, executor
    finally:
        executor.drain(10)


def _pools(executor: Executor) -> dict[str, dict[str, Any]]:
    return {p["pool"]: p for p in pools_summary(executor.status())}


def _send(settings: Settings, pipeline: str, n: int) -> list[str]:
    row = breast_cancer_rows(1)[0].tolist()
    ids = [f"{pipeline}-{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
    send_requests(settings, (predict_request(rid, row, pipeline=pipeline) for rid in ids))
    return ids


class SizeWatch:
    """Samples every pool's size (summed over the ingests) until stopped."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.samples: list[dict[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            # A status call that timed out on a loaded machine: the next one.
            with contextlib.suppress(Exception):
                self.samples.append({n: p["size"] for n, p in _pools(self.executor).items()})
            self._stop.wait(0.2)

    def __enter__(self) -> SizeWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def largest(self, pool: str) -> int:
        return max(s.get(pool, 0) for s in self.samples)


def test_pools_per_pipeline_scale_alone_go_to_zero_and_start_cold(
    running: tuple[Settings, Executor],
) -> None:
    settings, executor = running
    budget = Budget(240)
    start = wait_until(
        lambda: (p := _pools(executor)) and p["pools.hot"]["size"] == 1 and p,
        "the pools are up",
        budget.left(60),
    )
    # Each pipeline with a pool has its own; the rest share the default pool.
    assert "pools.shared" in start["default"]["pipelines"]
    assert not {"pools.hot", "pools.cold", "pools.gpu"} & set(start["default"]["pipelines"])
    assert start["pools.hot"]["pipelines"] == ["pools.hot"]
    assert start["pools.hot"]["num_cpus"] == 0.1
    assert (start["pools.cold"]["size"], start["pools.gpu"]["size"]) == (0, 0)
    assert start["pools.cold"]["scale_to_zero"]
    collector = ResultCollector(settings)
    try:
        # -- an idle pool at zero: its next request starts a worker, and is answered ----------
        ids = _send(settings, "pools.cold", 3)
        results = collector.wait_for(ids, budget.left(60))
        assert all(r[0].status == "ok" for r in results.values())
        cold = _pools(executor)["pools.cold"]
        assert cold["cold_starts"] == 1
        assert 0 < cold["last_cold_start_s"] < 60
        print(f"\ncold start: {cold['last_cold_start_s']:.2f}s to the first answer")
        # Idle for its idle_timeout_s (2 s): released, then started again by the next request.
        wait_until(
            lambda: _pools(executor)["pools.cold"]["size"] == 0,
            "the idle pool released its worker",
            budget.left(30),
        )
        ids = _send(settings, "pools.cold", 2)
        assert all(r[0].status == "ok" for r in collector.wait_for(ids, budget.left(60)).values())
        assert _pools(executor)["pools.cold"]["cold_starts"] == 2

        # -- a GPU pool on a cluster without a GPU runs on CPU ------------------------------
        ids = _send(settings, "pools.gpu", 2)
        results = collector.wait_for(ids, budget.left(60))
        assert {r[0].result["device"] for r in results.values()} == {"cpu"}  # type: ignore[index]
        assert _pools(executor)["pools.gpu"]["on_cpu_instead_of_gpu"] == 1

        # -- a pool that cannot start (a GPU it waits for, none in the cluster) -------------
        never = _send(settings, "pools.never", 3)
        # (The GPU-declared pool, on CPU here, since the default pool gets no traffic before
        # the burst below: a trickle could make its policy grow it.)
        other = _send(settings, "pools.gpu", 3)
        served = collector.wait_for(other, budget.left(60))
        assert all(r[0].status == "ok" for r in served.values()), "other pools are not held"
        answered = collector.wait_for(never, budget.left(60))
        for [result] in answered.values():
            assert result.status == "error"
            assert result.error is not None
            assert result.error.details["last_error"] == "pool_unavailable"
        assert _pools(executor)["pools.never"]["unavailable"] == 3

        # -- a burst on one pipeline grows only its pool ------------------------------------
        before = {name: p["size"] for name, p in _pools(executor).items()}
        with SizeWatch(executor) as watch:
            ids = _send(settings, "pools.hot", 3_000)
            grown = wait_until(
                lambda: _pools(executor)["pools.hot"]["size"] >= 2,
                "the hot pipeline's pool grew",
                budget.left(90),
            )
            results = collector.wait_for(ids, budget.left(120))
        assert grown
        served_by = {r[0].result["pid"] for r in results.values()}  # type: ignore[index]
        print(
            f"burst: pools.hot grew to {watch.largest('pools.hot')} workers; default "
            f"{watch.largest('default')}, cold {watch.largest('pools.cold')}, gpu "
            f"{watch.largest('pools.gpu')}; {len(served_by)} workers answered it"
        )
        assert watch.largest("pools.hot") >= 2
        # Nothing else grew: the default pool stayed at its size, the idle pools at zero.
        assert before["default"] == 1
        assert watch.largest("default") == 1
        assert watch.largest("pools.cold") <= 1  # at most the one started above, then zero
        assert watch.largest("pools.gpu") == 1  # started above; it never went to two
        assert all(len(r) == 1 and r[0].status == "ok" for r in results.values())
        assert len(served_by) >= 2, "the burst ran on more than one worker of its pool"
        # The default pool serves the rest, untouched by the burst.
        ids = _send(settings, "pools.shared", 5)
        assert all(r[0].status == "ok" for r in collector.wait_for(ids, budget.left(60)).values())
    finally:
        collector.close()


@pytest.fixture
def gpu_cluster() -> Iterator[LocalRayCluster]:
    """Two ML nodes: one with 2 CPUs and no GPU, one with 1 CPU and a (fake) GPU."""
    cluster = LocalRayCluster(worker_nodes=1, cpus_per_node=2)
    try:
        cluster.gpu_node_id = cluster.add_node(num_gpus=1, num_cpus=1).node_id  # type: ignore[attr-defined]
        cluster.cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@pytest.mark.cluster
def test_a_gpu_pool_runs_only_on_a_node_with_a_gpu(
    pool_settings: Settings, gpu_cluster: LocalRayCluster
) -> None:
    settings = pool_settings
    create_topics(settings.kafka, settings.topics)
    store_breast_cancer(settings.models.root, n_estimators=5)
    budget = Budget(200)
    gpu_node = gpu_cluster.gpu_node_id  # type: ignore[attr-defined]
    collector = ResultCollector(settings)
    executor = ExecutorProcess(settings, gpu_cluster.address).start(budget.left(120))
    try:
        gpu_ids = _send(settings, "pools.gpu", 20)
        shared_ids = _send(settings, "pools.shared", 20)
        results = collector.wait_for(gpu_ids + shared_ids, budget.left(90))
    finally:
        executor.stop()
        collector.close()
    gpu_runs = {
        (r[0].result["node"], r[0].result["device"]) for i, r in results.items() if i in gpu_ids
    }  # type: ignore[index]
    # Every GPU request ran on the GPU node, told to use "cuda"; nothing fell back.
    assert gpu_runs == {(gpu_node, "cuda")}
    assert all(results[i][0].status == "ok" for i in shared_ids)
    assert {results[i][0].result["device"] for i in shared_ids} == {"cpu"}  # type: ignore[index]
