"""``rayml status``'s training part, from job runner statuses (no Kafka, no Ray)."""

from __future__ import annotations

import doctest

import rayml.cli.status
from rayml.cli.status import summarize, training_lines, training_summary

REASON = "waiting for resources: needs {'CPU': 1.0}; the cluster has {'CPU': 0.0} free of 2.0"


def runner(runner_id: str, **status: object) -> dict[str, object]:
    return {"runner_id": runner_id, **status}


def test_waiting_trials_of_every_runner_are_listed_with_their_reason() -> None:
    waiting = {"job_id": "j1", "pipeline": "iris.train", "trial": 2, "since_ms": 10_000}
    runners = [
        runner(
            "ex-1-j0",
            jobs_in_flight=2,
            trials_running=3,
            trials_waiting=1,
            trials_timed_out=1,
            waiting_for_resources=[{**waiting, "reason": REASON}],
        ),
        runner("ex-1-j1", jobs_in_flight=1, trials_running=1),
    ]
    training = summarize([], [], runners, now_ms=25_000)["training"]
    assert training["job_runners"] == 2
    assert training["jobs_in_flight"] == 3
    assert training["trials_running"] == 4
    assert training["trials_timed_out"] == 1
    (entry,) = training["waiting_for_resources"]
    assert entry["runner_id"] == "ex-1-j0"
    assert entry["waiting_s"] == 15.0
    assert entry["reason"] == REASON
    lines = training_lines(training)
    assert lines[0].startswith("training: 2 job runners, 3 jobs in flight, 4 trials launched")
    assert "(1 waiting for resources)" in lines[0]
    assert "1 past their time bound" in lines[0]
    assert lines[1] == f"  job j1 trial 2 (iris.train), 15s: {REASON}"


def test_no_runners_no_training_lines() -> None:
    training = training_summary([])
    assert training["job_runners"] == 0
    assert training["waiting_for_resources"] == []
    assert training_lines(training) == []


def test_doctests() -> None:
    result = doctest.testmod(rayml.cli.status)
    assert result.attempted > 0
    assert result.failed == 0
