"""``rayml replay dlq``: send dead letters back to the topics they came from, each once.

After a fix (a pipeline deployed again, a model restored, a worker's memory raised), the
letters on the dead-letter topic can be answered. :func:`replay_dlq` reads the dead-letter topic
from where its consumer group (``group``, default ``rayml-replay-dlq``) left off to the end it
finds at start, and judges each letter (:func:`rayml.replay.letters.judge_letter`): replayed
to the bulk lane of its ``rayml.source.topic``'s tenant (a training request to its training
topic), skipped by the filter, or refused.

**Each letter is replayed at most once per group, even across crashes and reruns.** The letters
are handled in chunks; each chunk is one Kafka transaction that writes its replayed records
*and* commits the group's offsets past the chunk (``send_offsets_to_transaction``). Either both
happen or neither: a run that crashes mid-chunk leaves that chunk's copies aborted (never
read by ``read_committed`` consumers such as the executor) and its offsets uncommitted, so the
next run redoes exactly that chunk. The producer's ``transactional.id`` is fixed per group and
dead-letter topic (``rayml-replay.<group>.<dlq topic>``): a new run fences an old one still
running (its next commit fails) and aborts its open transaction before reading where to start.

Skipped letters are committed too: a letter the filter left out is *not* replayed by a later
run of the same group (another ``group`` starts from the beginning of the topic). A refused
letter stops the run, after committing the letters before it, unless ``skip_refused``, which
commits past it like a skipped one. ``dry_run`` reads from the group's position, writes and
commits nothing, and says what a run would do.

Example:
    >>> report = replay_dlq(settings, letters=LetterFilter(                # doctest: +SKIP
    ...     error_types=frozenset({"retries_exhausted"})))
    >>> report.replayed                                                     # doctest: +SKIP
    12
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from rayml.config import Settings
from rayml.kafka import clients as kafka_clients
from rayml.kafka.records import headers_of, timestamp_ms
from rayml.replay.errors import LetterRefusedError, ReplayError
from rayml.replay.letters import LetterFilter, judge_letter, replay_headers, replay_targets
from rayml.replay.reading import Span, read_spans, reader, watermarks
from rayml.replay.topics import room_for

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_DLQ_GROUP", "DlqReport", "replay_dlq", "transactional_id"]

#: The consumer group ``replay dlq`` commits its progress under, unless told another.
DEFAULT_DLQ_GROUP = "rayml-replay-dlq"


def transactional_id(group: str, dlq_topic: str) -> str:
    """The ``transactional.id`` of ``group``'s runs on ``dlq_topic``: one per group and topic,
    so that a run fences the one before it.

    Example:
        >>> transactional_id("rayml-replay-dlq", "ml.pipeline.dlq")
        'rayml-replay.rayml-replay-dlq.ml.pipeline.dlq'
    """
    return f"rayml-replay.{group}.{dlq_topic}"


@dataclass
class DlqReport:
    """What one ``replay dlq`` run did (or, with ``dry_run``, would do).

    Attributes:
        group: The consumer group whose offsets the run committed.
        dlq_topic: The dead-letter topic read.
        dry_run: Nothing was written or committed.
        read: Letters read.
        replayed: Letters replayed (or to replay, with ``dry_run``).
        replayed_by_type: Replayed letters by ``rayml.error.type``.
        replayed_to: Replayed letters by the topic they were written to.
        skipped: Letters the filter left out, by reason (``error_type``, ``before_since``,
            ``at_or_after_until``).
        refused: Letters refused, by reason (committed past only with ``skip_refused``).
        committed: The group's offsets after the run, ``{"topic[p]": offset}`` (the position
            reached, with ``dry_run``).
        took_s: Seconds the run took.
    """

    group: str
    dlq_topic: str
    dry_run: bool
    read: int = 0
    replayed: int = 0
    replayed_by_type: Counter[str] = field(default_factory=Counter)
    replayed_to: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    committed: dict[str, int] = field(default_factory=dict)
    took_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object (``--json``)."""
        return {
            "group": self.group,
            "dlq_topic": self.dlq_topic,
            "dry_run": self.dry_run,
            "read": self.read,
            "replayed": self.replayed,
            "replayed_by_type": dict(self.replayed_by_type),
            "replayed_to": dict(self.replayed_to),
            "skipped": dict(self.skipped),
            "refused": dict(self.refused),
            "committed": self.committed,
            "took_s": round(self.took_s, 3),
        }

    def lines(self) -> list[str]:
        """The report for a person."""
        verb = "would replay" if self.dry_run else "replayed"
        out = [
            f"{self.dlq_topic} (group {self.group}): read {self.read}, {verb} {self.replayed}, "
            f"skipped {sum(self.skipped.values())}, refused {sum(self.refused.values())} "
            f"in {self.took_s:.1f}s"
        ]
        for topic, n in sorted(self.replayed_to.items()):
            out.append(f"  {verb} to {topic}: {n}")
        for kind, n in sorted(self.replayed_by_type.items()):
            out.append(f"  {verb} {kind}: {n}")
        for reason, n in sorted(self.skipped.items()):
            out.append(f"  skipped ({reason}): {n}")
        for reason, n in sorted(self.refused.items()):
            out.append(f"  refused ({reason}): {n}")
        where = ", ".join(f"{tp} {o}" for tp, o in sorted(self.committed.items()))
        out.append(f"  {'position' if self.dry_run else 'committed'}: {where or 'nothing'}")
        return out


