"""Triage without Kafka: each record is checked against the tenant of its topic, once.

A fake sink records what triage asks the writer to write; the tenancy is built from settings
with two tenants (and, separately, the default one).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from rayml.config import Settings, load_settings
from rayml.executor.batching import MicroBatcher
from rayml.executor.triage import Triage
from rayml.executor.work import Pending, Route
from rayml.pipeline import Registry
from rayml.protocol.rollouts import Rollout
from rayml.tenancy.rules import Tenancy

TEAMS = [
    {
        "name": "team-a",
        "input_topic": "a.in",
        "training_topic": "a.train",
        "result_topic": "a.out",
        "reply_prefix": "a.replies.",
        "pipelines": ["testing.*"],
    },
    {
        "name": "team-b",
        "input_topic": "b.in",
        "result_topic": "b.out",
        "reply_prefix": "b.replies.",
        "pipelines": ["testing.predict_*"],
    },
]


class Polled:
    """A polled record: its value and where it came from."""

    def __init__(self, topic: str, value: dict[str, Any], offset: int = 0) -> None:
        self._topic, self._offset = topic, offset
        self._value = json.dumps(value).encode()

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> None:
        return None

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


class Sink:
    """Records the answers (with whether the request, i.e. its reply_to, was kept)."""

    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []
        self.dead: list[str] = []
        self.calls: list[str] = []  # "check" and "answer", in order
        self.checked: list[set[str]] = []

    def answer(self, tp: Any, offset: int, request_id: str, pipeline: str, request: Any, **kw: Any):
        error = kw.get("error")
        self.calls.append("answer")
        self.answers.append(
            {
                "id": request_id,
                "topic": tp[0],
                "reply_to": request.reply_to if request is not None else None,
                "type": error.type if error else None,
                "error": error,
            }
        )

    def dead_letter(self, msg: Any, error_type: str, message: str) -> None:
        self.dead.append(error_type)

    def check_reply_topics(self, topics: Any) -> None:
        self.calls.append("check")
        self.checked.append(set(topics))

    def answer_ok(self, *args: Any, **kw: Any) -> None: ...


class NoVersions:
    rollouts: dict[str, Rollout] = {}

    def get(self, model: str) -> str | None:
        return None


def triage(settings: Settings) -> tuple[Triage, Sink, MicroBatcher[Route, Pending]]:
    registry = Registry()
    registry.discover(["tests.support.training_pipelines"], entry_points=False)
    sink = Sink()
    batcher: MicroBatcher[Route, Pending] = MicroBatcher(100, 10.0)
    t = Triage(sink, registry, NoVersions(), batcher, 1_000_000, Tenancy(settings))  # type: ignore[arg-type]
    return t, sink, batcher


def take(t: Triage, topic: str, **request: Any) -> None:
    msg = Polled(topic, {"id": "r-1", "pipeline": "testing.predict_fast", **request})
    t.take_all([(msg, (topic, 0), 0)], 0.0, 1_000.0)  # type: ignore[list-item]


def test_an_allowed_request_joins_a_batch_and_nothing_is_answered_yet() -> None:
    t, sink, batcher = triage(load_settings(tenants=TEAMS))
    take(t, "a.in", params={"x": 1.0}, reply_to="a.replies.svc", tenant="team-a")
    take(t, "b.in", params={"x": 1.0})
    assert sink.answers == []
    assert len(batcher) == 2
    assert t.refused == 0


def test_a_request_carries_its_tenant_and_lane_from_the_topic_it_came_on() -> None:
    t, sink, batcher = triage(load_settings(tenants=TEAMS))
    for n, topic in enumerate(["a.in", "a.in.batch", "b.in.batch", "b.in"]):
        msg = Polled(topic, {"id": f"r-{n}", "pipeline": "testing.predict_fast"}, offset=n)
        t.take_all([(msg, (topic, 0), n)], 0.0, 1_000.0)  # type: ignore[list-item]
    assert sink.answers == []
    items = [item for batch in batcher.flush() for item in batch.items]
    assert [(i.tp[0], i.tenant, i.lane) for i in items] == [
        ("a.in", "team-a", "interactive"),
        ("a.in.batch", "team-a", "batch"),
        ("b.in.batch", "team-b", "batch"),
        ("b.in", "team-b", "interactive"),
    ]


def test_a_bulk_request_passes_the_same_checks_as_an_interactive_one() -> None:
    t, sink, batcher = triage(load_settings(tenants=TEAMS))
    take(t, "b.in.batch", reply_to="a.replies.svc")  # another tenant's prefix
    take(t, "b.in.batch", pipeline="testing.train_fast")  # outside b's patterns
    assert [a["type"] for a in sink.answers] == ["reply_to_refused", "pipeline_refused"]
    assert len(batcher) == 0


@pytest.mark.parametrize(
    "reply_to",
    [
        "b.in.batch",  # another tenant's bulk lane
        "a.in.batch",  # its own bulk lane
        "ml.pipeline.input.batch",
        "b.replies.svc",  # another tenant's prefix
        "b.out",  # another tenant's result topic
        "b.in",  # another tenant's request topic
        "a.in",
        "a.train",
        "ml.pipeline.registry",
        "ml.models",
        "ml.pipeline.dlq",
        "ml.pipeline.jobs",
        "ml.pipeline.input",
        "ml.pipeline.output",
        "ml.pipeline.events",
        "ml.pipeline.shadow",
        "ml.pipeline.feedback",
    ],
)
def test_a_refused_reply_to_is_answered_on_the_tenants_result_topic_not_there(
    reply_to: str,
) -> None:
    t, sink, batcher = triage(load_settings(tenants=TEAMS))
    take(t, "a.in", reply_to=reply_to)
    [answer] = sink.answers
    # No request handed on: the writer answers on team-a's result topic, never on reply_to.
    assert (answer["topic"], answer["reply_to"], answer["type"]) == (
        "a.in",
        None,
        "reply_to_refused",
    )
    assert answer["error"].details["rule"] == "reply_to"
    assert reply_to in answer["error"].message
    assert len(batcher) == 0


@pytest.mark.parametrize("own", ["input", "output", "jobs", "dlq", "models", "registry", "events"])
def test_the_default_tenant_may_not_name_raymls_own_topics(own: str) -> None:
    settings = load_settings()
    t, sink, _ = triage(settings)
    take(t, settings.topics.input, reply_to=getattr(settings.topics, own))
    [answer] = sink.answers
    assert (answer["reply_to"], answer["type"]) == (None, "reply_to_refused")


def test_the_default_tenant_may_name_any_other_reply_topic() -> None:
    settings = load_settings()
    t, sink, batcher = triage(settings)
    take(t, settings.topics.input, reply_to="anything.replies")
    assert sink.answers == []
    assert len(batcher) == 1


def test_a_tenant_field_that_disagrees_with_the_topic_is_refused() -> None:
    t, sink, _ = triage(load_settings(tenants=TEAMS))
    take(t, "b.in", tenant="team-a", reply_to="b.replies.x")
    [answer] = sink.answers
    assert answer["type"] == "tenant_mismatch"
    assert answer["reply_to"] == "b.replies.x", "an authorised reply_to still gets the answer"
    assert "team-b" in answer["error"].message
    assert "team-a" in answer["error"].message


def test_a_pipeline_outside_the_tenants_patterns_is_refused_naming_no_other() -> None:
    t, sink, _ = triage(load_settings(tenants=TEAMS))
    take(t, "b.in", pipeline="testing.train_fast")
    take(t, "b.in", pipeline="no.such.pipeline")
    refused, unknown = sink.answers
    assert refused["type"] == "pipeline_refused"
    assert refused["error"].details == {
        "tenant": "team-b",
        "rule": "pipelines",
        "pipeline": "testing.train_fast",
    }
    # Refused before the registry is asked: a tenant cannot probe what exists.
    assert unknown["type"] == "pipeline_refused"
    assert "testing.predict_fast" not in str(refused["error"])


def test_an_unknown_pipeline_is_answered_without_the_list_of_pipelines() -> None:
    t, sink, _ = triage(load_settings())
    take(t, "ml.pipeline.input", pipeline="testing.nope")
    [answer] = sink.answers
    assert answer["type"] == "unknown_pipeline"
    assert answer["error"].details == {"pipeline": "testing.nope"}
    assert "testing.predict_fast" not in answer["error"].message


def test_a_training_request_on_an_inference_topic_is_refused_naming_the_training_topic() -> None:
    t, sink, batcher = triage(load_settings(tenants=TEAMS))
    take(t, "a.in", pipeline="testing.train_fast", params={"c": 1.0})
    [answer] = sink.answers
    assert answer["type"] == "wrong_topic"
    assert answer["error"].details["use"] == "a.train"
    assert "'a.train'" in answer["error"].message
    assert len(batcher) == 0


def test_the_default_tenants_training_goes_to_the_jobs_topic() -> None:
    settings = load_settings()
    t, sink, _ = triage(settings)
    take(t, settings.topics.input, pipeline="testing.train_fast")
    [answer] = sink.answers
    assert answer["type"] == "wrong_topic"
    assert answer["error"].details["use"] == settings.topics.jobs


def test_a_tenant_without_a_training_topic_may_not_train() -> None:
    teams = [TEAMS[0], {**TEAMS[1], "pipelines": ["*"]}]
    t, sink, _ = triage(load_settings(tenants=teams))
    take(t, "b.in", pipeline="testing.train_fast")
    [answer] = sink.answers
    assert answer["type"] == "training_refused"
    assert "tenant 'team-b' may not train" in answer["error"].message


def test_a_bad_envelope_is_answered_on_the_result_topic_whatever_its_reply_to() -> None:
    t, sink, _ = triage(load_settings(tenants=TEAMS))
    take(t, "a.in", reply_to="b.replies.x", surprise=1)
    [answer] = sink.answers
    assert (answer["reply_to"], answer["type"]) == (None, "invalid_request")


def test_a_polls_error_answers_ask_about_their_reply_to_topics_once_before_writing() -> None:
    """A flood of bad requests naming fresh reply_to topics: one round of questions per poll,
    not one synchronous broker round trip per request."""
    t, sink, batcher = triage(load_settings(tenants=TEAMS))
    poll = [
        (
            Polled(
                "a.in",
                {"id": f"r-{i}", "pipeline": "testing.nope", "reply_to": f"a.replies.{i}"},
                offset=i,
            ),
            ("a.in", 0),
            i,
        )
        for i in range(50)
    ]
    poll.append(
        (Polled("a.in", {"id": "r-ok", "pipeline": "testing.predict_fast"}, 50), ("a.in", 0), 50)
    )
    t.take_all(poll, 0.0, 1_000.0)  # type: ignore[arg-type]
    assert sink.calls == ["check"] + ["answer"] * 50
    assert sink.checked == [{f"a.replies.{i}" for i in range(50)}]
    assert [a["reply_to"] for a in sink.answers] == [f"a.replies.{i}" for i in range(50)]
    assert {a["type"] for a in sink.answers} == {"unknown_pipeline"}
    assert len(batcher) == 1


def test_a_poll_whose_answers_name_no_usable_reply_to_asks_nothing() -> None:
    t, sink, batcher = triage(load_settings(tenants=TEAMS))
    poll = [
        (Polled("a.in", {"id": "r-1", "pipeline": "testing.nope"}), ("a.in", 0), 0),
        # refused: answered on the result topic, its reply_to never asked about
        (
            Polled("a.in", {"id": "r-2", "pipeline": "testing.nope", "reply_to": "b.out"}),
            ("a.in", 0),
            1,
        ),
        (
            Polled(
                "a.in", {"id": "r-3", "pipeline": "testing.predict_fast", "reply_to": "a.replies.x"}
            ),
            ("a.in", 0),
            2,
        ),
    ]
    t.take_all(poll, 0.0, 1_000.0)  # type: ignore[arg-type]
    assert sink.calls == ["answer", "answer"], "the batched request's reply_to is asked later"
    assert [a["type"] for a in sink.answers] == ["unknown_pipeline", "reply_to_refused"]
    assert len(batcher) == 1
