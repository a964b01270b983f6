"""Request tracing: W3C trace context carried across Kafka, spans exported over OTLP/HTTP.

A request's ``traceparent``/``tracestate`` Kafka headers (W3C Trace Context) continue through
rayml: the ingest opens a ``rayml.request`` span as a child of the caller's span and, under it,
``rayml.receive`` (record timestamp to poll: the time in Kafka), ``rayml.queue_wait`` (poll to
dispatch: batch wait, queueing behind full batches), ``rayml.compute`` (dispatch to the batch's
return; linked to the ``rayml.batch`` span that one micro-batch has, which links back to every
traced request it served) and ``rayml.result_write`` (answer to the broker's acknowledgement,
or to the transaction's commit in exactly-once). The result record carries a ``traceparent``
header in the request's trace. Spans go to an OTLP/HTTP receiver through the OpenTelemetry SDK
(a batching span processor with a bounded queue: a slow or absent receiver drops spans, never
stalls the ingest).

Sampling: a request whose ``traceparent`` says *sampled* is always traced; one whose parent is
not sampled is traced at ``sample_ratio``, decided by its trace id (so every service that
samples by trace id makes the same choice); one without a header (or with a malformed one, which
is ignored) starts a new trace at ``sample_ratio``. A request that is not traced but carried a
valid ``traceparent`` gets it back on its result unchanged, so callers can still correlate.

Cost: with no ``otlp_endpoint`` the ingest has no :class:`RequestTraces` and reads no header.
With one, an untraced request costs a header scan (and a dict entry while in flight when it has
a header); spans are built only for the sampled ones, their timestamps taken from what the ingest
records anyway. Clients start a trace per request with :func:`request_trace_headers`.

Imports OpenTelemetry only (no Ray, no Kafka client).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import (
    INVALID_SPAN,
    INVALID_SPAN_CONTEXT,
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from rayml.config import TracingSettings

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "RequestTraces",
    "Tracing",
    "request_trace_headers",
    "trace_id_of",
]

logger = logging.getLogger(__name__)

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
# Version 00 exactly (W3C Trace Context, level 1); a longer or other value is not echoed.
_TRACEPARENT = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE: Final = b"0" * 32
_ZERO_SPAN: Final = b"0" * 16
_ODD_HEX: Final = frozenset(b"13579bdf")  # a last flags digit with the sampled bit set
_MAX_TRACESTATE: Final = 512
_MAX_HEADERS_SCANNED: Final = 32  # a record's first headers only: their number is unbounded
# W3C tracestate: 1 to 32 members "key=value", comma-separated (optional blanks around commas).
_TS_KEY = rb"(?:[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}|[a-z][_0-9a-z\-*/]{0,255})"
_TS_VALUE = rb"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_TS_MEMBER = _TS_KEY + rb"=" + _TS_VALUE
_TRACESTATE = re.compile(
    rb"[ \t]*" + _TS_MEMBER + rb"(?:[ \t]*,[ \t]*" + _TS_MEMBER + rb"){0,31}[ \t]*"
)
# An older record timestamp is taken as the poll's (a producer's clock far off).
_MAX_AGE_MS: Final = 7 * 86_400_000
_PROPAGATOR: Final = TraceContextTextMapPropagator()
_IDS: Final = RandomIdGenerator()
# A proxy: it follows the global tracer provider the caller's application sets, even later.
_CLIENT_TRACER: Final = trace.get_tracer("rayml.client")

# As rayml.kafka.records.Headers (a record's headers as confluent-kafka takes them).
Headers = list[tuple[str, str | bytes | None]]
Key = tuple[tuple[str, int], int]  # ((topic, partition), offset)


def trace_id_of(headers: Iterable[tuple[str, bytes | str | None]] | None) -> str | None:
    """The trace id (32 hex digits) of a record's valid ``traceparent`` header, else ``None``.

    Example:
        >>> trace_id_of([("traceparent", b"00-" + b"ab" * 16 + b"-" + b"cd" * 8 + b"-01")])
        'abababababababababababababababab'
    """
    for name, value in headers or ():
        if name == TRACEPARENT and value is not None:
            raw = value.encode() if isinstance(value, str) else value
            m = _TRACEPARENT.fullmatch(raw)
            if m is not None and m.group(1) != _ZERO_TRACE and m.group(2) != _ZERO_SPAN:
                return m.group(1).decode()
    return None


def request_trace_headers(name: str = "rayml.send") -> tuple[Headers, str]:
    """The headers that start a request's trace, and its trace id (for the caller's future).

    Within a span of the caller's own OpenTelemetry tracing, the request is a PRODUCER span
    ``name`` in that trace (ended at once: it marks the send), with the caller's sampling
    decision. Without one (no SDK configured, or no current span), a fresh trace id and span
    id with the *not sampled* flag: rayml then traces it at its own ``sample_ratio``.
    """
    ctx = INVALID_SPAN_CONTEXT
    span: Span = INVALID_SPAN
    if trace.get_current_span().get_span_context().is_valid:
        # Within the caller's own trace: a span of its tracer (its SDK decides sampling).
        span = _CLIENT_TRACER.start_span(name, kind=SpanKind.PRODUCER)
        ctx = span.get_span_context()
        span.end()
    if not ctx.is_valid:
        ctx = SpanContext(
            _IDS.generate_trace_id(),
            _IDS.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.DEFAULT),
        )
        span = NonRecordingSpan(ctx)
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return [(k, v.encode()) for k, v in carrier.items()], format(ctx.trace_id, "032x")


def _traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a receiver's base URL (``/v1/traces`` added to a bare one).

    Example:
        >>> _traces_url("http://127.0.0.1:4318"), _traces_url("http://c:4318/custom/path")
        ('http://127.0.0.1:4318/v1/traces', 'http://c:4318/custom/path')
    """
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return parts._replace(path="/v1/traces").geturl()
    return endpoint


