"""The trial scheduler's decisions without Ray: Ray's calls are replaced by fakes.

* A trial that asks for more than any node has in total fails at once as
  ``resources_unavailable``, naming what it asked and the largest node; nothing is launched.
* A trial not started ``training.max_wait_s`` after its launch is cancelled and fails the same
  way, saying what it waited for.
* A cancelled trial (past its bound, or waited out) is answered once its task has ended: with
  the version it stored before the kill took effect, if any -- what a redo of the job would
  answer too -- else with its failure; so no version of a trial answered as failed remains for
  a redo to answer with and the gate to serve.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from sklearn.linear_model import LogisticRegression

from rayml.config import Settings
from rayml.models.store import ModelStore
from rayml.pipeline import Registry
from rayml.protocol.envelopes import ErrorInfo, Request
from rayml.training.plan import Job, Trial
from rayml.training.task import TrialFailure, TrialOutcome
from rayml.training.trials import TrialScheduler
from tests.support.training_pipelines import FastParams

TWO_CPUS = {"Alive": True, "Resources": {"CPU": 2.0, "memory": 4e9}}
DEAD_BIG = {"Alive": False, "Resources": {"CPU": 128.0}}


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def event(self, job: Job, state: str, **fields: Any) -> None:
        self.events.append((state, fields))


class Ended:
    """A cancelled task's generator as the scheduler reads it: its items, then the end."""

    def __init__(self, *items: Any) -> None:
        self._items: Iterator[Any] = iter(items)

    def __next__(self) -> Any:
        return next(self._items)


class Answers:
    def __init__(self) -> None:
        self.ok: list[tuple[Job, TrialOutcome]] = []
        self.failed: list[tuple[Job, ErrorInfo]] = []


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"nodes": [TWO_CPUS, DEAD_BIG], "cancelled": [], "launched": []}
    monkeypatch.setattr(ray, "nodes", lambda: state["nodes"])
    monkeypatch.setattr(ray, "available_resources", lambda: {"CPU": 0.0})
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray, "cancel", lambda ref, **_: state["cancelled"].append(ref))
    monkeypatch.setattr(ray, "get", lambda item: item)  # the fakes hand out the items
    return state


def scheduler(tmp_path: Path, answers: Answers, **training: Any) -> TrialScheduler:
    settings = Settings(models={"root": str(tmp_path)}, training=training)
    return TrialScheduler(
        settings,
        "r1",
        Events(),  # type: ignore[arg-type]
        lambda job, outcome, _extra: answers.ok.append((job, outcome)),
        lambda job, error: answers.failed.append((job, error)),
    )


def job(pipeline: str, job_id: str = "job-1") -> Job:
    registry = Registry()
    registry.discover(
        ["tests.support.training_pipelines", "tests.support.training_resource_pipelines"],
        entry_points=False,
    )
    spec = registry.get(pipeline)
    request = Request(id=job_id, pipeline=spec.name)
    return Job(("jobs", 0), 0, b"{}", [], request, spec, [Trial(0, FastParams())], False, 0.0)


def running(trials: TrialScheduler, j: Job, ref: Any, now: float) -> None:
    """As launch() leaves a trial: its task launched (``ref``) at ``now``."""
    j.trials[0].attempts = 1
    trials.running[ref] = (j, j.trials[0])
    trials.clock.launched(ref, now, 60.0)


def store_model_of(tmp_path: Path, j: Job) -> str:
    """What the task stores for ``j``'s trial (as a plain training's model)."""
    est = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    version = ModelStore(str(tmp_path)).save(
        j.spec.model,
        est,
        pipeline=j.spec.name,
        params={},
        metrics={"accuracy": 0.9},
        extra={
            "job_id": j.request.id,
            "tenant": j.owner[0],
            "request_hash": j.owner[1],
            "role": "model",
            "trial": 0,
        },
    )
    return version.version


