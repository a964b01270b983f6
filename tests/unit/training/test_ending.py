"""Cancelled trials until their task has ended, without Ray (its calls replaced by fakes).

* A cancelled trial whose task yielded its outcome before the kill took effect is answered
  with that outcome; a start it yields first leaves it ending.
* One whose task is not reported ended is overdue (answered with its failure) after
  ``END_WAIT_S``, not before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray

from rayml.models.store import ModelStore
from rayml.protocol.envelopes import ErrorInfo
from rayml.training.ending import END_WAIT_S, EndingTrials
from rayml.training.task import TrialFailure, TrialOutcome, TrialStarted
from tests.unit.training.test_trials import Ended, job

FAILURE = TrialFailure(0, ErrorInfo(type="trial_timeout", message="m"))


@pytest.fixture
def cancelled(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    monkeypatch.setattr(ray, "cancel", lambda ref, **_: calls.append(ref))
    monkeypatch.setattr(ray, "get", lambda item: item)  # the fakes hand out the items
    return calls


def test_a_cancelled_trial_whose_outcome_came_before_the_kill_is_answered_with_it(
    tmp_path: Path, cancelled: list[Any]
) -> None:
    ending = EndingTrials(ModelStore(str(tmp_path)), "r1")
    j = job("testing.train_fast")
    outcome = TrialOutcome(0, "000007", {"accuracy": 0.9}, {})
    ref = Ended(TrialStarted(pid=1), outcome)  # it had not reported its start yet
    ending.end(ref, j, j.trials[0], FAILURE)
    assert cancelled == [ref]
    assert ending.ended(ref) is None  # the start: it is still ending
    assert ref in ending
    assert ending.ended(ref) == (j, j.trials[0], outcome)
    assert len(ending) == 0


def test_a_task_not_reported_ended_is_overdue_after_end_wait_s_not_before(
    tmp_path: Path, cancelled: list[Any]
) -> None:
    ending = EndingTrials(ModelStore(str(tmp_path)), "r1")
    j = job("testing.train_fast")
    ending.end("ref", j, j.trials[0], FAILURE)
    until = ending.tasks["ref"][3]
    assert ending.overdue(now=until - 0.1) == []
    assert ending.overdue(now=until) == [(j, j.trials[0], FAILURE)]
    assert len(ending) == 0
    assert END_WAIT_S == 30.0
