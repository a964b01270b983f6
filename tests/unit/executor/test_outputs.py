"""Where the ingest writes, per delivery mode (the producers faked: no broker)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from rayml.config import Settings, load_settings
from rayml.executor import outputs as outputs_module
from rayml.executor.outputs import ingest_outputs
from rayml.kafka.partitions import TP
from rayml.tenancy.rules import Tenancy


class FakeTransaction:
    """Records how the transactional output was built."""

    def __init__(self, producer: Any, transactional_id: str, **kwargs: Any) -> None:
        self.producer, self.transactional_id, self.kwargs = producer, transactional_id, kwargs

    def stage(self, tp: TP, offset: int, records: list[Any]) -> None:
        raise AssertionError("nothing is written here")


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The clients ingest_outputs asks for, faked; what it was given is kept here."""
    made: dict[str, Any] = {}

    def ingest_producer(kafka: Any, ex: Any, ingest_id: str) -> tuple[object, str | None]:
        made["producer"] = object()
        txn_id = f"{ex.group_id}.{ingest_id}" if ex.delivery == "exactly_once" else None
        return made["producer"], txn_id

    def reply_producer(kafka: Any, ex: Any) -> object:
        made["outside"] = object()
        return made["outside"]

    clients = outputs_module.kafka_clients
    monkeypatch.setattr(clients, "ingest_producer", ingest_producer)
    monkeypatch.setattr(clients, "reply_producer", reply_producer)
    monkeypatch.setattr(outputs_module, "TransactionalOutput", FakeTransaction)
    return made


def _outputs(settings: Settings) -> Any:
    done: list[tuple[TP, int]] = []
    return ingest_outputs(
        settings, "i0", Tenancy(settings), lambda tp, o: done.append((tp, o)), None
    )


def test_at_least_once_writes_through_one_producer_without_a_transaction(
    made: dict[str, Any],
) -> None:
    settings = load_settings()
    out = _outputs(settings)
    assert out.txn is None
    assert out.producer is made["producer"]
    assert out.writer.producer is made["producer"]
    assert "outside" not in made, "no producer for writes outside a transaction"
    assert out.commit_interval_s == settings.executor.commit_interval_s


def test_exactly_once_spans_rayml_own_topics_and_commits_on_the_transaction_interval(
    made: dict[str, Any],
) -> None:
    settings = load_settings(executor={"delivery": "exactly_once"})
    out = _outputs(settings)
    txn = out.txn
    assert isinstance(txn, FakeTransaction)
    assert txn.producer is made["producer"] is out.writer.producer
    assert txn.transactional_id == f"{settings.executor.group_id}.i0"
    assert txn.kwargs["own_topics"] == {settings.topics.output, settings.topics.dlq}
    assert txn.kwargs["outside"] is made["outside"]
    assert txn.kwargs["owner"] == "i0"
    assert out.commit_interval_s == settings.executor.transaction_commit_interval_s


def test_a_write_the_transaction_reports_failed_teaches_the_writer(made: dict[str, Any]) -> None:
    out = _outputs(load_settings(executor={"delivery": "exactly_once"}))
    assert "gone" not in out.writer.unwritable_topics
    err = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    out.txn.kwargs["on_failed_delivery"]("gone", b"r-1", err)
    assert "gone" in out.writer.unwritable_topics