def replay_dlq(
    settings: Settings,
    *,
    group: str = DEFAULT_DLQ_GROUP,
    letters: LetterFilter | None = None,
    dry_run: bool = False,
    limit: int | None = None,
    skip_refused: bool = False,
    chunk: int = 500,
    timeout_s: float = 30.0,
) -> DlqReport:
    """Replay the dead letters of ``settings.topics.dlq`` (see the module doc).

    Args:
        settings: Which broker, dead-letter topic and request topics (the replay targets).
        group: The consumer group that remembers which letters were handled.
        letters: Which letters to replay (default: all).
        dry_run: Write and commit nothing; report what would be replayed.
        limit: Replay at most this many letters (the rest wait for the next run).
        skip_refused: Commit past refused letters instead of stopping at the first.
        chunk: Letters per transaction.
        timeout_s: Bound of each broker call, and of a read that makes no progress.

    Raises:
        LetterRefusedError: A letter may not be replayed (``skip_refused`` off).
        ReplayError: ``group`` is the executor's, or a transaction failed (its chunk is then
            neither written nor committed).
    """
    started = time.monotonic()
    if group in (settings.executor.group_id, settings.executor.jobs_group_id):
        raise ReplayError(f"group {group!r} is one of the executor's: give replay its own")
    dlq = settings.topics.dlq
    run = _Run(
        report=DlqReport(group=group, dlq_topic=dlq, dry_run=dry_run),
        consumer=reader(settings.kafka, group),
        letters=letters or LetterFilter(),
        targets=replay_targets(settings),
        limit=limit,
        skip_refused=skip_refused,
        timeout_s=timeout_s,
    )
    try:
        if not dry_run:
            run.producer = kafka_clients.transactional_producer(
                settings.kafka,
                transactional_id(group, dlq),
                timeout_s=max(60.0, timeout_s),
                **room_for(settings),
            )
            # Fences an earlier run of this group and aborts what it left open, so the offsets
            # read next are those of its committed chunks, and nothing of its open one.
            try:
                run.producer.init_transactions(timeout_s)
            except KafkaException as exc:
                raise ReplayError(
                    f"cannot start transactions as {transactional_id(group, dlq)!r} on "
                    f"{settings.kafka.bootstrap_servers}: {exc}"
                ) from exc
        spans = _from_committed(run.consumer, settings, timeout_s)
        run.report.committed = {str(span): span.start for span in spans}
        for batch in read_spans(run.consumer, spans, chunk=chunk, stall_s=timeout_s):
            if run.handle(batch):
                break
    finally:
        run.consumer.close()
        run.report.took_s = time.monotonic() - started
    logger.info("replay dlq: %s", run.report.lines()[0])
    return run.report


