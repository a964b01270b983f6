"""rayml.tracing: which requests are traced, what their spans and their result's header say.

Spans go to the SDK's in-memory exporter here (unit tests of the logic); the OTLP/HTTP export
and the ingest's use of it are tested on a real broker in tests/integration/test_tracing.py.
"""

from __future__ import annotations

import random
import re

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rayml.config import TracingSettings
from rayml.tracing import (
    TRACEPARENT,
    TRACESTATE,
    RequestTraces,
    Tracing,
    _traces_url,
    request_trace_headers,
    trace_id_of,
)

TP = ("ml.pipeline.input", 0)
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
W3C = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def header(flags: str = "01", trace_id: str = PARENT_TRACE) -> list[tuple[str, bytes]]:
    return [(TRACEPARENT, f"00-{trace_id}-{PARENT_SPAN}-{flags}".encode())]


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def traces(exporter: InMemorySpanExporter, ratio: float) -> RequestTraces:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return RequestTraces(provider.get_tracer("test"), ratio, random.Random(7))


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    named = {s.name: s for s in spans}
    assert len(named) == len(spans), [s.name for s in spans]
    return named


def run_one(t: RequestTraces, headers: list[tuple[str, bytes]] | None, offset: int = 5) -> None:
    """One request through every step, at known wall-clock times (ms)."""
    t.begin(headers, TP, offset, "r1", "p", received_ms=1_000.0, polled_ms=1_010.0)
    t.batch_returned([(TP, offset)], 1_020.0, 1_030.0, {"rayml.worker": "w-1"})


def test_a_sampled_parent_is_continued_and_the_result_carries_the_trace(
    exported: InMemorySpanExporter,
) -> None:
    t = traces(exported, ratio=0.0)  # the parent's decision wins over the ratio
    run_one(t, header("01"))
    result = t.result_headers((TP, 5))
    assert result is not None
    t.done((TP, 5))

    spans = by_name(exported.get_finished_spans())
    assert set(spans) == {
        "rayml.request",
        "rayml.receive",
        "rayml.queue_wait",
        "rayml.compute",
        "rayml.batch",
        "rayml.result_write",
    }
    request = spans["rayml.request"]
    assert format(request.context.trace_id, "032x") == PARENT_TRACE
    assert request.parent is not None
    assert format(request.parent.span_id, "016x") == PARENT_SPAN
    assert request.kind is trace.SpanKind.CONSUMER
    assert request.attributes is not None
    assert request.attributes["messaging.destination.name"] == TP[0]
    assert request.attributes["rayml.request.id"] == "r1"
    for name in ("rayml.receive", "rayml.queue_wait", "rayml.compute", "rayml.result_write"):
        child = spans[name]
        assert child.context.trace_id == request.context.trace_id, name
        assert child.parent is not None, name
        assert child.parent.span_id == request.context.span_id, name
    # The steps' times are the ingest's: receive is time in Kafka, queue wait until dispatch.
    ms = 1_000_000
    assert (spans["rayml.receive"].start_time, spans["rayml.receive"].end_time) == (
        1_000 * ms,
        1_010 * ms,
    )
    assert (spans["rayml.queue_wait"].start_time, spans["rayml.queue_wait"].end_time) == (
        1_010 * ms,
        1_020 * ms,
    )
    assert (spans["rayml.compute"].start_time, spans["rayml.compute"].end_time) == (
        1_020 * ms,
        1_030 * ms,
    )
    # One batch serves many traces: its span is linked to each request's, and back.
    batch = spans["rayml.batch"]
    assert [link.context.span_id for link in batch.links] == [request.context.span_id]
    assert [link.context.span_id for link in spans["rayml.compute"].links] == [
        batch.context.span_id
    ]
    # The result's traceparent: the request's trace, rayml's request span, sampled.
    (name, value), *rest = result
    assert (name, rest) == (TRACEPARENT, [])
    m = W3C.fullmatch(value.decode() if isinstance(value, bytes) else str(value))
    assert m is not None
    assert m.groups()[:2] == (PARENT_TRACE, format(request.context.span_id, "016x"))
    assert int(m.group(3), 16) & 1  # sampled
    assert len(t) == 0


def test_an_unsampled_parent_is_echoed_on_the_result_and_exports_nothing(
    exported: InMemorySpanExporter,
) -> None:
    t = traces(exported, ratio=0.0)
    headers = [*header("00"), (TRACESTATE, b"vendor=1")]
    run_one(t, headers)
    assert t.result_headers((TP, 5)) == headers
    t.done((TP, 5))
    assert exported.get_finished_spans() == ()
    assert len(t) == 0


def test_the_ratio_decides_by_trace_id_as_the_sdk_would() -> None:
    """An unsampled parent is traced when its trace id's low 64 bits are under ratio x 2^64:
    every service that samples by trace id decides the same for one trace."""
    exporter = InMemorySpanExporter()
    t = traces(exporter, ratio=0.5)
    low = "0" * 16 + "7fffffffffffffff"  # just under half
    high = "0" * 16 + "8000000000000001"  # just over
    t.begin(header("00", low), TP, 1, "r", "p", 1.0, 2.0)
    t.begin(header("00", high), TP, 2, "r", "p", 1.0, 2.0)
    t.done((TP, 1))
    t.done((TP, 2))
    traced = {format(s.context.trace_id, "032x") for s in exporter.get_finished_spans()}
    assert traced == {low}


