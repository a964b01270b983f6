"""The training task body, run as a plain function (no Ray, no Kafka), and the job's pure parts."""

from __future__ import annotations

import doctest
import os
from pathlib import Path
from typing import Any

import pytest

import rayml.errors
import rayml.executor.version_follower
import rayml.protocol.envelopes
import rayml.protocol.sweeps
import rayml.protocol.training
import rayml.training.plan
import rayml.training.task
import rayml.training.watch
from rayml.config import KafkaSettings, TrainingSettings
from rayml.executor.version_follower import LatestVersions
from rayml.models.store import ModelStore
from rayml.models.versions import newest_servable
from rayml.pipeline import Registry, load_spec_by_path
from rayml.protocol.envelopes import Request
from rayml.protocol.training import (
    JobEvent,
    ModelAnnouncement,
    decode_announcement,
    decode_event,
    encode_announcement,
    encode_event,
)
from rayml.training.plan import (
    Job,
    Trial,
    TrialTimeoutError,
    plan_trials,
    result_payload,
    sweep_summary,
    trial_bound,
)
from rayml.training.task import (
    MODEL_ROLE,
    TRIAL_ROLE,
    JobRecord,
    TrialFailure,
    TrialOutcome,
    TrialStarted,
    TrialTask,
    find_job,
    promote_best,
    request_hash,
    run_trial,
    task_options,
    train_trial,
)
from tests.support.training_fault_pipelines import HANG_BOUNDED_TIMEOUT_S
from tests.support.training_pipelines import FastParams

FAST = "tests.support.training_pipelines:train_fast"


class RecordingReporter:
    """Stands in for the Kafka progress reporter: keeps the events in memory."""

    events: list[tuple[str, dict[str, Any]]] = []

    def __init__(self, kafka: Any, topic: str, base: dict[str, Any], interval_s: float) -> None:
        self.base = base

    def event(self, state: str, **fields: Any) -> None:
        RecordingReporter.events.append((state, {**self.base, **fields}))

    def __call__(self, fraction: float, message: str) -> None:
        self.event("running", progress=fraction, message=message)

    def close(self, timeout_s: float = 10.0) -> None:
        pass


@pytest.fixture
def reporter(monkeypatch: pytest.MonkeyPatch) -> type[RecordingReporter]:
    RecordingReporter.events = []
    monkeypatch.setattr(rayml.training.task, "ProgressReporter", RecordingReporter)
    return RecordingReporter


def task(root: Path, **overrides: Any) -> TrialTask:
    values: dict[str, Any] = {
        "job_id": "job-1",
        "pipeline": "testing.train_fast",
        "import_path": FAST,
        "model": "testing_fast",
        "trial": 0,
        "trials": 1,
        "attempt": 1,
        "params": FastParams(),
        "role": MODEL_ROLE,
        "num_cpus": 0.25,
        "num_gpus": 0,
        "store_root": str(root),
        "allow_pickle": False,
        "kafka": KafkaSettings(),
        "events_topic": "events",
        **overrides,
    }
    return TrialTask(**values)


def test_trial_stores_a_version_with_its_job_metadata(
    tmp_path: Path, reporter: type[RecordingReporter]
) -> None:
    outcome = train_trial(task(tmp_path, params=FastParams(c=2.0)))
    assert isinstance(outcome, TrialOutcome)
    assert outcome.version == "000001"
    assert not outcome.reused
    assert outcome.metrics["accuracy"] > 0.8
    (version,) = ModelStore(str(tmp_path)).versions("testing_fast")
    meta = version.metadata
    assert meta["pipeline"] == "testing.train_fast"
    assert meta["params"] == {"c": 2.0, "fail": False}
    assert meta["metrics"] == outcome.metrics
    assert meta["data_fingerprint"]
    assert meta["libraries"]["sklearn"]
    extra = meta["extra"]
    assert (extra["job_id"], extra["role"], extra["trial"]) == ("job-1", MODEL_ROLE, 0)
    assert (extra["nthread"], extra["device"]) == (1, "cpu")
    states = [state for state, _ in reporter.events]
    assert states[0] == "running"
    assert reporter.events[0][1]["progress"] == 0.0
    assert ("running", 0.5) in [(s, e.get("progress")) for s, e in reporter.events]


def test_the_task_says_it_started_before_it_trains_then_returns_the_outcome(
    tmp_path: Path, reporter: type[RecordingReporter]
) -> None:
    stream = run_trial(task(tmp_path))
    started = next(stream)
    assert isinstance(started, TrialStarted)
    assert started.pid == os.getpid()
    # Nothing ran yet: the runner's clock starts before the pipeline does.
    assert reporter.events == []
    assert ModelStore(str(tmp_path)).versions("testing_fast") == []
    outcome = next(stream)
    assert isinstance(outcome, TrialOutcome)
    assert outcome.version == "000001"
    assert next(stream, None) is None


