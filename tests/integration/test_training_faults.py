"""Training under bad days, on the real broker and a real local Ray: hung trials, no room to run.

* trials that hang run into their time bound (the settings' or the pipeline's own), counted from
  when their task started; they fail as ``trial_timeout`` (not retried), their slots are free at
  once, a sweep's other trials go on, and the job queued behind them trains;
* a trial whose task Ray cannot place (the CPUs are held) is reported as waiting for resources
  within seconds, on the events topic (what ``rayml train --wait`` prints) and in ``rayml
  status``, is not charged for the wait, and trains once the CPUs free up;
* exactly-once: a runner killed while its answers wait in offset order (models stored, not
  answered) is restarted by Ray and a read_committed reader sees one result per job;
* a trial that asks for more CPUs than any node has fails at once (``resources_unavailable``),
  and one that waits ``training.max_wait_s`` without starting fails so too;
* a ``reply_to`` that does not exist is answered on the result topic: at-least-once without
  crashing the runner, exactly-once without aborting a transaction; one deleted after it was
  found aborts one transaction, whose redo answers on the result topic, and the job running
  meanwhile is not started again.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from rayml.cli.status import cluster_status, summarize, training_lines
from rayml.cli.training import follow_job
from rayml.config import Settings
from rayml.executor.service import Executor
from rayml.kafka.topics import create_topics
from rayml.protocol.envelopes import Request, Result
from rayml.protocol.training import JobEvent
from tests.integration.test_training import (
    TopicReader,
    one,
    send_jobs,
    training_request,
    training_settings,
    versions_of_job,
)
from tests.support.kafka_io import ResultCollector
from tests.support.training_fault_pipelines import HANG_BOUNDED_TIMEOUT_S
from tests.support.training_resource_pipelines import HUGE_NUM_CPUS

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

PIPELINES = [
    "tests.support.training_pipelines",
    "tests.support.training_fault_pipelines",
    "tests.support.training_resource_pipelines",
]


def fault_settings(settings: Settings, **training: Any) -> Settings:
    settings = training_settings(settings, **training)
    executor = settings.executor.model_copy(update={"pipeline_modules": PIPELINES})
    return settings.model_copy(update={"executor": executor})


@pytest.fixture
def start(settings: Settings, ray_runtime: str) -> Iterator[Any]:
    executors: list[Executor] = []

    def started(delivery: str | None = None, **training: Any) -> tuple[Executor, Settings]:
        tuned = fault_settings(settings, **training)
        if delivery is not None:
            ex = tuned.executor.model_copy(
                update={"delivery": delivery, "transaction_timeout_s": 10.0}
            )
            tuned = tuned.model_copy(update={"executor": ex})
        create_topics(tuned.kafka, tuned.topics)
        executor = Executor(tuned)
        executor.start()
        executors.append(executor)
        return executor, tuned

    yield started
    for executor in executors:
        executor.drain(10)


def runner_status(executor: Executor) -> dict[str, Any]:
    (status,) = ray.get([a.status.remote() for a in executor.job_runners], timeout=10)
    return dict(status)


def committed_offset(settings: Settings, topic: str, group: str) -> int:
    probe = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": group})
    try:
        (tp,) = probe.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        probe.close()


def first_start(events: list[JobEvent]) -> JobEvent:
    return next(e for e in events if e.state == "running" and e.progress == 0.0)


def test_hung_trials_time_out_free_their_slots_and_the_jobs_behind_them_train(
    start: Any,
) -> None:
    bound_s = 20.0  # room for the sweep's real fit (hang_s=0) on a loaded 2-core machine
    executor, settings = start(trial_timeout_s=bound_s, max_concurrent_tasks=2)
    results = ResultCollector(settings)
    events = TopicReader(settings, settings.topics.events)
    # One jobs partition, two slots: the two hung trials take both, "after" and the sweep wait.
    send_jobs(
        settings,
        [
            training_request("hang-a", "testing.train_hang", {}),
            training_request("hang-b", "testing.train_hang_bounded", {}),
            # Its own bound (300 s): a loaded machine may take more than the settings' 10 s.
            training_request("after", "testing.train_quick", {"c": 1.0}),
            training_request("sweep", "testing.train_hang", {"grid": {"hang_s": [600, 0]}}),
        ],
    )
    got = results.wait_for(["hang-a", "hang-b", "after", "sweep"], 180)

    for job_id, bound in (("hang-a", bound_s), ("hang-b", HANG_BOUNDED_TIMEOUT_S)):
        result = one(got, job_id)
        assert result.status == "error"
        assert result.error is not None
        assert result.error.type == "trial_timeout", result.error
        assert result.error.details["timeout_s"] == bound
        assert result.attempts == 1  # a record failure: not run again
        failed = events.wait_for_event(job_id, "failed", 10)
        job_events = events.events(job_id)
        started = first_start(job_events)
        # Counted from the task's start, ended within the bound plus a loop turn and a margin.
        took_s = (failed.at_ms - started.at_ms) / 1000
        assert bound - 0.5 <= took_s <= bound + 3.0, (job_id, took_s)
        print(f"\n{job_id}: bound {bound:g}s, started to failed {took_s:.2f}s")
        assert sum(e.state == "running" and e.progress == 0.0 for e in job_events) == 1

    # "after" got the slot "hang-b" left (its own task started once "hang-b" failed).
    after = one(got, "after")
    assert after.status == "ok", after.error
    assert (
        first_start(events.events("after")).at_ms
        >= events.wait_for_event("hang-b", "failed").at_ms - 200
    )

    # A sweep goes on without its hung trial: the other one is the best, the job is ok.
    sweep = one(got, "sweep")
    assert sweep.status == "ok", sweep.error
    hung, fine = sweep.result["trials"]
    assert hung["status"] == "error"
    assert hung["error"]["type"] == "trial_timeout"
    assert fine["status"] == "ok"
    assert sweep.result["best_trial"] == 1

    status = runner_status(executor)
    assert status["trials_timed_out"] == 3
    assert status["trials_running"] == 0
    results.close()
    events.close()


@ray.remote
class CpuHolder:
    """Holds CPUs for as long as it lives (the test kills it by its handle)."""

    def ready(self) -> bool:
        return True


def test_a_trial_without_room_is_reported_waiting_and_trains_once_cpus_free_up(
    start: Any,
) -> None:
    notice_s, bound_s = 1.0, 6.0
    executor, settings = start(waiting_notice_s=notice_s, trial_timeout_s=bound_s)
    events = TopicReader(settings, settings.topics.events)
    total = ray.cluster_resources()["CPU"]
    free = ray.available_resources().get("CPU", 0.0)
    holder = CpuHolder.options(num_cpus=free).remote()  # type: ignore[attr-defined]
    ray.get(holder.ready.remote(), timeout=30)
    assert ray.available_resources().get("CPU", 0.0) == 0.0

    # What `rayml train --wait` does, in a thread: send, print every event, return the result.
    seen: list[JobEvent] = []
    answer: list[Result] = []
    request = Request(id="starved", pipeline="testing.train_fast", params={"c": 1.0})
    follower = threading.Thread(
        target=lambda: answer.append(
            follow_job(settings, request, timeout_s=90, on_event=seen.append)
        ),
        daemon=True,
    )
    follower.start()
    try:
        queued = events.wait_for_event("starved", "queued", 30)
        expected = (
            "waiting for resources: needs {'CPU': 0.25}; the cluster has {'CPU': 0.0} free "
            f"of {{'CPU': {total}}}"
        )

        def notices() -> list[JobEvent]:
            return [e for e in events.events("starved") if e.message == expected]

        deadline = time.monotonic() + 30
        while len(notices()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        first, second, *_ = notices()
        assert first.state == "queued"
        assert first.trial == 0
        # Within seconds of the job's launch, and repeated at the interval while it waits.
        assert (first.at_ms - queued.at_ms) / 1000 <= notice_s + 2.0
        assert notice_s - 0.3 <= (second.at_ms - first.at_ms) / 1000 <= notice_s + 2.0
        print(
            f"\nwaiting notice {(first.at_ms - queued.at_ms) / 1000:.2f}s after queued, "
            f"repeated after {(second.at_ms - first.at_ms) / 1000:.2f}s (interval {notice_s:g}s)"
        )

        # `rayml status` lists the waiting trial with its reason.
        _ingests, runners = cluster_status(None, settings.ray.namespace)
        training = summarize([], _ingests, runners)["training"]
        (waiting,) = training["waiting_for_resources"]
        assert (waiting["job_id"], waiting["trial"], waiting["reason"]) == ("starved", 0, expected)
        assert any(expected in line and "starved" in line for line in training_lines(training))

        # Hold the CPUs past the trial's time bound: the wait is not charged to the trial.
        hold_until = queued.at_ms / 1000 + bound_s + 1.0
        while time.time() < hold_until:
            time.sleep(0.1)
        assert all(e.state != "running" for e in events.events("starved"))
    finally:
        ray.kill(holder)
    follower.join(90)
    (result,) = answer
    assert result.status == "ok", result.error
    states = [e.state for e in events.events("starved")]
    assert "failed" not in states
    assert states[-1] == "succeeded"
    # The follower (the CLI's progress lines) saw the reason too.
    assert any(e.message == expected for e in seen)
    _ingests, runners = cluster_status(None, settings.ray.namespace)
    assert summarize([], _ingests, runners)["training"]["waiting_for_resources"] == []
    assert runner_status(executor)["trials_timed_out"] == 0
    events.close()


@pytest.mark.slow
def test_exactly_once_a_runner_killed_with_stored_unanswered_models_answers_each_job_once(
    settings: Settings, ray_runtime: str, tmp_path: Path
) -> None:
    """Exactly-once: answers leave in jobs-offset order, inside the runner's transaction. A job
    blocked at the head of the partition holds back the answers of the jobs behind it, whose
    models are stored; the runner actor is killed then (Ray restarts it, same transactional id)
    and a read_committed reader still sees one result per job id."""
    settings = fault_settings(settings, max_concurrent_tasks=4)
    executor_settings = settings.executor.model_copy(
        update={"delivery": "exactly_once", "transaction_timeout_s": 10.0}
    )
    settings = settings.model_copy(update={"executor": executor_settings})
    create_topics(settings.kafka, settings.topics)
    executor = Executor(settings)
    executor.start()
    committed = ResultCollector(settings, isolation_level="read_committed")
    everything = ResultCollector(settings, isolation_level="read_uncommitted")
    gate = tmp_path / "gate"
    held = [f"held-{n}" for n in range(3)]
    try:
        send_jobs(
            settings,
            [
                training_request("first", "testing.train_fast", {"c": 1.0}),
                training_request("gated", "testing.train_gate", {"gate": str(gate)}),
                *(
                    training_request(job_id, "testing.train_fast", {"c": 2.0 + n})
                    for n, job_id in enumerate(held)
                ),
            ],
        )
        one(committed.wait_for(["first"], 90), "first")
        # The jobs behind "gated" are trained and stored, and not answered: held in offset order.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(
            versions_of_job(settings, "testing_fast", job_id) for job_id in held
        ):
            time.sleep(0.2)
        assert all(len(versions_of_job(settings, "testing_fast", j)) == 1 for j in held)
        everything.poll_until_quiet(1.0)
        assert not set(held) & everything.results.keys(), "answered before the head job"
        (runner,) = executor.job_runners
        before = ray.get(runner.status.remote(), timeout=10)
        assert before["delivery"] == "exactly_once"
        assert before["answers_held"] == 1 + len(held)  # "gated" and the three behind it

        ray.kill(runner, no_restart=False)  # Ray restarts it: same runner id, same txn id
        gate.touch()
        got = committed.wait_for(["gated", *held], 120)
        committed.poll_until_quiet(3.0)
    finally:
        gate.touch()
        executor.drain(10)
    once = {job_id: len(results) for job_id, results in committed.results.items()}
    assert once == dict.fromkeys(["first", "gated", *held], 1), once
    assert one(got, "gated").status == "ok"
    for job_id in held:
        result = one(got, job_id)
        assert result.status == "ok", result.error
        assert result.result["reused"], "answered from the store, not trained again"
        assert len(versions_of_job(settings, "testing_fast", job_id)) == 1
    assert len(versions_of_job(settings, "testing_gate", "gated")) == 1
    # Every job's offset is committed (the ingest's transaction markers follow the jobs in the
    # jobs partition, so its end offset is further on).
    assert committed_offset(settings, settings.topics.jobs, settings.executor.jobs_group_id) == (
        2 + len(held)
    )
    everything.poll_until_quiet(1.0)
    print(
        f"\nread_uncommitted saw {sum(map(len, everything.results.values()))} results for "
        f"{len(everything.results)} jobs; read_committed one each"
    )
    committed.close()
    everything.close()


def test_a_trial_asking_more_cpus_than_any_node_has_fails_within_seconds(start: Any) -> None:
    executor, settings = start()
    results = ResultCollector(settings)
    events = TopicReader(settings, settings.topics.events)
    cpus = ray.cluster_resources()["CPU"]  # one node: the test session's
    send_jobs(
        settings,
        [
            training_request("huge", "testing.train_huge", {}),
            training_request("after", "testing.train_fast", {"c": 1.0}),
        ],
    )
    got = results.wait_for(["huge", "after"], 60)
    huge = one(got, "huge")
    assert huge.status == "error"
    assert huge.error is not None
    assert huge.error.type == "resources_unavailable"
    assert huge.error.message == (
        f"trial 0 of 'testing.train_huge' cannot start: needs {{'CPU': {float(HUGE_NUM_CPUS)}}}, "
        f"more than any node of the cluster has (the largest has {{'CPU': {cpus}}})"
    )
    assert huge.error.details["largest_node"] == {"CPU": cpus}
    queued = events.wait_for_event("huge", "queued", 10)
    failed = events.wait_for_event("huge", "failed", 10)
    took_s = (failed.at_ms - queued.at_ms) / 1000
    print(f"\n64-CPU trial failed {took_s:.2f}s after it was queued")
    assert took_s <= 2.0
    assert all(e.state != "running" for e in events.events("huge"))  # never launched
    assert one(got, "after").status == "ok"  # the partition was not held up
    assert runner_status(executor)["trials_unplaceable"] == 1
    results.close()
    events.close()


def test_a_trial_waiting_past_max_wait_s_fails_saying_what_it_waited_for(start: Any) -> None:
    notice_s, max_wait_s = 1.0, 4.0
    executor, settings = start(waiting_notice_s=notice_s, max_wait_s=max_wait_s)
    results = ResultCollector(settings)
    events = TopicReader(settings, settings.topics.events)
    free = ray.available_resources().get("CPU", 0.0)
    holder = CpuHolder.options(num_cpus=free).remote()  # type: ignore[attr-defined]
    try:
        ray.get(holder.ready.remote(), timeout=30)
        send_jobs(settings, [training_request("starved", "testing.train_fast", {"c": 1.0})])
        got = results.wait_for(["starved"], 60)
    finally:
        ray.kill(holder)
    result = one(got, "starved")
    assert result.status == "error"
    assert result.error is not None
    assert result.error.type == "resources_unavailable"
    waiting = "waiting for resources: needs {'CPU': 0.25}; the cluster has {'CPU': 0.0} free"
    assert f"not started within training.max_wait_s={max_wait_s:g}s, {waiting}" in (
        result.error.message
    )
    failed = events.wait_for_event("starved", "failed", 10)
    queued, *notices = [e for e in events.events("starved") if e.state == "queued"]
    # The waiting notices went out meanwhile, saying the same.
    assert notices
    assert all(waiting in (e.message or "") for e in notices)
    took_s = (failed.at_ms - queued.at_ms) / 1000
    print(f"\nwaited {took_s:.2f}s (max_wait_s {max_wait_s:g}) before failing")
    assert max_wait_s <= took_s <= max_wait_s + 3.0
    status = runner_status(executor)
    assert (status["trials_unplaceable"], status["trials_running"]) == (1, 0)
    results.close()
    events.close()


def test_at_least_once_a_missing_reply_to_is_answered_on_the_result_topic_runner_intact(
    start: Any,
) -> None:
    """Twice the same missing name: librdkafka would refuse the second write in produce()."""
    executor, settings = start()
    results = ResultCollector(settings)
    pid = runner_status(executor)["pid"]
    bogus = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    jobs = [reply_job(f"bogus-{n}", bogus) for n in range(2)]
    started = time.monotonic()
    send_jobs(settings, [*jobs, training_request("plain", "testing.train_fast", {"c": 2.0})])
    got = results.wait_for(["bogus-0", "bogus-1", "plain"], 60)
    took_s = time.monotonic() - started
    print(f"\nthree jobs, two naming a missing reply_to, answered in {took_s:.2f}s")
    assert took_s < 25.0  # not after librdkafka's 30 s wait for the topic to appear
    for job_id in ("bogus-0", "bogus-1", "plain"):
        assert one(got, job_id).status == "ok", one(got, job_id).error
    assert runner_status(executor)["pid"] == pid  # the runner never crashed
    results.close()


def test_exactly_once_a_missing_reply_to_is_answered_on_the_result_topic_aborting_nothing(
    start: Any, tmp_path: Path
) -> None:
    """Asked before writing: no write to the missing topic, so no transaction aborted and no
    running trial cancelled by a rewind (each abort used to cancel every running trial)."""
    executor, settings = start(delivery="exactly_once")
    committed = ResultCollector(settings, isolation_level="read_committed")
    events = TopicReader(settings, settings.topics.events)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    replies = f"{settings.topics.output}.replies"
    admin.create_topics([NewTopic(replies, 1, 1)])[replies].result(30)
    replied = ResultCollector(settings, topic=replies, isolation_level="read_committed")
    gate = tmp_path / "gate"
    try:
        started = time.monotonic()
        send_jobs(
            settings,
            [
                reply_job("bogus-0", f"no-such-topic-{uuid.uuid4().hex[:8]}"),
                reply_job("found", replies),
                reply_job("bogus-1", f"no-such-topic-{uuid.uuid4().hex[:8]}"),
                training_request("gated", "testing.train_gate", {"gate": str(gate)}),
            ],
        )
        committed.wait_for(["bogus-0", "bogus-1"], 60)
        took_s = time.monotonic() - started
        print(f"\ntwo jobs naming missing reply_to topics answered in {took_s:.2f}s")
        assert took_s < 25.0  # no timed-out write (10 s each), no abort and redo
        replied.wait_for(["found"], 30)
        events.wait_for_event("gated", "running", 30)
        gate.touch()
        got = committed.wait_for(["gated"], 60)
        committed.poll_until_quiet(2.0)
    finally:
        gate.touch()
    status = runner_status(executor)
    assert (status["transaction_aborts"], status["jobs_succeeded"]) == (0, 4)
    assert one(got, "gated").status == "ok"
    starts = [e for e in events.events("gated") if e.state == "running" and e.progress == 0.0]
    assert len(starts) == 1  # never cancelled and started again
    once = {job_id: len(results) for job_id, results in committed.results.items()}
    assert once == dict.fromkeys(["bogus-0", "bogus-1", "gated"], 1), once
    committed.close()
    replied.close()
    events.close()


@pytest.mark.slow
def test_exactly_once_a_reply_to_deleted_after_it_was_found_is_answered_on_the_result_topic(
    start: Any,
) -> None:
    """The one case asking first cannot catch: the topic was found, then deleted. The write
    (outside the transaction) times out (``reply_timeout_s``: 1.7 s with this test's 5 s
    transaction timeout) and the transaction aborts, until the topic is found missing or
    given up on after 3 timeouts; the redo answers from the store on the result topic, once."""
    executor, settings = start(delivery="exactly_once")
    committed = ResultCollector(settings, isolation_level="read_committed")
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    replies = f"{settings.topics.output}.replies"
    admin.create_topics([NewTopic(replies, 1, 1)])[replies].result(30)
    replied = ResultCollector(settings, topic=replies, isolation_level="read_committed")
    send_jobs(settings, [reply_job("found", replies)])
    replied.wait_for(["found"], 60)
    pid = runner_status(executor)["pid"]
    admin.delete_topics([replies])[replies].result(30)
    started = time.monotonic()
    send_jobs(settings, [reply_job("deleted", replies)])
    got = committed.wait_for(["deleted"], 120)
    took_s = time.monotonic() - started
    restarted = runner_status(executor)["pid"] != pid
    print(f"\nreply_to deleted after it was found: answered in {took_s:.2f}s ({restarted=})")
    committed.poll_until_quiet(2.0)
    deleted = one(got, "deleted")
    assert deleted.status == "ok", deleted.error
    assert len(committed.results["deleted"]) == 1
    assert len(versions_of_job(settings, "testing_fast", "deleted")) == 1  # trained once
    committed.close()
    replied.close()


@pytest.mark.slow
def test_exactly_once_a_reply_to_that_refuses_markers_is_answered_on_the_result_topic(
    start: Any,
) -> None:
    """A tenant's reply topic with ``max.message.bytes=10`` refuses the job's result and any
    transaction marker (78 bytes). The runner writes reply topics outside its transaction, so
    its ``transactional.id`` cannot be left stuck; the refused write costs one aborted
    transaction, and the redo answers on the result topic (the topic is not tried again):
    no abort loop, the runner not restarted, the next job answered as usual."""
    executor, settings = start(delivery="exactly_once")
    committed = ResultCollector(settings, isolation_level="read_committed")
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    tiny = f"{settings.topics.output}.tiny"
    admin.create_topics([NewTopic(tiny, 1, 1, config={"max.message.bytes": "10"})])[tiny].result(30)
    pid = runner_status(executor)["pid"]
    started = time.monotonic()
    send_jobs(settings, [reply_job("refused", tiny), reply_job("refused-again", tiny)])
    committed.wait_for(["refused", "refused-again"], 120)
    took_s = time.monotonic() - started
    send_jobs(settings, [training_request("after", "testing.train_fast", {"c": 1.0})])
    committed.wait_for(["after"], 120)
    committed.poll_until_quiet(2.0)
    status = runner_status(executor)
    print(f"\nreply_to refusing markers: answered in {took_s:.2f}s; status {status}")
    assert status["pid"] == pid, "the runner was not restarted"
    for job_id in ("refused", "refused-again", "after"):
        assert one(committed.results, job_id).status == "ok", job_id
        assert len(committed.results[job_id]) == 1, job_id
    assert status["transaction_aborts"] <= 2
    committed.close()


def reply_job(job_id: str, reply_to: str) -> dict[str, Any]:
    return {**training_request(job_id, "testing.train_fast", {"c": 1.0}), "reply_to": reply_to}
