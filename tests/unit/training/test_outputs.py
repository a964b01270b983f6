"""The job runner's outputs for each delivery mode, without Kafka (fake producers).

* At-least-once, one producer writes everything and there is no transaction.
* Exactly-once, the transactional id is ``{jobs_group_id}.{runner_id}``, stable per runner id
  (a Ray-restarted runner actor fences its zombie); events go through a producer of their own;
  a ``reply_to`` whose write in the transaction failed is not written again.
* Each tenant's publisher answers on that tenant's result topic.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from rayml.config import Settings
from rayml.kafka import clients as kafka_clients
from rayml.tenancy.rules import Tenancy
from rayml.training import publish as publish_module
from rayml.training.outputs import runner_outputs
from tests.support.fake_serving import FakeServing

TEAMS = [
    {
        "name": "team-a",
        "input_topic": "a.in",
        "training_topic": "a.train",
        "result_topic": "a.out",
        "reply_prefix": "a.replies.",
    },
    {
        "name": "team-b",
        "input_topic": "b.in",
        "training_topic": "b.train",
        "result_topic": "b.out",
        "reply_prefix": "b.replies.",
    },
]


class Producer:
    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf


@pytest.fixture
def producers(monkeypatch: pytest.MonkeyPatch) -> list[Producer]:
    made: list[Producer] = []

    def make(kafka: Any, *args: Any, **overrides: Any) -> Producer:
        made.append(Producer({"args": args, **overrides}))
        return made[-1]

    monkeypatch.setattr(kafka_clients, "producer", make)
    monkeypatch.setattr(kafka_clients, "transactional_producer", make)
    monkeypatch.setattr(publish_module, "ServingState", lambda *a: FakeServing())
    return made


def outputs_of(**settings: Any) -> Any:
    s = Settings(tenants=TEAMS, **settings)
    return runner_outputs(s, "ex-1-j0", Tenancy(s), on_done=lambda tp, offset: None)


def test_at_least_once_writes_everything_through_one_producer(producers: list[Producer]) -> None:
    out = outputs_of()
    assert out.txn is None
    assert producers == [out.producer]
    assert out.events is out.producer
    assert {p.producer for p in out.publishers.values()} == {out.producer}


def test_exactly_once_has_a_stable_transactional_id_and_events_outside_it(
    producers: list[Producer],
) -> None:
    out = outputs_of(executor={"delivery": "exactly_once", "jobs_group_id": "jobs"})
    assert out.txn is not None
    assert out.txn.transactional_id == "jobs.ex-1-j0"
    assert out.txn.producer is out.producer
    assert out.producer.conf["args"][0] == "jobs.ex-1-j0"
    assert out.events is not out.producer
    assert out.events.conf["enable.idempotence"] is False
    assert out.txn.outside is not None
    assert len({id(p) for p in (out.producer, out.events, out.txn.outside)}) == 3


def test_exactly_once_a_reply_to_whose_write_failed_is_not_written_again(
    producers: list[Producer],
) -> None:
    out = outputs_of(executor={"delivery": "exactly_once"})
    assert out.txn is not None
    # What the transaction calls when a write of it failed (it aborts, and the job is redone).
    out.txn._on_failed_delivery("a.replies.y", b"k", KafkaError(KafkaError.INVALID_RECORD))
    assert "a.replies.y" in out.routes.unwritable
    assert out.routes.topic_for("a.replies.y", "a.out") == "a.out"  # the redo's answer


def test_each_tenants_publisher_answers_on_its_result_topic(producers: list[Producer]) -> None:
    out = outputs_of()
    assert {name: p.topics.output for name, p in out.publishers.items()} == {
        "team-a": "a.out",
        "team-b": "b.out",
    }
