package io.rayml.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Properties;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The command line's {@code --kafka-config}: a properties file of Kafka client settings. */
class MainTest {
  private static final String SECRET = "s3cret-password-xyz";

  @Test
  void kafkaConfigReadsEveryProperty(@TempDir Path dir) throws IOException {
    Path file = dir.resolve("client.properties");
    Files.writeString(
        file,
        "bootstrap.servers=127.0.0.1:9093\n"
            + "security.protocol=SASL_SSL\n"
            + "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required"
            + " username=\"rayml\" password=\""
            + SECRET
            + "\";\n",
        StandardCharsets.UTF_8);
    Properties props = Main.kafkaConfig(file.toString());
    assertEquals("SASL_SSL", props.getProperty("security.protocol"));
    assertEquals("127.0.0.1:9093", props.getProperty("bootstrap.servers"));
    assertTrue(props.getProperty("sasl.jaas.config").contains("username=\"rayml\""));
  }

  @Test
  void noFileNoProperties() {
    assertTrue(Main.kafkaConfig(null).isEmpty());
  }

  @Test
  void aMissingFileIsAUsageError(@TempDir Path dir) {
    String missing = dir.resolve("nope.properties").toString();
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> Main.kafkaConfig(missing));
    assertTrue(e.getMessage().contains(missing), e.getMessage());
  }

  @Test
  void serversAreRequiredFromTheFlagOrTheFile(@TempDir Path dir) throws IOException {
    Path file = dir.resolve("client.properties");
    Files.writeString(file, "sasl.password.unused=" + SECRET + "\n", StandardCharsets.UTF_8);
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class,
            () ->
                Main.run(
                    new String[] {"--pipeline", "p", "--kafka-config", file.toString()},
                    new PrintStream(out, true, StandardCharsets.UTF_8),
                    new PrintStream(out, true, StandardCharsets.UTF_8)));
    assertTrue(e.getMessage().contains("--bootstrap-servers"), e.getMessage());
    assertFalse(e.getMessage().contains(SECRET));
  }
}
