"""Prometheus metrics through ``ray.util.metrics``, recorded at batch cost, never per message.

Ray exports them from each node's metrics agent (``ray[default]``) with a ``ray_`` prefix, about
10 s after they are recorded; counters get a ``_total`` suffix. What rayml exports:

============================================  =================================================
``ray_rayml_requests_total{pipeline,status}``  inference requests answered by a worker batch
                                               (``status``: ok | error)
``ray_rayml_results_total{status}``            everything the ingest wrote: ok | error results
                                               (rejections included), dead_letter
``ray_rayml_error_results_total{pipeline,      the error results of ``results_total`` by the
type}``                                        pipeline the request named and the stable code
                                               of ``error.type`` (``invalid_params``,
                                               ``unknown_pipeline``, ``deadline_exceeded``,
                                               ...); at most 100 (pipeline, type) pairs per
                                               ingest, the rest as (``_other``, ``_other``)
``ray_rayml_e2e_latency_ms{pipeline}``         record timestamp → result, *sampled* (≤ 8 per
                                               batch, ≤ 256 per pipeline and flush)
``ray_rayml_compute_latency_ms{pipeline}``     one worker batch's compute time
``ray_rayml_batch_size{pipeline}``             requests per worker batch
``ray_rayml_partition_lag{partition}``         records behind on an assigned partition: not yet
                                               polled (cached high watermark - position) plus
                                               polled and unfinished
``ray_rayml_in_flight``                        records polled and not finished
``ray_rayml_in_flight_bytes``                  what their values weigh, with the results held
                                               for failing topics (the byte budget's use)
``ray_rayml_failed_deliveries_total{topic,     writes the broker (or librdkafka) refused, by
error}``                                       topic and error name (e.g. ``_UNKNOWN_PARTITION``,
                                               ``TOPIC_AUTHORIZATION_FAILED``); rayml's own
                                               topics (the tenants' result topics, the DLQ)
                                               always by name, at most 100 (topic, error) pairs
                                               of other topics (``reply_to``), the rest as
                                               ``_other``
``ray_rayml_pool_size``                        serving workers of the ingest
``ray_rayml_batches_queued``                   formed batches waiting for a worker
``ray_rayml_paused``                           1 while backpressure pauses the partitions
``ray_rayml_lane_in_flight{tenant,lane}``      records polled and not finished per tenant
                                               (from the settings: a bounded set) and lane
                                               (interactive | batch)
``ray_rayml_tenant_requests_total{tenant,lane,   requests a worker answered per tenant, lane
status}``                                      and status (ok | error)
``ray_rayml_pool_workers{pool}``               workers of each pool (the default pool and one
                                               per pipeline that declares its own)
``ray_rayml_pool_backlog{pool}``               requests queued and in flight for the pool
``ray_rayml_pool_cold_start_seconds{pool}``    the pool's last cold start (first worker
                                               started to first answer)
``ray_rayml_model_loads_total{model}``         models loaded from the store by a worker
``ray_rayml_model_cache_hits_total{model}``    batches served by an already loaded model
``ray_rayml_training_jobs_total{status}``      jobs succeeded | failed; reused counts the
                                               successes answered from the store
``ray_rayml_rollout_answers``                  answers of a version under rollout in the
                                               rollout window (``rollout.window_s``)
``ray_rayml_rollout_labelled``                 of those, answers joined with a label
``ray_rayml_rollout_accuracy``                 correct / labelled (absent before a label)
``ray_rayml_rollout_error_rate``               errors / answers (absent before an answer)
``ray_rayml_rollout_p99_ms``                   p99 compute time of the batches that answered
``ray_rayml_rollout_agreement{model}``         share of the requests both versions answered
                                               with the same prediction (shadow; absent
                                               when none were compared)
``ray_rayml_rollout_decisions_total{model,     promotions and aborts the policy wrote
action}``                                      (``action``: promoted | rollout_aborted)
============================================  =================================================

The ingest metrics carry an ``ingest`` tag, the worker metrics a ``worker`` tag and the job
metrics a ``runner`` tag. The rollout gauges other than agreement are per version: ``model``,
``version`` and ``role`` (serving | candidate); the rollout monitor in each executor's driver
records them (:class:`RolloutMetrics`), only while a rollout runs.

Cost: one ``Counter.inc`` is ~17 µs and one ``Histogram.observe`` ~11 µs on a small machine, as
much as the rest of a record's handling. So nothing here is called per message: a finished batch
is folded into plain-Python aggregates (a few dict updates) and the aggregates are flushed on a
timer (``interval_s``), one call per metric and tag set; histograms get a bounded sample. Outside
Ray (unit tests of the plain classes) every recorder is a no-op.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol


class Received(Protocol):
    """What a batch's metrics read of each request: when its record was made."""

    @property
    def received_ms(self) -> float: ...