def test_without_a_header_requests_start_new_traces_at_the_ratio() -> None:
    exporter = InMemorySpanExporter()
    t = traces(exporter, ratio=0.25)
    n = 4000
    for offset in range(n):
        t.begin(None, TP, offset, "r", "p", 1.0, 2.0)
        t.done((TP, offset))
    roots = [s for s in exporter.get_finished_spans() if s.name == "rayml.request"]
    assert all(s.parent is None for s in roots)
    assert len({s.context.trace_id for s in roots}) == len(roots)
    # Binomial(4000, 0.25): mean 1000, sd ~27; 5 sd either way.
    assert 865 <= len(roots) <= 1135, len(roots)
    assert t.traced == len(roots)


def test_ratio_zero_without_a_header_costs_nothing_and_keeps_nothing() -> None:
    exporter = InMemorySpanExporter()
    t = traces(exporter, ratio=0.0)
    for offset in range(100):
        t.begin(None, TP, offset, "r", "p", 1.0, 2.0)
    assert len(t) == 0
    assert t.result_headers((TP, 3)) is None
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize(
    "value",
    [
        b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01",  # all-zero trace id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-" + b"0" * 16 + b"-01",  # all-zero span id
        b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # another version
        b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" + b"x" * 10_000,
        b"\xff\xfe not even text",
    ],
)
def test_a_malformed_traceparent_is_ignored_never_echoed(value: bytes) -> None:
    """Headers are hostile input: a bad one neither fails the request nor travels on."""
    exporter = InMemorySpanExporter()
    t = traces(exporter, ratio=0.0)
    t.begin([(TRACEPARENT, value)], TP, 1, "r", "p", 1.0, 2.0)
    assert t.result_headers((TP, 1)) is None
    t.begin([(TRACEPARENT, value)], TP, 2, "r", "p", 1.0, 2.0)
    assert trace_id_of([(TRACEPARENT, value)]) is None


def test_an_oversized_tracestate_is_not_passed_on() -> None:
    exporter = InMemorySpanExporter()
    t = traces(exporter, ratio=0.0)
    t.begin([*header("00"), (TRACESTATE, b"a=" + b"b" * 1000)], TP, 1, "r", "p", 1.0, 2.0)
    assert t.result_headers((TP, 1)) == header("00")


def test_partitions_let_go_of_end_their_spans_without_a_write(
    exported: InMemorySpanExporter,
) -> None:
    t = traces(exported, ratio=1.0)
    t.begin(header(), TP, 1, "r", "p", 1.0, 2.0)
    t.begin(header(), ("other", 0), 1, "r", "p", 1.0, 2.0)
    assert t.forget({TP}) == 1
    assert len(t) == 1
    (request,) = [s for s in exported.get_finished_spans() if s.name == "rayml.request"]
    assert request.attributes is not None
    assert request.attributes["rayml.interrupted"] == "partition let go of"
    t.close()
    assert len(t) == 0
    assert sum(s.name == "rayml.request" for s in exported.get_finished_spans()) == 2


def test_a_batch_without_traced_requests_makes_no_span(exported: InMemorySpanExporter) -> None:
    t = traces(exported, ratio=0.0)
    t.begin(header("00"), TP, 1, "r", "p", 1.0, 2.0)  # echoed, not traced
    t.batch_returned([(TP, 1), (TP, 2)], 3.0, 4.0, {})
    assert exported.get_finished_spans() == ()


def test_the_client_starts_a_new_unsampled_trace_per_request() -> None:
    ids = set()
    for _ in range(50):
        headers, trace_id = request_trace_headers()
        ((name, value),) = headers
        assert name == TRACEPARENT
        m = W3C.fullmatch(value.decode() if isinstance(value, bytes) else str(value))
        assert m is not None
        assert m.group(1) == trace_id
        assert not int(m.group(3), 16) & 1  # not sampled: rayml decides by its ratio
        assert trace_id_of(headers) == trace_id
        ids.add(trace_id)
    assert len(ids) == 50


def test_the_client_continues_the_callers_current_trace() -> None:
    provider = TracerProvider()
    with provider.get_tracer("app").start_as_current_span("handle order") as span:
        headers, trace_id = request_trace_headers()
    assert trace_id == format(span.get_span_context().trace_id, "032x")
    (_, value), *_ = headers
    m = W3C.fullmatch(value.decode() if isinstance(value, bytes) else str(value))
    assert m is not None
    assert int(m.group(3), 16) & 1


def test_tracing_is_off_without_an_endpoint() -> None:
    assert Tracing.start(TracingSettings(), "ingest") is None
    on = Tracing.start(TracingSettings(otlp_endpoint="http://127.0.0.1:4318"), "ingest")
    assert on is not None
    try:
        assert on.url == "http://127.0.0.1:4318/v1/traces"
    finally:
        on.shutdown()


