"""Pure helpers of rayml.kafka.clients (no broker)."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, TopicPartition
from pydantic import SecretStr

from rayml.config import KafkaSettings
from rayml.kafka import clients
from rayml.kafka.clients import partition_names, pause_strays, set_pause_state
from tests.support.fake_records import Record


class PauseFlags:
    """A consumer's per-partition pause flags, kept across revocations as librdkafka keeps them."""

    def __init__(self) -> None:
        self.paused: set[tuple[str, int]] = set()

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}


def test_a_partition_revoked_while_paused_is_resumed_when_assigned_to_a_running_member() -> None:
    consumer = PauseFlags()
    p0, p1 = TopicPartition("in", 0), TopicPartition("in", 1)
    set_pause_state(consumer, [p0, p1], paused=True)  # type: ignore[arg-type]
    # p1 is revoked while paused; the member resumes what it still has ...
    consumer.resume([p0])
    # ... and gets p1 back while running: it must read it again.
    set_pause_state(consumer, [p1], paused=False)  # type: ignore[arg-type]
    assert consumer.paused == set()
    set_pause_state(consumer, [p1], paused=True)  # type: ignore[arg-type]
    assert consumer.paused == {("in", 1)}


def test_partition_names() -> None:
    assert partition_names([TopicPartition("in", 0), TopicPartition("in", 3)]) == "in[0], in[3]"
    assert partition_names([]) == "nothing"


def test_records_read_while_paused_pause_their_partitions() -> None:
    consumer = PauseFlags()
    polled = [Record(2), Record(2), Record(5, error="partition EOF")]
    pause_strays(consumer, polled, "ingest=i-0")  # type: ignore[arg-type]
    assert consumer.paused == {("in", 2)}
    pause_strays(consumer, [], "ingest=i-0")  # type: ignore[arg-type]
    assert consumer.paused == {("in", 2)}


def test_every_client_logs_a_refused_handshake_naming_the_user_once_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka = KafkaSettings(
        bootstrap_servers="b1:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="rayml",
        sasl_password=SecretStr("a-password-12345"),
    )
    on_error = clients._base(kafka)["error_cb"]
    assert isinstance(on_error, clients.RefusalLogger)
    now = [1000.0]
    monkeypatch.setattr(clients.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="rayml.kafka.clients")
    refused = KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: invalid creds")
    on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert caplog.records == []
    on_error(refused)
    now[0] += 29.0
    on_error(refused)  # librdkafka retries every few seconds: not logged again yet
    now[0] += 1.0
    on_error(refused)
    lines = [r.getMessage() for r in caplog.records]
    assert (
        lines
        == [
            "Kafka at b1:9093 refused User:rayml: authentication failed: "
            "SASL authentication error: invalid creds"
        ]
        * 2
    )
    assert all(r.levelno == logging.ERROR for r in caplog.records)