LATENCY_BOUNDARIES_MS = [
    1,
    2,
    5,
    10,
    20,
    50,
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    30_000,
    60_000,
    300_000,
]
BATCH_SIZE_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 2_048, 4_096, 16_384]
# Latencies kept per finished batch, and per pipeline between two flushes (reservoir sample).
SAMPLES_PER_BATCH = 8
SAMPLES_PER_FLUSH = 256


class _Noop:
    """Stands in for a Ray metric where Ray is not initialised (plain-Python tests)."""

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        pass

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        pass

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        pass


def _ray_on() -> bool:
    import ray

    return bool(ray.is_initialized())


def _counter(name: str, doc: str, tags: tuple[str, ...], default: dict[str, str]) -> Any:
    if not _ray_on():
        return _Noop()
    from ray.util import metrics

    metric = metrics.Counter(name, description=doc, tag_keys=tags)
    metric.set_default_tags(default)
    return metric


def _gauge(name: str, doc: str, tags: tuple[str, ...], default: dict[str, str]) -> Any:
    if not _ray_on():
        return _Noop()
    from ray.util import metrics

    metric = metrics.Gauge(name, description=doc, tag_keys=tags)
    metric.set_default_tags(default)
    return metric


def _histogram(
    name: str, doc: str, bounds: list[int], tags: tuple[str, ...], default: dict[str, str]
) -> Any:
    if not _ray_on():
        return _Noop()
    from ray.util import metrics

    metric = metrics.Histogram(
        name, description=doc, boundaries=[float(b) for b in bounds], tag_keys=tags
    )
    metric.set_default_tags(default)
    return metric


def _inc_by_delta(counter: Any, totals: dict[str, int], seen: dict[str, int]) -> dict[str, int]:
    """Add to a status-tagged ``counter`` what each running total grew since ``seen``.

    The figures are kept as plain running totals on the hot path and pushed here once per
    flush; returns ``totals``, the next call's ``seen``.
    """
    for status, total in totals.items():
        delta = total - seen.get(status, 0)
        if delta > 0:
            counter.inc(delta, {"status": status})
    return totals


def _inc_pairs_by_delta(
    counter: Any,
    keys: tuple[str, str],
    totals: Mapping[tuple[str, str], int],
    seen: dict[tuple[str, str], int],
) -> None:
    """Add to ``counter``, tagged ``keys``, what each running total of a pair of labels grew
    since ``seen`` (updated in place). One call per pair that grew, none for the others."""
    for pair, total in totals.items():
        delta = total - seen.get(pair, 0)
        if delta > 0:
            counter.inc(delta, {keys[0]: pair[0], keys[1]: pair[1]})
            seen[pair] = total


