package io.rayml.client;

import io.opentelemetry.api.trace.SpanContext;
import java.util.concurrent.CompletableFuture;

/**
 * The future of one request's {@link Result}, with the W3C trace context the request was sent
 * with (its {@code traceparent} header).
 *
 * <p>Futures derived from it ({@code thenApply}, {@code handle}...) are plain {@link
 * CompletableFuture}s; keep this one to read the trace id.
 */
public final class ResultFuture extends CompletableFuture<Result> {
  private final String requestId;
  private final SpanContext spanContext;

  ResultFuture(String requestId, SpanContext spanContext) {
    this.requestId = requestId;
    this.spanContext = spanContext;
  }

  /** The request's id (the result's key). */
  public String requestId() {
    return requestId;
  }

  /** The request's trace id: 32 lowercase hex digits, the caller's when a span was current. */
  public String traceId() {
    return spanContext.getTraceId();
  }

  /**
   * The trace context sent in the request's {@code traceparent}/{@code tracestate} headers: its
   * span id is the request's own, its parent (if any) the span current when it was sent.
   */
  public SpanContext spanContext() {
    return spanContext;
  }

  @Override
  public <U> CompletableFuture<U> newIncompleteFuture() {
    return new CompletableFuture<>();
  }
}
