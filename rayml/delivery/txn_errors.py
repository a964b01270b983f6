"""Exactly-once: the errors a transaction ends in, and the Kafka errors they are read from.

:class:`~rayml.delivery.transactions.TransactionalOutput` sorts librdkafka's transactional
errors into two outcomes its callers handle (its module docstring says which error goes where):

* :class:`TransactionAbortedError`: the transaction was aborted; the caller rewinds its
  partitions to the committed offsets and redoes the records;
* :class:`ProducerFencedError`: the producer failed fatally (fenced by a newer one with the same
  ``transactional.id``, or broken); the loop stops and the actor is restarted.

:class:`NeedsAbort` is the output's own signal between finding an abortable error and aborting;
it never leaves the output.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from rayml.errors import InfrastructureError

__all__ = [
    "PURGED",
    "NeedsAbort",
    "ProducerFencedError",
    "TransactionAbortedError",
    "as_kafka_error",
    "kafka_error_in",
]


class TransactionAbortedError(InfrastructureError):
    """Raised when a transaction had to be aborted; its records must be redone from Kafka."""

    def __init__(self, transactional_id: str, cause: KafkaError | str) -> None:
        self.transactional_id = transactional_id
        self.cause = cause
        super().__init__(f"transaction of {transactional_id!r} aborted: {cause}")


class ProducerFencedError(InfrastructureError):
    """Raised when the transactional producer failed fatally, e.g. fenced by a newer instance."""

    def __init__(self, transactional_id: str, cause: KafkaError) -> None:
        self.transactional_id = transactional_id
        self.cause = cause
        super().__init__(
            f"transactional producer {transactional_id!r} failed fatally ({cause}); "
            "another instance with the same id took over, or the producer is broken"
        )


class NeedsAbort(Exception):
    """Internal: the open transaction must be aborted (see
    :meth:`~rayml.delivery.transactions.TransactionalOutput.commit`)."""

    def __init__(self, cause: KafkaError | str) -> None:
        self.cause = cause
        super().__init__(str(cause))


# Delivery reports of writes librdkafka purged from its queues: not written.
PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


def as_kafka_error(cause: KafkaError | str) -> KafkaError:
    """``cause`` as a :class:`KafkaError` (a message becomes a ``_FAIL``)."""
    return cause if isinstance(cause, KafkaError) else KafkaError(KafkaError._FAIL, cause)


def kafka_error_in(exc: BaseException | None) -> KafkaError | None:
    """The :class:`KafkaError` that ``exc`` carries, or that it was raised from.

    confluent-kafka raises a fatal error (e.g. fenced) from ``flush()`` and ``poll()``; when a
    delivery callback runs later in the same call, Python reports a ``SystemError`` ("returned
    a result with an exception set") whose cause is that ``KafkaException``.
    """
    for _ in range(5):  # the chain is short; never loop on a cycle
        if exc is None:
            return None
        if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
            return exc.args[0]
        exc = exc.__cause__ or exc.__context__
    return None