class _Reservoir:
    """At most ``size`` values, a uniform sample of everything offered since the last drain."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: list[float] = []
        self.seen = 0

    def offer(self, values: Iterable[float]) -> None:
        for value in values:
            self.seen += 1
            if len(self.values) < self.size:
                self.values.append(value)
            else:
                slot = random.randrange(self.seen)  # sampling, not security
                if slot < self.size:
                    self.values[slot] = value

    def drain(self) -> list[float]:
        values, self.values, self.seen = self.values, [], 0
        return values


class IngestMetrics:
    """Metrics of one ingest actor: fold batches in with :meth:`batch_finished` (loop thread),
    and call :meth:`flush` when :meth:`due` (loop thread: it reads the consumer)."""

    def __init__(self, ingest_id: str, interval_s: float = 2.0) -> None:
        tag = {"ingest": ingest_id}
        self.interval_s = interval_s
        self._next = time.monotonic() + interval_s
        self.requests = _counter(
            "rayml_requests",
            "Inference requests answered by a worker batch, by pipeline and status.",
            ("ingest", "pipeline", "status"),
            tag,
        )
        self.results = _counter(
            "rayml_results",
            "Everything the ingest wrote, by status (ok, error, dead_letter).",
            ("ingest", "status"),
            tag,
        )
        self.e2e_ms = _histogram(
            "rayml_e2e_latency_ms",
            "Record timestamp to result, ms (sampled).",
            LATENCY_BOUNDARIES_MS,
            ("ingest", "pipeline"),
            tag,
        )
        self.compute_ms = _histogram(
            "rayml_compute_latency_ms",
            "Compute time of one worker batch, ms.",
            LATENCY_BOUNDARIES_MS,
            ("ingest", "pipeline"),
            tag,
        )
        self.batch_size = _histogram(
            "rayml_batch_size",
            "Requests per worker batch.",
            BATCH_SIZE_BOUNDARIES,
            ("ingest", "pipeline"),
            tag,
        )
        self.partition_lag = _gauge(
            "rayml_partition_lag",
            "Records behind on an assigned input partition.",
            ("ingest", "partition"),
            tag,
        )
        self.in_flight = _gauge(
            "rayml_in_flight", "Records polled and not finished.", ("ingest",), tag
        )
        self.in_flight_bytes = _gauge(
            "rayml_in_flight_bytes",
            "Bytes held against the byte budget: record values polled and not finished, and "
            "results held for topics whose writes fail.",
            ("ingest",),
            tag,
        )
        self.error_results = _counter(
            "rayml_error_results",
            "Error results written, by the pipeline named and the error's type (bounded).",
            ("ingest", "pipeline", "type"),
            tag,
        )
        self.failed_deliveries = _counter(
            "rayml_failed_deliveries",
            "Writes that failed (retried with backoff), by destination topic and error.",
            ("ingest", "topic", "error"),
            tag,
        )
        self.pool_size = _gauge(
            "rayml_pool_size", "Serving workers of the ingest.", ("ingest",), tag
        )
        self.batches_queued = _gauge(
            "rayml_batches_queued", "Formed batches waiting for a worker.", ("ingest",), tag
        )
        self.paused = _gauge(
            "rayml_paused", "1 while backpressure pauses the partitions.", ("ingest",), tag
        )
        self.lane_in_flight = _gauge(
            "rayml_lane_in_flight",
            "Records polled and not finished, per tenant and lane (interactive, batch).",
            ("ingest", "tenant", "lane"),
            tag,
        )
        self.tenant_requests = _counter(
            "rayml_tenant_requests",
            "Requests a worker answered, per tenant, lane (interactive, batch) and status "
            "(ok, error).",
            ("ingest", "tenant", "lane", "status"),
            tag,
        )
        self.pool_workers = _gauge(
            "rayml_pool_workers",
            "Workers of each pool of the ingest (the default pool and one per pipeline that "
            "declares its own).",
            ("ingest", "pool"),
            tag,
        )
        self.pool_backlog = _gauge(
            "rayml_pool_backlog",
            "Requests queued for a worker of the pool and in flight on one.",
            ("ingest", "pool"),
            tag,
        )
        self.pool_cold_start_s = _gauge(
            "rayml_pool_cold_start_seconds",
            "The pool's last cold start: from starting its first worker to its first answer.",
            ("ingest", "pool"),
            tag,
        )
        # The latest counts per (tenant, lane), handed over by the loop (intake()).
        self._lanes: Mapping[tuple[str, str], int] = {}
        self._tenant_counts: dict[tuple[str, str, str], int] = defaultdict(int)
        self._pools: list[tuple[str, int, int, float | None]] = []
        # Aggregates between flushes (plain Python: a batch costs a few dict updates).
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        self._e2e: dict[str, _Reservoir] = defaultdict(lambda: _Reservoir(SAMPLES_PER_FLUSH))
        self._compute: dict[str, _Reservoir] = defaultdict(lambda: _Reservoir(SAMPLES_PER_FLUSH))
        self._sizes: dict[str, _Reservoir] = defaultdict(lambda: _Reservoir(SAMPLES_PER_FLUSH))
        self._written: dict[str, int] = {}
        self._failed: dict[tuple[str, str], int] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self._lag_tags: set[str] = set()

    def batch_finished(
        self,
        pipeline: str,
        items: Sequence[Received],
        errors: int,
        compute_ms: float,
        now_ms: float,
    ) -> None:
        """Fold one finished worker batch of ``pipeline`` in (no Ray metric call)."""
        if not items:
            return
        n = len(items)
        self._counts[(pipeline, "ok")] += n - errors
        if errors:
            self._counts[(pipeline, "error")] += errors
        stride = max(1, n // SAMPLES_PER_BATCH)
        self._e2e[pipeline].offer(
            now_ms - items[i].received_ms for i in range(0, n, stride)[:SAMPLES_PER_BATCH]
        )
        self._compute[pipeline].offer((compute_ms,))
        self._sizes[pipeline].offer((float(n),))

    def tenant_batch(self, tenant: str, lane: str, n: int, errors: int) -> None:
        """Fold one answered batch of one tenant and lane in (a batch is of one class:
        rayml.executor.ready); tenants come from the settings, so the labels stay bounded."""
        self._tenant_counts[(tenant, lane, "ok")] += n - errors
        if errors:
            self._tenant_counts[(tenant, lane, "error")] += errors

    def pools(self, pools: Sequence[tuple[str, int, int, float | None]]) -> None:
        """Keep each pool's (name, workers, backlog, last cold start s) for the next flush
        (pools are declared with the pipelines: a bounded label set)."""
        self._pools = list(pools)

    def due(self, now: float) -> bool:
        return now >= self._next

    def intake(self, in_flight: Mapping[tuple[str, str], int]) -> None:
        """Keep the records in flight per (tenant, lane) for the next flush (no Ray call: the
        loop hands them over at each of its intake decisions). The keys are the settings'
        tenants times the two lanes, every time, so the label set stays bounded."""
        self._lanes = in_flight

    def flush(
        self,
        written: Mapping[str, int],
        in_flight: int,
        pool_size: int,
        batches_queued: int,
        paused: bool,
        lags: Mapping[str, int],
        in_flight_bytes: int = 0,
        failed_deliveries: Mapping[tuple[str, str], int] | None = None,
        error_results: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        """Send the aggregates and the gauges.

        Args:
            written: running totals of what the ingest wrote, by status (ok, error,
                dead_letter).
            in_flight: records polled and not finished.
            pool_size: serving workers.
            batches_queued: formed batches waiting for a worker.
            paused: whether backpressure pauses the partitions.
            lags: records behind per assigned partition name (``topic[p]``).
            in_flight_bytes: what the values of the records in flight weigh, with the results
                held for failing topics (what the byte budget counts).
            failed_deliveries: running totals of failed writes by (topic, error name).
            error_results: running totals of error results by (pipeline, error type),
                already bounded by the writer
                (:attr:`rayml.delivery.result_writer.ResultWriter.error_results`).
        """
        self._next = time.monotonic() + self.interval_s
        for (pipeline, status), n in self._counts.items():
            if n:
                self.requests.inc(n, {"pipeline": pipeline, "status": status})
        self._counts.clear()
        for pipeline, reservoir in self._e2e.items():
            for value in reservoir.drain():
                self.e2e_ms.observe(max(0.0, value), {"pipeline": pipeline})
        for recorder, sampled in ((self.compute_ms, self._compute), (self.batch_size, self._sizes)):
            for pipeline, reservoir in sampled.items():
                for value in reservoir.drain():
                    recorder.observe(value, {"pipeline": pipeline})
        self._written = _inc_by_delta(self.results, dict(written), self._written)
        self.in_flight.set(in_flight)
        self.in_flight_bytes.set(in_flight_bytes)
        _inc_pairs_by_delta(
            self.failed_deliveries, ("topic", "error"), failed_deliveries or {}, self._failed
        )
        _inc_pairs_by_delta(
            self.error_results, ("pipeline", "type"), error_results or {}, self._errors
        )
        self.pool_size.set(pool_size)
        self.batches_queued.set(batches_queued)
        self.paused.set(1 if paused else 0)
        for (tenant, lane), n in self._lanes.items():
            self.lane_in_flight.set(n, {"tenant": tenant, "lane": lane})
        for (tenant, lane, status), n in self._tenant_counts.items():
            if n:
                self.tenant_requests.inc(n, {"tenant": tenant, "lane": lane, "status": status})
        self._tenant_counts.clear()
        for name, workers, backlog, cold_s in self._pools:
            self.pool_workers.set(workers, {"pool": name})
            self.pool_backlog.set(backlog, {"pool": name})
            if cold_s is not None:
                self.pool_cold_start_s.set(cold_s, {"pool": name})
        for name in self._lag_tags - lags.keys():
            self.partition_lag.set(0, {"partition": name})  # revoked: not ours to report now
        for name, lag in lags.items():
            self.partition_lag.set(lag, {"partition": name})
        self._lag_tags = set(lags)


class WorkerMetrics:
    """Model loads (rare: counted at once) and cache hits (one per batch: summed in plain
    Python and sent once a second by a daemon thread, so the last batch's hits go out too)."""

    def __init__(self, worker_id: str, interval_s: float = 1.0) -> None:
        tag = {"worker": worker_id}
        self.interval_s = interval_s
        self.loads = _counter(
            "rayml_model_loads", "Models loaded from the store.", ("worker", "model"), tag
        )
        self.hits = _counter(
            "rayml_model_cache_hits", "Batches served by a loaded model.", ("worker", "model"), tag
        )
        self._hits: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        if not isinstance(self.hits, _Noop):
            threading.Thread(target=self._flush_forever, name="rayml-metrics", daemon=True).start()

    def model_loaded(self, model: str) -> None:
        self.loads.inc(1, {"model": model})

    def cache_hit(self, model: str) -> None:
        with self._lock:
            self._hits[model] += 1

    def flush(self) -> None:
        with self._lock:
            hits, self._hits = self._hits, defaultdict(int)
        for model, n in hits.items():
            self.hits.inc(n, {"model": model})

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.interval_s)
            self.flush()


