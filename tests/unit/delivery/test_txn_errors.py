"""The Kafka error a crash carries, read from confluent-kafka's exception chains."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from rayml.delivery.txn_errors import kafka_error_in

ABORTABLE = KafkaError(KafkaError._STATE, txn_requires_abort=True)


def test_kafka_error_in_ends_on_a_cyclic_chain() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert kafka_error_in(a) is None
    assert kafka_error_in(KafkaException(ABORTABLE)) is ABORTABLE
