package io.rayml.client;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;

/**
 * JSON encoding of the wire envelopes, as described by {@code schemas/*.schema.json}.
 *
 * <p>Absent (null) fields are left out when writing. Unknown fields are ignored when reading a
 * result, so that a newer executor's results still parse in an older client.
 */
public final class Envelopes {
  /** The envelope version this client writes and reads (the {@code v} field). */
  public static final int VERSION = 1;

  static final ObjectMapper MAPPER =
      new ObjectMapper().configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false);

  private Envelopes() {}

  /** The request as UTF-8 JSON bytes, ready to produce. */
  public static byte[] encode(Request request) {
    try {
      return MAPPER.writeValueAsBytes(request);
    } catch (JsonProcessingException e) {
      throw new RaymlException("cannot encode request " + request.id() + ": " + e.getMessage(), e);
    }
  }

  /** A result envelope from its UTF-8 JSON bytes. */
  public static Result decodeResult(byte[] value) {
    try {
      return MAPPER.readValue(value, Result.class);
    } catch (IOException e) {
      throw new RaymlException("not a rayml result envelope: " + e.getMessage(), e);
    }
  }

  /** Any value (an envelope, params) as a JSON string. */
  public static String toJson(Object value) {
    try {
      return MAPPER.writeValueAsString(value);
    } catch (JsonProcessingException e) {
      throw new RaymlException("cannot encode " + value.getClass().getSimpleName() + ": " + e, e);
    }
  }
}
