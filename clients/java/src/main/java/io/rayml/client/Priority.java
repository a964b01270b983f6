package io.rayml.client;

import java.util.Locale;

/**
 * Which lane a request travels on: its tenant's interactive request topic, or the bulk topic beside
 * it. The executor reads the bulk lane only as far as interactive work leaves room (it keeps a
 * bounded share of its in-flight window for bulk, so bulk never starves); use {@link #BATCH} for
 * backfills and bulk re-scoring, so that interactive callers never queue behind them. See
 * docs/service.md, "Priority lanes and tenant shares".
 */
public enum Priority {
  /** The input topic ({@code ml.pipeline.input}, or the tenant's). */
  INTERACTIVE,
  /** The bulk lane beside it ({@code <input topic>.batch} unless named). */
  BATCH;

  /**
   * The priority named {@code name}, case-insensitive ({@code interactive} or {@code batch}).
   *
   * @throws IllegalArgumentException for any other name
   */
  public static Priority parse(String name) {
    try {
      return valueOf(name.trim().toUpperCase(Locale.ROOT));
    } catch (IllegalArgumentException | NullPointerException e) {
      throw new IllegalArgumentException(
          "priority must be interactive or batch, got " + name, e);
    }
  }
}