def _shown(url: str) -> str:
    """``url`` without its user and password, for logs and status.

    Example:
        >>> _shown("https://user:secret@collector:4318/v1/traces")
        'https://***@collector:4318/v1/traces'
    """
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


class Tracing:
    """One process's span export: a tracer over a batching OTLP/HTTP exporter.

    Build it with :meth:`start`, which returns ``None`` while tracing is off.
    """

    def __init__(self, settings: TracingSettings, component: str, **resource: str) -> None:
        # Imported here: the exporter pulls in an HTTP stack the clients never need.
        import requests
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        assert settings.otlp_endpoint is not None
        self._url = _traces_url(settings.otlp_endpoint)
        self.url = _shown(self._url)  # for logs and status
        self.sample_ratio = settings.sample_ratio
        self.max_traced_per_s = settings.max_traced_per_s
        self.provider = TracerProvider(
            resource=Resource.create(
                {"service.name": settings.service_name, "rayml.component": component, **resource}
            ),
            # Sampling is decided before a span is started (RequestTraces.begin), cheaply.
            sampler=ALWAYS_ON,
        )
        # Spans go to the endpoint as configured: not through a proxy from the environment.
        session = requests.Session()
        session.trust_env = False
        self._exporter = OTLPSpanExporter(endpoint=self._url, timeout=2, session=session)
        self._processor = BatchSpanProcessor(self._exporter, schedule_delay_millis=1000)
        self.provider.add_span_processor(self._processor)
        self.tracer = self.provider.get_tracer("rayml")

    @classmethod
    def start(cls, settings: TracingSettings, component: str, **resource: str) -> Tracing | None:
        """Tracing for this process, or ``None`` when no ``otlp_endpoint`` is set."""
        if settings.otlp_endpoint is None:
            return None
        tracing = cls(settings, component, **resource)
        logger.info(
            "tracing: %s spans to %s (sampling %.4g of requests without a sampled parent)",
            component,
            tracing.url,
            tracing.sample_ratio,
        )
        return tracing

    def shutdown(self, flush_s: float = 2.0) -> None:
        """Export what is queued for up to ``flush_s`` (plus one export's 2 s timeout at
        most), then stop; what is left is dropped."""
        self._processor.force_flush(timeout_millis=int(flush_s * 1000))
        self._exporter.shutdown()  # type: ignore[no-untyped-call]  # exports now fail at once
        self.provider.shutdown()


@dataclass(slots=True)
class _Open:
    """One traced request in flight."""

    span: Span  # its rayml.request span
    polled_ns: int
    answered_ns: int = 0
    headers: Headers | None = None  # traced: the result's, once built


