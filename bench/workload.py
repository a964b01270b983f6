"""The workload: single-row requests, a burst or rate-limited producer, and a result counter.

Every request id is ``<run tag>-<index>``, so one counter on a contender's output topic can
attribute each result to its run (warm-up, throughput burst, latency run) and to the request's
index in that run: it records when each result arrived, how many ids never got one (lost), how
many got more than one (duplicated), and how many answers were wrong or errors.

Times are :func:`clock` (``time.monotonic()``: ``CLOCK_MONOTONIC``, one clock for every process
of the machine), both when a request is handed to the producer and when its result is read back,
so latencies include both clients' batching (``linger.ms``) and two broker round trips -- what a
caller sees. ``python -m bench`` runs the producers and the counter in processes of their own
(:mod:`bench.clients`), so the send and receive times come from two processes on that one clock.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

PIPELINE = "breast_cancer.predict"

# Every send and receive time: CLOCK_MONOTONIC on Linux, shared by all processes of the machine
# (unlike time.time(), never stepped by NTP), so a load generator and a result reader in separate
# processes can be compared.
clock = time.monotonic


def feature_rows(n: int, seed: int = 0) -> np.ndarray:
    """``n`` rows of the breast-cancer data (drawn with repetition), float64, 30 columns."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer().data
    rng = np.random.default_rng(seed)
    return np.asarray(data[rng.integers(0, len(data), size=n)], dtype=np.float64)


@dataclass
class Run:
    """One batch of requests (a phase of one contender) and what came back for it."""

    tag: str
    keys: list[bytes]
    payloads: list[bytes]
    expected: np.ndarray  # the model's own label per request
    sent_at: np.ndarray = field(init=False)
    received_at: np.ndarray = field(init=False)
    # The contender's own view where it reports one (rayml's result ``timings.total_ms``).
    server_ms: np.ndarray = field(init=False)
    # Of that, the wait before its batch was sent to a worker (``timings.queued_ms``: from the
    # request's Kafka timestamp, through the fetch, the batch wait and the dispatch queue).
    queued_ms: np.ndarray = field(init=False)
    duplicates: int = 0
    wrong: int = 0
    errors: int = 0
    produce_s: float = 0.0
    echo: bool = False  # the "results" are the requests themselves (the Kafka-only floor)
    # Each request's traceparent header, as rayml's clients send one (None: no headers).
    traceparents: list[bytes] | None = None
    # Requests at the head of a rate run (sent first) that warm it up at its rate: answered
    # and checked like the others, left out of the latency figures.
    warmup: int = 0

    def __post_init__(self) -> None:
        self.sent_at = np.full(len(self.keys), np.nan)
        self.received_at = np.full(len(self.keys), np.nan)
        self.server_ms = np.full(len(self.keys), np.nan)
        self.queued_ms = np.full(len(self.keys), np.nan)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def received(self) -> int:
        return int(np.count_nonzero(~np.isnan(self.received_at)))

    @property
    def lost(self) -> int:
        return len(self) - self.received

    def throughput(self) -> float:
        """Requests per second from the first request produced to the last result received."""
        if self.received == 0:
            return 0.0
        span = float(np.nanmax(self.received_at) - np.nanmin(self.sent_at))
        return self.received / span if span > 0 else math.inf

    def latency_ms(self, quantiles: Sequence[float] = (50, 95, 99)) -> list[float]:
        """Result received minus request handed to the producer, past the warm-up."""
        received, sent = self.received_at[self.warmup :], self.sent_at[self.warmup :]
        latencies = (received - sent)[~np.isnan(received)] * 1000.0
        return _percentiles(latencies, quantiles)

    def server_latency_ms(self, quantiles: Sequence[float] = (50, 95, 99)) -> list[float]:
        server = self.server_ms[self.warmup :]
        return _percentiles(server[~np.isnan(server)], quantiles)

    def queued_latency_ms(self, quantiles: Sequence[float] = (50, 95, 99)) -> list[float]:
        queued = self.queued_ms[self.warmup :]
        return _percentiles(queued[~np.isnan(queued)], quantiles)


