"""``rayml replay range``: re-score a time range of the request topics against a pinned version.

:func:`replay_range` reads, on every partition of each request topic, the records between the
first offset at or after ``start_ms`` and the first at or after ``stop_ms`` (``offsets_for_times``;
the partition's end at start if there is none), with a consumer of its own (``group``, never
the executor's; nothing is committed). Each request whose pipeline reads the pinned model is
copied (:mod:`rayml.replay.rewrite`: same id, ``model_version`` pinned, ``reply_to`` = the side
topic, no deadline) and produced to **the bulk lane of the topic it came from** (its tenant's
``batch_topic``: a backfill must not queue interactive callers behind it), so the executor
takes it like any request: the tenant of that topic, its checks and its pipelines apply to the
replay as to the original, and the result comes through the normal path to the side topic,
keyed by the request id. The copies carry ``rayml.replay.kind: range`` (and ``rayml.replay.from``,
``rayml.replay.pin``): a later range run skips them, whatever its window.

The side topic must be a ``reply_to`` the tenants of the topics read may name (their reply
prefix; never one of rayml's own topics): it is checked before anything is read, and created
if missing (one partition, 7 days' retention, like an output topic's).

Example:
    >>> report = replay_range(settings, start_ms=t0, stop_ms=t1,         # doctest: +SKIP
    ...     pin=parse_pin("iris@3"), to_topic="iris.replay.v3")
    >>> report.sent                                                      # doctest: +SKIP
    1500
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from confluent_kafka import KafkaError, Message

from rayml.client.kafka import read_to_end
from rayml.client.pipelines import PipelineInfo
from rayml.config import Settings
from rayml.kafka import clients as kafka_clients
from rayml.kafka.records import headers_of, timestamp_ms
from rayml.models.store import ModelStore
from rayml.models.versions import pin_verdict
from rayml.protocol.envelopes import encode_request
from rayml.replay.errors import ReplayError
from rayml.replay.letters import REPLAY_PIN, replay_headers
from rayml.replay.reading import Span, read_spans, reader, spans_between
from rayml.replay.rewrite import Pin, RangeRule, rescore, rewritten
from rayml.replay.times import format_time
from rayml.replay.topics import ensure_side_topic, room_for
from rayml.tenancy.rules import Tenancy

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_RANGE_GROUP", "RangeReport", "replay_range"]

#: The consumer group name ``replay range`` reads under, unless told another.
DEFAULT_RANGE_GROUP = "rayml-replay-range"


@dataclass
class RangeReport:
    """What one ``replay range`` run did.

    Attributes:
        pin: ``MODEL@VERSION``.
        to_topic: The side topic the copies' results go to.
        created_topic: Whether the run created it.
        start_ms: Start of the range (inclusive); ``stop_ms``: its end (exclusive).
        spans: The offsets read per partition, ``{"topic[p]": [start, stop]}``.
        read: Records read.
        sent: Copies sent, by the topic they were sent to in ``sent_to``.
        skipped: Records not re-scored, by reason (:data:`rayml.replay.rewrite.SKIP_REASONS`).
        took_s: Seconds the run took.
    """

    pin: str
    to_topic: str
    created_topic: bool
    start_ms: int
    stop_ms: int
    spans: dict[str, list[int]] = field(default_factory=dict)
    read: int = 0
    sent: int = 0
    sent_to: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    took_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object (``--json``)."""
        return {
            "pin": self.pin,
            "to_topic": self.to_topic,
            "created_topic": self.created_topic,
            "from": format_time(self.start_ms),
            "to": format_time(self.stop_ms),
            "spans": self.spans,
            "read": self.read,
            "sent": self.sent,
            "sent_to": dict(self.sent_to),
            "skipped": dict(self.skipped),
            "took_s": round(self.took_s, 3),
        }

    def lines(self) -> list[str]:
        """The report for a person."""
        out = [
            f"re-scored {format_time(self.start_ms)} .. {format_time(self.stop_ms)} against "
            f"{self.pin}: read {self.read}, sent {self.sent}, skipped "
            f"{sum(self.skipped.values())} in {self.took_s:.1f}s; results go to {self.to_topic}"
            + (" (created)" if self.created_topic else "")
        ]
        for topic, n in sorted(self.sent_to.items()):
            out.append(f"  sent to {topic}: {n}")
        for reason, n in sorted(self.skipped.items()):
            out.append(f"  skipped ({reason}): {n}")
        return out


