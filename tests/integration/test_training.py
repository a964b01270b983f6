"""Training end to end on the real broker and a real local Ray: jobs, hot swap, crashes, sweeps."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer

from rayml.cli.training import follow_job
from rayml.config import Settings
from rayml.executor.service import Executor
from rayml.kafka.topics import create_topics
from rayml.models.store import ModelStore, ModelVersion
from rayml.protocol.envelopes import Request, Result
from rayml.protocol.training import JobEvent, decode_announcement, decode_event
from tests.support.executor_process import ExecutorProcess
from tests.support.kafka_io import (
    ResultCollector,
    committed_equals_end,
    predict_request,
    send_requests,
)
from tests.support.models import breast_cancer_rows, store_breast_cancer

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def training_settings(settings: Settings, **training: Any) -> Settings:
    """One input and one jobs partition (so ordering is known), half-CPU workers, test
    pipelines, fast progress events, and an events topic of this test's own."""
    tag = settings.topics.input.rsplit(".", 1)[0]
    topics = settings.topics.model_copy(
        update={"events": f"{tag}.events", "input_partitions": 1, "jobs_partitions": 1}
    )
    executor = settings.executor.model_copy(
        update={
            "worker_num_cpus": 0.5,
            "num_workers": 2,
            "drain_timeout_s": 10.0,
            "pipeline_modules": ["tests.support.training_pipelines"],
        }
    )
    trainer = settings.training.model_copy(update={"progress_interval_s": 0.2, **training})
    return settings.model_copy(update={"topics": topics, "executor": executor, "training": trainer})


