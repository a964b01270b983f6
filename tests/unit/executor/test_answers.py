"""answers.py without Ray: what a request that exhausted its attempts is told, and what only
the operator sees."""

from __future__ import annotations

from typing import Any

import pytest

from rayml.errors import BatchTimeoutError
from rayml.executor.answers import answer_exhausted, answer_expired, failure_for_caller
from rayml.executor.work import Pending
from rayml.pipeline import Registry
from rayml.protocol.envelopes import Request


class RayActorError(Exception):
    """Named like Ray's: what a dead worker's batch raises (answers.py knows it by name)."""


class ActorDiedError(RayActorError):
    """A subclass, as Ray 2.x raises."""


RAY_WORDS = (
    "The actor died unexpectedly before finishing this task.\n\tclass_name: ModelWorker\n"
    "\tactor_id: 3f1e2c4d5e6f7a8b9c0d1e2f01000000\n\tpid: 4242\n\tnamespace: rayml\n"
    "\tip: 10.1.2.3\n"
)


class Sink:
    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []
        self.calls: list[Any] = []  # ("check", names) and "answer", in order

    def answer(self, tp: Any, offset: int, request_id: str, pipeline: str, request: Any, **kw: Any):
        self.calls.append("answer")
        self.answers.append({"id": request_id, **kw})

    def check_reply_topics(self, topics: Any) -> None:
        self.calls.append(("check", set(topics)))


def pending(n: int, reply_to: str | None = None) -> list[Pending]:
    registry = Registry()
    registry.discover(["tests.support.training_pipelines"], entry_points=False)
    spec = registry.get("testing.predict_fast")
    return [
        Pending(
            ("in", 0),
            i,
            b"raw",
            Request(id=f"r-{i}", pipeline=spec.name, reply_to=reply_to and f"{reply_to}{i % 3}"),
            spec,
            0.0,
            attempts=3,
            failures=2,
        )
        for i in range(n)
    ]


def test_a_dead_workers_requests_are_told_so_without_rays_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Sink()
    with caplog.at_level("WARNING"):
        answer_exhausted(sink, pending(2), ActorDiedError(RAY_WORDS))  # type: ignore[arg-type]
    first = sink.answers[0]
    error = first["error"]
    assert error.type == "retries_exhausted"
    assert error.message == (
        "request failed on its own 2 times (3 dispatches); last: the worker running it died"
    )
    assert error.details == {"attempts": 3, "failures": 2, "last_error": "worker_died"}
    # Ray's words stay for the operator: the log (with the request ids) and the DLQ copy.
    _raw, letter = first["dead_letter"]
    assert "10.1.2.3" in letter.error_message
    assert "r-0, r-1" in caplog.text
    assert "10.1.2.3" in caplog.text


def test_what_the_caller_is_told_of_each_kind_of_failure() -> None:
    assert failure_for_caller(RayActorError("x"))[0] == "worker_died"
    assert failure_for_caller(BatchTimeoutError("w-1", 2.0, 3))[0] == "batch_timeout"
    assert failure_for_caller(RuntimeError("store away"))[0] == "worker_error"


@pytest.mark.parametrize("answer", ["exhausted", "expired"])
def test_the_reply_to_topics_of_a_group_of_answers_are_asked_about_once_first(answer: str) -> None:
    sink = Sink()
    items = pending(6, reply_to="replies-")
    if answer == "exhausted":
        answer_exhausted(sink, items, RuntimeError("store away"))  # type: ignore[arg-type]
    else:
        answer_expired(sink, items)  # type: ignore[arg-type]
    assert sink.calls == [("check", {"replies-0", "replies-1", "replies-2"})] + ["answer"] * 6
    plain = Sink()
    answer_expired(plain, pending(2))  # type: ignore[arg-type]
    assert plain.calls == ["answer", "answer"], "no reply_to: nothing asked"
