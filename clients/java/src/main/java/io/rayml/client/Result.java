package io.rayml.client;

import com.fasterxml.jackson.annotation.JsonIgnore;
import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.databind.JsonNode;
import java.util.Map;

/**
 * The one logical answer to a request (schemas/result.schema.json), keyed by the request id.
 *
 * <p>{@code status} is {@code "ok"} with {@code result} set, or {@code "error"} with {@code error}
 * set. An error result (bad params, the pipeline raised) is a normal outcome, not an exception.
 *
 * @param v envelope version (1)
 * @param id the request's id
 * @param pipeline the pipeline the request named
 * @param status "ok" or "error"
 * @param result the pipeline's output when ok (any JSON)
 * @param error why it failed, when status is "error"
 * @param model the model (name, version) used, if any
 * @param timings where the time went, in milliseconds
 * @param attempts how many times the request was run
 * @param tenant the request's tenant: the tenant of the topic it came from
 * @param traceId the trace id of the result record's W3C {@code traceparent} header, or null when
 *     it has none (not part of the JSON envelope; set by {@link RaymlClient} from the record)
 */
@JsonInclude(JsonInclude.Include.NON_NULL)
@JsonIgnoreProperties(ignoreUnknown = true)
public record Result(
    @JsonProperty("v") int v,
    @JsonProperty("id") String id,
    @JsonProperty("pipeline") String pipeline,
    @JsonProperty("status") String status,
    @JsonProperty("result") JsonNode result,
    @JsonProperty("error") ErrorInfo error,
    @JsonProperty("model") ModelRef model,
    @JsonProperty("timings") Timings timings,
    @JsonProperty("attempts") Integer attempts,
    @JsonProperty("tenant") String tenant,
    @JsonIgnore String traceId) {

  /** A result without a trace id (as decoded from the envelope alone). */
  public Result(
      int v,
      String id,
      String pipeline,
      String status,
      JsonNode result,
      ErrorInfo error,
      ModelRef model,
      Timings timings,
      Integer attempts,
      String tenant) {
    this(v, id, pipeline, status, result, error, model, timings, attempts, tenant, null);
  }

  /** This result with {@code traceId} (read from its record's {@code traceparent} header). */
  public Result withTraceId(String traceId) {
    return new Result(
        v, id, pipeline, status, result, error, model, timings, attempts, tenant, traceId);
  }

  /** Whether the pipeline ran and {@link #result()} holds its output. */
  @JsonIgnore
  public boolean isOk() {
    return "ok".equals(status);
  }

  /** Why a request failed: a stable code, a message, and structured details. */
  @JsonInclude(JsonInclude.Include.NON_NULL)
  @JsonIgnoreProperties(ignoreUnknown = true)
  public record ErrorInfo(
      @JsonProperty("type") String type,
      @JsonProperty("message") String message,
      @JsonProperty("details") Map<String, Object> details) {}

  /** The model (name and version) that produced a result. */
  public record ModelRef(@JsonProperty("name") String name, @JsonProperty("version") String version) {}

  /** Where the time went, in milliseconds; a field is null when it was not measured. */
  @JsonInclude(JsonInclude.Include.NON_NULL)
  @JsonIgnoreProperties(ignoreUnknown = true)
  public record Timings(
      @JsonProperty("queued_ms") Double queuedMs,
      @JsonProperty("compute_ms") Double computeMs,
      @JsonProperty("total_ms") Double totalMs) {}
}