def replay_range(
    settings: Settings,
    *,
    start_ms: int,
    stop_ms: int,
    pin: Pin,
    to_topic: str,
    pipeline: str | None = None,
    topics: list[str] | None = None,
    group: str = DEFAULT_RANGE_GROUP,
    progress: bool = False,
    timeout_s: float = 30.0,
) -> RangeReport:
    """Re-score ``[start_ms, stop_ms)`` of the request topics against ``pin`` (module doc).

    Args:
        settings: Which broker, request topics (every tenant's inference topic), registry
            topic and model store.
        start_ms: Start of the range, epoch ms (inclusive); ``stop_ms``: its end (exclusive).
        pin: The model and version to pin.
        to_topic: The side topic the results go to (created if missing).
        pipeline: Only requests of pipelines matching this fnmatch pattern.
        topics: Only these request topics (default: every tenant's inference topics, both
            lanes).
        group: The consumer group the range is read under (not the executor's).
        progress: A progress bar (tqdm, on stderr) over the offsets read.
        timeout_s: Bound of each broker call, and of a read that makes no progress.

    Raises:
        ReplayError: A bad range, group, side topic, pin or pipeline; or copies not delivered.
    """
    started = time.monotonic()
    if stop_ms <= start_ms:
        raise ReplayError(
            f"the range is empty: --to {format_time(stop_ms)} is not after "
            f"--from {format_time(start_ms)}"
        )
    if group in (settings.executor.group_id, settings.executor.jobs_group_id):
        raise ReplayError(f"group {group!r} is one of the executor's: give replay its own")
    sources = _request_topics(settings, topics, to_topic)
    tenancy = Tenancy(settings)
    # Where each source topic's copies go: its tenant's bulk lane.
    lanes = {topic: tenancy.of_topic(topic).bulk_topic for topic in sources}
    _check_pin(settings, pin)
    models = _models_of_pipelines(settings, timeout_s)
    _check_pipeline(models, pin, pipeline)
    created = ensure_side_topic(settings, to_topic, timeout_s)
    rule = RangeRule(
        pin=pin,
        reply_to=to_topic,
        start_ms=start_ms,
        stop_ms=stop_ms,
        models=models,
        max_request_bytes=settings.executor.max_request_bytes,
        pipeline=pipeline,
    )
    report = RangeReport(str(pin), to_topic, created, start_ms, stop_ms)
    consumer = reader(settings.kafka, group)
    producer = kafka_clients.producer(
        settings.kafka, **kafka_clients.RESULT_BATCHING, **room_for(settings)
    )
    failed: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failed.append(f"{msg.topic()}: {err.str()}")

    try:
        spans: list[Span] = []
        for topic in sources:
            spans += spans_between(consumer, topic, start_ms, stop_ms, timeout_s, settings.kafka)
        report.spans = {str(s): [s.start, s.stop] for s in spans}
        bar = _bar(sum(s.size for s in spans), progress)
        try:
            for batch in read_spans(consumer, spans, stall_s=timeout_s):
                for msg in batch:
                    report.read += 1
                    _send(msg, rule, report, producer, on_delivery, lanes)
                producer.poll(0)
                bar.update(len(batch))
                bar.set_postfix(sent=report.sent, skipped=sum(report.skipped.values()))
        finally:
            bar.close()
        left = producer.flush(timeout_s)
    finally:
        consumer.close()
    if left or failed:
        raise ReplayError(
            f"{len(failed) + left} of {report.sent} replayed requests were not delivered "
            f"(e.g. {failed[:3] or 'timed out'}); a rerun sends the range again"
        )
    report.took_s = time.monotonic() - started
    logger.info("replay range: %s", report.lines()[0])
    return report


