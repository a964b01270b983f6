package io.rayml.client;

import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.SpanContext;
import io.opentelemetry.api.trace.SpanId;
import io.opentelemetry.api.trace.TraceFlags;
import io.opentelemetry.api.trace.TraceId;
import io.opentelemetry.api.trace.TraceState;
import io.opentelemetry.api.trace.propagation.W3CTraceContextPropagator;
import io.opentelemetry.context.Context;
import io.opentelemetry.context.propagation.TextMapGetter;
import io.opentelemetry.context.propagation.TextMapPropagator;
import io.opentelemetry.context.propagation.TextMapSetter;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ThreadLocalRandom;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;

/**
 * W3C Trace Context on Kafka records: the context each request starts, and the trace id a result
 * record carries back.
 *
 * <p>A request's context is a new span id in the caller's trace when the calling thread has a
 * current OpenTelemetry span (its trace id, sampled flag and tracestate are kept); otherwise a
 * new random trace with trace-flags {@code 00}, which leaves the sampling decision to rayml. Only
 * the OpenTelemetry API is used: nothing is recorded or exported by the client itself.
 */
final class Tracing {
  static final String TRACEPARENT = "traceparent";
  static final String TRACESTATE = "tracestate";

  private static final TextMapPropagator W3C = W3CTraceContextPropagator.getInstance();

  /** Writes a header, replacing any earlier one of the same name. */
  private static final TextMapSetter<Headers> SETTER =
      (headers, key, value) -> {
        if (headers != null) {
          headers.remove(key).add(key, value.getBytes(StandardCharsets.UTF_8));
        }
      };

  /** Reads the last header of a name (the one a Kafka reader should believe). */
  private static final TextMapGetter<Headers> GETTER =
      (headers, key) -> {
        Header header = headers == null ? null : headers.lastHeader(key);
        return header == null || header.value() == null
            ? null
            : new String(header.value(), StandardCharsets.UTF_8);
      };

  private Tracing() {}

  /** The context of a new request sent from the calling thread (see the class comment). */
  static SpanContext newRequestContext() {
    return newRequestContext(Span.current().getSpanContext());
  }

  /** A new span id in {@code parent}'s trace, or a new unsampled trace when it is not valid. */
  static SpanContext newRequestContext(SpanContext parent) {
    if (parent.isValid()) {
      return SpanContext.create(
          parent.getTraceId(), newSpanId(), parent.getTraceFlags(), parent.getTraceState());
    }
    return SpanContext.create(
        newTraceId(), newSpanId(), TraceFlags.getDefault(), TraceState.getDefault());
  }

  /** {@code context} as a current-context value (for the span that the send runs under). */
  static Context asContext(SpanContext context) {
    return Context.root().with(Span.wrap(context));
  }

  /** Sets {@code traceparent} (and {@code tracestate} when not empty) for {@code context}. */
  static void inject(SpanContext context, Headers headers) {
    W3C.inject(asContext(context), headers, SETTER);
  }

  /** The trace id of the record's valid {@code traceparent} header, else null. */
  static String traceId(Headers headers) {
    Context extracted = W3C.extract(Context.root(), headers, GETTER);
    SpanContext context = Span.fromContext(extracted).getSpanContext();
    return context.isValid() ? context.getTraceId() : null;
  }

  private static String newTraceId() {
    ThreadLocalRandom random = ThreadLocalRandom.current();
    long high;
    long low;
    do {
      high = random.nextLong();
      low = random.nextLong();
    } while (high == 0 && low == 0);
    return TraceId.fromLongs(high, low);
  }

  private static String newSpanId() {
    ThreadLocalRandom random = ThreadLocalRandom.current();
    long id;
    do {
      id = random.nextLong();
    } while (id == 0);
    return SpanId.fromLong(id);
  }
}
