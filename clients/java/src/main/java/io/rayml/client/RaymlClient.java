package io.rayml.client;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import io.opentelemetry.api.trace.SpanContext;
import io.opentelemetry.context.Scope;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Sends requests to rayml pipelines and completes their futures from its own reply topic.
 *
 * <pre>{@code
 * try (RaymlClient client = new RaymlClient("broker:9092")) {
 *   Result r = client.submit("iris.predict", Map.of("features", List.of(5.1, 3.5, 1.4, 0.2)))
 *       .get(30, TimeUnit.SECONDS);
 *   System.out.println(r.status() + " " + r.result());
 * }
 * }</pre>
 *
 * <p><b>Replies.</b> As in the Python client, every instance creates a reply topic of its own
 * ({@code <input>.reply.<client id>}, one partition, one hour retention), sets {@code reply_to} on
 * every request, and one background thread reads that topic and completes futures by request id;
 * the topic is deleted on {@link #close()}. A client therefore never reads other clients' results.
 * For many short-lived instances of one service, pass a shared {@code replyTopic} in the {@link
 * Config}: it is created if missing, read from its current end, never deleted, and results for
 * other instances are skipped.
 *
 * <p><b>Topics.</b> Inference requests go to the input topic, or with {@link Priority#BATCH} to
 * the bulk lane beside it ({@code <input topic>.batch}, or {@link Config#batchTopic}), which the
 * executor reads only as far as interactive work leaves room; training requests ({@link #train})
 * go to the training topic: training is a right of its own, on a topic Kafka's ACLs guard apart
 * from inference (docs/security.md); the executor refuses a training request on an inference
 * topic. A tenant's clients set its topics in the {@link Config} and a {@code replyTopic} under its
 * reply prefix.
 *
 * <p><b>Tracing.</b> Every request carries a W3C {@code traceparent} header (and {@code tracestate}
 * when there is one): a new span id in the trace of the caller's current OpenTelemetry span, with
 * its sampled flag, or else a new random trace with flags {@code 00} (rayml samples it by its own
 * ratio). {@link ResultFuture#traceId()} is the request's trace id; {@link Result#traceId()} is the
 * one on the result record's {@code traceparent}, null when the executor wrote none. The producer
 * call runs with the request's context current, so a Kafka instrumentation (the OpenTelemetry
 * Java agent) continues the same trace.
 *
 * <p>Thread-safe: {@link #submit} and {@link #train} may be called from any number of threads.
 */
public final class RaymlClient implements AutoCloseable {

  /** Where and how to connect. */
  public static final class Config {
    final String bootstrapServers;
    String inputTopic = "ml.pipeline.input";
    String batchTopic;
    String trainingTopic = "ml.pipeline.jobs";
    String replyTopic;
    String tenant;
    Duration connectTimeout = Duration.ofSeconds(10);
    long replyRetentionMs = 3_600_000L;
    short replicationFactor = 1;
    final Properties kafka = new Properties();

    private Config(String bootstrapServers) {
      this.bootstrapServers = bootstrapServers;
    }

    /** A configuration for the given {@code host:port[,host:port]} list. */
    public static Config of(String bootstrapServers) {
      return new Config(bootstrapServers);
    }

    /** The topic rayml's executor reads requests from (default {@code ml.pipeline.input}). */
    public Config inputTopic(String topic) {
      this.inputTopic = topic;
      return this;
    }

    /**
     * The bulk lane, where {@link Priority#BATCH} requests go (default: the input topic's name
     * with {@code .batch} appended, as the executor names it unless the tenant's {@code
     * batch_topic} is set).
     */
    public Config batchTopic(String topic) {
      this.batchTopic = topic;
      return this;
    }

    /** The topic {@code priority}'s requests go to: the input topic or the bulk lane. */
    public String laneTopic(Priority priority) {
      if (priority == Priority.BATCH) {
        return batchTopic != null ? batchTopic : inputTopic + ".batch";
      }
      return inputTopic;
    }

    /** The topic training requests go to (default {@code ml.pipeline.jobs}). */
    public Config trainingTopic(String topic) {
      this.trainingTopic = topic;
      return this;
    }

    /** A reply topic shared with other instances (default: one of this client's own). */
    public Config replyTopic(String topic) {
      this.replyTopic = topic;
      return this;
    }

    /** The tenant written into every request. */
    public Config tenant(String tenant) {
      this.tenant = tenant;
      return this;
    }

    /** How long to wait for the broker at start (default 10 s). */
    public Config connectTimeout(Duration timeout) {
      this.connectTimeout = timeout;
      return this;
    }

    /** Replication factor of a reply topic this client creates (default 1). */
    public Config replicationFactor(short factor) {
      this.replicationFactor = factor;
      return this;
    }

    /** Any other Kafka client property (security: {@code security.protocol}, SASL, SSL...). */
    public Config kafkaProperty(String key, String value) {
      this.kafka.setProperty(key, value);
      return this;
    }
  }

  private final Config config;
  private final String clientId = UUID.randomUUID().toString().replace("-", "").substring(0, 12);
  private final String replyTopic;
  private final boolean ownsReplyTopic;
  private final Admin admin;
  private final KafkaProducer<String, byte[]> producer;
  private final KafkaConsumer<String, byte[]> consumer;
  private final Map<String, ResultFuture> pending = new ConcurrentHashMap<>();
  private final Thread replyThread;
  private final AtomicLong foreign = new AtomicLong();
  private volatile boolean closed;

  /** Connects to {@code bootstrapServers} with defaults for everything else. */
  public RaymlClient(String bootstrapServers) {
    this(Config.of(bootstrapServers));
  }

  /**
   * Connects, creates the reply topic (if needed) and starts reading it.
   *
   * @throws RaymlException.BrokerUnreachable when no bootstrap server answers in time
   */
  public RaymlClient(Config config) {
    this.config = config;
    this.ownsReplyTopic = config.replyTopic == null;
    this.replyTopic =
        ownsReplyTopic ? config.inputTopic + ".reply." + clientId : config.replyTopic;
    long timeoutMs = config.connectTimeout.toMillis();
    this.admin = Admin.create(props(AdminClientConfig.CLIENT_ID_CONFIG, "admin"));
    try {
      admin
          .describeCluster(new DescribeClusterOptions().timeoutMs((int) timeoutMs))
          .nodes()
          .get(timeoutMs, TimeUnit.MILLISECONDS);
      createReplyTopic(timeoutMs);
    } catch (ExecutionException | TimeoutException e) {
      admin.close(Duration.ZERO);
      Throwable cause = e instanceof ExecutionException ? e.getCause() : e;
      throw new RaymlException.BrokerUnreachable(config.bootstrapServers, timeoutMs, cause);
    } catch (InterruptedException e) {
      admin.close(Duration.ZERO);
      Thread.currentThread().interrupt();
      throw new RaymlException("interrupted while connecting", e);
    }
    Properties p = props(ProducerConfig.CLIENT_ID_CONFIG, "producer");
    p.put(ProducerConfig.ACKS_CONFIG, "all");
    p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
    p.put(ProducerConfig.LINGER_MS_CONFIG, "2");
    this.producer = new KafkaProducer<>(p, new StringSerializer(), new ByteArraySerializer());
    Properties c = props(ConsumerConfig.CLIENT_ID_CONFIG, "replies");
    // No group: the reply topic is assigned, never subscribed, and no offsets are committed.
    c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    c.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "10");
    // An executor in exactly-once mode writes results in transactions: read only committed
    // ones (Java's default, read_uncommitted, would also show results of aborted ones).
    c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    this.consumer = new KafkaConsumer<>(c, new StringDeserializer(), new ByteArrayDeserializer());
    assignReplyTopic(timeoutMs);
    this.replyThread = new Thread(this::readReplies, "rayml-replies-" + clientId);
    replyThread.setDaemon(true);
    replyThread.start();
  }

  private Properties props(String clientIdKey, String role) {
    Properties p = new Properties();
    p.putAll(config.kafka);
    p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, config.bootstrapServers);
    p.put(clientIdKey, "rayml-client-" + clientId + "-" + role);
    return p;
  }

  private void createReplyTopic(long timeoutMs)
      throws ExecutionException, TimeoutException, InterruptedException {
    NewTopic topic =
        new NewTopic(replyTopic, 1, config.replicationFactor)
            .configs(Map.of("retention.ms", Long.toString(config.replyRetentionMs)));
    try {
      admin.createTopics(List.of(topic)).all().get(timeoutMs, TimeUnit.MILLISECONDS);
    } catch (ExecutionException e) {
      if (!(e.getCause() instanceof TopicExistsException)) {
        throw e;
      }
    }
  }

  private void assignReplyTopic(long timeoutMs) {
    // Assigned and positioned before the constructor returns: no reply can arrive unseen.
    long deadline = System.currentTimeMillis() + timeoutMs;
    List<PartitionInfo> infos = consumer.partitionsFor(replyTopic, Duration.ofMillis(timeoutMs));
    while ((infos == null || infos.isEmpty()) && System.currentTimeMillis() < deadline) {
      infos = consumer.partitionsFor(replyTopic, Duration.ofMillis(timeoutMs));
    }
    List<TopicPartition> partitions = new ArrayList<>();
    for (PartitionInfo info : infos) {
      partitions.add(new TopicPartition(replyTopic, info.partition()));
    }
    consumer.assign(partitions);
    if (ownsReplyTopic) {
      consumer.seekToBeginning(partitions);
    } else {
      consumer.seekToEnd(partitions);
    }
    for (TopicPartition tp : partitions) {
      consumer.position(tp, Duration.ofMillis(timeoutMs)); // resolve the lazy seek now
    }
  }

  /** Sends a request to {@code pipeline} with {@code params}; the future completes with its result. */
  public ResultFuture submit(String pipeline, Map<String, Object> params) {
    return submit(Request.builder(pipeline).params(params));
  }

  /**
   * Sends a request to {@code pipeline} with {@code params} on {@code priority}'s lane ({@link
   * Priority#BATCH}: the bulk lane); the future completes with its result.
   */
  public ResultFuture submit(String pipeline, Map<String, Object> params, Priority priority) {
    return submit(Request.builder(pipeline).params(params), priority);
  }

  /**
   * Sends the request that {@code builder} describes, with this client's reply topic and tenant.
   *
   * @return a future that completes with the {@link Result} (ok or error), or exceptionally with
   *     {@link RaymlException.DeliveryFailed} or {@link RaymlException.ClientClosed}; use {@code
   *     orTimeout}/{@code get(timeout)} to bound the wait. Its {@link ResultFuture#traceId()} is
   *     the trace the request was sent in.
   */
  public ResultFuture submit(Request.Builder builder) {
    return submit(builder, Priority.INTERACTIVE);
  }

  /** Sends the request that {@code builder} describes on {@code priority}'s lane. */
  public ResultFuture submit(Request.Builder builder, Priority priority) {
    return send(builder, config.laneTopic(priority));
  }

  /**
   * Starts a training job of {@code pipeline} with {@code params} (a sweep adds {@code grid} or
   * {@code sweep}): the request goes to the training topic; the future completes with the job's
   * result (model, version, metrics) or its error.
   */
  public ResultFuture train(String pipeline, Map<String, Object> params) {
    return train(Request.builder(pipeline).params(params));
  }

  /** Sends the training request that {@code builder} describes to the training topic. */
  public ResultFuture train(Request.Builder builder) {
    return send(builder, config.trainingTopic);
  }

  @SuppressWarnings("try") // the scope only makes the request's context current
  private ResultFuture send(Request.Builder builder, String topic) {
    if (closed) {
      throw new RaymlException.ClientClosed(null);
    }
    builder.replyTo(replyTopic).sentAtMs(System.currentTimeMillis());
    if (config.tenant != null) {
      builder.tenant(config.tenant);
    }
    Request request = builder.build();
    SpanContext trace = Tracing.newRequestContext();
    ResultFuture future = new ResultFuture(request.id(), trace);
    // Registered before it is sent, so the reply cannot overtake its registration.
    if (pending.putIfAbsent(request.id(), future) != null) {
      throw new IllegalArgumentException("request id " + request.id() + " is already in flight");
    }
    String id = request.id();
    try (Scope scope = Tracing.asContext(trace).makeCurrent()) {
      producer.send(
          record(topic, request, trace),
          (metadata, error) -> {
            if (error != null) {
              ResultFuture f = pending.remove(id);
              if (f != null) {
                f.completeExceptionally(new RaymlException.DeliveryFailed(id, topic, error));
              }
            }
          });
    } catch (RuntimeException e) {
      pending.remove(id);
      throw new RaymlException.DeliveryFailed(id, topic, e);
    }
    return future;
  }

  /** The record that carries {@code request} to {@code topic}, with its trace context headers. */
  static ProducerRecord<String, byte[]> record(String topic, Request request, SpanContext trace) {
    RecordHeaders headers = new RecordHeaders();
    Tracing.inject(trace, headers);
    return new ProducerRecord<>(topic, null, request.id(), Envelopes.encode(request), headers);
  }

  /**
   * The result a reply record holds, with the trace id of its {@code traceparent} header.
   *
   * @throws RaymlException when the value is not a result envelope
   */
  static Result decodeReply(ConsumerRecord<String, byte[]> record) {
    return Envelopes.decodeResult(record.value()).withTraceId(Tracing.traceId(record.headers()));
  }

  private void readReplies() {
    try {
      while (!closed) {
        for (ConsumerRecord<String, byte[]> record : consumer.poll(Duration.ofMillis(100))) {
          Result result;
          try {
            result = decodeReply(record);
          } catch (RaymlException e) {
            continue; // not a result envelope: nobody here waits for it
          }
          ResultFuture future = pending.remove(result.id());
          if (future == null) {
            foreign.incrementAndGet(); // another instance's (shared topic) or a duplicate
          } else {
            future.complete(result);
          }
        }
      }
    } catch (WakeupException e) {
      // close() woke us up
    } finally {
      consumer.close(Duration.ofSeconds(5));
    }
  }

  /** The topic this client's results arrive on. */
  public String replyTopic() {
    return replyTopic;
  }

  /** Requests sent and not yet answered. */
  public int inFlight() {
    return pending.size();
  }

  /** Results read that no request of this client was waiting for. */
  public long foreignResults() {
    return foreign.get();
  }

  /**
   * Stops reading replies, fails unanswered futures with {@link RaymlException.ClientClosed}, and
   * deletes the reply topic if it is this client's own. Idempotent.
   */
  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    producer.close(Duration.ofSeconds(5));
    consumer.wakeup();
    try {
      replyThread.join(10_000);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    for (String id : new ArrayList<>(pending.keySet())) {
      ResultFuture f = pending.remove(id);
      if (f != null) {
        f.completeExceptionally(new RaymlException.ClientClosed(id));
      }
    }
    if (ownsReplyTopic) {
      try {
        admin.deleteTopics(List.of(replyTopic)).all().get(10, TimeUnit.SECONDS);
      } catch (ExecutionException | TimeoutException e) {
        System.err.println("rayml: could not delete reply topic " + replyTopic + ": " + e);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
    admin.close(Duration.ofSeconds(5));
  }
}
