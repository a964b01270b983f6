package io.rayml.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.networknt.schema.Error;
import com.networknt.schema.InputFormat;
import com.networknt.schema.Schema;
import com.networknt.schema.SchemaRegistry;
import com.networknt.schema.SpecificationVersion;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * The Java envelope classes against the JSON Schemas that rayml publishes in {@code schemas/}:
 * what Java writes, the schema accepts; what the schema's examples show, Java reads.
 */
class EnvelopeSchemaTest {
  private static final Path SCHEMAS = Path.of(System.getProperty("rayml.schemas", "../../schemas"));
  private static final SchemaRegistry REGISTRY =
      SchemaRegistry.withDefaultDialect(SpecificationVersion.DRAFT_2020_12);

  private static Schema schema(String name) throws IOException {
    return REGISTRY.getSchema(Files.readString(SCHEMAS.resolve(name), StandardCharsets.UTF_8));
  }

  private static List<Error> errors(Schema schema, String json) {
    return schema.validate(json, InputFormat.JSON);
  }

  @Test
  void everyRequestTheBuilderMakesIsValid() throws IOException {
    Schema schema = schema("request.schema.json");
    Request minimal = Request.builder("iris.predict").build();
    Request full =
        Request.builder("breast_cancer.predict")
            .id("req-42")
            .params(Map.of("features", List.of(5.1, 3.5, 1.4, 0.2)))
            .replyTo("ml.pipeline.input.reply.abc123")
            .deadline(Instant.parse("2030-01-01T00:00:00Z"))
            .modelVersion("000003")
            .tenant("team-a")
            .sentAtMs(1_764_150_000_000L)
            .build();
    for (Request request : List.of(minimal, full)) {
      String json = new String(Envelopes.encode(request), StandardCharsets.UTF_8);
      assertEquals(List.of(), errors(schema, json), json);
    }
    String json = Envelopes.toJson(full);
    assertTrue(json.contains("\"reply_to\":\"ml.pipeline.input.reply.abc123\""), json);
    assertTrue(json.contains("\"deadline\":1893456000000"), json);
    assertTrue(json.contains("\"sent_at_ms\":1764150000000"), json);
    assertFalse(Envelopes.toJson(minimal).contains("null"), "absent fields are left out");
  }

  @Test
  void theSchemaRejectsWhatTheJavaClassRefuses() throws IOException {
    Schema schema = schema("request.schema.json");
    assertFalse(errors(schema, "{\"v\":1,\"pipeline\":\"p\"}").isEmpty(), "id is required");
    assertFalse(errors(schema, "{\"id\":\"\",\"pipeline\":\"p\"}").isEmpty());
    assertFalse(errors(schema, "{\"id\":\"a\",\"pipeline\":\"p\",\"x\":1}").isEmpty());
    assertThrows(IllegalArgumentException.class, () -> Request.builder("p").id("").build());
    assertThrows(IllegalArgumentException.class, () -> Request.builder("p").id("a\nb").build());
    assertThrows(IllegalArgumentException.class, () -> Request.builder("").build());
    assertThrows(IllegalArgumentException.class, () -> Request.builder("p").replyTo("a b").build());
  }

  @Test
  void resultExamplesFromTheSchemaReadAndWriteBack() throws IOException {
    Schema schema = schema("result.schema.json");
    JsonNode document = Envelopes.MAPPER.readTree(SCHEMAS.resolve("result.schema.json").toFile());
    int checked = 0;
    for (JsonNode example : document.get("examples")) {
      Result result = Envelopes.decodeResult(Envelopes.MAPPER.writeValueAsBytes(example));
      assertEquals(example.get("id").asText(), result.id());
      assertEquals(example.get("status").asText(), result.status());
      if (result.isOk()) {
        assertEquals(example.get("result"), result.result());
        assertEquals(example.get("model").get("version").asText(), result.model().version());
      } else {
        assertEquals(example.get("error").get("type").asText(), result.error().type());
      }
      String written = Envelopes.toJson(result);
      assertEquals(List.of(), errors(schema, written), written);
      assertEquals(example, Envelopes.MAPPER.readTree(written), "round trip is lossless");
      checked++;
    }
    assertEquals(2, checked);
  }

  @Test
  void unknownResultFieldsAreIgnored() {
    Result r =
        Envelopes.decodeResult(
            "{\"v\":1,\"id\":\"r\",\"pipeline\":\"p\",\"status\":\"ok\",\"result\":1,\"new\":2}"
                .getBytes(StandardCharsets.UTF_8));
    assertTrue(r.isOk());
    assertEquals(1, r.result().asInt());
  }
}
