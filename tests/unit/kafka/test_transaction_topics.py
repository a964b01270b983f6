"""Which reply topics exactly-once may write: their config must let transaction markers in."""

from __future__ import annotations

import doctest
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

import rayml.kafka.transaction_topics as transaction_topics
from rayml.kafka.transaction_topics import (
    MIN_MESSAGE_BYTES,
    MIN_TIMESTAMP_WINDOW_MS,
    marker_refusal,
    transaction_verdicts,
)


def test_doctests() -> None:
    assert doctest.testmod(transaction_topics, optionflags=doctest.ELLIPSIS).failed == 0


@pytest.mark.parametrize(
    ("configs", "replicas", "refused"),
    [
        ({}, 1, False),
        ({"message.timestamp.before.max.ms": "9223372036854775807"}, 1, False),
        ({"message.timestamp.before.max.ms": str(MIN_TIMESTAMP_WINDOW_MS)}, 1, False),
        ({"message.timestamp.before.max.ms": str(MIN_TIMESTAMP_WINDOW_MS - 1)}, 1, True),
        ({"message.timestamp.difference.max.ms": "1000"}, 1, True),
        ({"message.timestamp.after.max.ms": "0"}, 1, True),
        ({"message.timestamp.after.max.ms": "3600000"}, 1, False),  # Kafka 4's default
        ({"max.message.bytes": str(MIN_MESSAGE_BYTES)}, 1, False),
        ({"max.message.bytes": "50"}, 1, True),
        # Log-append time: timestamps are set by the broker, never checked...
        (
            {"message.timestamp.type": "LogAppendTime", "message.timestamp.before.max.ms": "0"},
            1,
            False,
        ),
        # ...but sizes are.
        ({"message.timestamp.type": "LogAppendTime", "max.message.bytes": "10"}, 1, True),
        ({"min.insync.replicas": "1"}, 1, False),
        ({"min.insync.replicas": "2"}, 3, False),
        ({"min.insync.replicas": "2"}, 1, True),
        ({"message.timestamp.before.max.ms": "not a number"}, 1, False),  # the broker checks it
        ({"message.timestamp.before.max.ms": None}, 1, False),
    ],
)
def test_a_configuration_that_could_refuse_markers_is_named(
    configs: dict[str, str | None], replicas: int, refused: bool
) -> None:
    why = marker_refusal(configs, replicas)
    assert (why is not None) == refused
    if why is not None:
        assert any(f"{name}={value}" in why for name, value in configs.items())


def _entries(**configs: str) -> dict[str, Any]:
    return {name.replace("_", "."): SimpleNamespace(value=v) for name, v in configs.items()}


class _Future:
    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self, timeout: float | None = None) -> Any:
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value


class _Broker:
    """list_topics and describe_configs of a broker with the given topics (name -> configs)."""

    def __init__(self, topics: dict[str, Any]) -> None:
        self.topics = topics
        self.described: list[list[str]] = []

    def list_topics(self, topic: str | None = None, timeout: float = 0) -> Any:
        names = [topic] if topic else list(self.topics)
        part = SimpleNamespace(replicas=[1])
        return SimpleNamespace(
            topics={
                n: SimpleNamespace(error=None, partitions={0: part})
                for n in names
                if n in self.topics
            }
        )

    def describe_configs(self, resources: list[Any], request_timeout: float = 0) -> Any:
        self.described.append([r.name for r in resources])
        return {r: _Future(self.topics[r.name]) for r in resources}


def test_verdicts_ask_configs_once_for_every_existing_topic() -> None:
    denied = KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    broker = _Broker(
        {
            "fine": {},
            "starved": {"message.timestamp.before.max.ms": SimpleNamespace(value="0")},
            "secret": denied,
        }
    )
    verdicts = transaction_verdicts(broker, broker, ["fine", "starved", "secret", "nope"], 1.0)
    assert broker.described == [["fine", "starved", "secret"]]  # one question, existing only
    assert verdicts["fine"] is None
    assert "message.timestamp.before.max.ms=0" in str(verdicts["starved"])
    assert "may not read its config" in str(verdicts["secret"]), "exactly-once fails closed"
    assert verdicts["nope"] == "the broker has no such topic"


def test_a_broker_that_does_not_answer_about_configs_decides_nothing() -> None:
    broker = _Broker({"fine": {}})

    def away(resources: list[Any], request_timeout: float = 0) -> Any:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    broker.describe_configs = away  # type: ignore[method-assign]
    assert transaction_verdicts(broker, broker, ["fine"], 1.0) == {}
