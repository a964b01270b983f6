package io.rayml.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

/** Which topic each priority's requests go to: the input topic or the bulk lane beside it. */
class PriorityTest {

  @Test
  void interactiveGoesToTheInputTopicAndBatchToItsBulkLane() {
    RaymlClient.Config config = RaymlClient.Config.of("127.0.0.1:9092");
    assertEquals("ml.pipeline.input", config.laneTopic(Priority.INTERACTIVE));
    assertEquals("ml.pipeline.input.batch", config.laneTopic(Priority.BATCH));
    config.inputTopic("team-a.requests");
    assertEquals("team-a.requests", config.laneTopic(Priority.INTERACTIVE));
    assertEquals("team-a.requests.batch", config.laneTopic(Priority.BATCH));
    config.batchTopic("team-a.bulk");
    assertEquals("team-a.bulk", config.laneTopic(Priority.BATCH));
    assertEquals("team-a.requests", config.laneTopic(Priority.INTERACTIVE));
  }

  @Test
  void prioritiesParseByNameInAnyCase() {
    assertEquals(Priority.BATCH, Priority.parse("batch"));
    assertEquals(Priority.BATCH, Priority.parse(" BATCH "));
    assertEquals(Priority.INTERACTIVE, Priority.parse("Interactive"));
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> Priority.parse("urgent"));
    assertTrue(e.getMessage().contains("interactive or batch"), e.getMessage());
  }

  @Test
  void anUnknownPriorityOnTheCommandLineIsAUsageErrorBeforeAnythingConnects() {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    PrintStream print = new PrintStream(out, true, StandardCharsets.UTF_8);
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class,
            () ->
                Main.run(
                    new String[] {
                      // Port 9 (discard): nothing is reached, the usage error comes first.
                      "--bootstrap-servers", "127.0.0.1:9", "--pipeline", "p", "--priority", "soon"
                    },
                    print,
                    print));
    assertTrue(e.getMessage().contains("priority must be interactive or batch"), e.getMessage());
  }
}