def test_a_trial_asking_more_than_any_node_has_fails_at_once_and_is_not_launched(
    tmp_path: Path, fake_ray: dict[str, Any]
) -> None:
    answers = Answers()
    trials = scheduler(tmp_path, answers)
    trials.add(job("testing.train_huge"))
    trials.launch()
    assert trials.running == {}  # nothing launched
    ((_job, error),) = answers.failed
    assert error.type == "resources_unavailable"
    assert error.message == (
        "trial 0 of 'testing.train_huge' cannot start: needs {'CPU': 64.0}, more than any node "
        "of the cluster has (the largest has {'CPU': 2.0})"  # a dead node does not count
    )
    assert error.details == {
        "pipeline": "testing.train_huge",
        "trial": 0,
        "needs": {"CPU": 64.0},
        "largest_node": {"CPU": 2.0},
    }
    assert trials.trials_unplaceable == 1


@pytest.mark.parametrize(
    ("nodes", "fail_unplaceable"),
    [([], True), ([TWO_CPUS], False)],
    ids=["cluster unknown", "check off (autoscaling)"],
)
def test_an_unknown_cluster_or_the_check_off_launches_the_trial(
    tmp_path: Path,
    fake_ray: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    nodes: list[Any],
    fail_unplaceable: bool,
) -> None:
    fake_ray["nodes"] = nodes
    answers = Answers()
    trials = scheduler(tmp_path, answers, fail_unplaceable=fail_unplaceable)
    launched: list[Any] = []

    class Remote:
        def options(self, **options: Any) -> Remote:
            return self

        def remote(self, task: Any) -> str:
            launched.append(task)
            return "ref"

    trials._run = Remote()
    trials.add(job("testing.train_huge"))
    trials.launch()
    assert answers.failed == []
    assert [t.num_cpus for t in launched] == [64]
    assert list(trials.running) == ["ref"]


def test_a_trial_waiting_past_max_wait_s_is_cancelled_and_fails_saying_what_it_waited_for(
    tmp_path: Path, fake_ray: dict[str, Any]
) -> None:
    answers = Answers()
    trials = scheduler(tmp_path, answers, max_wait_s=30.0, waiting_notice_s=5.0)
    j = job("testing.train_fast")
    ref = Ended()  # cancelled before it started: its generator ends without an item
    running(trials, j, ref, now=0.0)
    trials._watch(now=30.0)
    assert fake_ray["cancelled"] == []
    trials._watch(now=30.5)
    assert fake_ray["cancelled"] == [ref]
    assert trials.running == {}  # its slot is free at once
    assert answers.failed == []  # answered once Ray says the task ended
    trials._ended(ref)
    ((_job, error),) = answers.failed
    assert error.type == "resources_unavailable"
    assert error.message == (
        "trial 0 of 'testing.train_fast' cannot start: not started within "
        "training.max_wait_s=30s, waiting for resources: needs {'CPU': 0.25}; the cluster has "
        "{'CPU': 0.0} free of {'CPU': 2.0}"
    )
    assert error.details["waited_s"] == 30.5
    assert error.details["largest_node"] == {"CPU": 2.0}
    assert trials.trials_unplaceable == 1


def test_a_timed_out_trial_that_stored_nothing_fails(
    tmp_path: Path, fake_ray: dict[str, Any]
) -> None:
    answers = Answers()
    trials = scheduler(tmp_path, answers)
    j = job("testing.train_fast")
    ref = Ended()  # cancelled: its generator ends without an outcome
    running(trials, j, ref, now=0.0)
    trials.clock.started(ref, now=1.0)
    trials._watch(now=61.5)
    assert fake_ray["cancelled"] == [ref]
    assert trials.busy
    assert answers.failed == []
    trials._ended(ref)
    ((_job, error),) = answers.failed
    assert error.type == "trial_timeout"
    assert not trials.busy


def test_a_timed_out_trial_that_stored_its_model_is_answered_with_it_as_a_redo_would(
    tmp_path: Path, fake_ray: dict[str, Any]
) -> None:
    answers = Answers()
    trials = scheduler(tmp_path, answers)
    j = job("testing.train_fast")
    ref = Ended()
    running(trials, j, ref, now=0.0)
    trials.clock.started(ref, now=1.0)
    trials._watch(now=61.5)  # past its bound: cancelled...
    version = store_model_of(tmp_path, j)  # ...as it stored its model, before the kill took
    trials._ended(ref)
    assert answers.failed == []
    ((_job, outcome),) = answers.ok
    assert outcome.version == version