def test_the_traces_url() -> None:
    assert _traces_url("http://127.0.0.1:4318/") == "http://127.0.0.1:4318/v1/traces"
    assert _traces_url("https://collector:4318/otlp/v1/traces") == (
        "https://collector:4318/otlp/v1/traces"
    )


@pytest.mark.parametrize("bad", ["127.0.0.1:4318", "ftp://x", "http://a b", ""])
def test_an_endpoint_that_is_not_an_http_url_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="otlp_endpoint"):
        TracingSettings(otlp_endpoint=bad)


def test_a_budget_bounds_the_traced_requests_per_second_sampled_parents_included() -> None:
    """A caller can mark every request sampled; the budget still bounds what tracing costs,
    and requests over it get their own header back."""
    exporter = InMemorySpanExporter()
    now = [0.0]
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    t = RequestTraces(provider.get_tracer("t"), 1.0, max_traced_per_s=10, clock=lambda: now[0])
    for offset in range(50):
        t.begin(header("01"), TP, offset, "r", "p", 1.0, 2.0)
    assert t.traced == 10
    assert t.over_budget == 40
    assert t.result_headers((TP, 49)) == header("01")  # over budget: echoed
    now[0] = 0.5  # half a second: five more
    for offset in range(50, 60):
        t.begin(None, TP, offset, "r", "p", 1.0, 2.0)
    assert t.traced == 15


@pytest.mark.parametrize(
    "state",
    [b"\xff\xfe", b"UPPER=1", b"a=b," * 40, b"k=" + b"v" * 600, b"=novalue", b"a=b\n"],
)
def test_a_tracestate_that_is_not_w3c_is_neither_echoed_nor_parsed(state: bytes) -> None:
    exporter = InMemorySpanExporter()
    t = traces(exporter, ratio=0.0)
    t.begin([*header("00"), (TRACESTATE, state)], TP, 1, "r", "p", 1.0, 2.0)
    assert t.result_headers((TP, 1)) == header("00")
    t.begin([*header("01"), (TRACESTATE, state)], TP, 2, "r", "p", 1.0, 2.0)
    (name, _), *rest = t.result_headers((TP, 2)) or []
    assert name == TRACEPARENT
    assert rest == []  # the traced request's header carries no tracestate either


def test_the_first_traceparent_of_a_record_is_the_one_read() -> None:
    exporter = InMemorySpanExporter()
    t = traces(exporter, ratio=0.0)
    other = "1" * 32
    t.begin([*header("00"), *header("01", other)], TP, 1, "r", "p", 1.0, 2.0)
    assert t.result_headers((TP, 1)) == header("00")
    assert trace_id_of([*header("00"), *header("01", other)]) == PARENT_TRACE


def test_only_a_records_first_headers_are_scanned() -> None:
    exporter = InMemorySpanExporter()
    t = traces(exporter, ratio=0.0)
    junk = [(f"h{i}", b"x") for i in range(1000)]
    t.begin([*junk, *header("01")], TP, 1, "r", "p", 1.0, 2.0)
    assert t.result_headers((TP, 1)) is None
    assert exporter.get_finished_spans() == ()


def test_a_record_timestamp_far_in_the_past_is_not_the_requests_start(
    exported: InMemorySpanExporter,
) -> None:
    t = traces(exported, ratio=1.0)
    polled_ms = 1_800_000_000_000.0
    t.begin(header(), TP, 1, "r", "p", received_ms=1.0, polled_ms=polled_ms)
    t.done((TP, 1))
    (request,) = [s for s in exported.get_finished_spans() if s.name == "rayml.request"]
    assert request.start_time == int(polled_ms * 1e6)


def test_a_header_name_that_is_not_utf8_reads_as_no_headers() -> None:
    """confluent-kafka raises on such a record's headers(): one hostile record must not stop
    a loop that reads headers."""
    from rayml.kafka.records import headers_of

    class Hostile:
        def headers(self) -> None:
            raise SystemError("<built-in method headers> returned a result with an exception")

    assert headers_of(Hostile()) == []  # type: ignore[arg-type]


def test_the_endpoints_password_is_not_shown() -> None:
    on = Tracing.start(TracingSettings(otlp_endpoint="http://u:secret@127.0.0.1:4318"), "ingest")
    assert on is not None
    try:
        assert on.url == "http://***@127.0.0.1:4318/v1/traces"
    finally:
        on.shutdown()


def test_the_client_does_not_sample_for_an_application_without_a_current_span() -> None:
    """An application with an SDK but no span open: a new trace, not sampled (rayml's ratio
    decides), not the SDK's root sampler (which samples everything by default)."""
    provider = TracerProvider()
    with provider.get_tracer("app").start_as_current_span("outer"):
        pass  # a span came and went: none is current now
    headers, _ = request_trace_headers()
    (_, value), *_ = headers
    m = W3C.fullmatch(value.decode() if isinstance(value, bytes) else str(value))
    assert m is not None
    assert not int(m.group(3), 16) & 1