def test_a_trial_bound_is_the_pipelines_own_else_the_setting() -> None:
    reg = Registry()
    reg.discover(["tests.support.training_fault_pipelines"], entry_points=False)
    own = reg.get("testing.train_hang_bounded")
    plain = reg.get("testing.train_hang")
    assert own.trial_timeout_s == HANG_BOUNDED_TIMEOUT_S
    assert trial_bound(own, TrainingSettings(trial_timeout_s=60)) == HANG_BOUNDED_TIMEOUT_S
    assert trial_bound(own, TrainingSettings(trial_timeout_s=None)) == HANG_BOUNDED_TIMEOUT_S
    assert trial_bound(plain, TrainingSettings(trial_timeout_s=60)) == 60
    assert trial_bound(plain, TrainingSettings(trial_timeout_s=None)) is None
    assert TrainingSettings().trial_timeout_s == 3600


def test_a_trial_timeout_is_a_record_failure_naming_its_bound() -> None:
    error = TrialTimeoutError("testing.train_hang", trial=2, attempt=1, timeout_s=2.5)
    assert isinstance(error, rayml.errors.RecordError)
    info = rayml.protocol.envelopes.error_info_from(error)
    assert info.type == "trial_timeout"
    assert "2.5s time bound" in info.message
    assert info.details == {
        "pipeline": "testing.train_hang",
        "trial": 2,
        "attempt": 1,
        "timeout_s": 2.5,
    }


def test_a_stored_trial_is_not_trained_again(
    tmp_path: Path, reporter: type[RecordingReporter]
) -> None:
    first = train_trial(task(tmp_path))
    again = train_trial(task(tmp_path, attempt=2))
    assert isinstance(first, TrialOutcome)
    assert isinstance(again, TrialOutcome)
    assert again.reused
    assert again.version == first.version
    assert len(ModelStore(str(tmp_path)).versions("testing_fast")) == 1
    # Another job's trial is another version.
    other = train_trial(task(tmp_path, job_id="job-2"))
    assert isinstance(other, TrialOutcome)
    assert other.version == "000002"


def test_a_job_id_replayed_by_another_tenant_or_with_other_params_is_not_that_job(
    tmp_path: Path, reporter: type[RecordingReporter]
) -> None:
    """Job ids are public (models and events topics): the stored versions of job-5 are found
    only by job-5 of the same tenant asking for the same pipeline and params."""
    mine = request_hash("testing.train_fast", {"c": 1.0})
    first = train_trial(task(tmp_path, job_id="job-5", tenant="team-a", request_hash=mine))
    assert isinstance(first, TrialOutcome)
    store = ModelStore(str(tmp_path))
    extra = store.versions("testing_fast")[0].metadata["extra"]
    assert (extra["tenant"], extra["request_hash"]) == ("team-a", mine)
    assert find_job(store, "testing_fast", "job-5", "team-a", mine).servable is not None
    assert find_job(store, "testing_fast", "job-5", "team-b", mine) == JobRecord()
    other = request_hash("testing.train_fast", {"c": 2.0})
    assert find_job(store, "testing_fast", "job-5", "team-a", other) == JobRecord()
    # Run as new: another version, not the first one's params, metrics or trials.
    replay = train_trial(task(tmp_path, job_id="job-5", tenant="team-b", request_hash=mine))
    assert isinstance(replay, TrialOutcome)
    assert not replay.reused
    assert replay.version == "000002"


def test_a_raising_pipeline_is_a_record_failure(
    tmp_path: Path, reporter: type[RecordingReporter]
) -> None:
    outcome = train_trial(task(tmp_path, params=FastParams(fail=True)))
    assert isinstance(outcome, TrialFailure)
    assert outcome.error.type == "pipeline_failed"
    assert "asked to fail" in outcome.error.message
    assert not outcome.retriable
    assert ModelStore(str(tmp_path)).versions("testing_fast") == []


def test_sweep_trials_are_not_served_and_the_copy_of_the_best_once_promoted(
    tmp_path: Path, reporter: type[RecordingReporter]
) -> None:
    store = ModelStore(str(tmp_path))
    outcomes = [
        train_trial(task(tmp_path, trial=n, trials=2, role=TRIAL_ROLE, params=FastParams(c=c)))
        for n, c in enumerate((0.001, 1.0))
    ]
    assert all(isinstance(o, TrialOutcome) for o in outcomes)
    assert newest_servable(store, "testing_fast") is None  # only trials so far
    best = outcomes[1]
    assert isinstance(best, TrialOutcome)
    copy = promote_best(str(tmp_path), False, "testing_fast", "job-1", best, {"trials": []})
    assert copy.version == "000003"
    assert copy.metrics == best.metrics
    # A job's version: served only once the promotion gate (or a person) promotes it.
    assert newest_servable(store, "testing_fast") is None
    store.mark_promoted("testing_fast", copy.version, {"by": "test"})
    servable = newest_servable(store, "testing_fast")
    assert servable is not None
    assert servable.version == "000003"
    assert servable.metadata["extra"]["promoted_from"] == best.version
    assert store.load("testing_fast", copy.version).model.predict([[5.1, 3.5, 1.4, 0.2]])[0] == 0
    # Promotion is idempotent per job.
    assert promote_best(str(tmp_path), False, "testing_fast", "job-1", best, {}).reused
    record = find_job(store, "testing_fast", "job-1", "", "")
    assert record.servable is not None
    assert record.servable.version == "000003"
    assert sorted(record.trials) == [0, 1]
    # A store-only LatestVersions skips trial versions stored after the promoted copy.
    train_trial(task(tmp_path, job_id="job-9", trial=0, trials=2, role=TRIAL_ROLE))
    versions = LatestVersions(str(tmp_path))
    try:
        assert versions.get("testing_fast") == "000003"
    finally:
        versions.close()


