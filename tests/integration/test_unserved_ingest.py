"""An ingest whose pool cannot get a node hands its partitions to one that can serve them.

After a node loss without spare capacity, a restarted ingest's workers wait for room while the
consumer group gives the ingest its share of the partitions. Here two ingests of one group run
on the session's real Ray: one's workers ask for more CPUs than any node has (they stay
pending, as they would until an autoscaler adds a node), the other's start. The starved ingest
polls records, then leaves the group after ``leave_group_without_workers_s``; the serving one
gets its partitions and answers every request once. Without the hand-over the starved
ingest's partitions would stall for good and ``wait_for`` would time out.
"""

from __future__ import annotations

import uuid

import pytest

from rayml.config import Settings
from tests.support.kafka_io import ResultCollector, predict_request, send_requests
from tests.support.models import breast_cancer_rows
from tests.support.running_ingest import RunningIngest
from tests.support.scenarios import slow_pipeline_settings

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]


def test_an_ingest_without_workers_hands_its_partitions_to_one_with_workers(
    settings: Settings, ray_runtime: str
) -> None:
    # A window smaller than the starved ingest's share of the burst: it fills and pauses, as a
    # starved ingest always ends up doing, and must still serve its leave's revocation.
    serving_settings = slow_pipeline_settings(
        settings,
        num_workers=1,
        worker_num_cpus=0.25,
        leave_group_without_workers_s=10.0,
        max_in_flight=400,
    )
    ex = serving_settings.executor.model_copy(update={"worker_num_cpus": 64.0})
    starved_settings = serving_settings.model_copy(update={"executor": ex})
    collector = ResultCollector(serving_settings)
    serving = RunningIngest(serving_settings, "serving-0")
    starved = RunningIngest(starved_settings, "starved-0")
    try:
        serving.wait_assigned()
        starved.wait_assigned()
        row = breast_cancer_rows(1)[0].tolist()
        ids = [f"{i}-{uuid.uuid4().hex[:8]}" for i in range(2_000)]
        send_requests(
            serving_settings, (predict_request(rid, row, pipeline="testing.slow") for rid in ids)
        )
        results = collector.wait_for(ids, timeout_s=90)
        collector.poll_until_quiet(1.0)
        starved_status = starved.ingest.status()
        serving_status = serving.ingest.status()
    finally:
        starved.ingest.stop(20)
        serving.ingest.stop(20)
        collector.close()
    print(
        f"\nstarved ingest polled {starved_status['polled']} and left the group; "
        f"the serving one answered {serving_status['results_ok']} of {len(ids)}"
    )
    assert starved.error is None
    assert serving.error is None
    assert starved_status["polled"] > 0, "the starved ingest must have held records"
    assert starved_status["results_ok"] == 0
    assert not starved_status["in_group"]
    assert starved_status["assignment"] == []
    assert serving_status["in_group"]
    assert len(serving_status["assignment"]) == serving_settings.topics.input_partitions
    assert all(len(rs) == 1 and rs[0].status == "ok" for rs in results.values())
