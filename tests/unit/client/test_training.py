"""How the client turns a job's status events into progress (no Kafka, no Ray)."""

from __future__ import annotations

import doctest
from typing import Any

import rayml.client.training
from rayml.client.training import JobProgress
from rayml.protocol.envelopes import ErrorInfo
from rayml.protocol.training import JobEvent


def event(state: str, **fields: Any) -> JobEvent:
    return JobEvent(job_id="j", pipeline="p.train", model="m", state=state, at_ms=1, **fields)  # type: ignore[arg-type]


def test_doctests() -> None:
    assert doctest.testmod(rayml.client.training).failed == 0


def test_single_training_from_queued_to_succeeded() -> None:
    progress = JobProgress()
    assert progress.state == "sent"
    progress.update(event("queued", trials=1))
    progress.update(event("running", trial=0, trials=1, progress=0.0))
    progress.update(event("running", trial=0, trials=1, progress=0.5, message="round 5/10"))
    assert progress.fraction == 0.5
    assert progress.describe() == "running round 5/10"
    progress.update(event("succeeded", trials=1, version="000003", metrics={"accuracy": 0.9}))
    assert progress.fraction == 1.0
    assert (progress.state, progress.version, progress.metrics) == (
        "succeeded",
        "000003",
        {"accuracy": 0.9},
    )
    assert progress.events == 4


def test_sweep_progress_is_the_mean_of_its_trials() -> None:
    progress = JobProgress()
    for trial, fraction in [(0, 1.0), (1, 0.5), (2, 0.0), (3, 0.5)]:
        progress.update(event("running", trial=trial, trials=4, progress=fraction))
    assert progress.fraction == 0.5
    assert progress.describe().startswith("running (4 trials)")


def test_one_failed_trial_does_not_fail_the_job_but_a_job_failure_does() -> None:
    progress = JobProgress()
    progress.update(event("running", trial=0, trials=2, progress=0.2))
    error = ErrorInfo(type="pipeline_failed", message="boom")
    progress.update(event("failed", trial=1, trials=2, error=error))
    assert progress.state == "running"
    assert progress.error == "pipeline_failed: boom"
    progress.update(event("failed", trials=2, error=error))
    assert progress.state == "failed"


def test_what_a_waiting_trial_waits_for_is_shown_until_it_starts() -> None:
    progress = JobProgress()
    progress.update(event("queued", trials=1))
    waiting = "waiting for resources: needs {'CPU': 1.0}; the cluster has {'CPU': 0.0} free"
    progress.update(event("queued", trial=0, trials=1, message=waiting))
    assert progress.headline == "queued"
    assert progress.describe() == f"queued {waiting}"
    # The trial starts: the reason no longer holds.
    progress.update(event("running", trial=0, trials=1, progress=0.0))
    assert progress.describe() == "running"
    progress.update(event("running", trial=0, trials=1, progress=0.5, message="round 5/10"))
    progress.update(event("running", trial=0, trials=1, progress=0.6))
    assert progress.describe() == "running round 5/10"  # same state: the message stays