class TopicReader:
    """Reads a topic from the beginning, keeping (key, value) pairs."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self.consumer.subscribe([topic])
        self.records: list[tuple[bytes | None, bytes | None, list[Any]]] = []

    def poll(self, timeout_s: float = 0.2) -> None:
        for msg in self.consumer.consume(1000, timeout=timeout_s):
            if msg.error() is None:
                self.records.append((msg.key(), msg.value(), msg.headers() or []))

    def events(self, job_id: str) -> list[JobEvent]:
        self.poll(0.1)
        return [decode_event(v) for k, v, _ in self.records if k == job_id.encode() and v]

    def wait_for_event(self, job_id: str, state: str, timeout_s: float = 60.0) -> JobEvent:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [e for e in self.events(job_id) if e.state == state]
            if found:
                return found[-1]
        raise AssertionError(f"no {state!r} event for job {job_id}: {self.events(job_id)}")

    def close(self) -> None:
        self.consumer.close()


def training_request(request_id: str, pipeline: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"id": request_id, "pipeline": pipeline, "params": params}


def send_jobs(settings: Settings, jobs: list[dict[str, Any]]) -> int:
    """Produce training requests to the training topic (the default tenant's: topics.jobs),
    which the job runner reads; the input topic refuses them."""
    return send_requests(settings, jobs, settings.topics.jobs)


def versions_of_job(settings: Settings, model: str, job_id: str) -> list[ModelVersion]:
    return [
        v
        for v in ModelStore(settings.models.root).versions(model)
        if v.metadata.get("extra", {}).get("job_id") == job_id
    ]


def one(results: dict[str, list[Result]], request_id: str) -> Result:
    (result,) = results[request_id][:1]
    return result


@pytest.fixture
def running(settings: Settings, ray_runtime: str) -> Iterator[tuple[Executor, Settings]]:
    settings = training_settings(settings)
    create_topics(settings.kafka, settings.topics)
    executor = Executor(settings)
    executor.start()
    try:
        yield executor, settings
    finally:
        executor.drain(10)


def test_training_request_stores_a_version_that_inference_uses_at_once(
    running: tuple[Executor, Settings],
) -> None:
    executor, settings = running
    v1, _ = store_breast_cancer(settings.models.root, n_estimators=5)
    row = breast_cancer_rows(1)[0].tolist()
    results = ResultCollector(settings)
    events = TopicReader(settings, settings.topics.events)

    send_requests(settings, [predict_request("before", row)])
    assert one(results.wait_for(["before"], 60), "before").model.version == v1.version  # type: ignore[union-attr]

    started = time.monotonic()
    send_jobs(settings, [training_request("train-1", "breast_cancer.train", {"n_estimators": 10})])
    trained = one(results.wait_for(["train-1"], 60), "train-1")
    train_s = time.monotonic() - started
    assert trained.status == "ok", trained.error
    assert trained.model is not None
    assert trained.model.name == "breast_cancer"
    new_version = trained.model.version
    assert int(new_version) == int(v1.version) + 1
    assert trained.result["version"] == new_version
    assert 0.8 < trained.result["metrics"]["accuracy"] <= 1.0
    assert "roc_auc" in trained.result["metrics"]
    assert trained.result["params"]["n_estimators"] == 10

    # Right after the result, with no restart: inference uses the new version.
    send_requests(settings, [predict_request("after", row)])
    after = one(results.wait_for(["after"], 60), "after")
    assert after.status == "ok"
    assert after.model is not None
    assert after.model.version == new_version

    (stored,) = versions_of_job(settings, "breast_cancer", "train-1")
    meta = stored.metadata
    assert stored.version == new_version
    assert meta["pipeline"] == "breast_cancer.train"
    assert meta["framework"] == "xgboost"
    assert meta["data_fingerprint"]
    assert meta["libraries"]["xgboost"]
    assert meta["created_at"]
    assert meta["extra"]["device"] == "cpu"
    assert meta["extra"]["nthread"] == 1

    events.wait_for_event("train-1", "succeeded")
    states = [e.state for e in events.events("train-1")]
    assert states[0] == "queued"
    assert states[-1] == "succeeded"
    progress = [e.progress for e in events.events("train-1") if e.state == "running"]
    assert progress
    assert progress[0] == 0.0
    assert max(p or 0 for p in progress) == 1.0

    announcements = TopicReader(settings, settings.topics.models)
    deadline = time.monotonic() + 10
    while not announcements.records and time.monotonic() < deadline:
        announcements.poll()
    (key, value, _), *_ = announcements.records
    announced = decode_announcement(value)
    assert key == b"breast_cancer"
    assert announced is not None
    assert announced.version == new_version
    assert announced.job_id == "train-1"

    committed, ends = committed_equals_end(
        settings, settings.topics.jobs, settings.executor.jobs_group_id, 1
    )
    assert committed == ends == {0: 1}
    (runner,) = ray_get_status(executor)
    assert runner["jobs_succeeded"] == 1
    assert runner["jobs_in_flight"] == 0
    print(f"\ntraining request to result: {train_s:.2f}s")
    for closeable in (results, events, announcements):
        closeable.close()


def ray_get_status(executor: Executor) -> list[dict[str, Any]]:
    import ray

    return list(ray.get([a.status.remote() for a in executor.job_runners], timeout=10))


def test_inference_completes_and_commits_while_training_runs(
    running: tuple[Executor, Settings],
) -> None:
    _executor, settings = running
    store_breast_cancer(settings.models.root, n_estimators=5)
    rows = breast_cancer_rows(200)
    results = ResultCollector(settings)
    events = TopicReader(settings, settings.topics.events)

    send_jobs(settings, [training_request("slow-1", "testing.train_slow", {"sleep_s": 12})])
    events.wait_for_event("slow-1", "running", 30)
    ids = [f"p{i}" for i in range(len(rows))]
    send_requests(
        settings, (predict_request(i, r.tolist()) for i, r in zip(ids, rows, strict=True))
    )
    got = results.wait_for(ids, 30)
    assert all(one(got, i).status == "ok" for i in ids)
    # Training travels on its own topic: the input partition holds the 200 requests only, all
    # committed while the training still runs.
    committed, ends = committed_equals_end(
        settings, settings.topics.input, settings.executor.group_id, 1, timeout_s=5
    )
    assert committed == ends == {0: 200}
    assert "slow-1" not in results.results, "training finished too early to prove anything"
    progress = [e.progress for e in events.events("slow-1") if e.state == "running"]
    assert progress[0] == 0.0

    done = one(results.wait_for(["slow-1"], 40), "slow-1")
    assert done.status == "ok", done.error
    progress = [e.progress for e in events.events("slow-1") if e.state == "running"]
    assert progress == sorted(progress)
    assert {0.2, 0.4, 1.0} <= set(progress)
    results.close()
    events.close()


@pytest.mark.cluster
@pytest.mark.slow
def test_sigkill_during_training_reruns_the_job_and_never_reruns_a_finished_one(
    settings: Settings, ray_runtime: str
) -> None:
    settings = training_settings(settings)
    create_topics(settings.kafka, settings.topics)
    results = ResultCollector(settings)
    events = TopicReader(settings, settings.topics.events)
    # One jobs partition: "fast" sits behind "slow", so when the executor dies "fast" is
    # finished (stored and answered) but its offset is not committed -- it comes back.
    send_jobs(
        settings,
        [
            training_request("slow", "testing.train_slow", {"sleep_s": 6, "steps": 6}),
            training_request("fast", "testing.train_fast", {"c": 1.0}),
        ],
    )
    first = ExecutorProcess(settings, ray_runtime).start()
    try:
        fast = one(results.wait_for(["fast"], 60), "fast")
        assert fast.status == "ok"
        assert not fast.result["reused"]
        events.wait_for_event("slow", "running", 30)
        assert "slow" not in results.results
    except BaseException:
        print("\n".join(line for line in first.log if "rdkafka" not in line)[-5000:])
        raise
    finally:
        first.kill()
    assert versions_of_job(settings, "testing_slow", "slow") == []
    assert len(versions_of_job(settings, "testing_fast", "fast")) == 1

    second = ExecutorProcess(settings, ray_runtime).start()
    try:
        # The dead runner keeps the jobs partition until the broker fences it (KIP-848's
        # group.consumer.session.timeout.ms, 45 s by default): only then is "slow" re-run.
        slow = one(results.wait_for(["slow"], 90), "slow")
        assert slow.status == "ok", slow.error
        results.poll(1.0)
        assert all(r.result["reused"] for r in results.results["fast"][1:])
        committed, ends = committed_equals_end(
            settings, settings.topics.jobs, settings.executor.jobs_group_id, 1
        )
        assert committed == ends == {0: 2}
    finally:
        second.stop()
    # No job lost, none ran twice: one version per job id.
    assert len(versions_of_job(settings, "testing_slow", "slow")) == 1
    assert len(versions_of_job(settings, "testing_fast", "fast")) == 1

    # "slow" started twice (killed, then re-run); "fast" trained once and was answered again
    # from the store.
    def starts(job_id: str) -> int:
        return sum(e.state == "running" and e.progress == 0.0 for e in events.events(job_id))

    assert starts("slow") == 2
    assert starts("fast") == 1
    results.close()
    events.close()


def test_sweep_stores_every_trial_promotes_the_best_and_bad_jobs_are_answered(
    running: tuple[Executor, Settings],
) -> None:
    _executor, settings = running
    results = ResultCollector(settings)
    dlq = TopicReader(settings, settings.topics.dlq)
    grid = [0.001, 0.01, 1.0]
    send_jobs(
        settings,
        [
            training_request("sweep-1", "testing.train_fast", {"grid": {"c": grid}}),
            training_request("bad-grid", "testing.train_fast", {"grid": {"c": [1.0, -1.0]}}),
            training_request("fails", "testing.train_fast", {"fail": True}),
        ],
    )
    got = results.wait_for(["sweep-1", "bad-grid", "fails"], 60)

    sweep = one(got, "sweep-1")
    assert sweep.status == "ok", sweep.error
    trials = sweep.result["trials"]
    assert [t["trial"] for t in trials] == [0, 1, 2]
    assert [t["params"]["c"] for t in trials] == grid
    assert all(t["status"] == "ok" and "accuracy" in t["metrics"] for t in trials)
    scores = [t["metrics"]["accuracy"] for t in trials]
    best = scores.index(max(scores))
    assert sweep.result["best_trial"] == best
    assert sweep.result["best_version"] == trials[best]["version"]
    assert sweep.result["metrics"] == trials[best]["metrics"]
    stored = versions_of_job(settings, "testing_fast", "sweep-1")
    assert len(stored) == len(grid) + 1  # every trial, plus the promoted copy
    promoted = stored[-1]
    assert sweep.model is not None
    assert sweep.model.version == promoted.version
    assert promoted.metadata["extra"]["promoted_from"] == trials[best]["version"]
    # The promoted copy is what inference gets next.
    send_requests(settings, [predict_request("use", IRIS_ROW, "testing.predict_fast")])
    use = one(results.wait_for(["use"], 60), "use")
    assert use.status == "ok"
    assert use.result == 0
    assert use.model is not None
    assert use.model.version == promoted.version

    bad = one(got, "bad-grid")
    assert bad.status == "error"
    assert bad.error is not None
    assert bad.error.type == "invalid_params"
    assert bad.error.details["errors"][0]["field"] == "params.grid.c"
    assert bad.error.details["trial"] == 1

    fails = one(got, "fails")
    assert fails.status == "error"
    assert fails.error is not None
    assert fails.error.type == "pipeline_failed"
    assert "asked to fail" in fails.error.message
    deadline = time.monotonic() + 10
    while not dlq.records and time.monotonic() < deadline:
        dlq.poll()
    (key, value, headers), *_ = dlq.records
    assert key == b"fails"
    assert json.loads(value or b"{}")["id"] == "fails"
    assert dict(headers)["rayml.error.type"] == b"pipeline_failed"
    assert versions_of_job(settings, "testing_fast", "fails") == []

    # What `rayml train --wait` does: send, follow the events, return the result.
    seen: list[JobEvent] = []
    request = Request(id="cli-1", pipeline="testing.train_fast", params={"c": 2.0})
    followed = follow_job(settings, request, timeout_s=60, on_event=seen.append)
    assert followed.status == "ok"
    assert followed.model is not None
    assert int(followed.model.version) == int(promoted.version) + 1
    assert seen[0].state == "queued"
    assert "running" in {e.state for e in seen}
    results.close()
    dlq.close()


def test_default_settings_train_beside_the_pool_on_a_two_cpu_machine(
    settings: Settings, ray_runtime: str
) -> None:
    """A newcomer's `rayml serve` then `rayml train` on a 2-core laptop, no settings: the
    session's Ray has 2 CPUs, the pool its default 2 workers, and the job must still train
    (with a worker holding 1 CPU each, the training task would wait for ever)."""
    import ray

    assert ray.cluster_resources().get("CPU") == 2
    assert settings.executor.worker_num_cpus is None  # the default: sized at start
    create_topics(settings.kafka, settings.topics)
    executor = Executor(settings)
    executor.start()
    collector = ResultCollector(settings)
    try:
        assert executor.settings.executor.worker_num_cpus == 0.5
        job_id = f"job-{uuid.uuid4().hex[:8]}"
        send_jobs(settings, [training_request(job_id, "breast_cancer.train", {"n_estimators": 5})])
        result = one(collector.wait_for([job_id], timeout_s=120), job_id)
    finally:
        executor.drain(10)
        collector.close()
    assert result.status == "ok", result.error
    assert result.model is not None
    assert result.model.name == "breast_cancer"