def _send(
    msg: Message,
    rule: RangeRule,
    report: RangeReport,
    producer: Any,
    cb: Any,
    lanes: dict[str, str],
) -> None:
    headers = headers_of(msg)
    request = rescore(msg.value(), headers, int(timestamp_ms(msg)), rule)
    if isinstance(request, str):
        report.skipped[request] += 1
        return
    topic: str = msg.topic()  # type: ignore[assignment]
    copy = rewritten(request, rule, now_ms=int(time.time() * 1000))
    value = encode_request(copy)
    headers = replay_headers(
        headers,
        kind="range",
        topic=topic,
        partition=msg.partition(),  # type: ignore[arg-type]
        offset=msg.offset(),  # type: ignore[arg-type]
        extra=[(REPLAY_PIN, str(rule.pin).encode())],
    )
    to = lanes[topic]
    while True:
        try:
            producer.produce(to, value=value, key=msg.key(), headers=headers, on_delivery=cb)
            break
        except BufferError:  # the local queue is full: let deliveries drain it
            producer.poll(0.1)
    report.sent += 1
    report.sent_to[to] += 1


def _request_topics(settings: Settings, topics: list[str] | None, to_topic: str) -> list[str]:
    """The inference request topics to read; each one's tenant must accept ``to_topic`` as a
    ``reply_to``, or its copies' results would go to the tenant's result topic instead."""
    tenancy = Tenancy(settings)
    known = tenancy.input_topics
    chosen = topics or known
    unknown = [t for t in chosen if t not in known]
    if unknown:
        raise ReplayError(
            f"{', '.join(unknown)}: not an inference request topic of these settings "
            f"({', '.join(known)})"
        )
    for topic in chosen:
        refusal = tenancy.reply_to_refusal(tenancy.of_topic(topic), to_topic)
        if refusal is not None:
            raise ReplayError(f"--to-topic refused for the requests of {topic}: {refusal}")
    return list(chosen)


def _check_pin(settings: Settings, pin: Pin) -> None:
    store = ModelStore(settings.models.root, allow_pickle=settings.models.allow_pickle)
    verdict = pin_verdict(
        store, pin.model, pin.version, allow_unpromoted=settings.models.allow_unpromoted_pins
    )
    if verdict == "not_found":
        raise ReplayError(f"model {pin.model!r} has no version {pin.version} in the store")
    if verdict == "not_allowed":
        raise ReplayError(
            f"{pin} was never promoted, so requests may not pin it (promote it with "
            "`rayml models promote`, or set models.allow_unpromoted_pins)"
        )


def _models_of_pipelines(settings: Settings, timeout_s: float) -> dict[str, str]:
    """Inference pipeline -> the model it reads, as the executors published them."""
    models: dict[str, str] = {}
    for value in read_to_end(settings.kafka, settings.topics.registry, timeout_s).values():
        if value is None:
            continue  # a tombstone: the pipeline was withdrawn
        try:
            info = PipelineInfo.from_description(json.loads(value))
        except (ValueError, KeyError, TypeError):
            continue  # not a description: `rayml pipelines` warns about it
        if info.kind == "inference":
            models[info.name] = info.model
    return models


def _check_pipeline(models: dict[str, str], pin: Pin, pipeline: str | None) -> None:
    reading = sorted(name for name, model in models.items() if model == pin.model)
    if not reading:
        raise ReplayError(
            f"no published inference pipeline reads model {pin.model!r} (is an executor "
            "running? `rayml pipelines` lists what it published)"
        )
    if pipeline is not None and not any(fnmatchcase(name, pipeline) for name in reading):
        raise ReplayError(
            f"--pipeline {pipeline!r} matches no pipeline that reads model {pin.model!r} "
            f"({', '.join(reading)})"
        )


def _bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="rec", file=sys.stderr, disable=not enabled, desc="replay")
