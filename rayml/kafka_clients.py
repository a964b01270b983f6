"""Factories for confluent-kafka clients, all built from :class:`~rayml.config.KafkaSettings`.

One place decides the settings every client shares (bootstrap servers, security, quiet
librdkafka logging through Python's ``logging``), so a secure cluster is configured once.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from rayml.config import KafkaSettings

_librdkafka_logger = logging.getLogger("rayml.librdkafka")


def _base(kafka: KafkaSettings) -> dict[str, Any]:
    conf: dict[str, Any] = dict(kafka.client_config())
    conf.setdefault("logger", _librdkafka_logger)
    return conf


def admin_client(kafka: KafkaSettings, **overrides: Any) -> AdminClient:
    """An AdminClient. Keep a reference until its futures resolve."""
    return AdminClient({**_base(kafka), **overrides})


def producer(kafka: KafkaSettings, **overrides: Any) -> Producer:
    """An idempotent producer (``acks=all``, no reordering or duplicates on retry).

    Batching settings favour throughput at a few milliseconds of latency: results are produced
    in bursts, one per finished micro-batch.
    """
    conf = {
        **_base(kafka),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        **overrides,
    }
    return Producer(conf)


def consumer(kafka: KafkaSettings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer-group member with manual commits and the KIP-848 group protocol.

    ``enable.auto.commit`` is off: rayml commits only offsets whose results are written.
    ``enable.auto.offset.store`` is off for the same reason.
    """
    conf = {
        **_base(kafka),
        "group.id": group_id,
        "group.protocol": "consumer",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        **overrides,
    }
    return Consumer(conf)