def _percentiles(values: np.ndarray, quantiles: Sequence[float]) -> list[float]:
    if values.size == 0:
        return [math.nan for _ in quantiles]
    return [float(np.percentile(values, q)) for q in quantiles]


def make_run(
    tag: str, rows: np.ndarray, labels: np.ndarray, pipelines: Sequence[str] | None = None
) -> Run:
    """Encode one request per row (``{"id", "pipeline", "params": {"features"}}``, key = id).

    ``pipelines``: each request's pipeline, one per row (mixed traffic); :data:`PIPELINE` for
    every request by default.
    """
    if pipelines is not None and len(pipelines) != len(rows):
        raise ValueError(f"{len(pipelines)} pipelines for {len(rows)} rows")
    keys: list[bytes] = []
    payloads: list[bytes] = []
    for i, row in enumerate(rows.tolist()):
        request_id = f"{tag}-{i}"
        pipeline = PIPELINE if pipelines is None else pipelines[i]
        keys.append(request_id.encode())
        payloads.append(
            json.dumps(
                {"id": request_id, "pipeline": pipeline, "params": {"features": row}}
            ).encode()
        )
    return Run(tag, keys, payloads, np.asarray(labels))


def with_traceparents(run: Run) -> Run:
    """Give each request a new trace, not sampled, as rayml's clients do without a caller span
    (``rayml.tracing.request_trace_headers``): rayml then samples it at its own ratio."""
    from rayml.tracing import request_trace_headers

    run.traceparents = []
    for _ in run.keys:
        ((_name, value),) = request_trace_headers()[0]
        assert isinstance(value, bytes)
        run.traceparents.append(value)
    return run


def new_tag(name: str) -> str:
    return f"{name}.{uuid.uuid4().hex[:6]}"


