"""The bare flow: DESIGN.md's flow with none of rayml's features, as the upper bound for rayml.

DESIGN.md ("One Ray call per micro-batch") calibrates rayml against a bare prototype of its own
flow; this is that prototype, run by ``python -m bench`` on the same broker, Ray runtime, model
and workload as rayml, so that "rayml >= 85% of the bare flow" is measured, not quoted:

* one ingest Ray actor (``num_cpus=0``, like rayml's) whose poll loop runs in a thread: a
  confluent-kafka consumer with rayml's ingest group protocol and fetch settings takes up to
  1,024 records at a time, ``json.loads`` each only for its id and feature row, and makes ONE
  Ray call per micro-batch to ONE model actor;
* the model actor holds the benchmark's XGBoost model, loaded once from the file the baselines
  use, and predicts each batch with one ``predict`` call on a NumPy array;
* the ingest produces one result per request to the output topic, keyed by request id, in the
  smallest shape the benchmark's result counter accepts (``{"id", "status", "result":
  {"label"}}``);
* at-least-once: an input offset is committed only once its result's delivery report came back,
  as the per-partition watermark (:class:`Watermarks`), asynchronously every 0.25 s; at most
  two Ray calls are outstanding, so the next batch is polled while the previous one runs.

Nothing else: no validation, registry, routing, dead letters, retries, backpressure, metrics or
result envelopes. A record that is not a well-formed request stops the loop (the benchmark
sends none). One consumer-group member only: a revoked partition's state is dropped after its
watermark is committed, and its unfinished records are read again by the next owner.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

from bench.memory import GroupFn

if TYPE_CHECKING:
    from bench.contenders import Endpoint

MAX_BATCH = 1024  # records per consume() and per Ray call
MAX_IN_FLIGHT = 2  # outstanding Ray calls: one runs while the next batch is polled
COMMIT_INTERVAL_S = 0.25
POLL_TIMEOUT_S = 0.05  # how long an idle loop waits for a first record
INGEST_NAME = "BareIngest"
MODEL_NAME = "BareModel"


class Watermarks:
    """Per partition, the committable offset: one past the contiguous prefix of delivered offsets.

    Offsets are tracked in the order they were polled (increasing per partition, with gaps where
    the log has them); deliveries arrive in any order. ``advance`` pops the delivered prefix of
    each partition and returns the new commit offsets of the partitions that moved.

    Example:
        >>> w = Watermarks()
        >>> for offset in (5, 6, 8):
        ...     w.track(0, offset)
        >>> w.done(0, 6)
        >>> w.advance()
        {}
        >>> w.done(0, 5)
        >>> w.advance()
        {0: 7}
        >>> w.done(0, 8)
        >>> w.advance(), w.pending(0)
        ({0: 9}, 0)
    """

    def __init__(self) -> None:
        self._polled: dict[int, deque[int]] = {}
        self._delivered: dict[int, set[int]] = {}

    def track(self, partition: int, offset: int) -> None:
        polled = self._polled.get(partition)
        if polled is None:
            polled = self._polled[partition] = deque()
            self._delivered[partition] = set()
        polled.append(offset)

    def done(self, partition: int, offset: int) -> None:
        """The result of ``offset`` was delivered (ignored for a partition no longer held)."""
        delivered = self._delivered.get(partition)
        if delivered is not None:
            delivered.add(offset)

    def advance(self) -> dict[int, int]:
        moved: dict[int, int] = {}
        for partition, polled in self._polled.items():
            delivered = self._delivered[partition]
            last = -1
            while polled and polled[0] in delivered:
                last = polled.popleft()
                delivered.discard(last)
            if last >= 0:
                moved[partition] = last + 1
        return moved

    def pending(self, partition: int) -> int:
        """Offsets of ``partition`` polled and not yet below its watermark."""
        return len(self._polled.get(partition, ()))

    def forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._polled.pop(partition, None)
            self._delivered.pop(partition, None)


class BareModel:
    """The model actor: the XGBoost model loaded once, one ``predict`` per batch."""

    def __init__(self, model_path: str) -> None:
        from xgboost import XGBClassifier

        self._model = XGBClassifier()
        self._model.load_model(model_path)
        self._model.set_params(n_jobs=1)  # one core per actor, as rayml's workers

    def ping(self) -> bool:
        return True

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._model.predict(rows))


class BareIngest:
    """The ingest actor: a poll loop in a thread (started by :meth:`start`, ended by :meth:`stop`).

    Args:
        bootstrap: Kafka bootstrap servers.
        input_topic: Where requests are read.
        output_topic: Where results are written.
        group: The consumer group.
        model: The :class:`BareModel` actor handle.
    """

    def __init__(
        self, bootstrap: str, input_topic: str, output_topic: str, group: str, model: Any
    ) -> None:
        self._bootstrap = bootstrap
        self._input = input_topic
        self._output = output_topic
        self._group = group
        self._model = model
        self._marks = Watermarks()
        self._watermark: dict[int, int] = {}  # the highest commit offset reached per partition
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self._error: str | None = None
        self.polled = 0
        self.batches = 0
        self.delivered = 0
        self.failed_deliveries = 0
        self.commits = 0

    # -- control (Ray calls) ----------------------------------------------------------------

    def start(self) -> None:
        from confluent_kafka import Consumer, Producer

        from rayml.kafka.clients import INGEST_FETCH, RESULT_BATCHING

        self._consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": self._group,
                # As rayml's ingest consumer (rayml.kafka.clients.ingest_consumer).
                "group.protocol": "consumer",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                **INGEST_FETCH,
            }
        )
        self._producer = Producer(
            {
                # As rayml's result producer (rayml.kafka.clients.producer).
                "bootstrap.servers": self._bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                **RESULT_BATCHING,
            }
        )
        self._consumer.subscribe([self._input], on_revoke=self._on_revoke)
        self._thread = threading.Thread(target=self._run, name="bare-poll", daemon=True)
        self._thread.start()

    def error(self) -> str | None:
        """The loop's traceback if it stopped on an exception."""
        return self._error

    def stop(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """End the loop (it finishes what is in flight and commits); return its counters."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        return {
            "polled": self.polled,
            "batches": self.batches,
            "results_ok": self.delivered,
            "failed_deliveries": self.failed_deliveries,
            "commits": self.commits,
            "error": self._error,
        }

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:
            self._error = traceback.format_exc()

    def _loop(self) -> None:
        import ray

        consumer, producer = self._consumer, self._producer
        in_flight: deque[tuple[Any, list[str], list[int], list[int]]] = deque()
        next_commit = time.monotonic() + COMMIT_INTERVAL_S
        try:
            while not self._stopping.is_set():
                if len(in_flight) < MAX_IN_FLIGHT:
                    batch = self._take(0.0 if in_flight else POLL_TIMEOUT_S)
                    if batch is not None:
                        in_flight.append(batch)
                if in_flight:
                    # Full: wait for the oldest call; else only glance, and poll again.
                    wait_s = 0.05 if len(in_flight) >= MAX_IN_FLIGHT else 0.002
                    ready, _ = ray.wait([in_flight[0][0]], timeout=wait_s)
                    if ready:
                        self._answer(in_flight.popleft())
                producer.poll(0)
                now = time.monotonic()
                if now >= next_commit:
                    next_commit = now + COMMIT_INTERVAL_S
                    self._commit(asynchronous=True)
            while in_flight:  # stopping: finish what is in flight
                self._answer(in_flight.popleft())
            producer.flush(30)
            self._commit(asynchronous=False, everything=True)
        finally:
            consumer.close()

    def _take(self, timeout_s: float) -> tuple[Any, list[str], list[int], list[int]] | None:
        """Poll up to MAX_BATCH records, parse them and send them to the model in one call.

        An idle loop waits for a first record and then takes what else is there: a bare
        ``consume(n, timeout)`` returns only with n records or at the timeout, which would
        hold a lone request for the whole timeout (rayml's loop does the same).
        """
        consumer = self._consumer
        if timeout_s <= 0:
            messages = consumer.consume(MAX_BATCH, 0)
        else:
            first = consumer.poll(timeout_s)
            if first is None:
                return None
            messages = [first, *consumer.consume(MAX_BATCH - 1, 0)]
        ids: list[str] = []
        rows: list[list[float]] = []
        partitions: list[int] = []
        offsets: list[int] = []
        track = self._marks.track
        loads = json.loads
        for msg in messages:
            if msg.error() is not None:
                continue
            request = loads(msg.value())
            ids.append(request["id"])
            rows.append(request["params"]["features"])
            partition, offset = msg.partition(), msg.offset()
            track(partition, offset)
            partitions.append(partition)
            offsets.append(offset)
        if not ids:
            return None
        self.polled += len(ids)
        self.batches += 1
        ref = self._model.predict.remote(np.asarray(rows, dtype=np.float64))
        return ref, ids, partitions, offsets

    def _answer(self, batch: tuple[Any, list[str], list[int], list[int]]) -> None:
        import ray

        ref, ids, partitions, offsets = batch
        labels = ray.get(ref).tolist()
        producer, topic, delivered = self._producer, self._output, self._delivered
        dumps = json.dumps
        for request_id, label, partition, offset in zip(
            ids, labels, partitions, offsets, strict=True
        ):
            value = f'{{"id":{dumps(request_id)},"status":"ok","result":{{"label":{label}}}}}'
            callback = partial(delivered, partition, offset)
            while True:
                try:
                    producer.produce(
                        topic, value=value.encode(), key=request_id.encode(), on_delivery=callback
                    )
                    break
                except BufferError:  # the producer's queue is full: serve delivery reports
                    producer.poll(0.01)
        producer.poll(0)

    def _delivered(self, partition: int, offset: int, err: Any, _msg: Any) -> None:
        if err is None:
            self.delivered += 1
            self._marks.done(partition, offset)
        else:  # never committed: the record is read again after a restart
            self.failed_deliveries += 1

    def _commit(self, asynchronous: bool, everything: bool = False) -> None:
        from confluent_kafka import TopicPartition

        moved = self._marks.advance()
        self._watermark.update(moved)
        offsets = self._watermark if everything else moved
        if not offsets:
            return
        self._consumer.commit(
            offsets=[TopicPartition(self._input, p, o) for p, o in offsets.items()],
            asynchronous=asynchronous,
        )
        self.commits += 1

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import TopicPartition

        revoked = {tp.partition for tp in partitions}
        self._watermark.update(self._marks.advance())
        done = [
            TopicPartition(self._input, p, o) for p, o in self._watermark.items() if p in revoked
        ]
        if done:
            # Refused when not the owner any more: the next owner re-reads those records.
            with contextlib.suppress(Exception):
                consumer.commit(offsets=done, asynchronous=False)
        self._marks.forget(revoked)
        for partition in revoked:
            self._watermark.pop(partition, None)


def bare_groups() -> dict[str, list[int]]:
    """As :func:`bench.memory.rayml_groups`, with the bare flow's actors as ingest and workers."""
    groups: dict[str, list[int]] = {
        "driver": [os.getpid()],
        "ingest": [],
        "workers": [],
        "ray system": [],
    }
    for proc in psutil.Process().children(recursive=True):
        try:
            name = proc.name()
        except psutil.Error:
            continue
        if name == "java":
            continue
        if name.startswith(f"ray::{INGEST_NAME}"):
            groups["ingest"].append(proc.pid)
        elif name.startswith(f"ray::{MODEL_NAME}"):
            groups["workers"].append(proc.pid)
        elif name.startswith("ray::") or name in {"gcs_server", "raylet", "python"}:
            groups["ray system"].append(proc.pid)
    return groups


class BareFlowContender:
    """The bare flow on the Ray runtime of this process (as :class:`~bench.contenders.
    RaymlContender`): a :class:`BareModel` actor and a :class:`BareIngest` actor.

    Args:
        model_path: The XGBoost model file the baselines load.
        model_num_cpus: CPUs reserved for the model actor (rayml's ``worker_num_cpus``).
    """

    key = "bare"
    label = "bare flow (DESIGN.md's flow, no features)"

    def __init__(self, model_path: str, model_num_cpus: float = 1.0) -> None:
        self._model_path = model_path
        self._model_num_cpus = model_num_cpus
        self._model: Any = None
        self._ingest: Any = None
        self.final_status: list[dict[str, Any]] = []

    def start(self, endpoint: Endpoint) -> None:
        import ray

        self._model = (
            ray.remote(BareModel)
            .options(num_cpus=self._model_num_cpus, max_restarts=0)
            .remote(self._model_path)
        )
        ray.get(self._model.ping.remote(), timeout=120)
        self._ingest = (
            ray.remote(BareIngest)
            .options(num_cpus=0, max_concurrency=2, max_restarts=0)
            .remote(
                endpoint.bootstrap,
                endpoint.input_topic,
                endpoint.output_topic,
                endpoint.group,
                self._model,
            )
        )
        ray.get(self._ingest.start.remote(), timeout=60)

    def check_alive(self) -> None:
        import ray

        if self._ingest is not None:
            error = ray.get(self._ingest.error.remote(), timeout=30)
            if error:
                raise RuntimeError(f"{self.label}: its loop stopped:\n{error[-3000:]}")

    def stop(self) -> None:
        import ray

        try:
            if self._ingest is not None:
                status = ray.get(self._ingest.stop.remote(), timeout=60)
                self.final_status = [status]
                if status.get("error"):
                    print(f"bench: {self.label}: its loop stopped:\n{status['error'][-3000:]}")
        except Exception as exc:  # the actors must go even without a final status
            print(f"bench: {self.label}: no final status ({type(exc).__name__}: {exc})")
        finally:
            for handle in (self._ingest, self._model):
                if handle is not None:
                    ray.kill(handle)
            self._ingest = self._model = None

    def memory_groups(self) -> tuple[GroupFn, list[str]]:
        return bare_groups, ["driver", "ingest", "workers"]

    def describe(self) -> str:
        return (
            f"1 ingest actor (num_cpus=0, poll thread, up to {MAX_BATCH} records a poll, "
            f"json.loads only), 1 Ray call per batch to 1 model actor "
            f"(num_cpus={self._model_num_cpus:g}, one predict per batch), at most "
            f"{MAX_IN_FLIGHT} calls in flight, watermark commits every {COMMIT_INTERVAL_S:g} s "
            "after delivery (at-least-once)"
        )
