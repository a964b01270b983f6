package io.rayml.client;

import com.fasterxml.jackson.core.type.TypeReference;
import java.io.IOException;
import java.io.PrintStream;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Command line: send N requests to one pipeline and print what came back.
 *
 * <pre>
 * java -jar rayml-client.jar --bootstrap-servers HOST:PORT --pipeline breast_cancer.predict \
 *     (--params '{"features": [...]}' [--count N] | --params-file rows.jsonl) \
 *     [--input-topic ml.pipeline.input] [--priority interactive|batch [--batch-topic TOPIC]] \
 *     [--timeout-s 60] [--max-in-flight 1000] [--print-results] \
 *     [--kafka-config client.properties] [--train [--training-topic ml.pipeline.jobs]]
 * </pre>
 *
 * <p>With {@code --priority batch}, the requests go to the bulk lane ({@code --batch-topic},
 * default the input topic's name with {@code .batch} appended), which the executor reads only as
 * far as interactive work leaves room: for backfills that must not delay interactive callers.
 *
 * <p>With {@code --train}, the requests are training requests (e.g. {@code --pipeline
 * breast_cancer.train --params '{"n_estimators": 50}' --train}): they go to the training topic
 * ({@code --training-topic}, default {@code ml.pipeline.jobs}), which the job runner reads; the
 * executor refuses a training request on the input topic, naming the topic to use.
 *
 * <p>With {@code --kafka-config}, every property of that Java properties file is given to the
 * Kafka clients as is: this is how a secure cluster is configured (e.g. {@code
 * security.protocol=SASL_SSL}, {@code sasl.mechanism=SCRAM-SHA-512}, {@code sasl.jaas.config=...},
 * {@code ssl.truststore.type=PEM}, {@code ssl.truststore.location=ca.pem}), keeping the password
 * off the command line. Its {@code bootstrap.servers} is used when {@code --bootstrap-servers} is
 * not given. See docs/security.md.
 *
 * <p>With {@code --params-file}, each line is one request's params (JSON object). With {@code
 * --print-results}, each result is printed as one JSON line {@code {"index": i, "result": {...}}}
 * in the order they arrive. The last line is always the summary, e.g. {@code received=200 ok=200
 * errors=0 missing=0 elapsed_ms=412 per_s=485.4 p50_ms=8.1 p99_ms=40.2 traced=200}, where {@code
 * traced} counts the results whose record's {@code traceparent} has the trace id that their
 * request was sent with. Before it, standard error gets one line {@code trace_ids=ID,ID,...}: the
 * trace ids of the first {@value #SHOWN_TRACE_IDS} requests, in sending order (each request starts
 * a new trace; see {@link RaymlClient}). Exit status: 0 when every request got an ok result, 1
 * otherwise, 2 on bad usage.
 */
public final class Main {
  private static final String USAGE =
      "usage: rayml-client --bootstrap-servers HOST:PORT --pipeline NAME"
          + " (--params JSON [--count N] | --params-file FILE)"
          + " [--input-topic TOPIC] [--priority interactive|batch [--batch-topic TOPIC]]"
          + " [--timeout-s S] [--max-in-flight N] [--print-results]"
          + " [--kafka-config FILE] [--train [--training-topic TOPIC]]";

  /** How many request trace ids the {@code trace_ids=} line shows. */
  static final int SHOWN_TRACE_IDS = 10;

  private Main() {}

  public static void main(String[] args) {
    if (Arrays.asList(args).contains("--help") || Arrays.asList(args).contains("-h")) {
      System.out.println(USAGE);
      return;
    }
    int status;
    try {
      status = run(args, System.out, System.err);
    } catch (IllegalArgumentException e) {
      System.err.println("rayml-client: " + e.getMessage());
      System.err.println(USAGE);
      status = 2;
    } catch (RaymlException e) {
      System.err.println("rayml-client: " + e.getMessage());
      status = 1;
    }
    System.exit(status);
  }

