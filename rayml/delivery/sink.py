"""What the executor's pure steps write through: the :class:`ResultSink` protocol.

Triage (:mod:`rayml.executor.triage`) and the answers of a finished batch
(:mod:`rayml.executor.answers`) decide *what* to write; :class:`~rayml.delivery.result_writer.
ResultWriter` decides *how* (Kafka, delivery reports, transactions). Typed against this protocol,
those steps import neither the writer nor ``confluent_kafka``, and their unit tests can record
the writes with a plain fake.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol

from rayml.kafka.partitions import TP
from rayml.kafka.records import PolledRecord
from rayml.protocol.dead_letters import DeadLetter
from rayml.protocol.envelopes import ErrorInfo, ModelRef, Request, Timings


class TopicTenant(NamedTuple):
    """Whose requests a request topic carries (echoed in their results), and where their
    results go without a usable ``reply_to`` (:mod:`rayml.tenancy`)."""

    tenant: str
    result_topic: str


class ResultSink(Protocol):
    """The writes of one input record: each marks its offset done once the broker has it."""

    def check_reply_topics(self, topics: Iterable[str]) -> None:
        """Learn, in one round, which of the ``reply_to`` topics about to be answered exist."""

    def answer(
        self,
        tp: TP,
        offset: int,
        request_id: str,
        pipeline: str,
        request: Request | None,
        *,
        output: Any = None,
        error: ErrorInfo | None = None,
        model: ModelRef | None = None,
        timings: Timings | None = None,
        attempts: int = 1,
        received_ms: float | None = None,
        dead_letter: tuple[bytes, DeadLetter] | None = None,
    ) -> None:
        """The one result of a request (and a dead-letter copy with ``dead_letter``).

        It goes to ``request``'s ``reply_to``, or without ``request`` (or a ``reply_to``) to
        the result topic of the tenant of ``tp``'s topic.
        """

    def answer_ok(
        self,
        tp: TP,
        offset: int,
        request: Request,
        output: Any,
        *,
        model: dict[str, str] | None,
        timings: dict[str, float],
        attempts: int,
    ) -> None:
        """An ``ok`` result, on the fast path."""

    def dead_letter(self, msg: PolledRecord, error_type: str, message: str) -> None:
        """The original record on the dead-letter topic (it has no usable id)."""
