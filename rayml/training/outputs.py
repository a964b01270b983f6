"""Where the job runner writes: its producers for the delivery mode, and a publisher per tenant.

At-least-once (the default), one idempotent producer writes everything. Exactly-once
(``executor.delivery = "exactly_once"``), a transactional producer with ``transactional.id =
"{jobs_group_id}.{runner_id}"`` under a
:class:`~rayml.delivery.transactions.TransactionalOutput` that spans rayml's own topics (the
result topics, the DLQ, the models topic); a ``reply_to`` is written outside it, and job events
go through a plain producer of their own. What each write is, and in which order:
:mod:`rayml.training.publish`; why: docs/training.md (exactly-once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from confluent_kafka import KafkaError, Producer

from rayml.config import Settings
from rayml.delivery.transactions import TransactionalOutput
from rayml.kafka import clients as kafka_clients
from rayml.kafka.partitions import TP
from rayml.kafka.topic_checks import topic_verdicts
from rayml.tenancy.rules import Tenancy, tenants_of
from rayml.training.publish import JobPublisher
from rayml.training.replies import METADATA_TIMEOUT_S, ReplyRoutes

__all__ = ["RunnerOutputs", "runner_outputs"]


@dataclass(frozen=True)
class RunnerOutputs:
    """A job runner's producers, reply routes and publishers. Loop thread only."""

    producer: Producer
    #: Job events: ``producer`` itself at-least-once, a plain producer of its own exactly-once.
    events: Producer
    #: Exactly-once: the open transaction's writes and offsets; None at-least-once.
    txn: TransactionalOutput | None
    #: Which ``reply_to`` topics can be written; shared by every tenant's publisher.
    routes: ReplyRoutes
    #: By tenant name.
    publishers: dict[str, JobPublisher]

    def poll(self) -> None:
        """Serve the producers' delivery reports; at-least-once, also the writes that
        ``produce()`` refused (:meth:`~rayml.training.publish.JobPublisher.serve_refused`)."""
        self.producer.poll(0)
        if self.events is not self.producer:
            self.events.poll(0)
        if self.txn is None:
            for publisher in self.publishers.values():
                publisher.serve_refused()


def runner_outputs(
    settings: Settings,
    runner_id: str,
    tenancy: Tenancy,
    on_done: Callable[[TP, int], None],
) -> RunnerOutputs:
    """The outputs of runner ``runner_id`` for ``settings.executor.delivery``. At-least-once,
    the publishers call ``on_done(tp, offset)`` once a job's answer is acknowledged."""
    ex = settings.executor
    txn_id = f"{ex.jobs_group_id}.{runner_id}"
    if ex.delivery == "exactly_once":
        # Stable per runner id: a Ray-restarted runner actor (same id) fences its zombie
        # and aborts the transaction it left open.
        producer = kafka_clients.output_producer(settings.kafka, ex, txn_id)
        # Events are advisory and a transactional producer writes only in a transaction.
        events = kafka_clients.producer(settings.kafka, **{"enable.idempotence": False})
    else:
        producer = kafka_clients.producer(settings.kafka)
        events = producer
    # Which reply_to topics can be written, asked of the broker before a result goes there
    # and learnt from failed writes; shared by every tenant's publisher.
    routes = ReplyRoutes(
        partial(topic_verdicts, producer, timeout_s=METADATA_TIMEOUT_S),
        {tenant.result_topic for tenant in tenancy.tenants}
        | {settings.topics.dlq, settings.topics.models, settings.topics.events},
        runner_id,
    )

    def note_failed_delivery(topic: str, key: bytes | None, err: KafkaError) -> None:
        """Exactly-once: a reply_to whose write failed is not written again (for a while):
        each failure costs an aborted transaction, so the redo goes to the result topic
        (shared by every tenant)."""
        routes.learn(topic, err, once=True)

    txn = None
    if ex.delivery == "exactly_once":
        txn = TransactionalOutput(
            producer,
            txn_id,
            on_failed_delivery=note_failed_delivery,
            owner=runner_id,
            # The transaction spans rayml's own topics only; a reply_to is written
            # outside it (rayml.delivery.outside_writes says why).
            own_topics=frozenset(
                {t.result_topic for t in tenants_of(settings)}
                | {settings.topics.dlq, settings.topics.models}
            ),
            outside=kafka_clients.reply_producer(settings.kafka, ex),
            outside_timeout_s=kafka_clients.reply_timeout_s(ex),
        )
    # One publisher per tenant, whose "output" is the tenant's result topic: a job's result
    # goes to its authorised reply_to, or there (also when the reply_to cannot be written).
    publishers = {
        tenant.name: JobPublisher(
            _answering_on(settings, tenant.result_topic),
            producer,
            runner_id,
            on_done=on_done,
            stage=None if txn is None else txn.stage,
            events=events,
            routes=routes,
        )
        for tenant in tenancy.tenants
    }
    return RunnerOutputs(producer, events, txn, routes, publishers)


def _answering_on(settings: Settings, result_topic: str) -> Settings:
    """``settings`` with ``result_topic`` as the output topic (a tenant's publisher)."""
    if result_topic == settings.topics.output:
        return settings
    topics = settings.topics.model_copy(update={"output": result_topic})
    return settings.model_copy(update={"topics": topics})
