"""Request tracing end to end, on the real broker and Ray, exported over OTLP/HTTP to a real
receiver on 127.0.0.1 (tests/support/otlp.py): a request's ``traceparent`` continues through
the ingest into spans and onto its result; with tracing off nothing is read or exported.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from opentelemetry.sdk.trace import TracerProvider

from rayml.client import Client
from rayml.config import Settings
from rayml.executor.service import Executor
from rayml.kafka.topics import create_topics
from rayml.tracing import trace_id_of
from tests.support.kafka_io import CLIENT_LOG, predict_request
from tests.support.models import breast_cancer_rows, store_breast_cancer
from tests.support.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

W3C = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
STEPS = {"rayml.receive", "rayml.queue_wait", "rayml.compute", "rayml.result_write"}
N = 15  # requests of each kind


def traceparent(sampled: bool) -> tuple[bytes, str, str]:
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}".encode(), trace_id, span_id


def send(
    settings: Settings, requests: list[tuple[dict[str, Any], list[tuple[str, bytes]]]]
) -> None:
    producer = Producer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "logger": CLIENT_LOG}
    )
    for request, headers in requests:
        producer.produce(
            settings.topics.input,
            value=json.dumps(request).encode(),
            key=request["id"].encode(),
            headers=headers or None,
        )
    assert producer.flush(30) == 0


def read_results(settings: Settings, ids: set[str]) -> dict[str, tuple[dict[str, Any], Any]]:
    """Every result of ``ids`` with its record's headers (one each: asserted)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "logger": CLIENT_LOG,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topics.output])
    got: dict[str, tuple[dict[str, Any], Any]] = {}

    def all_read() -> bool:
        for msg in consumer.consume(500, timeout=0.5):
            if msg.error() is None:
                result = json.loads(msg.value())
                assert result["id"] not in got, f"{result['id']} answered twice"
                got[result["id"]] = (result, msg.headers())
        return ids <= got.keys()

    try:
        wait_until(all_read, f"{len(ids)} results are read", timeout_s=120)
    finally:
        consumer.close()
    return got


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as r:
        yield r


@pytest.fixture
def traced_executor(
    settings: Settings, ray_runtime: str, receiver: OtlpReceiver
) -> Iterator[tuple[Settings, Executor]]:
    """An executor exporting spans to ``receiver``, tracing only requests whose parent is
    sampled (sample_ratio 0)."""
    s = settings.model_copy(
        update={
            "tracing": settings.tracing.model_copy(
                update={"otlp_endpoint": receiver.url, "sample_ratio": 0.0}
            )
        }
    )
    store_breast_cancer(s.models.root)
    create_topics(s.kafka, s.topics)
    executor = Executor(s)
    executor.start()
    try:
        yield s, executor
    finally:
        executor.drain(10)


def spans_of(receiver: OtlpReceiver, trace_ids: set[str]) -> dict[str, list[ReceivedSpan]]:
    by_trace: dict[str, list[ReceivedSpan]] = {t: [] for t in trace_ids}
    for span in receiver.spans:
        if span.trace_id in by_trace:
            by_trace[span.trace_id].append(span)
    return by_trace