def _from_committed(consumer: Consumer, settings: Settings, timeout_s: float) -> list[Span]:
    """Each dead-letter partition from the group's committed offset (else its beginning) to
    its end now."""
    dlq = settings.topics.dlq
    marks = watermarks(consumer, dlq, timeout_s, settings.kafka)
    committed = consumer.committed([TopicPartition(dlq, p) for p in marks], timeout=timeout_s)
    spans = []
    for tp in committed:
        if tp.error is not None:
            raise ReplayError(
                f"cannot read the committed offset of {dlq}[{tp.partition}]: {tp.error}"
            )
        low, high = marks[tp.partition]
        spans.append(Span(dlq, tp.partition, max(tp.offset, low), high))
    return spans


@dataclass
class _Run:
    """One run's state: the chunks it handled and the clients it handles them with."""

    report: DlqReport
    consumer: Consumer
    letters: LetterFilter
    targets: dict[str, str]
    limit: int | None
    skip_refused: bool
    timeout_s: float
    producer: Producer | None = None

    def handle(self, batch: list[Message]) -> bool:
        """Judge, replay and commit one chunk in one transaction; True once ``limit`` is
        reached (the rest waits for the next run).

        Raises:
            LetterRefusedError: After committing the letters before the refused one.
            ReplayError: The transaction failed; nothing of this chunk is written or committed.
        """
        report, producer = self.report, self.producer
        offsets: dict[tuple[str, int], int] = {}
        refused: LetterRefusedError | None = None
        full = False
        if producer is not None:
            producer.begin_transaction()
        try:
            for msg in batch:
                if self.limit is not None and report.replayed >= self.limit:
                    full = True
                    break
                topic: str = msg.topic()  # type: ignore[assignment]
                partition: int = msg.partition()  # type: ignore[assignment]
                offset: int = msg.offset()  # type: ignore[assignment]
                headers = headers_of(msg)
                verdict = judge_letter(headers, int(timestamp_ms(msg)), self.letters, self.targets)
                report.read += 1
                if verdict.action == "refuse":
                    report.refused[verdict.reason] += 1
                    if not self.skip_refused:
                        refused = LetterRefusedError(topic, partition, offset, verdict.reason)
                        break
                elif verdict.action == "skip":
                    report.skipped[verdict.reason] += 1
                else:
                    letter = verdict.letter
                    assert letter is not None  # a replay verdict carries its letter
                    if producer is not None:
                        producer.produce(
                            verdict.to,
                            value=msg.value(),
                            key=msg.key(),
                            headers=replay_headers(
                                headers, kind="dlq", topic=topic, partition=partition, offset=offset
                            ),
                        )
                    report.replayed += 1
                    report.replayed_by_type[letter.error_type] += 1
                    report.replayed_to[verdict.to] += 1
                offsets[(topic, partition)] = offset + 1
            if producer is not None:
                if offsets:
                    producer.send_offsets_to_transaction(
                        [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                        self.consumer.consumer_group_metadata(),
                        self.timeout_s,
                    )
                producer.commit_transaction(self.timeout_s)
        except KafkaException as exc:
            _abort(producer, self.timeout_s)
            raise ReplayError(
                f"replaying {len(batch)} dead letters failed, none of them written or "
                f"committed (the next run redoes them): {exc}"
            ) from exc
        report.committed.update({f"{t}[{p}]": o for (t, p), o in offsets.items()})
        if refused is not None:
            raise refused
        return full


def _abort(producer: Producer | None, timeout_s: float) -> None:
    """Abort the open transaction if the producer still can; a fenced or failed one cannot,
    and the broker aborts its transaction at the timeout (or the next run's start does)."""
    if producer is None:
        return
    try:
        producer.abort_transaction(timeout_s)
    except KafkaException as exc:
        logger.warning("could not abort the replay transaction: %s", exc)
