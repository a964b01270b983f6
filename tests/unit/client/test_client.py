"""Which topic the client sends a request to: its lane (no Kafka: a recording producer)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from rayml.client.batch import submit_batch
from rayml.client.client import Client
from rayml.client.futures import PendingReplies
from rayml.config import Settings, load_settings
from rayml.errors import InvalidRequestError


class Producer:
    """Records where each request went."""

    def __init__(self) -> None:
        self.topics: list[str] = []

    def produce(self, topic: str, **_kw: Any) -> None:
        self.topics.append(topic)


def offline(settings: Settings, batch_topic: str | None = None) -> tuple[Client, Producer]:
    """A client without a broker: what its sending path needs, nothing else."""
    client = object.__new__(Client)
    producer = Producer()
    client.settings = settings
    client.batch_topic = batch_topic or settings.topics.input_batch
    client.reply_topic = "replies.x"
    client.tenant = None
    client.validate = False
    client._closed = False
    client._producer = producer
    client._pending = PendingReplies()
    client._resources = SimpleNamespace(replies=SimpleNamespace(delivered=None))  # type: ignore[assignment]
    return client, producer


def test_the_bulk_lane_follows_the_input_topic_unless_named() -> None:
    # A tenant's client sets its input topic; the bulk lane is the one beside it, as the
    # tenant's batch_topic defaults to <input_topic>.batch.
    client, producer = offline(load_settings(topics={"input": "team-a.requests"}))
    client.submit("iris.predict", priority="batch", features=[1.0])
    named, named_producer = offline(
        load_settings(topics={"input": "team-a.requests", "input_batch": "team-a.bulk"})
    )
    named.submit("iris.predict", priority="batch", features=[1.0])
    assert producer.topics + named_producer.topics == ["team-a.requests.batch", "team-a.bulk"]


def test_submit_sends_interactive_by_default_and_batch_on_the_bulk_lane() -> None:
    client, producer = offline(load_settings(topics={"input": "x.in"}))
    client.submit("iris.predict", features=[1.0])
    client.submit("iris.predict", priority="batch", features=[1.0])
    client.request("iris.predict", {"features": [1.0]}, priority="batch")
    client.request("iris.predict", {"priority": "high"})  # a param of that name goes as a param
    # An explicit topic wins over the lane (training requests use it).
    client.request("iris.predict", {}, topic="x.other", priority="batch")
    assert producer.topics == ["x.in", "x.in.batch", "x.in.batch", "x.in", "x.other"]


def test_many_requests_go_on_the_lane_asked_for() -> None:
    client, producer = offline(load_settings(), batch_topic="bulk.override")
    futures = []
    original = client.send_checked

    def send(*args: Any, **kw: Any) -> Any:
        future = original(*args, **kw)
        futures.append(future)
        future.set_result(SimpleNamespace(status="ok"))  # answered at once
        return future

    client.send_checked = send  # type: ignore[method-assign]
    rows = [{"features": [1.0]}] * 3
    submit_batch(
        client,
        "iris.predict",
        rows,
        max_in_flight=2,
        progress=False,
        timeout_s=5,
        model_version=None,
        priority="batch",
    )
    submit_batch(
        client,
        "iris.predict",
        rows[:1],
        max_in_flight=2,
        progress=False,
        timeout_s=5,
        model_version=None,
    )
    assert producer.topics == ["bulk.override"] * 3 + ["ml.pipeline.input"]


def test_an_unknown_priority_is_refused_before_anything_is_sent() -> None:
    client, producer = offline(load_settings())
    with pytest.raises(InvalidRequestError, match="priority must be one of 'interactive', 'batch'"):
        client.submit("iris.predict", priority="urgent", features=[1.0])  # type: ignore[arg-type]
    assert producer.topics == []
    assert client.lane_topic("interactive") == "ml.pipeline.input"
    assert client.lane_topic("batch") == "ml.pipeline.input.batch"
