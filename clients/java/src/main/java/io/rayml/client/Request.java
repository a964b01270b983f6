package io.rayml.client;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonProperty;
import java.time.Instant;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.UUID;
import java.util.regex.Pattern;

/**
 * A request to run one pipeline (schemas/request.schema.json); produced with {@code id} as key.
 *
 * <pre>{@code
 * Request r = Request.builder("iris.predict")
 *     .params(Map.of("features", List.of(5.1, 3.5, 1.4, 0.2)))
 *     .build();
 * }</pre>
 *
 * @param v envelope version (1)
 * @param id unique request id, 1-256 characters without control characters; the result's key
 * @param pipeline a registered pipeline name
 * @param params the pipeline's parameters (validated by the executor against its schema)
 * @param replyTo topic for the result (null: the executor's output topic)
 * @param deadline epoch milliseconds after which the result is no longer wanted (or null)
 * @param modelVersion a pinned model version (null: the newest)
 * @param tenant the tenant the request belongs to (or null)
 * @param sentAtMs client clock at send time, epoch milliseconds (end-to-end latency)
 */
@JsonInclude(JsonInclude.Include.NON_NULL)
public record Request(
    @JsonProperty("v") int v,
    @JsonProperty("id") String id,
    @JsonProperty("pipeline") String pipeline,
    @JsonProperty("params") Map<String, Object> params,
    @JsonProperty("reply_to") String replyTo,
    @JsonProperty("deadline") Long deadline,
    @JsonProperty("model_version") String modelVersion,
    @JsonProperty("tenant") String tenant,
    @JsonProperty("sent_at_ms") Long sentAtMs) {

  private static final Pattern ID = Pattern.compile("^[^\\x00-\\x1f\\x7f-\\x9f]{1,256}$");
  private static final Pattern TOPIC = Pattern.compile("^[A-Za-z0-9._-]{1,249}$");

  /** Checks the same constraints as the published schema, so a bad request fails here. */
  public Request {
    if (v != Envelopes.VERSION) {
      throw new IllegalArgumentException("v must be " + Envelopes.VERSION + ", got " + v);
    }
    if (id == null || !ID.matcher(id).matches()) {
      throw new IllegalArgumentException(
          "id must be 1-256 characters without control characters, got " + id);
    }
    if (pipeline == null || pipeline.isEmpty() || pipeline.length() > 200) {
      throw new IllegalArgumentException("pipeline must be 1-200 characters, got " + pipeline);
    }
    if (replyTo != null && (!TOPIC.matcher(replyTo).matches() || replyTo.matches("\\.{1,2}"))) {
      throw new IllegalArgumentException("reply_to is not a valid topic name: " + replyTo);
    }
    if (sentAtMs != null && sentAtMs < 0) {
      throw new IllegalArgumentException("sent_at_ms must be >= 0, got " + sentAtMs);
    }
    params = params == null ? Map.of() : Collections.unmodifiableMap(new LinkedHashMap<>(params));
  }

  /** A builder for a request to {@code pipeline}, with a random id. */
  public static Builder builder(String pipeline) {
    return new Builder(pipeline);
  }

  /** Builds a {@link Request}; only {@code pipeline} is required. */
  public static final class Builder {
    private final String pipeline;
    private String id = UUID.randomUUID().toString();
    private Map<String, Object> params = Map.of();
    private String replyTo;
    private Long deadline;
    private String modelVersion;
    private String tenant;
    private Long sentAtMs;

    private Builder(String pipeline) {
      this.pipeline = pipeline;
    }

    public Builder id(String id) {
      this.id = id;
      return this;
    }

    public Builder params(Map<String, Object> params) {
      this.params = params;
      return this;
    }

    public Builder replyTo(String topic) {
      this.replyTo = topic;
      return this;
    }

    public Builder deadline(Instant deadline) {
      this.deadline = deadline == null ? null : deadline.toEpochMilli();
      return this;
    }

    public Builder modelVersion(String version) {
      this.modelVersion = version;
      return this;
    }

    public Builder tenant(String tenant) {
      this.tenant = tenant;
      return this;
    }

    public Builder sentAtMs(long epochMillis) {
      this.sentAtMs = epochMillis;
      return this;
    }

    public Request build() {
      return new Request(
          Envelopes.VERSION, id, pipeline, params, replyTo, deadline, modelVersion, tenant, sentAtMs);
    }
  }
}