def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    """Create topics (all with ``partitions`` partitions) and wait until the broker has them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
    )
    for future in futures.values():
        future.result(timeout=30)


def _producer(bootstrap: str, linger_ms: float) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "queue.buffering.max.messages": 1_000_000,
        }
    )


def _produce(
    producer: Producer, topic: str, key: bytes, value: bytes, traceparent: bytes | None = None
) -> None:
    headers = None if traceparent is None else [("traceparent", traceparent)]
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers)
            return
        except BufferError:
            producer.poll(0.01)


def burst_producer(bootstrap: str) -> Producer:
    return _producer(bootstrap, linger_ms=5)


def rate_producer(bootstrap: str) -> Producer:
    return _producer(bootstrap, linger_ms=1)


def produce_burst(bootstrap: str, topic: str, run: Run, producer: Producer | None = None) -> None:
    """Produce every request of ``run`` as fast as the client goes; record send times.

    ``producer``: one from :func:`burst_producer` to reuse (a new one otherwise).
    """
    if producer is None:  # not `or`: a Producer's truth value is its queue length
        producer = burst_producer(bootstrap)
    sent_at = run.sent_at
    traceparents = run.traceparents
    started = clock()
    for i, (key, value) in enumerate(zip(run.keys, run.payloads, strict=True)):
        sent_at[i] = clock()
        _produce(producer, topic, key, value, traceparents and traceparents[i])
        if i % 5000 == 4999:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError(f"could not produce the requests of {run.tag}")
    run.produce_s = clock() - started


def produce_at_rate(
    bootstrap: str, topic: str, run: Run, rate: float, producer: Producer | None = None
) -> None:
    """Produce ``run`` at ``rate`` requests/s on a fixed schedule (an open-loop load).

    Each request is due at ``start + i / rate`` whatever the contender does, so a slow answer
    does not slow the offered load down (no coordinated omission). ``producer``: one from
    :func:`rate_producer` to reuse (a new one otherwise).
    """
    if producer is None:
        producer = rate_producer(bootstrap)
    sent_at = run.sent_at
    n = len(run)
    started = clock()
    i = 0
    while i < n:
        due = min(n, int((clock() - started) * rate) + 1)
        while i < due:
            sent_at[i] = clock()
            _produce(
                producer,
                topic,
                run.keys[i],
                run.payloads[i],
                run.traceparents and run.traceparents[i],
            )
            i += 1
        producer.poll(0)
        # Sleep until the next request is due, at least 1 ms (a shorter sleep only wakes this
        # process more often: at 0.5 ms it took half a core at 5,000 req/s, which the
        # contender's processes lost). Each request's send time is taken as it is sent.
        time.sleep(max(0.001, started + i / rate - clock()))
    if producer.flush(60) != 0:
        raise RuntimeError(f"could not produce the requests of {run.tag}")
    run.produce_s = clock() - started


class ResultCounter:
    """Reads one output topic and matches each result to its run and request index.

    A result counts as *wrong* when its label differs from the model's own offline prediction
    and as an *error* when its status is not ``ok``; a second result for an id is a duplicate.
    Results of unknown runs (none expected here) are counted in ``unknown``.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-counter-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                # librdkafka's default, explicit: a transactional (exactly-once) result counts
                # once its transaction commits; aborted ones never.
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 5,
                "fetch.min.bytes": 65_536,
            }
        )
        self.consumer.subscribe([topic])
        self.runs: dict[str, Run] = {}
        self.unknown = 0
        self._lock = threading.Lock()

    def track(self, run: Run) -> None:
        with self._lock:
            self.runs[run.tag] = run

    def poll(self, timeout_s: float = 0.05) -> int:
        # consume(n, timeout) returns only once n records are there or the timeout passed: take
        # what is queued without waiting, and block (up to the timeout) only for a first record,
        # so that a result's arrival time is not rounded up to the next timeout.
        messages = self.consumer.consume(10_000, timeout=0)
        if not messages:
            messages = self.consumer.consume(1, timeout=timeout_s)
        now = clock()
        got = 0
        for msg in messages:
            if msg.error() is not None:
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"result consumer: {msg.error()}")
                continue
            key = (msg.key() or b"").decode()
            tag, _, index = key.rpartition("-")
            run = self.runs.get(tag)
            if run is None or not index.isdigit() or int(index) >= len(run):
                self.unknown += 1
                continue
            i = int(index)
            if not math.isnan(run.received_at[i]):
                run.duplicates += 1
                continue
            run.received_at[i] = now
            got += 1
            if not run.echo:
                _check(run, i, msg.value())
        return got

    def wait_assigned(self, timeout_s: float = 60.0) -> None:
        """Poll until the group has assigned this consumer its partitions (call it while the
        topic is still empty: a record polled before its run is tracked counts as unknown)."""
        deadline = time.monotonic() + timeout_s
        while not self.consumer.assignment():
            if time.monotonic() > deadline:
                raise RuntimeError(f"result consumer: no partition assigned in {timeout_s:g} s")
            self.poll(0.1)

    def wait(self, run: Run, timeout_s: float, idle_s: float = 20.0) -> None:
        """Poll until every request of ``run`` is answered, or nothing came for ``idle_s``."""
        deadline = time.monotonic() + timeout_s
        last_progress = time.monotonic()
        while run.received < len(run) and time.monotonic() < deadline:
            if self.poll() > 0:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > idle_s:
                break
        # A short grace period so that duplicates arriving right after the last result count.
        grace = time.monotonic() + 0.5
        while time.monotonic() < grace:
            self.poll()

    def close(self) -> None:
        self.consumer.close()


def _check(run: Run, i: int, value: bytes | None) -> None:
    try:
        # orjson: the reader is the harness, and its CPU is taken from the contender's cores
        # (json.loads of rayml's result envelopes cost it ~4 us a result).
        result: dict[str, Any] = orjson.loads(value or b"")
    except ValueError:
        run.errors += 1
        return
    timings = result.get("timings") or {}
    total_ms, queued_ms = timings.get("total_ms"), timings.get("queued_ms")
    if isinstance(total_ms, (int, float)):
        run.server_ms[i] = total_ms
    if isinstance(queued_ms, (int, float)):
        run.queued_ms[i] = queued_ms
    if result.get("status") != "ok":
        run.errors += 1
    elif (result.get("result") or {}).get("label") != int(run.expected[i]):
        run.wrong += 1


def run_in_thread(target: Any, *args: Any) -> threading.Thread:
    """Start ``target(*args)`` in a daemon thread (producers run beside the counter)."""
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread
