"""The design's cluster claims, each proven by killing real processes and counting by id.

* Scale-out: ingest actors of one consumer group spread over the nodes share the partitions;
  the worker pool spans the nodes; ``rayml serve --ray-address`` joins an existing cluster.
* Node loss: a node with an ingest actor and workers on it is SIGKILLed mid-burst; its
  partitions move to the other ingest actors, its actors come back on the surviving nodes.
* All ML nodes down: the whole Ray cluster (and the executor with it) goes down mid-burst while
  producers keep sending; a new cluster and executor answer every request.

The clusters are real multi-node Ray clusters on this machine (``tests/support/ray_cluster.py``):
a head without CPUs, where ``rayml serve`` attaches, and two nodes of 2 logical CPUs. Each test
prints a line ``| scenario | sent | answered | lost | duplicated | longest pause |``.

Duplicates are bounded by what the dead ingest actors held (``redo_bound``: each one's in-flight
window and one commit interval of results); with nothing killed there are none. All the waits of
a test share one :class:`~tests.support.waiting.Budget`, inside the test's timeout, so a wait
that runs out fails with its own message rather than by pytest-timeout.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from rayml.config import Settings
from tests.support.executor_process import ExecutorProcess
from tests.support.kafka_io import predict_request, send_requests
from tests.support.models import breast_cancer_rows
from tests.support.ray_cluster import LocalRayCluster
from tests.support.scenarios import redo_bound, slow_pipeline_settings
from tests.support.traffic import SteadyProducer, Tally, TimedCollector
from tests.support.waiting import Budget, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.cluster, pytest.mark.slow]

INGEST = "IngestActorImpl"
WORKER = "ModelWorker"
# The waits of one test: within pytest's 300 s, leaving room for the cluster's start (fixture
# setup, 6-12 s measured) and the executor's drain and the cluster's shutdown (teardown).
WAIT_BUDGET_S = 200.0


@pytest.fixture
def cluster_settings(settings: Settings) -> Settings:
    return slow_pipeline_settings(
        settings,
        topics={"input_partitions": 6},
        ingest_actors=3,
        # 6 workers of 0.25 CPU: each ingest's pool starts beside it, so the pool spans the
        # nodes; after a node loss the surviving node holds all of them. (Without that
        # headroom the replacements wait for a node: Ray's autoscaler's job.)
        num_workers=2,
        worker_num_cpus=0.25,
        drain_timeout_s=10.0,
    )


@pytest.fixture
def ray_cluster() -> Iterator[LocalRayCluster]:
    cluster = LocalRayCluster(worker_nodes=2, cpus_per_node=2)
    try:
        yield cluster
    finally:
        cluster.shutdown()


def _burst(settings: Settings, n: int) -> list[str]:
    row = breast_cancer_rows(1)[0].tolist()
    ids = [f"{i}-{uuid.uuid4().hex[:8]}" for i in range(n)]
    send_requests(settings, (predict_request(rid, row, pipeline="testing.slow") for rid in ids))
    return ids


def _group_members(settings: Settings) -> dict[str, list[tuple[str, int]]]:
    """The executor group's members (client id = ingest id) and their request partitions (both
    lanes: the interactive input topic and its bulk topic)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    group = settings.executor.group_id
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return {
        member.client_id: sorted(
            (tp.topic, tp.partition) for tp in member.assignment.topic_partitions
        )
        for member in description.members
    }


def _request_partitions(settings: Settings) -> list[tuple[str, int]]:
    """Every partition of both lanes (the bulk topic has the input topic's partitions)."""
    n = settings.topics.input_partitions
    return sorted(
        (topic, p)
        for topic in (settings.topics.input, settings.topics.input_batch)
        for p in range(n)
    )


def _wait_members(
    settings: Settings, count: int, timeout_s: float
) -> dict[str, list[tuple[str, int]]]:
    deadline = time.monotonic() + timeout_s
    while True:
        members = _group_members(settings)
        assigned = {m: ps for m, ps in members.items() if ps}
        owned = sum(len(ps) for ps in assigned.values())
        if (len(assigned) >= count and owned == len(_request_partitions(settings))) or (
            time.monotonic() > deadline
        ):
            return members
        time.sleep(0.5)


def test_scale_out_ingest_actors_share_partitions_and_the_pool_spans_nodes(
    cluster_settings: Settings, ray_cluster: LocalRayCluster
) -> None:
    settings = cluster_settings
    budget = Budget(WAIT_BUDGET_S)
    collector = TimedCollector(settings).start_background()
    executor = ExecutorProcess(settings, ray_cluster.address).start(budget.left(120))
    try:
        ingests = ray_cluster.wait_for_actors(INGEST, 3, budget.left(60))
        workers = ray_cluster.wait_for_actors(WORKER, 6, budget.left(60))
        members = _wait_members(settings, 3, budget.left(60))
        ids = _burst(settings, 3_000)
        collector.wait_all(ids, budget.left(180))
    finally:
        executor.stop()
        collector.stop_background()
        collector.close()
    tally = Tally.of("scale-out: 3 ingest actors over 2 ML nodes", ids, collector)
    print(f"\n{tally.line()}\nstarted cluster in {ray_cluster.start_s:.1f}s; members {members}")
    # Ingest actors spread over both ML nodes, and so does the pool.
    assert {a.node_id for a in ingests} == set(ray_cluster.worker_node_ids())
    assert len({w.node_id for w in workers}) == 2
    # One consumer group: every ingest actor owns partitions, each partition has one owner.
    assert len(members) == 3
    assert all(members.values())
    owned = sorted(p for ps in members.values() for p in ps)
    assert owned == _request_partitions(settings)
    assert tally.lost == 0
    assert tally.duplicated == 0, "nothing failed: nothing is answered twice"


