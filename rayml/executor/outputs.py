"""Where the ingest writes: its producer for the delivery mode, the transaction, its writer.

At-least-once (the default), one idempotent producer writes everything and a record is done
once its writes are acknowledged. Exactly-once (``executor.delivery = "exactly_once"``), a
transactional producer with ``transactional.id = "{group_id}.{ingest_id}"`` under a
:class:`~rayml.delivery.transactions.TransactionalOutput` that spans rayml's own topics (the
tenants' result topics and the DLQ); a ``reply_to`` is written outside it by a producer of its
own, and a record is done once its transaction commits. Either way the
:class:`~rayml.delivery.result_writer.ResultWriter` turns answers into writes. Why:
docs/architecture.md (Exactly-once); the job runner's counterpart is
:mod:`rayml.training.outputs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, Producer

from rayml.config import Settings
from rayml.delivery.result_writer import ResultWriter
from rayml.delivery.sink import TopicTenant
from rayml.delivery.transactions import TransactionalOutput
from rayml.kafka import clients as kafka_clients
from rayml.kafka.partitions import TP
from rayml.tenancy.rules import Tenancy, tenants_of
from rayml.tracing import RequestTraces

__all__ = ["IngestOutputs", "ingest_outputs"]


@dataclass(frozen=True)
class IngestOutputs:
    """An ingest's producer, transaction and writer. Loop thread only."""

    producer: Producer
    #: Exactly-once: the open transaction's writes and offsets; None at-least-once.
    txn: TransactionalOutput | None
    writer: ResultWriter
    #: How often the loop commits: ``commit_interval_s`` (the watermark), or exactly-once
    #: ``transaction_commit_interval_s``.
    commit_interval_s: float


def ingest_outputs(
    settings: Settings,
    ingest_id: str,
    tenancy: Tenancy,
    on_done: Callable[[TP, int], None],
    traces: RequestTraces | None,
) -> IngestOutputs:
    """The outputs of ingest ``ingest_id`` for ``settings.executor.delivery``. The writer calls
    ``on_done(tp, offset)`` once a record's writes are acknowledged (exactly-once: once its
    transaction commits)."""
    ex = settings.executor
    producer, txn_id = kafka_clients.ingest_producer(settings.kafka, ex, ingest_id)
    txn = None
    if txn_id is not None:

        def note_failed_delivery(topic: str, key: bytes | None, err: KafkaError) -> None:
            writer.note_failed_delivery(topic, key, err)

        # The transaction spans rayml's own topics only; a reply_to is written outside it.
        own = {t.result_topic for t in tenants_of(settings)} | {settings.topics.dlq}
        txn = TransactionalOutput(
            producer,
            txn_id,
            on_failed_delivery=note_failed_delivery,
            owner=ingest_id,
            own_topics=frozenset(own),
            outside=kafka_clients.reply_producer(settings.kafka, ex),
            outside_timeout_s=kafka_clients.reply_timeout_s(ex),
        )
    writer = ResultWriter(
        producer,
        tenants={
            topic: TopicTenant(tenant.name, tenant.result_topic)
            for topic in tenancy.input_topics
            for tenant in (tenancy.of_topic(topic),)
        },
        dlq_topic=settings.topics.dlq,
        on_done=on_done,
        owner=ingest_id,
        stage=None if txn is None else txn.stage,
        retry_initial_s=ex.write_retry_initial_s,
        retry_max_s=ex.write_retry_max_s,
        failure_log_interval_s=ex.write_failure_log_interval_s,
        traces=traces,
    )
    commit_interval_s = ex.commit_interval_s if txn is None else ex.transaction_commit_interval_s
    return IngestOutputs(producer, txn, writer, commit_interval_s)
