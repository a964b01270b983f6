"""plan.py: a training request's checks under a tenant's rules, and the caller's words for a
lost task."""

from __future__ import annotations

import pytest

import rayml.errors
from rayml.pipeline import Registry
from rayml.protocol.envelopes import Request
from rayml.training.plan import exhausted, plan_trials, result_payload
from rayml.training.task import TrialOutcome


def _registry() -> Registry:
    reg = Registry()
    reg.discover(["tests.support.training_pipelines"], entry_points=False)
    return reg


def test_plan_trials_raises_what_the_tenants_rules_refuse_before_looking_further() -> None:
    reg = _registry()
    refused = rayml.errors.WrongTopicError(
        "t", "testing.predict_fast", "inference", "t.train", "t.in"
    )
    request = Request(id="j", pipeline="testing.predict_fast", params={})
    with pytest.raises(rayml.errors.WrongTopicError, match=r"'t\.in'"):
        plan_trials(reg, request, max_trials=4, refuse=lambda spec: refused)
    fine = Request(id="j", pipeline="testing.train_fast", params={"c": 1.0})
    spec, _params, _sweep = plan_trials(reg, fine, max_trials=4, refuse=lambda spec: None)
    assert spec.name == "testing.train_fast"


def test_a_lost_training_task_is_answered_without_rays_words() -> None:
    cause = RuntimeError("The actor died: pid=4242, ip=10.1.2.3, node 7f1e2c4d5e6f7a8b9c0d1e2f")
    err = exhausted(3, cause)
    assert err.type == "retries_exhausted"
    text = f"{err} {err.details}"
    assert "10.1.2.3" not in text
    assert "4242" not in text
    assert "RuntimeError" not in text
    assert err.details == {"attempts": 3, "last_error": "task_lost"}


def test_a_stored_sweep_summary_is_answered_with_its_trials_errors_cut() -> None:
    """A summary stored before trial errors were cut leaks nothing when a job is re-answered."""
    registry = Registry()
    registry.discover(["tests.support.training_pipelines"], entry_points=False)
    spec = registry.get("testing.train_fast")
    raw = {"type": "pipeline_failed", "message": "/srv/secret/path (pid=4242, ip=10.1.2.3)"}
    sweep = {"metric": "accuracy", "trials": [{"trial": 0, "status": "error", "error": raw}]}
    out = result_payload(spec, TrialOutcome(1, "000002", {}, {}), sweep, True)
    (trial,) = out["trials"]
    assert trial["error"]["type"] == "pipeline_failed"
    assert "/srv/secret" not in str(trial)
    assert "4242" not in str(trial)
    assert "10.1.2.3" not in str(trial)