class JobMetrics:
    """Training job outcomes, from the runner's counters (deltas, flushed on a timer)."""

    def __init__(self, runner_id: str, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self._next = time.monotonic() + interval_s
        self.jobs = _counter(
            "rayml_training_jobs",
            "Training jobs by outcome.",
            ("runner", "status"),
            {"runner": runner_id},
        )
        self._seen: dict[str, int] = {}

    def due(self, now: float) -> bool:
        return now >= self._next

    def flush(self, totals: Mapping[str, int], now: float) -> None:
        """Add what each running total (succeeded, failed, reused) grew since the last flush."""
        self._next = now + self.interval_s
        self._seen = _inc_by_delta(self.jobs, dict(totals), self._seen)


class RolloutMetrics:
    """The rollout monitor's figures per version (docs/rollouts.md) as gauges, and its
    decisions as a counter; the monitor calls :meth:`flush` every ``rollout.interval_s``.

    Only models under rollout are reported, each by two tag sets, (``model``, served version,
    ``serving``) and (``model``, candidate, ``candidate``), plus ``model`` for the agreement:
    at most 2 x the rollouts running, whatever other versions the window still holds (a version
    served before a promotion). A model whose rollout ended (promoted, aborted, replaced by
    another candidate) has each of its tag sets set to NaN once, at the first flush that no
    longer finds it under rollout, and is then forgotten.

    Why NaN and not the last value: Ray (2.60) exports a gauge's tag set only while it is set
    again; one no longer set stays in the scrape at its last value until a time-to-live evicts
    it (18.6 s after the rollout ended, measured), one set to NaN leaves at the next export
    (9.5 s), so a rollout's series stop when it ends instead of showing its last figures as if
    it still ran. The same rule means the gauges of a running rollout must be set again at
    least every ~10 s, which a flush every ``interval_s`` (2 s) does. A figure the monitor
    does not have (accuracy before a label, error rate before an answer, the agreement of a
    canary, whose requests are split) is NaN too: absent, never a made-up 0. Plain data in,
    one ``set`` per gauge and tag set per flush.
    """

    ROLES = ("serving", "candidate")
    _PER_VERSION = ("answers", "labelled", "accuracy", "error_rate", "p99_ms")

    def __init__(self) -> None:
        tags = ("model", "version", "role")
        self.answers = _gauge(
            "rayml_rollout_answers",
            "Answers of a version under rollout in the rollout window.",
            tags,
            {},
        )
        self.labelled = _gauge(
            "rayml_rollout_labelled",
            "Answers of a version under rollout joined with a label, in the window.",
            tags,
            {},
        )
        self.accuracy = _gauge(
            "rayml_rollout_accuracy",
            "Accuracy of a version under rollout: correct / labelled, in the window.",
            tags,
            {},
        )
        self.error_rate = _gauge(
            "rayml_rollout_error_rate",
            "Error rate of a version under rollout: errors / answers, in the window.",
            tags,
            {},
        )
        self.p99_ms = _gauge(
            "rayml_rollout_p99_ms",
            "p99 compute time of the batches a version under rollout answered, ms.",
            tags,
            {},
        )
        self.agreement = _gauge(
            "rayml_rollout_agreement",
            "Share of the requests both versions answered with the same prediction.",
            ("model",),
            {},
        )
        self.decisions = _counter(
            "rayml_rollout_decisions",
            "Rollouts the policy ended, by model and action (promoted, rollout_aborted).",
            ("model", "action"),
            {},
        )
        self._reported: set[tuple[str, str, str]] = set()
        self._agreements: set[str] = set()
        self._decisions_seen = 0

    def flush(
        self, figures: Sequence[Mapping[str, Any]], decisions: Sequence[Mapping[str, Any]]
    ) -> None:
        """Set the gauges from the figures, and count the decisions not counted yet.

        Args:
            figures: :meth:`rayml.rollouts.monitor.RolloutMonitor.status`, one dict per model
                (:func:`rayml.rollouts.monitor.figures`); those without a ``rollout`` are
                skipped.
            decisions: every decision the monitor wrote, oldest first, each with ``model``
                and ``action`` (its ``decisions`` list: only appended to, so the entries
                after the ones seen at the last flush are the new ones).
        """
        reported: set[tuple[str, str, str]] = set()
        agreements: set[str] = set()
        for fig in figures:
            rollout = fig.get("rollout")
            if rollout is None:
                continue
            model = str(fig["model"])
            versions = fig.get("versions") or {}
            for role, version in zip(
                self.ROLES, (str(fig["served"]), str(rollout["candidate"])), strict=True
            ):
                self._set(
                    model, version, role, versions.get(version) or {"answers": 0, "labelled": 0}
                )
                reported.add((model, version, role))
            rate = (fig.get("agreement") or {}).get("rate")
            self.agreement.set(_number(rate), {"model": model})
            agreements.add(model)
        for model, version, role in sorted(self._reported - reported):
            self._set(model, version, role, {})  # ended: NaN once, then forgotten
        for model in sorted(self._agreements - agreements):
            self.agreement.set(math.nan, {"model": model})
        self._reported, self._agreements = reported, agreements
        for decision in decisions[self._decisions_seen :]:
            self.decisions.inc(
                1, {"model": str(decision["model"]), "action": str(decision["action"])}
            )
        self._decisions_seen = len(decisions)

    def _set(self, model: str, version: str, role: str, stats: Mapping[str, Any]) -> None:
        tags = {"model": model, "version": version, "role": role}
        for name in self._PER_VERSION:
            getattr(self, name).set(_number(stats.get(name)), tags)


def _number(value: Any) -> float:
    """``value`` as a float, NaN for a figure that is missing (``None``)."""
    return math.nan if value is None else float(value)


def scrape_names(text: str) -> set[str]:
    """The metric names in a Prometheus text exposition (for tests and `rayml status`)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names
