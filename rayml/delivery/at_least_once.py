"""At-least-once output: each write produced, its record done once the broker has it, and
where a write goes when its delivery failed.

Every write that finishes an input record carries that record's (partition, offset), and the
record is reported done only from the producer's delivery callback, i.e. once the broker has
acknowledged the write (``acks=all``, idempotent producer). That is the whole at-least-once
argument: nothing is committed that was not durably answered. The
:class:`~rayml.delivery.result_writer.ResultWriter` builds the writes;
:class:`AtLeastOnceOutput` produces them (exactly-once, they are staged in
:class:`rayml.delivery.transactions.TransactionalOutput` instead).

Failed deliveries are not dropped:

* a write to a topic that fails (the topic deleted, the ACL removed, a broker away past
  librdkafka's own retries) makes the topic *failing* (:mod:`rayml.delivery.retries`): its
  writes wait, uncommitted, and one of them probes the topic with exponential backoff
  (``executor.write_retry_initial_s`` doubling up to ``write_retry_max_s``, with jitter) until
  a write succeeds; it is logged once per ``write_failure_log_interval_s`` and counted per
  topic and error (:mod:`rayml.delivery.failure_counts`). A topic that librdkafka already
  knows to be missing refuses the write in ``produce()`` itself (``_UNKNOWN_TOPIC``): handled
  the same way. Every outcome of a probe ends it: delivered, failed again (the same write, a
  longer delay), refused as too large (by the broker: the topic is reachable, so it works
  again; by ``produce()``: the next write probes), or moved elsewhere (below);
* a ``reply_to`` topic that cannot be written gets the result on its tenant's result topic. A
  missing topic fails with ``UNKNOWN_TOPIC_OR_PART`` (after 30 s), which decides at once, for
  every result waiting for it; a *timeout* may be the topic or a broker outage, so the broker's
  metadata decides. It is asked off the loop thread (:mod:`rayml.kafka.topic_checks`): the
  timed-out results wait, parked, until the answer is in and :meth:`AtLeastOnceOutput.hand_on`
  (called by the loop, through :meth:`ResultWriter.settle`) writes them where they can go; the
  answers about the topics the exactly-once redo asked about (:mod:`rayml.delivery.redo`) are
  learnt there too, with nothing parked. A ``reply_to`` that exists but keeps timing out (an
  offline partition, too few in-sync replicas) is given up on after ``reply_give_up_probes``
  failed probes or ``reply_give_up_s`` (:meth:`AtLeastOnceOutput.retry_due`): its results go to
  the result topic rather than hold their partitions' commits, and the ingest's window, for
  ever;
* what is held for failing topics (waiting or parked) is counted in
  :attr:`AtLeastOnceOutput.held_bytes`, which the ingest's byte budget includes;
* a result too large for the topic (refused by the broker or already by ``produce()``) is
  replaced by an error result that says so; a dead-letter copy too large is written with its
  key and headers but without its value (``rayml.value_dropped_bytes``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import NamedTuple, TypeAlias

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from rayml.delivery.failure_counts import FailureCounts
from rayml.delivery.out_records import Answer, too_large_result
from rayml.delivery.result_routes import ResultRoutes
from rayml.delivery.retries import FailingTopics
from rayml.delivery.sink import TopicTenant
from rayml.kafka.partitions import TP
from rayml.kafka.records import Headers
from rayml.kafka.topic_checks import TOPIC_ERRORS, TopicChecks

__all__ = ["AtLeastOnceOutput", "Raw", "Write"]

logger = logging.getLogger(__name__)


# One write as produced: (input record's partition, its offset, topic, value, key, headers,
# countdown, ident, shrunk). The hot path builds a plain tuple (a NamedTuple costs ~10x as much
# to build) and hands it to the delivery callback; a :class:`Write`, the same fields by name, is
# made of it only when its delivery fails.
Raw: TypeAlias = tuple[
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


class Write(NamedTuple):
    """A write whose delivery failed, by name (see :data:`Raw`)."""

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


class AtLeastOnceOutput:
    """Produces each write, reports its record done once acknowledged, and decides where each
    failed write goes, holding those that wait.

    Args:
        producer: An idempotent producer (see :func:`rayml.kafka.clients.producer`).
        tenants: For each request topic, its tenant and the tenant's result topic.
        own_topics: rayml's own topics (result topics, DLQ): nothing else can take their
            writes, so they wait while they fail.
        routes: Where results go; learns the ``reply_to`` topics that cannot be written.
        checks: Asks the broker, off the loop thread, whether a timed-out topic is to blame.
        counts: Counts each failed delivery.
        on_done: Called with (partition, offset) when a record's write is acknowledged (or
            given up).
        owner: A name for log lines.
        retry_initial_s: A failing topic's first retry after this long...
        retry_max_s: ...doubling up to this (:mod:`rayml.delivery.retries`).
        failure_log_interval_s: Least time between two log lines about one failing topic.
        clock: Monotonic seconds (tests inject one).
        give_up_probes: A failing ``reply_to`` topic whose probes failed this many times...
        give_up_s: ...or that has failed this long is given up on.
    """

    def __init__(
        self,
        producer: Producer,
        *,
        tenants: Mapping[str, TopicTenant],
        own_topics: frozenset[str],
        routes: ResultRoutes,
        checks: TopicChecks,
        counts: FailureCounts,
        on_done: Callable[[TP, int], None],
        owner: str,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 30.0,
        failure_log_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        give_up_probes: int = 3,
        give_up_s: float = 60.0,
    ) -> None:
        self.producer = producer
        self._tenants = tenants
        self._own_topics = own_topics
        self._routes = routes
        self._checks = checks
        self._counts = counts
        self._on_done = on_done
        self._owner = owner
        # Results whose reply_to write timed out, per topic, while the broker is asked (off the
        # loop thread) whether the topic is to blame.
        self._parked: dict[str, list[tuple[Raw, KafkaError]]] = {}
        self.parked_bytes = 0
        # Topics whose writes fail: their writes wait, one probes with backoff (retry_due()).
        self.failing: FailingTopics[Raw] = FailingTopics(
            f"ingest={owner}",
            retry_initial_s,
            retry_max_s,
            failure_log_interval_s,
            clock=clock,
            size_of=_size_of,
        )
        self._give_up_probes = give_up_probes
        self._give_up_s = give_up_s

    @property
    def parked(self) -> int:
        """Results waiting for the broker's word on their ``reply_to`` topic."""
        return sum(len(waiting) for waiting in self._parked.values())

    @property
    def held_bytes(self) -> int:
        """What the writes held weigh: those waiting for a failing topic (their probes
        included) and the parked ones (loop thread; O(1))."""
        return self.failing.held_bytes + self.parked_bytes

    # -- producing ----------------------------------------------------------------------------

    def countdown(self, tp: TP, offset: int, writes: int) -> Callable[[], None]:
        """Marks the record done once its ``writes`` writes are all acknowledged."""
        left = [writes]

        def one_done() -> None:
            left[0] -= 1
            if left[0] == 0:
                self._on_done(tp, offset)

        return one_done

    def produce(self, write: Raw) -> None:
        """Produce one record for an input record; it is done once the broker has it (or it is
        given up). A write for a failing topic waits for it instead."""
        if self.failing and self.failing.hold(write[2], write):
            return  # it would fail the same way: it waits for the topic's probe (retry_due)
        self.send(write)

    def send(self, write: Raw) -> None:
        """Produce ``write`` now (a failing topic's probe, or a write for a topic that works)."""
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

    def _delivered(self, write: Raw, err: KafkaError | None, _msg: Message | None) -> None:
        """The delivery report of ``write`` (the producer's callback)."""
        if err is not None:
            self._failed(write, err, refused_here=False)
            return
        if self.failing:
            for waited in self.failing.delivered(write[2]):
                self.send(waited)  # the topic works again
        countdown = write[6]
        if countdown is None:
            self._on_done(write[0], write[1])
        else:
            countdown()

    # -- failed writes --------------------------------------------------------------------------

    def _failed(self, write: Raw, err: KafkaError, *, refused_here: bool) -> None:
        """A write failed: where it goes now. ``refused_here``: by ``produce()`` itself.

        When the write was its failing topic's probe, every outcome ends the probe (see
        :mod:`rayml.delivery.retries`): a refusal as too large by the broker shows the topic
        reachable (it works again, and the result is shrunk as usual); one by the producer says
        nothing of the topic (the next write probes); a topic error on a ``reply_to`` moves
        all its waiting results to the tenant's result topic; any other failure is the probe
        failing again, with the same write, so the backoff grows.
        """
        w = Write._make(write)
        topic = w.topic
        code = err.code()
        self._counts.failed_delivery(topic, err.name())
        if code == KafkaError.MSG_SIZE_TOO_LARGE:
            if topic in self.failing:
                if refused_here:
                    self.failing.release(topic, write)
                else:
                    for waited in self.failing.delivered(topic):
                        self.send(waited)  # the broker answered: the topic is reachable
            self._too_large(w)
        elif w.ident is not None and self._is_reply_topic(topic):
            # A reply_to write failed. If the topic is to blame (e.g. it does not exist),
            # answer on the result topic rather than never: the result still names the
            # request id. Learnt once: later results for it go to the result topic at once.
            if topic in self._routes.unwritable or code in TOPIC_ERRORS:
                self._give_up_reply_topic(topic, err)
                self._send_home(write)
            elif topic in self.failing:
                self.failing.failed(topic, _why(err), write)  # the probe (or an older write)
            else:  # a timeout: the topic may be missing or the broker away; ask (hand_on)
                self._parked.setdefault(topic, []).append((write, err))
                self.parked_bytes += len(w.value)
                self._checks.ask(topic)
        else:
            # The result or dead-letter topic fails: the write waits, and the topic
            # is tried again with backoff (retry_due); its offset stays uncommitted.
            self.failing.failed(topic, _why(err), write)

    def hand_on(self, wait_s: float = 0.0) -> int:
        """Hand on the parked results whose topic question is answered; how many. An
        unwritable topic's results go to their tenant's result topic (and later results for
        it go there at once); otherwise the topic is failing (the broker, not the topic, is to
        blame) and they wait for it with backoff. Waits up to ``wait_s`` for an answer when
        one is open."""
        handed_on = 0
        for topic, why in self._checks.answered(wait_s):
            parked = self._parked.pop(topic, [])
            self.parked_bytes -= sum(len(raw[3]) for raw, _err in parked)
            if why is not None or topic in self._routes.unwritable:
                self._give_up_reply_topic(topic, why or "unwritable")
                for raw, _err in parked:
                    self._send_home(raw)
            else:
                for raw, err in parked:
                    self.failing.failed(topic, _why(err), raw)
            handed_on += len(parked)
        return handed_on

    def retry_due(self) -> None:
        """Give up on the ``reply_to`` topics still failing after ``give_up_probes`` failed
        probes or ``give_up_s`` (rayml's own topics keep waiting: nothing else can take their
        writes), and send the probes of failing topics that are due."""
        if self.failing:
            for topic in self.failing.exhausted(
                self._give_up_probes, self._give_up_s, self._is_reply_topic
            ):
                self._give_up_reply_topic(topic, "failing for too long")
            for _topic, probe in self.failing.due():
                self.send(probe)

    def forget(self, tps: set[TP]) -> int:
        """Drop the parked results and the writes waiting for a failing topic of partitions let
        go of (their new owner answers them)."""
        dropped = 0
        for topic, parked in list(self._parked.items()):
            keep = [p for p in parked if p[0][0] not in tps]
            dropped += len(parked) - len(keep)
            self.parked_bytes -= sum(len(p[0][3]) for p in parked if p[0][0] in tps)
            self._parked[topic] = keep
        return dropped + self.failing.forget(lambda w: w[0] in tps)

    def _give_up_reply_topic(self, topic: str, why: object) -> None:
        """``topic`` (a ``reply_to``) cannot be written: it is learnt (its next results go to
        their tenant's result topic at once), and every result waiting for it goes there now:
        those queued while it failed and those parked while the broker was asked."""
        if topic in self.failing:
            self._routes.give_up(topic)  # FailingTopics.give_up says it in the log
            for raw in self.failing.give_up(topic):
                self._send_home(raw)
        else:
            self._routes.learn_unwritable(topic, why)
        parked = self._parked.pop(topic, [])
        self.parked_bytes -= sum(len(raw[3]) for raw, _err in parked)
        for raw, _err in parked:
            self._send_home(raw)

    def _is_reply_topic(self, topic: str) -> bool:
        return topic not in self._own_topics

    def _send_home(self, write: Raw) -> None:
        """A result for an unwritable ``reply_to``, to its tenant's result topic."""
        w = Write._make(write)
        self.produce(w._replace(topic=self._tenants[w.tp[0]].result_topic))

    def _too_large(self, w: Write) -> None:
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
            self.produce(w._replace(value=b"", headers=stub))
            return
        rid, pipeline, attempts = w.ident
        home = self._tenants[w.tp[0]]
        if not w.shrunk:
            logger.warning("ingest=%s result of %s too large for %s", self._owner, rid, w.topic)
            answer = Answer(w.tp, rid, pipeline, attempts, home.tenant, home.result_topic)
            small = too_large_result(answer, len(w.value), w.topic)
            self.produce(w._replace(value=small, shrunk=True))
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
            self.produce(w._replace(topic=home.result_topic))
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


def _size_of(write: Raw) -> int:
    return len(write[3])


def _why(err: KafkaError) -> str:
    """A failed write's error for logs and status: its name and librdkafka's words."""
    return f"{err.name()}: {err.str()}"
