"""Writing what the ingest owes Kafka: results and dead letters.

Every write that finishes an input record carries that record's (partition, offset), and the
record is reported done only from the producer's delivery callback, i.e. once the broker has
acknowledged the write (``acks=all``, idempotent producer). That is the whole at-least-once
argument: nothing is committed that was not durably answered.

Where a result goes is the tenant's business (:mod:`rayml.tenancy`): the writer knows, for each
request topic, its tenant (echoed in every result) and that tenant's result topic, where a
request's results go when it names no ``reply_to`` or one that cannot be written. Triage has
authorised the ``reply_to`` already; a refused one is answered without its request, so on the
result topic.

Failed deliveries are not dropped:

* a write to a topic that fails (the topic deleted, the ACL removed, a broker away past
  librdkafka's own retries) makes the topic *failing* (:mod:`rayml.delivery.retries`): its
  writes wait, uncommitted, and one of them probes the topic with exponential backoff
  (``executor.write_retry_initial_s`` doubling up to ``write_retry_max_s``, with jitter) until
  a write succeeds; it is logged once per ``write_failure_log_interval_s``, counted per topic
  and error (:attr:`ResultWriter.failed_deliveries`, the ``rayml_failed_deliveries`` metric:
  rayml's own topics always by name, other topics up to a bound) and shown by ``rayml status``
  (:attr:`ResultWriter.failing_topics`). A topic that librdkafka already knows to be missing
  refuses the write in ``produce()`` itself (``_UNKNOWN_TOPIC``): handled the same way. Every
  outcome of a probe ends it: delivered, failed again (the same write, a longer delay), refused
  as too large (by the broker: the topic is reachable, so it works again; by ``produce()``:
  the next write probes), or moved elsewhere (below);
* a ``reply_to`` topic that cannot be written gets the result on its tenant's result topic. A
  missing topic fails with ``UNKNOWN_TOPIC_OR_PART`` (after 30 s), which decides at once, for
  every result waiting for it; a *timeout* may be the topic or a broker outage, so the broker's
  metadata decides. It is asked off the loop thread (:mod:`rayml.kafka.topic_checks`): the
  timed-out results wait, parked, until the answer is in and :meth:`ResultWriter.settle`
  (called by the loop) writes them where they can go. A ``reply_to`` that exists but keeps
  timing out (an offline partition, too few in-sync replicas) is given up on after
  ``reply_give_up_probes`` failed probes or ``reply_give_up_s``: its results go to the result
  topic rather than hold their partitions' commits, and the ingest's window, for ever;
* what the writer holds for failing topics (waiting or parked) is counted in
  :attr:`ResultWriter.held_bytes`, which the ingest's byte budget includes;
* a result too large for the topic (refused by the broker or already by ``produce()``) is
  replaced by an error result that says so; a dead-letter copy too large is written with its
  key and headers but without its value (``rayml.value_dropped_bytes``).

An error result is written as :func:`~rayml.protocol.envelopes.public_error` has it (no
traceback, path, pid, address or Ray id); what that cut is logged with the request id.

With ``executor.delivery = "exactly_once"`` the writer is given a ``stage`` function instead of
producing: each input record's writes (its result, or dead letter, or result *and* DLQ copy) go
to :class:`rayml.delivery.transactions.TransactionalOutput` as one list, which
holds them until they may enter the open transaction in offset order. A failed delivery there aborts
the transaction and the records are redone; :meth:`ResultWriter.note_failed_delivery` remembers
why, so the redo writes the result where it can go (the tenant's result topic instead of an
unwritable ``reply_to``, an error result instead of one too large).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, NamedTuple, TypeAlias

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from rayml.delivery.out_records import Answer, OutRecord, Stage, too_large_result
from rayml.delivery.recent import RecentSet
from rayml.delivery.reply_topics import ReplyTopics
from rayml.delivery.retries import FailingTopics
from rayml.delivery.screening import dead_letter_record
from rayml.delivery.sink import TopicTenant
from rayml.kafka.partitions import TP
from rayml.kafka.records import Headers, PolledRecord
from rayml.kafka.topic_checks import TOPIC_ERRORS, TopicChecks, topic_verdicts
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


# One write as produced: (input record's partition, its offset, topic, value, key, headers,
# countdown, ident, shrunk). The hot path builds a plain tuple (a NamedTuple costs ~10x as much
# to build) and hands it to the delivery callback; a :class:`_Write`, the same fields by name, is
# made of it only when its delivery fails.
_Raw: TypeAlias = tuple[
    TP,
    int,
    str,
    bytes,
    bytes | None,
    Headers | None,
    Callable[[], None] | None,
    tuple[str, str, int] | None,
    bool,
]


class _Write(NamedTuple):
    """A write whose delivery failed, by name (see :data:`_Raw`)."""

    tp: TP  # the input record it answers or copies
    offset: int
    topic: str
    value: bytes
    key: bytes | None
    headers: Headers | None
    # None: the record is done when this write is; else it counts down the record's writes.
    countdown: Callable[[], None] | None
    ident: tuple[str, str, int] | None  # a result's (request id, pipeline, attempts)
    shrunk: bool  # the value is already the small error result of a refused one


# Where a reply_to's results go this loop turn (ResultWriter._routes).
_TO_REPLY_TO, _UNWRITABLE, _MISSING = 0, 1, 2


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
        self._own_topics = self.result_topics | {dlq_topic}
        self._on_done = on_done
        self._owner = owner
        self.results_ok = 0
        self.results_error = 0
        self.dead_letters = 0
        self._stage = stage
        # What failed deliveries taught: reply_to topics that cannot be written (both modes),
        # results too large for their topic (exactly-once; see note_failed_delivery).
        # Bounded and forgetful (hostile requests can name a fresh bogus topic each time; a
        # topic created later becomes writable again).
        self.unwritable_topics = RecentSet(_MAX_REMEMBERED, _REMEMBER_S)
        self.too_large = RecentSet(_MAX_REMEMBERED, _REMEMBER_S)
        # Exactly-once: request ids whose reply topic refused even the small error result; the
        # redo writes it to the result topic.
        self.refused_small = RecentSet(_MAX_REMEMBERED, _REMEMBER_S)
        self.unanswerable = RecentSet(_MAX_REMEMBERED, _REMEMBER_S)
        # Results whose reply_to write timed out, per topic (at-least-once), while the broker is
        # asked (off the loop thread) whether the topic is to blame; exactly-once asks too.
        self._checks = TopicChecks(producer, _METADATA_TIMEOUT_S)
        # Asked before a result is written to a reply_to: a missing topic's results go to the
        # result topic at once (no 30 s wait in librdkafka, no aborted transaction).
        self.reply_topics = reply_topics or ReplyTopics(
            partial(topic_verdicts, producer, timeout_s=_METADATA_TIMEOUT_S)
        )
        # Where each reply_to named this loop turn goes (_TO_REPLY_TO, _UNWRITABLE, _MISSING):
        # decided once per name and turn, not per result; emptied by settle() every turn.
        self._routes: dict[str, int] = {}
        self._parked: dict[str, list[tuple[_Raw, KafkaError]]] = {}
        self._parked_bytes = 0
        # Topics whose writes fail: their writes wait, one probes with backoff (settle()).
        self._failing: FailingTopics[_Raw] = FailingTopics(
            f"ingest={owner}",
            retry_initial_s,
            retry_max_s,
            failure_log_interval_s,
            clock=clock,
            size_of=_size_of,
        )
        self._give_up_probes = reply_give_up_probes
        self._give_up_s = reply_give_up_s
        # Exactly-once: reply_to topics whose writes failed (not by a topic error) this turn,
        # and in how many turns (aborted transactions) each did, since when: given up on at
        # reply_give_up_probes.
        self._timed_out: set[str] = set()
        self._timeouts: dict[str, tuple[int, float]] = {}
        # Failed deliveries by (topic, error name), for the metrics: rayml's own topics always
        # by name; at most _MAX_LABELS other (topic, error) pairs (a request may name any
        # reply_to), the rest counted under "_other".
        self.failed_deliveries: dict[tuple[str, str], int] = {}
        self._other_labels = 0
        self.failed_total = 0
        # Error results by (pipeline, error type), for the metrics: at most _MAX_LABELS pairs,
        # the rest counted under ("_other", "_other") (see answer()).
        self.error_results: dict[tuple[str, str], int] = {}
        self.results_rerouted = 0  # results whose reply_to did not exist: on the result topic
        self.errors_scrubbed = 0  # error results public_error cut something from
        self._clock = clock
        self.traces = traces
        self._missing_logged = -_MISSING_LOG_INTERVAL_S

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
            # By (pipeline, type) for the metrics: a plain dict, flushed on the ingest's timer.
            # Both are hostile (a request names any pipeline, a pipeline raises its own type
            # codes): at most _MAX_LABELS pairs by name, the rest under _OTHER_ERROR.
            by_type = self.error_results
            pair = (pipeline, error.type)
            so_far = by_type.get(pair)
            if so_far is None and len(by_type) >= _MAX_LABELS:
                pair = _OTHER_ERROR
                so_far = by_type.get(pair)
            by_type[pair] = (so_far or 0) + 1
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
            countdown = self._countdown(tp, offset, 2)
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
        """Learn from a write that failed in an (aborted) transaction, for the redo.

        In a transaction a failed write cannot be produced again on its own: the transaction
        aborts and its records are redone from their input offsets. So that the redo does not
        fail the same way, a result too large for its topic is answered with an error result,
        and an unwritable ``reply_to`` topic is replaced by the result topic (as at-least-once
        does). A timed-out write's topic is asked about off the loop thread, as at-least-once
        asks; if the answer comes after the redo, the redo fails once more and aborts again. A
        ``reply_to`` that exists but whose writes keep timing out is given up on once they did
        in ``reply_give_up_probes`` loop turns (aborted transactions), as at-least-once gives up
        on one after as many failed probes: no abort loop.
        """
        if topic == self.dlq_topic:
            return  # nothing to change: redone as it is (at-least-once retries it too)
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and key is not None:
            rid = key.decode(errors="replace")
            # First refusal: the redo sends the small error result instead; second (the topic
            # refuses even that): the redo sends it to the tenant's result topic; third (the
            # result topic refuses it too): the redo writes nothing for it. No abort loop.
            if rid in self.refused_small:
                self.unanswerable.add(rid)
            elif rid in self.too_large:
                self.refused_small.add(rid)
                if self._is_reply_topic(topic):
                    # A reply topic that refuses even a small error: every later result for
                    # it goes to the result topic at once, not two aborts per request.
                    self._learn_unwritable(topic, err)
            else:
                self.too_large.add(rid)
        elif topic not in self.result_topics and topic not in self.unwritable_topics:
            if err.code() in TOPIC_ERRORS:
                self._learn_unwritable(topic, err)
            else:
                self._checks.ask(topic)  # answered in settle()
                self._timed_out.add(topic)  # counted once per turn in settle()

    def check_reply_topics(self, topics: Iterable[str]) -> None:
        """Ask the broker about the ``reply_to`` topics of a batch's answers in one round."""
        if self.reply_topics.check(topics):
            self._log_missing()

    def _result_topic(self, reply_to: str | None, result_topic: str) -> str:
        """Where a result goes: its ``reply_to``, unless none, one the broker does not have, or
        one found unwritable; then its tenant's ``result_topic``. Decided once per name and
        loop turn (a batch's results name a few topics between them)."""
        if not reply_to or reply_to == result_topic:
            return result_topic
        route = self._routes.get(reply_to)
        if route is None:
            route = self._routes[reply_to] = self._route(reply_to)
        if route == _TO_REPLY_TO:
            return reply_to
        if route == _MISSING:
            self.results_rerouted += 1
        return result_topic

    def _route(self, reply_to: str) -> int:
        if reply_to in self.unwritable_topics:  # until it expires: then tried again
            return _UNWRITABLE
        if not self.reply_topics.known(reply_to):
            self.check_reply_topics([reply_to])
        if self.reply_topics.missing(reply_to) is not None:
            return _MISSING
        return _TO_REPLY_TO

    def _log_missing(self) -> None:
        """One line per interval about reply_to topics that do not exist (a flood of bogus
        names is one line, not one per request)."""
        now = self._clock()
        missing = self.reply_topics.missing_count
        if missing and now - self._missing_logged >= _MISSING_LOG_INTERVAL_S:
            self._missing_logged = now
            logger.warning(
                "ingest=%s %d reply_to topics named by requests do not exist or cannot be "
                "written (e.g. %s: %s); their results go to their tenant's result topic",
                self._owner,
                missing,
                self.reply_topics.last_missing,
                self.reply_topics.missing(self.reply_topics.last_missing),
            )

    # -- failed reply_to writes -----------------------------------------------------------------

    @property
    def parked(self) -> int:
        """Results waiting for the broker's word on their ``reply_to`` topic."""
        return sum(len(waiting) for waiting in self._parked.values())

    @property
    def held_bytes(self) -> int:
        """What the writes this writer holds weigh: those waiting for a failing topic (their
        probes included) and the parked ones (loop thread; O(1)). The ingest counts them in
        its byte budget: a failing topic's results are held in memory as long as it fails."""
        return self._failing.held_bytes + self._parked_bytes

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
        it go there at once); otherwise the topic is failing (the broker, not the topic, is to
        blame) and they wait for it with backoff. A ``reply_to`` that is still failing after
        ``reply_give_up_probes`` failed probes or ``reply_give_up_s`` is treated as unwritable
        (an offline partition, too few in-sync replicas: its results must not hold their
        partitions' commits, nor the ingest's window, for ever); rayml's own topics keep
        waiting, nothing else can take their writes. Exactly-once, a ``reply_to`` whose writes
        failed so in ``reply_give_up_probes`` transactions is given up on alike. Called by the
        ingest's loop every turn; waits up to ``wait_s`` for an answer when one is open.
        """
        if self._routes:
            self._routes = {}  # a new turn: what the writer learnt since may change them
        handed_on = 0
        for topic, why in self._checks.answered(wait_s):
            parked = self._parked.pop(topic, [])
            self._parked_bytes -= sum(len(raw[3]) for raw, _err in parked)
            if why is not None or topic in self.unwritable_topics:
                self._give_up_reply_topic(topic, why or "unwritable")
                for raw, _err in parked:
                    self._send_home(raw)
            else:
                for raw, err in parked:
                    self._failing.failed(topic, _why(err), raw)
            handed_on += len(parked)
        if self._timed_out:
            self._count_timeouts()
        if self._failing:
            for topic in self._failing.exhausted(
                self._give_up_probes, self._give_up_s, self._is_reply_topic
            ):
                self._give_up_reply_topic(topic, "failing for too long")
            for _topic, probe in self._failing.due():
                self._send(probe)
        return handed_on

    def forget(self, tps: set[TP]) -> int:
        """Drop the parked results and the writes waiting for a failing topic of partitions let
        go of (their new owner answers them)."""
        dropped = 0
        for topic, parked in list(self._parked.items()):
            keep = [p for p in parked if p[0][0] not in tps]
            dropped += len(parked) - len(keep)
            self._parked_bytes -= sum(len(p[0][3]) for p in parked if p[0][0] in tps)
            self._parked[topic] = keep
        return dropped + self._failing.forget(lambda w: w[0] in tps)

    def _count_timeouts(self) -> None:
        """Exactly-once: one more turn in which each of these reply topics' writes failed
        without blaming the topic (a timeout: an aborted transaction); at
        ``reply_give_up_probes`` such turns the topic is given up on. A count older than
        _REMEMBER_S starts again."""
        now = self._clock()
        for topic in self._timed_out:
            turns, since = self._timeouts.get(topic, (0, now))
            if now - since > _REMEMBER_S:
                turns, since = 0, now
            turns += 1
            if turns >= self._give_up_probes:
                self._timeouts.pop(topic, None)
                self._learn_unwritable(topic, f"its writes failed in {turns} transactions")
            else:
                self._timeouts[topic] = (turns, since)
        self._timed_out = set()
        if len(self._timeouts) > _MAX_REMEMBERED:
            self._timeouts.clear()  # a flood of names: bounded, at the price of counting again

    def _is_reply_topic(self, topic: str) -> bool:
        return topic not in self._own_topics

    def _give_up_reply_topic(self, topic: str, why: object) -> None:
        """``topic`` (a ``reply_to``) cannot be written: it is learnt (its next results go to
        their tenant's result topic at once), and every result waiting for it goes there now:
        those queued while it failed and those parked while the broker was asked."""
        if topic in self._failing:
            self.unwritable_topics.add(topic)  # FailingTopics.give_up says it in the log
            self._routes.pop(topic, None)
            for raw in self._failing.give_up(topic):
                self._send_home(raw)
        else:
            self._learn_unwritable(topic, why)
        parked = self._parked.pop(topic, [])
        self._parked_bytes -= sum(len(raw[3]) for raw, _err in parked)
        for raw, _err in parked:
            self._send_home(raw)

    def _learn_unwritable(self, topic: str, why: object) -> None:
        self._routes.pop(topic, None)
        if topic in self.unwritable_topics:
            return
        self.unwritable_topics.add(topic)
        logger.warning(
            "ingest=%s cannot write to %s (%s); its results go to their tenant's result topic",
            self._owner,
            topic,
            why,
        )

    def close(self) -> None:
        """Stop asking the broker about topics (parked results stay unfinished: redelivered)."""
        self._checks.close()

    def _staged_results(
        self, topic: str, value: bytes, answer: Answer, headers: Headers | None = None
    ) -> list[OutRecord]:
        """Exactly-once: the result record(s) to stage, after what failed writes taught."""
        if answer.request_id in self.unanswerable:
            logger.error(
                "ingest=%s the result topic %s refuses even the error result of %s: it is not "
                "answered",
                self._owner,
                answer.result_topic,
                answer.request_id,
            )
            return []
        if answer.request_id in self.too_large:
            value = too_large_result(answer, len(value), topic)
        if topic in self.unwritable_topics or answer.request_id in self.refused_small:
            topic = answer.result_topic
        return [OutRecord(topic, value, answer.request_id.encode(), headers)]

    # -- producing ----------------------------------------------------------------------------

    def _countdown(self, tp: TP, offset: int, writes: int) -> Callable[[], None]:
        """Marks the record done once its ``writes`` writes are all acknowledged."""
        left = [writes]

        def one_done() -> None:
            left[0] -= 1
            if left[0] == 0:
                self._on_done(tp, offset)

        return one_done

    def _produce(self, write: _Raw) -> None:
        """Produce one record for an input record; it is done once the broker has it (or it is
        given up). A write for a failing topic waits for it instead."""
        if self._failing and self._failing.hold(write[2], write):
            return  # it would fail the same way: it waits for the topic's probe (settle)
        self._send(write)

    def _send_home(self, write: _Raw) -> None:
        """A result for an unwritable ``reply_to``, to its tenant's result topic."""
        w = _Write._make(write)
        self._produce(w._replace(topic=self.tenants[w.tp[0]].result_topic))

    def _send(self, write: _Raw) -> None:
        on_delivery = partial(self._delivered, write)
        while True:
            try:
                self.producer.produce(
                    write[2],
                    value=write[3],
                    key=write[4],
                    headers=write[5],
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                # librdkafka's queue is full: serve delivery reports to make room.
                self.producer.poll(0.05)
            except KafkaException as exc:
                # Refused before it was queued: larger than the producer's message.max.bytes,
                # or for a topic librdkafka knows to be missing (_UNKNOWN_TOPIC). Handled as
                # a failed delivery; a fatal error (the producer is unusable) is raised.
                err = exc.args[0] if exc.args else None
                if not isinstance(err, KafkaError) or err.fatal():
                    raise
                self._failed(write, err, refused_here=True)
                return

    def _delivered(self, write: _Raw, err: KafkaError | None, _msg: Message | None) -> None:
        """The delivery report of ``write`` (the producer's callback)."""
        if err is not None:
            self._failed(write, err, refused_here=False)
            return
        if self._failing:
            for waited in self._failing.delivered(write[2]):
                self._send(waited)  # the topic works again
        countdown = write[6]
        if countdown is None:
            self._on_done(write[0], write[1])
        else:
            countdown()

    def _failed(self, write: _Raw, err: KafkaError, *, refused_here: bool) -> None:
        """A write failed: where it goes now. ``refused_here``: by ``produce()`` itself.

        When the write was its failing topic's probe, every outcome ends the probe (see
        :mod:`rayml.delivery.retries`): a refusal as too large by the broker shows the topic
        reachable (it works again, and the result is shrunk as usual); one by the producer says
        nothing of the topic (the next write probes); a topic error on a ``reply_to`` moves
        all its waiting results to the tenant's result topic; any other failure is the probe
        failing again, with the same write, so the backoff grows.
        """
        w = _Write._make(write)
        topic = w.topic
        code = err.code()
        self._count_failure(topic, err)
        if code == KafkaError.MSG_SIZE_TOO_LARGE:
            if topic in self._failing:
                if refused_here:
                    self._failing.release(topic, write)
                else:
                    for waited in self._failing.delivered(topic):
                        self._send(waited)  # the broker answered: the topic is reachable
            self._too_large(w)
        elif w.ident is not None and self._is_reply_topic(topic):
            # A reply_to write failed. If the topic is to blame (e.g. it does not exist),
            # answer on the result topic rather than never: the result still names the
            # request id. Learnt once: later results for it go to the result topic at once.
            if topic in self.unwritable_topics or code in TOPIC_ERRORS:
                self._give_up_reply_topic(topic, err)
                self._send_home(write)
            elif topic in self._failing:
                self._failing.failed(topic, _why(err), write)  # the probe (or an older write)
            else:  # a timeout: the topic may be missing or the broker away; ask (settle)
                self._parked.setdefault(topic, []).append((write, err))
                self._parked_bytes += len(w.value)
                self._checks.ask(topic)
        else:
            # The result or dead-letter topic fails: the write waits, and the topic
            # is tried again with backoff (settle); its offset stays uncommitted.
            self._failing.failed(topic, _why(err), write)

    def _too_large(self, w: _Write) -> None:
        """The broker or the producer refused ``w`` as too large for its topic."""
        if w.ident is None:
            # A dead-letter copy of a record the input topic took but this one refuses: keep
            # its key and headers, say how large it was, drop the bytes (retrying would fail
            # the same way forever).
            logger.error(
                "ingest=%s copy of %d bytes too large for %s; written without its value",
                self._owner,
                len(w.value),
                w.topic,
            )
            stub = [*(w.headers or []), ("rayml.value_dropped_bytes", str(len(w.value)))]
            self._produce(w._replace(value=b"", headers=stub))
            return
        rid, pipeline, attempts = w.ident
        home = self.tenants[w.tp[0]]
        if not w.shrunk:
            logger.warning("ingest=%s result of %s too large for %s", self._owner, rid, w.topic)
            answer = Answer(w.tp, rid, pipeline, attempts, home.tenant, home.result_topic)
            small = too_large_result(answer, len(w.value), w.topic)
            self._produce(w._replace(value=small, shrunk=True))
        elif w.topic != home.result_topic:
            # The reply topic refuses even the small error result (a tiny max.message.bytes):
            # one bounded try, then the result topic, with the reason.
            logger.warning(
                "ingest=%s %s refuses even the error result of %s; it goes to %s",
                self._owner,
                w.topic,
                rid,
                home.result_topic,
            )
            self._produce(w._replace(topic=home.result_topic))
        else:
            # The result topic itself refuses a few hundred bytes: misconfigured. Give up on
            # this answer (its offset is done) rather than loop.
            logger.error(
                "ingest=%s the result topic %s refuses even the %d-byte error result of %s: it "
                "is not answered",
                self._owner,
                w.topic,
                len(w.value),
                rid,
            )
            if w.countdown is None:
                self._on_done(w.tp, w.offset)
            else:
                w.countdown()

    def _count_failure(self, topic: str, err: KafkaError) -> None:
        """Count a failed delivery by topic and error: rayml's own topics always by name,
        others (any ``reply_to`` a request names) up to _MAX_LABELS pairs, then "_other"."""
        key = (topic, err.name())
        counts = self.failed_deliveries
        if key not in counts and topic not in self._own_topics:
            if self._other_labels >= _MAX_LABELS:
                key = ("_other", key[1])
            else:
                self._other_labels += 1
        counts[key] = counts.get(key, 0) + 1
        self.failed_total += 1


def _size_of(write: _Raw) -> int:
    return len(write[3])


def _why(err: KafkaError) -> str:
    """A failed write's error for logs and status: its name and librdkafka's words."""
    return f"{err.name()}: {err.str()}"


_METADATA_TIMEOUT_S = 5.0
_MISSING_LOG_INTERVAL_S = 30.0
# What failed writes teach (unwritable topics, too-large results) is kept this long, at most
# this many of each.
_REMEMBER_S = 600.0
_MAX_REMEMBERED = 10_000
# Distinct (topic, error) pairs of topics other than rayml's own counted by name in
# failed_deliveries before "_other"; distinct (pipeline, error type) pairs in error_results.
_MAX_LABELS = 100
# Where error results beyond the first _MAX_LABELS (pipeline, type) pairs are counted.
_OTHER_ERROR = ("_other", "_other")
