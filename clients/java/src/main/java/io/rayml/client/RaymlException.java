package io.rayml.client;

/** Root of the errors the rayml Java client raises on purpose. */
public class RaymlException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  public RaymlException(String message) {
    super(message);
  }

  public RaymlException(String message, Throwable cause) {
    super(message, cause);
  }

  /** Raised when no bootstrap server answered within the client's connect timeout. */
  public static final class BrokerUnreachable extends RaymlException {
    private static final long serialVersionUID = 1L;
    private final String bootstrapServers;

    public BrokerUnreachable(String bootstrapServers, long timeoutMs, Throwable cause) {
      super(
          "cannot reach the Kafka broker at "
              + bootstrapServers
              + " within "
              + timeoutMs
              + " ms ("
              + (cause.getMessage() == null ? cause : cause.getMessage())
              + "); is it running?",
          cause);
      this.bootstrapServers = bootstrapServers;
    }

    public String bootstrapServers() {
      return bootstrapServers;
    }
  }

  /** Set on a request's future when the broker did not accept the request. */
  public static final class DeliveryFailed extends RaymlException {
    private static final long serialVersionUID = 1L;

    public DeliveryFailed(String requestId, String topic, Throwable cause) {
      super("request '" + requestId + "' could not be delivered to '" + topic + "': " + cause, cause);
    }
  }

  /** Set on every unanswered future when the client closes, and thrown when a closed client is used. */
  public static final class ClientClosed extends RaymlException {
    private static final long serialVersionUID = 1L;

    public ClientClosed(String requestId) {
      super(
          requestId == null
              ? "the client is closed"
              : "the client was closed before request '" + requestId + "' was answered");
    }
  }
}
