"""Writing what the ingest owes Kafka: results and dead letters.

Every write that finishes an input record carries that record's (partition, offset), and the
record is reported done only from the producer's delivery callback, i.e. once the broker has
acknowledged the write (``acks=all``, idempotent producer): at-least-once, the writer builds
each write and :class:`~rayml.delivery.at_least_once.AtLeastOnceOutput` produces it and
reports its record done.

Where a result goes is the tenant's business (:mod:`rayml.tenancy`): the writer knows, for each
request topic, its tenant (echoed in every result) and that tenant's result topic, where a
request's results go when it names no ``reply_to`` or one that cannot be written
(:mod:`rayml.delivery.result_routes`). Triage has authorised the ``reply_to`` already; a
refused one is answered without its request, so on the result topic.

Failed deliveries are not dropped (:mod:`rayml.delivery.at_least_once`): a failing topic's
writes wait, uncommitted, while one of them probes it with backoff; a ``reply_to`` that cannot
be written, or keeps failing, gets its results on the tenant's result topic; a result too large
for its topic is replaced by an error result that says so. They are counted per topic and
error (:attr:`ResultWriter.failed_deliveries`, the ``rayml_failed_deliveries`` metric, with
bounded labels: :mod:`rayml.delivery.failure_counts`), the failing topics are shown by ``rayml
status`` (:attr:`ResultWriter.failing_topics`), and what the writer holds for them is counted
in :attr:`ResultWriter.held_bytes`, which the ingest's byte budget includes.

An error result is written as :func:`~rayml.protocol.envelopes.public_error` has it (no
traceback, path, pid, address or Ray id); what that cut is logged with the request id.

With ``executor.delivery = "exactly_once"`` the writer is given a ``stage`` function instead of
producing: each input record's writes (its result, or dead letter, or result *and* DLQ copy) go
to :class:`rayml.delivery.transactions.TransactionalOutput` as one list, which
holds them until they may enter the open transaction in offset order. A failed delivery there aborts
the transaction and the records are redone; :meth:`ResultWriter.note_failed_delivery` remembers
why (:mod:`rayml.delivery.redo`), so the redo writes the result where it can go (the tenant's
result topic instead of an unwritable ``reply_to``, an error result instead of one too large).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import orjson
from confluent_kafka import KafkaError, Producer

from rayml.delivery.at_least_once import AtLeastOnceOutput
from rayml.delivery.failure_counts import FailureCounts
from rayml.delivery.out_records import Answer, OutRecord, Stage
from rayml.delivery.recent import RecentSet
from rayml.delivery.redo import RedoLessons
from rayml.delivery.reply_topics import ReplyTopics
from rayml.delivery.result_routes import ResultRoutes
from rayml.delivery.screening import dead_letter_record
from rayml.delivery.sink import TopicTenant
from rayml.kafka.partitions import TP
from rayml.kafka.records import Headers, PolledRecord
from rayml.kafka.topic_checks import TopicChecks, topic_verdicts
from rayml.protocol.dead_letters import DeadLetter, dead_letter_headers
from rayml.protocol.envelopes import (
    ErrorInfo,
    ModelRef,
    Request,
    Result,
    Timings,
    encode_result,
    public_error,
)
from rayml.tracing import RequestTraces

logger = logging.getLogger(__name__)

_METADATA_TIMEOUT_S = 5.0


class ResultWriter:
    """Produces the ingest's outputs and reports each finished input record.

    Args:
        producer: An idempotent producer (see :func:`rayml.kafka.clients.producer`).
        tenants: For each request topic, its tenant and the tenant's result topic (where
            results go when a request names no ``reply_to``).
        dlq_topic: Dead letters.
        on_done: Called with (partition, offset) when a record's write is acknowledged.
        owner: A name for log lines.
        stage: Exactly-once: called with (partition, offset, writes) instead of producing;
            ``on_done`` is then not called (a record is done when its transaction commits).
        retry_initial_s: A failing topic's first retry after this long...
        retry_max_s: ...doubling up to this (:mod:`rayml.delivery.retries`).
        failure_log_interval_s: Least time between two log lines about one failing topic.
        clock: Monotonic seconds (tests inject one).
        reply_topics: Which ``reply_to`` topics exist (default: asked of ``producer``'s
            broker; :mod:`rayml.delivery.reply_topics`).
        reply_give_up_probes: A failing ``reply_to`` topic whose probes failed this many
            times...
        reply_give_up_s: ...or that has failed this long is given up on: its waiting results
            go to their tenant's result topic, and so do its next ones for a while.
        traces: Request tracing (``None``: off): a result carries its request's
            ``traceparent`` header (:mod:`rayml.tracing`).
    """

    def __init__(
        self,
        producer: Producer,
        *,
        tenants: Mapping[str, TopicTenant],
        dlq_topic: str,
        on_done: Callable[[TP, int], None],
        owner: str,
        stage: Stage | None = None,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 30.0,
        failure_log_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        reply_topics: ReplyTopics | None = None,
        reply_give_up_probes: int = 3,
        reply_give_up_s: float = 60.0,
        traces: RequestTraces | None = None,
    ) -> None:
        self.producer = producer
        self.tenants = dict(tenants)
        self.result_topics = frozenset(t.result_topic for t in self.tenants.values())
        self.dlq_topic = dlq_topic
        # rayml's own topics: nothing else can take their writes (they wait while they fail),
        # and their failures are always counted by name.
        own_topics = self.result_topics | {dlq_topic}
        self._owner = owner
        self.results_ok = 0
        self.results_error = 0
        self.dead_letters = 0
        self.errors_scrubbed = 0  # error results public_error cut something from
        self._stage = stage
        self.traces = traces
        # Asked before a result is written to a reply_to: a missing topic's results go to the
        # result topic at once (no 30 s wait in librdkafka, no aborted transaction).
        self.reply_topics = reply_topics or ReplyTopics(
            partial(topic_verdicts, producer, timeout_s=_METADATA_TIMEOUT_S)
        )
        self._routes = ResultRoutes(self.reply_topics, owner, clock)
        # Whether a topic whose writes timed out is to blame, asked off the loop thread: by the
        # at-least-once failed writes and the exactly-once redo alike.
        self._checks = TopicChecks(producer, _METADATA_TIMEOUT_S)
        self._counts = FailureCounts(own_topics)
        self._output = AtLeastOnceOutput(
            producer,
            tenants=self.tenants,
            own_topics=own_topics,
            routes=self._routes,
            checks=self._checks,
            counts=self._counts,
            on_done=on_done,
            owner=owner,
            retry_initial_s=retry_initial_s,
            retry_max_s=retry_max_s,
            failure_log_interval_s=failure_log_interval_s,
            clock=clock,
            give_up_probes=reply_give_up_probes,
            give_up_s=reply_give_up_s,
        )
        self._redo = RedoLessons(
            self._routes,
            self._checks,
            dlq_topic=dlq_topic,
            result_topics=self.result_topics,
            owner=owner,
            clock=clock,
            give_up_probes=reply_give_up_probes,
        )
        # The hot path's collaborators, bound once: a call costs what a method of this class
        # would (no attribute lookup through the helper per message).
        self._failing = self._output.failing
        self._send = self._output.send
        self._produce = self._output.produce
        self._result_topic = self._routes.result_topic
        self._staged_results = self._redo.staged_results

    # -- what the ingest calls ----------------------------------------------------------------

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
        """Write the one result of a request; the record is done once it is acknowledged.

        It goes to ``request.reply_to`` (authorised by triage) or, without ``request`` or a
        usable ``reply_to``, to the tenant's result topic; the tenant is ``tp``'s topic's.
        With ``dead_letter`` (original bytes and why), a DLQ copy is written too, and the
        record is done only when *both* are acknowledged.
        """
        if timings is None and received_ms is not None:
            timings = Timings(total_ms=round(time.time() * 1000.0 - received_ms, 3))
        home = self.tenants[tp[0]]
        tenant = home.tenant
        if error is None:
            result = Result.ok(
                request_id,
                pipeline,
                output,
                model=model,
                timings=timings,
                attempts=attempts,
                tenant=tenant,
            )
            self.results_ok += 1
        else:
            error = self._public(request_id, error)
            result = Result.failed(
                request_id,
                pipeline,
                error,
                model=model,
                timings=timings,
                attempts=attempts,
                tenant=tenant,
            )
            self.results_error += 1
            # By (pipeline, type) for the metrics, under a bound (both are hostile).
            self._counts.error_result(pipeline, error.type)
        try:
            value = encode_result(result)
        except ValueError as exc:  # the pipeline returned something JSON cannot carry
            value = encode_result(
                Result.failed(
                    request_id,
                    pipeline,
                    ErrorInfo(
                        type="invalid_output",
                        message=f"the pipeline's output is not JSON-serialisable: {exc}",
                    ),
                    model=model,
                    timings=timings,
                    attempts=attempts,
                    tenant=tenant,
                )
            )
        topic = self._result_topic(request.reply_to if request else None, home.result_topic)
        key = request_id.encode()
        traced = None
        if self.traces is not None:
            traced = self.traces.result_headers(
                (tp, offset), result.status, error.type if error else None
            )
        if self._stage is not None:
            answer = Answer(tp, request_id, pipeline, attempts, tenant, home.result_topic)
            staged = self._staged_results(topic, value, answer, traced)
            if dead_letter is not None:
                raw, letter = dead_letter
                self.dead_letters += 1
                dlq = OutRecord(self.dlq_topic, raw, key, list(dead_letter_headers(letter)))
                staged.insert(0, dlq)
            self._stage(tp, offset, staged)
            return
        countdown = None
        if dead_letter is not None:
            countdown = self._output.countdown(tp, offset, 2)
            raw, letter = dead_letter
            self.dead_letters += 1
            headers: Headers = list(dead_letter_headers(letter))
            self._produce((tp, offset, self.dlq_topic, raw, key, headers, countdown, None, False))
        ident = (request_id, pipeline, attempts)
        self._produce((tp, offset, topic, value, key, traced, countdown, ident, False))

    def _public(self, request_id: str, error: ErrorInfo) -> ErrorInfo:
        """``error`` as the caller may see it; what was cut goes to the log, by request id."""
        public = public_error(error)
        if public is not error:
            self.errors_scrubbed += 1
            logger.warning(
                "ingest=%s request=%s error %s (as written, without internals: %r): %s %s",
                self._owner,
                request_id,
                error.type,
                public.message,
                error.message,
                error.details,
            )
        return public

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
        """Write an ``ok`` result: the per-request hot path.

        Builds the envelope as a plain dict and encodes it with orjson (about 1 µs) instead of
        constructing and dumping a pydantic ``Result`` (about 15 µs); the bytes are the same
        envelope (a unit test holds the two paths equal). An output orjson cannot encode goes
        through :meth:`answer`, which turns it into an ``invalid_output`` error. What a failed
        delivery needs to answer again is built only if one fails.
        """
        home = self.tenants[tp[0]]
        rid = request.id
        doc: dict[str, Any] = {
            "v": 1,
            "id": rid,
            "pipeline": request.pipeline,
            "status": "ok",
            "result": output,
        }
        if model is not None:
            doc["model"] = model
        doc["timings"] = timings
        doc["attempts"] = attempts
        doc["tenant"] = home.tenant
        try:
            value = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:
            self.answer(
                tp,
                offset,
                rid,
                request.pipeline,
                request,
                output=output,
                model=ModelRef(**model) if model else None,
                timings=Timings(**timings),
                attempts=attempts,
            )
            return
        self.results_ok += 1
        reply_to = request.reply_to
        topic = self._result_topic(reply_to, home.result_topic) if reply_to else home.result_topic
        traced = None if self.traces is None else self.traces.result_headers((tp, offset))
        if self._stage is not None:
            answer = Answer(tp, rid, request.pipeline, attempts, home.tenant, home.result_topic)
            self._stage(tp, offset, self._staged_results(topic, value, answer, traced))
            return
        write = (
            tp,
            offset,
            topic,
            value,
            rid.encode(),
            traced,
            None,
            (rid, request.pipeline, attempts),
            False,
        )
        if self._failing and self._failing.hold(topic, write):
            return  # it would fail the same way: it waits for the topic's probe (settle)
        self._send(write)

    def dead_letter(self, msg: PolledRecord, error_type: str, message: str) -> None:
        """Dead-letter an unanswerable record with its original bytes, key and headers."""
        tp, offset, headers = dead_letter_record(msg, error_type, message)
        self.dead_letters += 1
        if self._stage is not None:
            self._stage(
                tp, offset, [OutRecord(self.dlq_topic, msg.value() or b"", msg.key(), headers)]
            )
            return
        self._produce(
            (tp, offset, self.dlq_topic, msg.value() or b"", msg.key(), headers, None, None, False)
        )

    # -- exactly-once: staged writes ----------------------------------------------------------

    def note_failed_delivery(self, topic: str, key: bytes | None, err: KafkaError) -> None:
        """Learn from a write that failed in an (aborted) transaction, for the redo: so that
        the redo does not fail the same way (no abort loop), it writes an error result instead
        of one too large and the result topic instead of an unwritable ``reply_to``; a
        ``reply_to`` whose writes time out in ``reply_give_up_probes`` loop turns is given up
        on (:meth:`rayml.delivery.redo.RedoLessons.note_failed_delivery`)."""
        self._redo.note_failed_delivery(topic, key, err)

    def check_reply_topics(self, topics: Iterable[str]) -> None:
        """Ask the broker about the ``reply_to`` topics of a batch's answers in one round."""
        self._routes.check(topics)

    # -- failed writes and counts -------------------------------------------------------------

    @property
    def unwritable_topics(self) -> RecentSet:
        """The ``reply_to`` topics failed writes taught cannot be written (both modes)."""
        return self._routes.unwritable

    @property
    def results_rerouted(self) -> int:
        """Results whose ``reply_to`` did not exist: written on the result topic."""
        return self._routes.rerouted

    @property
    def failed_deliveries(self) -> dict[tuple[str, str], int]:
        """Failed deliveries by (topic, error name), for the metrics (bounded labels)."""
        return self._counts.failed_deliveries

    @property
    def failed_total(self) -> int:
        """Failed deliveries, all told."""
        return self._counts.failed_total

    @property
    def error_results(self) -> dict[tuple[str, str], int]:
        """Error results by (pipeline, error type), for the metrics (bounded labels)."""
        return self._counts.error_results

    @property
    def parked(self) -> int:
        """Results waiting for the broker's word on their ``reply_to`` topic."""
        return self._output.parked

    @property
    def held_bytes(self) -> int:
        """What the writes this writer holds weigh: those waiting for a failing topic (their
        probes included) and the parked ones (loop thread; O(1)). The ingest counts them in
        its byte budget: a failing topic's results are held in memory as long as it fails."""
        return self._output.held_bytes

    @property
    def failing_topics(self) -> tuple[dict[str, Any], ...]:
        """The topics whose writes fail now: topic, error, since, failures, waiting (any
        thread may read it)."""
        return self._failing.status

    @property
    def retries_waiting(self) -> int:
        """Writes waiting for their failing topic (loop thread)."""
        return self._failing.waiting

    def settle(self, wait_s: float = 0.0) -> int:
        """Hand on the parked results whose topic question is answered, give up on the
        ``reply_to`` topics that failed too long, and send the probes of failing topics that
        are due; how many parked results were handed on.

        An unwritable topic's results go to their tenant's result topic (and later results for
        it go there at once); otherwise they wait for the failing topic with backoff. A
        ``reply_to`` still failing after ``reply_give_up_probes`` failed probes or
        ``reply_give_up_s`` is treated as unwritable; rayml's own topics keep waiting
        (:mod:`rayml.delivery.at_least_once`). Exactly-once, a ``reply_to`` whose writes failed
        so in ``reply_give_up_probes`` transactions is given up on alike
        (:mod:`rayml.delivery.redo`). Called by the ingest's loop every turn; waits up to
        ``wait_s`` for an answer when one is open.
        """
        self._routes.new_turn()  # what the writer learnt since may change the routes
        handed_on = self._output.hand_on(wait_s)
        self._redo.count_timeouts()
        self._output.retry_due()
        return handed_on

    def forget(self, tps: set[TP]) -> int:
        """Drop the parked results and the writes waiting for a failing topic of partitions let
        go of (their new owner answers them)."""
        return self._output.forget(tps)

    def close(self) -> None:
        """Stop asking the broker about topics (parked results stay unfinished: redelivered)."""
        self._checks.close()
