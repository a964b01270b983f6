"""An ingest whose pool cannot get a node hands its partitions to one that can serve them.

After a node loss without spare capacity, a restarted ingest's workers wait for room while the
consumer group gives the ingest its share of the partitions. Here two ingests of one group run
on the session's real Ray: one's workers ask for more CPUs than any node has (they stay
pending, as they would until an autoscaler adds a node), the other's start. The starved ingest
polls records, then leaves the group after ``leave_group_without_workers_s``; the serving one
gets its partitions and answers every request once. Without the hand-over the starved
ingest's partitions would stall for good and ``wait_for`` would time out.

Both ingests are paused by backpressure when a revocation reaches them, as under a real
backlog: a paused ingest must still serve its revocations, and a partition it let go of while
paused must not stay paused when it comes back (librdkafka keeps the pause). Each of the two
made this test time out before it was fixed.

Neither pause is left to timing. The serving ingest's batches wait on a gate file
(``testing.gated``) that the test deletes only once that ingest has begun its revocation, so
its window is full and it is paused throughout; the starved ingest has no worker at all, so its
window fills and stays full until it leaves.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest

from rayml.config import Settings
from tests.support.kafka_io import ResultCollector, send_requests
from tests.support.models import breast_cancer_rows
from tests.support.running_ingest import RunningIngest
from tests.support.scenarios import slow_pipeline_settings
from tests.support.waiting import Budget, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]
# The test's waits (about 35 s in all here): within pytest's 300 s, with room for the stops.
WAIT_BUDGET_S = 200.0


def _paused_when_revoked(records: list[logging.LogRecord], ingest_id: str) -> bool:
    """Whether ``ingest_id`` logged a revocation while paused by backpressure."""
    paused = False
    for record in list(records):  # the ingests' threads append meanwhile
        line = record.getMessage()
        if not line.startswith(f"ingest={ingest_id} "):
            continue
        if " paused at " in line:
            paused = True
        elif " resumed at " in line:
            paused = False
        elif " revoking " in line and paused:
            return True
    return False


def test_an_ingest_without_workers_hands_its_partitions_to_one_with_workers(
    settings: Settings, ray_runtime: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # Windows smaller than the burst: both ingests fill theirs and pause. The serving ingest
    # gives partitions to the starved one while paused, and gets them back once the starved one
    # leaves (librdkafka keeps a partition's pause across its revocation); the starved one
    # must serve its own leave's revocation while paused.
    caplog.set_level(logging.INFO, logger="rayml")
    serving_settings = slow_pipeline_settings(
        settings,
        num_workers=1,
        worker_num_cpus=0.25,
        leave_group_without_workers_s=10.0,
        max_in_flight=400,
        max_batch_size=50,
        pipeline_modules=["tests.support.executor_pipelines", "tests.support.gated_pipelines"],
    )
    ex = serving_settings.executor.model_copy(update={"worker_num_cpus": 64.0})
    starved_settings = serving_settings.model_copy(update={"executor": ex})
    gate = tmp_path / "gate"
    gate.touch()  # the serving ingest's batches wait until the test deletes it
    budget = Budget(WAIT_BUDGET_S)
    collector = ResultCollector(serving_settings)
    serving = RunningIngest(serving_settings, "serving-0")
    starved: RunningIngest | None = None
    try:
        serving.wait_assigned(budget.left(30))
        row = breast_cancer_rows(1)[0].tolist()
        ids = [f"{i}-{uuid.uuid4().hex[:8]}" for i in range(6_000)]
        # Half on each lane: the group assigns the partitions of both request topics, and the
        # starved ingest must find records whichever of them it is given.
        topics = serving_settings.topics
        for lane, part in ((topics.input, ids[::2]), (topics.input_batch, ids[1::2])):
            send_requests(
                serving_settings,
                (
                    {
                        "id": rid,
                        "pipeline": "testing.gated",
                        "params": {"features": row, "gate": str(gate)},
                    }
                    for rid in part
                ),
                topic=lane,
            )
        # Nothing finishes behind the gate: the window fills, the ingest pauses and stays so.
        wait_until(
            lambda: serving.ingest.status()["paused"],
            "the serving ingest pauses",
            budget.left(30),
        )
        started = time.monotonic()
        starved = RunningIngest(starved_settings, "starved-0")
        # The starved ingest's join revokes partitions of the serving one, whose drain waits
        # at the gate: only now may its batches run.
        wait_until(
            lambda: any(
                r.getMessage().startswith("ingest=serving-0 revoking") for r in list(caplog.records)
            ),
            "the serving ingest is asked to give partitions up",
            budget.left(30),
        )
        gate.unlink()
        gate_opened_s = time.monotonic() - started
        starved.wait_assigned(budget.left(30))
        results = collector.wait_for(ids, timeout_s=budget.left(90))
        took_s = time.monotonic() - started
        collector.poll_until_quiet(1.0)
        starved_status = starved.ingest.status()
        serving_status = serving.ingest.status()
    finally:
        gate.unlink(missing_ok=True)
        if starved is not None:
            starved.ingest.stop(20)
        serving.ingest.stop(20)
        collector.close()
    print(
        f"\nstarved ingest polled {starved_status['polled']} and left the group; the serving one "
        f"answered {serving_status['results_ok']} of {len(ids)}, the last {took_s:.1f}s after "
        f"the starved one started (its join reached the gated, paused serving ingest after "
        f"{gate_opened_s:.1f}s)"
    )
    assert starved.error is None
    assert serving.error is None
    assert _paused_when_revoked(caplog.records, "serving-0"), "the gate must hold it paused"
    assert _paused_when_revoked(caplog.records, "starved-0"), "a full window must hold it paused"
    assert starved_status["polled"] > 0, "the starved ingest must have held records"
    assert starved_status["results_ok"] == 0
    assert not starved_status["in_group"]
    assert starved_status["assignment"] == []
    assert serving_status["in_group"]
    # Every partition of both lanes (the bulk topic has the input topic's partitions).
    assert len(serving_status["assignment"]) == 2 * serving_settings.topics.input_partitions
    assert all(len(rs) == 1 and rs[0].status == "ok" for rs in results.values())