class RequestTraces:
    """The ingest's traces of the requests it holds, by (partition, offset). Loop thread only.

    The ingest calls :meth:`begin` for each decoded request, :meth:`batch_returned` when a
    micro-batch comes back, :meth:`result_headers` when it writes a result, :meth:`done` when
    the record is done (acknowledged, or committed), and :meth:`forget` for partitions it lets
    go of. Holds at most one entry per record in flight (the in-flight window bounds those).
    """

    def __init__(
        self,
        tracer: trace.Tracer,
        sample_ratio: float,
        rand: random.Random | None = None,
        *,
        max_traced_per_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tracer = tracer
        self.ratio = sample_ratio
        # A budget of traced requests (sampled parents included: callers choose those), so that
        # no caller can make tracing cost more than this; over it, requests are echoed.
        self._rate = max_traced_per_s
        self._tokens = max_traced_per_s or 0.0
        self._refilled = clock()
        self._clock = clock
        self.over_budget = 0  # requests due a trace that the budget turned down
        # TraceIdRatioBased's rule: traced when the trace id's low 64 bits are below this.
        self._bound = round(self.ratio * (1 << 64))
        self._random = (rand or random.Random()).random
        self._open: dict[Key, _Open] = {}  # traced
        self._echo: dict[Key, Headers] = {}  # not traced: the caller's headers, for the result
        self.traced = 0  # requests given a rayml.request span

    def __len__(self) -> int:
        return len(self._open) + len(self._echo)

    def begin(
        self,
        headers: Sequence[tuple[str, str | bytes | None]] | None,
        tp: tuple[str, int],
        offset: int,
        request_id: str,
        pipeline: str,
        received_ms: float,
        polled_ms: float,
    ) -> None:
        """A decoded request arrived: trace it (or note its header to echo) when it is due.

        The path of most requests (a header not sampled, or none) is kept short: one regex
        match, slices of the matched bytes, one dict entry.
        """
        key = (tp, offset)
        if self._open:
            old = self._open.pop(key, None)
            if old is not None:
                self._end(old, "polled again")
        parent_tp = parent_ts = None
        if headers:
            for name, value in headers[:_MAX_HEADERS_SCANNED]:
                if name == TRACEPARENT:
                    if parent_tp is None:  # the first one (as trace_id_of reads it)
                        parent_tp = value.encode() if isinstance(value, str) else value
                elif name == TRACESTATE and parent_ts is None:
                    parent_ts = value.encode() if isinstance(value, str) else value
            if parent_ts is not None and (
                len(parent_ts) > _MAX_TRACESTATE or _TRACESTATE.fullmatch(parent_ts) is None
            ):
                parent_ts = None  # not W3C: neither passed on nor parsed
        context = None
        if (
            parent_tp is not None
            and _TRACEPARENT.fullmatch(parent_tp) is not None
            and parent_tp[3:35] != _ZERO_TRACE
            and parent_tp[36:52] != _ZERO_SPAN
        ):
            # 00-<trace id: 3..35>-<span id: 36..52>-<flags: 53..55>; sampled: flags bit 0.
            if (
                parent_tp[54] not in _ODD_HEX and int(parent_tp[19:35], 16) >= self._bound
            ) or not self._within_budget():
                if parent_ts is not None:
                    self._echo[key] = [(TRACEPARENT, parent_tp), (TRACESTATE, parent_ts)]
                else:
                    self._echo[key] = [(TRACEPARENT, parent_tp)]
                return
            carrier = {TRACEPARENT: parent_tp.decode()}
            if parent_ts is not None:
                carrier[TRACESTATE] = parent_ts.decode()
            context = _PROPAGATOR.extract(carrier)
            remote = trace.get_current_span(context).get_span_context()
            if not remote.trace_flags.sampled:  # drawn by the ratio: sampled from here on
                context = trace.set_span_in_context(
                    NonRecordingSpan(
                        SpanContext(
                            remote.trace_id,
                            remote.span_id,
                            is_remote=True,
                            trace_flags=TraceFlags(remote.trace_flags | TraceFlags.SAMPLED),
                            trace_state=remote.trace_state,
                        )
                    )
                )
        elif self._random() >= self.ratio or not self._within_budget():
            return  # no usable parent, and not drawn: no trace
        polled_ns = int(polled_ms * 1e6)
        if received_ms < polled_ms - _MAX_AGE_MS:
            received_ms = polled_ms  # a producer's clock far off: its timestamp is not used
        received_ns = min(int(received_ms * 1e6), polled_ns)
        span = self.tracer.start_span(
            "rayml.request",
            context=context,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": tp[0],
                "messaging.destination.partition.id": str(tp[1]),
                "messaging.kafka.offset": offset,
                "rayml.request.id": request_id,
                "rayml.pipeline": pipeline,
            },
            start_time=received_ns,
        )
        child = trace.set_span_in_context(span)
        self.tracer.start_span("rayml.receive", context=child, start_time=received_ns).end(
            polled_ns
        )
        self._open[key] = _Open(span, polled_ns)
        self.traced += 1

    def _within_budget(self) -> bool:
        """Take one traced request from the budget (a token bucket of one second's worth)."""
        rate = self._rate
        if rate is None:
            return True
        now = self._clock()
        self._tokens = min(rate, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.over_budget += 1
        return False

    @property
    def tracing_any(self) -> bool:
        """Whether any request in flight is traced (a batch's keys are worth building)."""
        return bool(self._open)

    def batch_returned(
        self,
        keys: Sequence[Key],
        dispatched_ms: float,
        returned_ms: float,
        attributes: dict[str, Any],
    ) -> None:
        """A micro-batch came back: its span (linked to each traced request's), and each
        traced request's queue wait and compute spans."""
        opened = self._open
        traced = [o.span for k in keys if (o := opened.get(k)) is not None]
        if not traced:
            return
        dispatched_ns = int(dispatched_ms * 1e6)
        returned_ns = int(returned_ms * 1e6)
        batch = self.tracer.start_span(
            "rayml.batch",
            links=[Link(s.get_span_context()) for s in traced],
            attributes={"rayml.batch.size": len(keys), **attributes},
            start_time=dispatched_ns,
        )
        batch.end(returned_ns)
        to_batch = [Link(batch.get_span_context())]
        for k in keys:
            o = opened.get(k)
            if o is None:
                continue
            parent = trace.set_span_in_context(o.span)
            self.tracer.start_span(
                "rayml.queue_wait", context=parent, start_time=min(o.polled_ns, dispatched_ns)
            ).end(dispatched_ns)
            self.tracer.start_span(
                "rayml.compute",
                context=parent,
                links=to_batch,
                attributes=attributes,
                start_time=dispatched_ns,
            ).end(returned_ns)

    def result_headers(
        self, key: Key, status: str = "ok", error_type: str | None = None
    ) -> Headers | None:
        """The headers of the result of the record at ``key``: its ``traceparent`` (rayml's
        request span when traced, the caller's own when not), or ``None`` without one. A
        traced request's span is told how it was answered (``status``, ``error_type``)."""
        o = self._open.get(key)
        if o is None:
            return self._echo.get(key)
        span = o.span
        span.set_attribute("rayml.status", status)
        if error_type is not None:
            span.set_attribute("error.type", error_type)
        if not o.answered_ns:
            o.answered_ns = time.time_ns()
        if o.headers is None:
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
            o.headers = [(k, v.encode()) for k, v in carrier.items()]
        return o.headers

    def done(self, key: Key) -> None:
        """The record is done (its writes acknowledged or committed): end its spans."""
        if self._echo.pop(key, None) is None and self._open:
            o = self._open.pop(key, None)
            if o is not None:
                self._end(o, None)

    def forget(self, tps: set[tuple[str, int]], why: str = "partition let go of") -> int:
        """Drop the records of partitions let go of (their new owner traces them again) or
        rewound (exactly-once, after an abort: read again, traced again)."""
        for k in [k for k in self._echo if k[0] in tps]:
            del self._echo[k]
        gone = [k for k in self._open if k[0] in tps]
        for k in gone:
            self._end(self._open.pop(k), why)
        return len(gone)

    def close(self) -> None:
        """End every open span (shutdown): the records are redelivered to another ingest."""
        for o in self._open.values():
            self._end(o, "ingest stopped")
        self._open.clear()
        self._echo.clear()

    def _end(self, o: _Open, interrupted: str | None) -> None:
        span = o.span
        now = time.time_ns()
        if interrupted is not None:
            span.set_attribute("rayml.interrupted", interrupted)
        elif o.answered_ns:
            self.tracer.start_span(
                "rayml.result_write",
                context=trace.set_span_in_context(span),
                start_time=o.answered_ns,
            ).end(now)
        span.end(now)