def test_losing_a_node_mid_burst_loses_no_request(
    cluster_settings: Settings, ray_cluster: LocalRayCluster
) -> None:
    settings = cluster_settings
    n = 6_000
    budget = Budget(WAIT_BUDGET_S)
    collector = TimedCollector(settings).start_background()
    executor = ExecutorProcess(settings, ray_cluster.address).start(budget.left(120))
    try:
        ray_cluster.wait_for_actors(WORKER, 6, budget.left(60))
        _wait_members(settings, 3, budget.left(60))
        ids = _burst(settings, n)
        seen = collector.wait_count(n // 4, budget.left(60))
        # The victim: a CPU node that runs an ingest actor and at least one worker.
        ingests = ray_cluster.actors(INGEST)
        workers = ray_cluster.actors(WORKER)
        victim = next(
            node
            for node in ray_cluster.worker_node_ids()
            if any(a.node_id == node for a in ingests) and any(w.node_id == node for w in workers)
        )
        lost_ingests = [a.name for a in ingests if a.node_id == victim]
        lost_workers = sum(1 for w in workers if w.node_id == victim)
        ray_cluster.remove_node(victim)
        removed_at = collector.count()
        collector.wait_all(ids, budget.left(240))
        # The lost ingest actors are back, on the surviving nodes (Ray restarts them).
        back = ray_cluster.wait_for_actors(INGEST, 3, budget.left(60), off_node=victim)
        # So are the pools: the lost workers replaced on the surviving node.
        replaced = ray_cluster.wait_for_actors(WORKER, 6, budget.left(60), off_node=victim)
        # Ray reported the victim's actors alive until its health check failed: none now.
        back = ray_cluster.actors(INGEST)
        replaced = ray_cluster.actors(WORKER)
        members = _wait_members(settings, 3, budget.left(60))
    finally:
        executor.stop()
        collector.stop_background()
        collector.close()
    tally = Tally.of("node loss: 1 of 2 CPU nodes SIGKILLed mid-burst", ids, collector)
    print(
        f"\n{tally.line()}\nkilled node with {lost_ingests} and {lost_workers} workers after "
        f"{seen} results ({removed_at} at removal); members after: {members}"
    )
    assert removed_at < n, "the node must be lost mid-burst"
    assert lost_ingests
    assert lost_workers
    assert victim not in {a.node_id for a in back}
    assert {a.name for a in back} >= set(lost_ingests)
    assert len(replaced) == 6
    assert victim not in {w.node_id for w in replaced}
    assert tally.lost == 0
    assert all(any(r.status == "ok" for r in collector.results[i]) for i in ids)
    # Only what the lost ingest actors held may be answered twice.
    assert tally.duplicated <= redo_bound(settings, len(lost_ingests))


def test_all_ml_nodes_down_while_producers_keep_sending_then_every_request_is_answered(
    cluster_settings: Settings, ray_cluster: LocalRayCluster
) -> None:
    settings = cluster_settings
    budget = Budget(WAIT_BUDGET_S)
    collector = TimedCollector(settings).start_background()
    producer = SteadyProducer(settings, rate=400)
    executor = ExecutorProcess(settings, ray_cluster.address).start(budget.left(120))
    second_cluster: LocalRayCluster | None = None
    second: ExecutorProcess | None = None
    try:
        producer.start()
        collector.wait_count(1_000, budget.left(60))
        # Every ML node goes: the executor's driver with its node, then the whole cluster.
        executor.kill()
        ray_cluster.shutdown()
        down_at = len(producer.ids)
        # Producers keep sending to Kafka meanwhile (2.5 s at their rate).
        wait_until(
            lambda: len(producer.ids) >= down_at + 1_000,
            "1,000 requests are sent while no ML node is up",
            timeout_s=budget.left(30),
        )
        second_cluster = LocalRayCluster(worker_nodes=2, cpus_per_node=2)
        second = ExecutorProcess(settings, second_cluster.address).start(budget.left(120))
        up_at = len(producer.ids)
        collector.wait_count(up_at, budget.left(120))
        ids = producer.stop()
        collector.wait_all(ids, budget.left(180))
    finally:
        producer.halt()
        if second is not None:
            second.stop()
        if second_cluster is not None:
            second_cluster.shutdown()
        collector.stop_background()
        collector.close()
    tally = Tally.of("all ML nodes down, then a new cluster", ids, collector)
    print(f"\n{tally.line()}\nsent {up_at - down_at} requests while no ML node was up")
    assert up_at - down_at >= 1_000, "requests must be sent while the cluster is down"
    assert tally.lost == 0
    # Every ingest actor died with the cluster: what each held may be answered twice.
    assert tally.duplicated <= redo_bound(settings, settings.executor.ingest_actors)
