package io.rayml.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.SpanContext;
import io.opentelemetry.api.trace.TraceFlags;
import io.opentelemetry.api.trace.TraceState;
import io.opentelemetry.context.Scope;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.junit.jupiter.api.Test;

/**
 * W3C trace context on the records the client writes and reads: the same code {@link
 * RaymlClient#submit} and its reply thread run ({@code RaymlClient.record}, {@code decodeReply}),
 * without a broker.
 */
class TracingTest {
  private static final Pattern TRACEPARENT =
      Pattern.compile("^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$");
  private static final String CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
  private static final String CALLER_SPAN = "00f067aa0ba902b7";
  private static final String RESULT_JSON =
      "{\"v\":1,\"id\":\"r1\",\"pipeline\":\"p\",\"status\":\"ok\",\"result\":1}";

  /** A request record as {@code submit} sends it, from the calling thread's context. */
  private static ProducerRecord<String, byte[]> send(Request request) {
    return RaymlClient.record("ml.pipeline.input", request, Tracing.newRequestContext());
  }

  private static String header(Headers headers, String key) {
    List<Header> all = new ArrayList<>();
    headers.headers(key).forEach(all::add);
    assertTrue(all.size() <= 1, "one " + key + " header at most, got " + all.size());
    return all.isEmpty() ? null : new String(all.get(0).value(), StandardCharsets.UTF_8);
  }

  private static Matcher traceparent(ProducerRecord<String, byte[]> record) {
    String value = header(record.headers(), "traceparent");
    assertNotNull(value, "every request carries a traceparent header");
    Matcher m = TRACEPARENT.matcher(value);
    assertTrue(m.matches(), "not a valid W3C traceparent: " + value);
    assertFalse(m.group(1).matches("0+"), "all-zero trace id: " + value);
    assertFalse(m.group(2).matches("0+"), "all-zero span id: " + value);
    return m;
  }

  @Test
  void everyRequestHasAValidTraceparentAndItsOwnTraceWithoutACallerSpan() {
    assertFalse(Span.current().getSpanContext().isValid(), "test runs without a current span");
    int n = 1000;
    Set<String> traces = new HashSet<>();
    Set<String> spans = new HashSet<>();
    for (int i = 0; i < n; i++) {
      Request request = Request.builder("iris.predict").params(Map.of("i", i)).build();
      ProducerRecord<String, byte[]> record = send(request);
      assertEquals(request.id(), record.key());
      Matcher m = traceparent(record);
      assertEquals("00", m.group(3), "a new trace is left unsampled: rayml decides");
      assertNull(header(record.headers(), "tracestate"), "no tracestate on a new trace");
      traces.add(m.group(1));
      spans.add(m.group(2));
    }
    assertEquals(n, traces.size(), "a new trace id per request");
    assertEquals(n, spans.size(), "a new span id per request");
  }

  @Test
  @SuppressWarnings("try") // the scope makes the caller's span current
  void aCurrentCallerSpanKeepsItsTraceIdSampledFlagAndTracestate() {
    TraceState state = TraceState.builder().put("vendor", "v1").build();
    for (TraceFlags flags : List.of(TraceFlags.getSampled(), TraceFlags.getDefault())) {
      SpanContext caller = SpanContext.create(CALLER_TRACE, CALLER_SPAN, flags, state);
      Set<String> spans = new HashSet<>();
      try (Scope scope = Span.wrap(caller).makeCurrent()) {
        for (int i = 0; i < 3; i++) {
          SpanContext sent = Tracing.newRequestContext();
          ProducerRecord<String, byte[]> record =
              RaymlClient.record("ml.pipeline.input", Request.builder("p").build(), sent);
          Matcher m = traceparent(record);
          assertEquals(CALLER_TRACE, m.group(1), "the caller's trace continues");
          assertEquals(flags.asHex(), m.group(3), "the caller's sampled flag is kept");
          assertNotEquals(CALLER_SPAN, m.group(2), "the request is a new span (a child)");
          assertEquals(sent.getSpanId(), m.group(2));
          assertEquals("vendor=v1", header(record.headers(), "tracestate"));
          spans.add(m.group(2));
        }
      }
      assertEquals(3, spans.size(), "each request its own span id");
    }
    assertFalse(Span.current().getSpanContext().isValid(), "the scope is closed again");
    assertNotEquals(CALLER_TRACE, Tracing.newRequestContext().getTraceId());
  }

  @Test
  void theFutureTellsTheTraceIdTheRequestWasSentWith() {
    SpanContext sent = Tracing.newRequestContext();
    ResultFuture future = new ResultFuture("r1", sent);
    Matcher m =
        traceparent(RaymlClient.record("t", Request.builder("p").id("r1").build(), sent));
    assertEquals(m.group(1), future.traceId());
    assertEquals("r1", future.requestId());
    assertEquals(m.group(2), future.spanContext().getSpanId());
  }

  @Test
  void aResultRecordsTraceparentGivesTheResultItsTraceId() {
    ConsumerRecord<String, byte[]> record = reply();
    record
        .headers()
        .add(
            "traceparent",
            ("00-" + CALLER_TRACE + "-" + CALLER_SPAN + "-01").getBytes(StandardCharsets.UTF_8));
    Result result = RaymlClient.decodeReply(record);
    assertEquals("r1", result.id());
    assertEquals(CALLER_TRACE, result.traceId());
    assertFalse(
        Envelopes.toJson(result).contains(CALLER_TRACE), "the trace id is not part of the JSON");
  }

  @Test
  void aResultRecordWithoutAValidTraceparentHasNoTraceId() {
    assertNull(RaymlClient.decodeReply(reply()).traceId(), "no header");
    for (String bad :
        List.of(
            "00-00000000000000000000000000000000-" + CALLER_SPAN + "-01",
            "00-" + CALLER_TRACE.toUpperCase() + "-" + CALLER_SPAN + "-01",
            "garbage")) {
      ConsumerRecord<String, byte[]> record = reply();
      record.headers().add("traceparent", bad.getBytes(StandardCharsets.UTF_8));
      assertNull(RaymlClient.decodeReply(record).traceId(), bad);
    }
  }

  private static ConsumerRecord<String, byte[]> reply() {
    return new ConsumerRecord<>(
        "t.reply", 0, 0L, "r1", RESULT_JSON.getBytes(StandardCharsets.UTF_8));
  }
}