def test_a_cancelled_task_never_reported_ended_is_answered_after_the_grace(
    tmp_path: Path, fake_ray: dict[str, Any]
) -> None:
    answers = Answers()
    trials = scheduler(tmp_path, answers)
    j = job("testing.train_fast")
    running(trials, j, "ref", now=0.0)
    failure = TrialFailure(0, ErrorInfo(type="trial_timeout", message="m"))
    trials._end("ref", failure)
    until = trials.ending.tasks["ref"][3]
    trials._watch(now=until - 0.1)
    assert answers.failed == []
    trials._watch(now=until)
    assert [e.type for _j, e in answers.failed] == ["trial_timeout"]
    assert len(trials.ending) == 0


def test_abandoning_a_job_drops_its_ending_trials(tmp_path: Path, fake_ray: dict[str, Any]) -> None:
    answers = Answers()
    trials = scheduler(tmp_path, answers)
    j = job("testing.train_fast")
    running(trials, j, "ref", now=0.0)
    trials._end("ref", TrialFailure(0, ErrorInfo(type="trial_timeout", message="m")))
    assert trials.jobs(lambda _j: True) == [j]
    trials.abandon(lambda _j: True)
    assert len(trials.ending) == 0
    assert not trials.busy
    assert answers.failed == answers.ok == []


LEAKY = ErrorInfo(
    type="pipeline_failed",
    message="raised OSError: /srv/secret/path/data.csv; ray::run() (pid=4242, ip=10.1.2.3)",
    details={"where": "/srv/secret/path"},
)


def _leaks(value: Any) -> bool:
    text = repr(value)
    return any(s in text for s in ("/srv/secret/path", "4242", "10.1.2.3"))


def sweep_job(tmp_path: Path) -> Job:
    j = job("testing.train_fast")
    j.trials.append(Trial(1, FastParams()))
    j.is_sweep = True
    return j


def test_a_sweep_trials_error_leaves_the_runner_only_as_public_error_cuts_it(
    tmp_path: Path, fake_ray: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Its ``failed`` event and the sweep's summary (the ok result's ``trials``, and what is
    stored with the promoted copy) carry no path, pid or address; the log has them all."""
    answers = Answers()
    trials = scheduler(tmp_path, answers)
    promoted: list[tuple[Any, ...]] = []

    class Promote:
        def remote(self, *args: Any) -> object:
            promoted.append(args)
            return object()

    trials._promote = Promote()
    j = sweep_job(tmp_path)
    trials._trial_back(j, j.trials[1], TrialOutcome(1, "000003", {"accuracy": 0.9}, {}))
    with caplog.at_level("WARNING"):
        trials._trial_back(j, j.trials[0], TrialFailure(0, LEAKY))
    events: Events = trials._publish  # type: ignore[assignment]
    ((state, fields),) = events.events
    assert state == "failed"
    assert fields["trial"] == 0
    assert fields["error"].type == "pipeline_failed"
    assert not _leaks(fields["error"])
    ((*_args, sweep, _tenant, _hash),) = promoted  # promote_best(..., sweep, tenant, hash)
    assert sweep is j.sweep
    assert [t["status"] for t in sweep["trials"]] == ["error", "ok"]
    assert not _leaks(sweep)
    assert "job-1" in caplog.text
    assert "pid=4242, ip=10.1.2.3" in caplog.text
    assert "/srv/secret/path" in caplog.text


def test_a_failed_sweeps_error_names_its_trials_errors_cut(
    tmp_path: Path, fake_ray: dict[str, Any]
) -> None:
    answers = Answers()
    trials = scheduler(tmp_path, answers)
    j = sweep_job(tmp_path)
    trials._trial_back(j, j.trials[0], TrialFailure(0, LEAKY))
    trials._trial_back(j, j.trials[1], TrialFailure(1, LEAKY))
    ((_job, error),) = answers.failed
    assert error.type == "sweep_failed"
    assert len(error.details["trials"]) == 2
    assert not _leaks(error)