  static int run(String[] args, PrintStream out, PrintStream err) {
    Map<String, String> opts = parse(args);
    Properties kafka = kafkaConfig(opts.get("kafka-config"));
    String servers = opts.getOrDefault("bootstrap-servers", kafka.getProperty("bootstrap.servers"));
    if (servers == null || servers.isBlank()) {
      throw new IllegalArgumentException(
          "--bootstrap-servers is required (or bootstrap.servers in --kafka-config)");
    }
    kafka.remove("bootstrap.servers");
    String pipeline = required(opts, "pipeline");
    List<Map<String, Object>> params = params(opts);
    long timeoutMs = (long) (Double.parseDouble(opts.getOrDefault("timeout-s", "60")) * 1000);
    int maxInFlight = Integer.parseInt(opts.getOrDefault("max-in-flight", "1000"));
    boolean print = opts.containsKey("print-results");
    boolean train = opts.containsKey("train");
    Priority priority = Priority.parse(opts.getOrDefault("priority", "interactive"));
    RaymlClient.Config config =
        RaymlClient.Config.of(servers)
            .inputTopic(opts.getOrDefault("input-topic", "ml.pipeline.input"))
            .batchTopic(opts.get("batch-topic"))
            .trainingTopic(opts.getOrDefault("training-topic", "ml.pipeline.jobs"))
            .connectTimeout(Duration.ofSeconds(10));
    for (String key : kafka.stringPropertyNames()) {
      config.kafkaProperty(key, kafka.getProperty(key));
    }

    int n = params.size();
    AtomicInteger ok = new AtomicInteger();
    AtomicInteger errors = new AtomicInteger();
    AtomicInteger traced = new AtomicInteger();
    String[] traceIds = new String[n];
    double[] latencies = new double[n];
    Semaphore slots = new Semaphore(maxInFlight);
    List<CompletableFuture<Void>> done = new ArrayList<>(n);
    long started = System.nanoTime();
    try (RaymlClient client = new RaymlClient(config)) {
      for (int i = 0; i < n; i++) {
        final int index = i;
        slots.acquireUninterruptibly();
        long sent = System.nanoTime();
        ResultFuture future =
            train
                ? client.train(pipeline, params.get(i))
                : client.submit(pipeline, params.get(i), priority);
        String traceId = future.traceId();
        traceIds[i] = traceId;
        done.add(
            future
                .orTimeout(timeoutMs, TimeUnit.MILLISECONDS)
                .handle(
                    (result, error) -> {
                      slots.release();
                      if (result != null) {
                        latencies[index] = (System.nanoTime() - sent) / 1e6;
                        (result.isOk() ? ok : errors).incrementAndGet();
                        if (traceId.equals(result.traceId())) {
                          traced.incrementAndGet();
                        }
                        if (print) {
                          Map<String, Object> line = new LinkedHashMap<>();
                          line.put("index", index);
                          line.put("result", result);
                          synchronized (out) {
                            out.println(Envelopes.toJson(line));
                          }
                        }
                      }
                      return null;
                    }));
      }
      for (CompletableFuture<Void> f : done) {
        try {
          f.join();
        } catch (CompletionException e) {
          // counted as missing below
        }
      }
    }
    double elapsedMs = (System.nanoTime() - started) / 1e6;
    int received = ok.get() + errors.get();
    double[] seen = Arrays.stream(latencies).filter(x -> x > 0).sorted().toArray();
    err.println(
        "trace_ids="
            + String.join(",", Arrays.asList(traceIds).subList(0, Math.min(n, SHOWN_TRACE_IDS))));
    err.flush();
    out.println(
        String.format(
            Locale.ROOT,
            "received=%d ok=%d errors=%d missing=%d elapsed_ms=%.0f per_s=%.1f p50_ms=%.1f"
                + " p99_ms=%.1f traced=%d",
            received,
            ok.get(),
            errors.get(),
            n - received,
            elapsedMs,
            received / (elapsedMs / 1000),
            percentile(seen, 0.50),
            percentile(seen, 0.99),
            traced.get()));
    out.flush();
    return ok.get() == n ? 0 : 1;
  }

  private static double percentile(double[] sorted, double q) {
    if (sorted.length == 0) {
      return Double.NaN;
    }
    return sorted[Math.min(sorted.length - 1, (int) Math.ceil(q * sorted.length) - 1)];
  }

  private static Map<String, String> parse(String[] args) {
    Map<String, String> opts = new LinkedHashMap<>();
    for (int i = 0; i < args.length; i++) {
      String arg = args[i];
      if (!arg.startsWith("--")) {
        throw new IllegalArgumentException("unexpected argument " + arg);
      }
      String name = arg.substring(2);
      if (name.equals("print-results") || name.equals("train")) {
        opts.put(name, "true");
      } else if (i + 1 < args.length) {
        opts.put(name, args[++i]);
      } else {
        throw new IllegalArgumentException("--" + name + " needs a value");
      }
    }
    return opts;
  }

  /** The Kafka client properties of {@code file} (none when null). */
  static Properties kafkaConfig(String file) {
    Properties props = new Properties();
    if (file == null) {
      return props;
    }
    try (Reader in = Files.newBufferedReader(Path.of(file), StandardCharsets.UTF_8)) {
      props.load(in);
    } catch (IOException | IllegalArgumentException e) {
      // The file's content is never quoted: it may hold a password.
      throw new IllegalArgumentException(
          "cannot read --kafka-config " + file + ": " + e.getClass().getSimpleName(), e);
    }
    return props;
  }

  private static String required(Map<String, String> opts, String name) {
    String value = opts.get(name);
    if (value == null || value.isBlank()) {
      throw new IllegalArgumentException("--" + name + " is required");
    }
    return value;
  }

  private static List<Map<String, Object>> params(Map<String, String> opts) {
    TypeReference<Map<String, Object>> type = new TypeReference<>() {};
    List<Map<String, Object>> out = new ArrayList<>();
    try {
      if (opts.containsKey("params-file")) {
        for (String line :
            Files.readAllLines(Path.of(opts.get("params-file")), StandardCharsets.UTF_8)) {
          if (!line.isBlank()) {
            out.add(Envelopes.MAPPER.readValue(line, type));
          }
        }
        return out;
      }
      Map<String, Object> one = Envelopes.MAPPER.readValue(opts.getOrDefault("params", "{}"), type);
      int count = Integer.parseInt(opts.getOrDefault("count", "1"));
      for (int i = 0; i < count; i++) {
        out.add(one);
      }
      return out;
    } catch (IOException e) {
      throw new IllegalArgumentException("params are not JSON objects: " + e.getMessage(), e);
    }
  }
}