def test_a_requests_trace_continues_through_rayml_to_its_result(
    traced_executor: tuple[Settings, Executor], receiver: OtlpReceiver
) -> None:
    settings, executor = traced_executor
    rows = breast_cancer_rows(3 * N).tolist()
    sampled: dict[str, tuple[str, str]] = {}  # request id -> (trace id, caller's span id)
    unsampled: dict[str, bytes] = {}  # request id -> the traceparent it was sent with
    bare: set[str] = set()
    requests: list[tuple[dict[str, Any], list[tuple[str, bytes]]]] = []
    for i, row in enumerate(rows):
        rid = f"r{i}-{uuid.uuid4().hex[:6]}"
        if i % 3 == 0:
            value, trace_id, span_id = traceparent(sampled=True)
            sampled[rid] = (trace_id, span_id)
            requests.append((predict_request(rid, row), [("traceparent", value)]))
        elif i % 3 == 1:
            value, _, _ = traceparent(sampled=False)
            unsampled[rid] = value
            headers = [("traceparent", value), ("tracestate", b"vendor=abc")]
            requests.append((predict_request(rid, row), headers))
        else:
            bare.add(rid)
            requests.append((predict_request(rid, row), []))
    send(settings, requests)
    results = read_results(settings, set(sampled) | set(unsampled) | bare)
    assert all(result["status"] == "ok" for result, _ in results.values())

    # Every sampled request's trace reaches the receiver: its request span under the caller's
    # span, the four steps under it, and the batch that served it.
    trace_ids = {trace_id for trace_id, _ in sampled.values()}

    def complete() -> bool:
        traces = spans_of(receiver, trace_ids)
        return all(STEPS | {"rayml.request"} <= {s.name for s in t} for t in traces.values())

    wait_until(complete, f"the spans of {len(trace_ids)} sampled requests are received", 60)
    batches = {s.span_id: s for s in receiver.spans if s.name == "rayml.batch"}
    for rid, (trace_id, caller_span) in sampled.items():
        spans = spans_of(receiver, {trace_id})[trace_id]
        (request,) = [s for s in spans if s.name == "rayml.request"]
        assert request.parent_span_id == caller_span
        assert request.attributes["rayml.request.id"] == rid
        assert request.attributes["messaging.destination.name"] == settings.topics.input
        assert request.attributes["rayml.status"] == "ok"
        assert request.resource["service.name"] == "rayml"
        for step in STEPS:
            (child,) = [s for s in spans if s.name == step]
            assert child.parent_span_id == request.span_id, step
            assert request.start_ns <= child.start_ns <= child.end_ns <= request.end_ns, step
        (compute,) = [s for s in spans if s.name == "rayml.compute"]
        ((_, batch_id),) = compute.links
        assert (trace_id, request.span_id) in batches[batch_id].links
        # Its result carries the trace: rayml's request span, sampled.
        _, headers = results[rid]
        (value,) = [v for k, v in headers or () if k == "traceparent"]
        m = W3C.fullmatch(value)
        assert m is not None
        assert (m.group(1).decode(), m.group(2).decode()) == (trace_id, request.span_id)
        assert int(m.group(3), 16) & 1

    # Not sampled (ratio 0): nothing exported, the caller's own headers back on the result.
    unsampled_traces = {trace_id_of([("traceparent", v)]) for v in unsampled.values()}
    assert not [s for s in receiver.spans if s.trace_id in unsampled_traces]
    for rid, value in unsampled.items():
        _, headers = results[rid]
        assert headers == [("traceparent", value), ("tracestate", b"vendor=abc")]
    # No header and not drawn: no trace at all, no header on the result.
    for rid in bare:
        assert results[rid][1] is None
    assert sum(s.name == "rayml.request" for s in receiver.spans) == len(sampled)
    (status,) = executor.status()
    assert status["tracing"]["traced"] == len(sampled)
    assert status["tracing"]["open"] == 0  # every request's entry ended with its record
    assert status["tracing"]["endpoint"] == f"{receiver.url}/v1/traces"

    # The Python client's request: within the caller's span, the caller's trace continues.
    with Client(settings=settings) as client:
        with TracerProvider().get_tracer("app").start_as_current_span("checkout") as caller:
            future = client.submit("breast_cancer.predict", features=rows[0])
        assert future.result(60).status == "ok"
    caller_trace = format(caller.get_span_context().trace_id, "032x")
    assert future.trace_id == caller_trace
    (request,) = wait_until(
        lambda: [s for s in receiver.trace(caller_trace) if s.name == "rayml.request"],
        "the client's request span is received",
        30,
    )
    assert request.parent_span_id == format(caller.get_span_context().span_id, "016x")


def test_with_tracing_off_no_header_is_read_or_written(
    settings: Settings, ray_runtime: str
) -> None:
    """No endpoint: no tracing in the ingest, and results carry no header, even for a sampled
    request (the unit tests hold that no endpoint builds no exporter)."""
    store_breast_cancer(settings.models.root)
    create_topics(settings.kafka, settings.topics)
    executor = Executor(settings)
    executor.start()
    try:
        rows = breast_cancer_rows(N).tolist()
        ids = {f"off{i}-{uuid.uuid4().hex[:6]}" for i in range(N)}
        send(
            settings,
            [
                (predict_request(rid, row), [("traceparent", traceparent(sampled=True)[0])])
                for rid, row in zip(sorted(ids), rows, strict=True)
            ],
        )
        results = read_results(settings, ids)
        (status,) = executor.status()
    finally:
        executor.drain(10)
    assert all(result["status"] == "ok" for result, _ in results.values())
    assert all(headers is None for _, headers in results.values())
    assert "tracing" not in status