def test_task_options_carry_the_pipelines_resources() -> None:
    spec = load_spec_by_path(FAST)
    options = task_options(spec, "job-1", 3)
    assert options["num_cpus"] == 0.25
    assert options["num_gpus"] == 0
    assert options["max_retries"] == 0
    assert options["name"] == "train:testing.train_fast:job-1:3"
    gpu = rayml.training.task.context_for(num_cpus=4, num_gpus=1)
    assert (gpu.nthread, gpu.device) == (4, "cuda")


def _registry() -> Registry:
    reg = Registry()
    reg.discover(["tests.support.training_pipelines"], entry_points=False)
    return reg


def test_plan_trials_checks_kind_metric_and_params() -> None:
    reg = _registry()

    def plan(pipeline: str, params: dict[str, Any]) -> Any:
        request = Request(id="j", pipeline=pipeline, params=params)
        return plan_trials(reg, request, max_trials=4)

    spec, params, sweep = plan("testing.train_fast", {"grid": {"c": [0.1, 1.0]}})
    assert spec.name == "testing.train_fast"
    assert sweep
    assert [p.c for p in params] == [0.1, 1.0]
    with pytest.raises(rayml.errors.InvalidRequestError, match="inference pipeline"):
        plan("testing.predict_fast", {})
    with pytest.raises(rayml.errors.InvalidParamsError, match="declares no metric"):
        plan("testing.train_slow", {"sweep": [{"sleep_s": 1}]})
    with pytest.raises(rayml.errors.InvalidParamsError, match=r"params\.c"):
        plan("testing.train_fast", {"c": -1})
    with pytest.raises(rayml.errors.UnknownPipelineError):
        plan("nope.train", {})


def test_sweep_summary_and_result_payload() -> None:
    reg = _registry()
    spec = reg.get("testing.train_fast")
    request = Request(id="j", pipeline=spec.name)
    job = Job(("t", 0), 0, b"", [], request, spec, [], True, 0.0)
    job.trials = [
        Trial(0, FastParams(c=0.1), 1, TrialOutcome(0, "000001", {"accuracy": 0.8}, {"c": 0.1})),
        Trial(1, FastParams(c=1.0), 1, TrialOutcome(1, "000002", {"accuracy": 0.9}, {"c": 1.0})),
        Trial(2, FastParams(fail=True), 1, TrialFailure(2, rayml.protocol.envelopes.ErrorInfo(
            type="pipeline_failed", message="boom"))),
    ]  # fmt: skip
    best, summary = sweep_summary(job)
    assert best.trial == 1
    assert summary["best_version"] == "000002"
    assert summary["metric"] == "accuracy"
    assert [t["status"] for t in summary["trials"]] == ["ok", "ok", "error"]
    copy = TrialOutcome(1, "000003", best.metrics, best.params)
    payload = result_payload(spec, copy, summary, False)
    assert payload["version"] == "000003"
    assert payload["best_trial"] == 1
    assert len(payload["trials"]) == 3
    single = result_payload(spec, best, None, True)
    assert single["reused"]
    assert "trials" not in single
    assert "train_ms" in single


def test_events_and_announcements_round_trip() -> None:
    event = JobEvent(job_id="j", pipeline="p", model="m", state="running", progress=0.5, trial=1)
    assert decode_event(encode_event(event)) == event
    assert b"error" not in encode_event(event)  # absent fields are left out
    with pytest.raises(ValueError, match="less than or equal"):
        JobEvent(job_id="j", pipeline="p", model="m", state="running", progress=1.5)
    ann = ModelAnnouncement(name="m", version="000002", metrics={"a": 1.0})
    assert decode_announcement(encode_announcement(ann)) == ann


@pytest.mark.parametrize(
    "module",
    [
        rayml.protocol.sweeps,
        rayml.protocol.training,
        rayml.training.task,
        rayml.training.plan,
        rayml.training.watch,
        rayml.executor.version_follower,
    ],
)
def test_docstring_examples_run(module: Any) -> None:
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0
