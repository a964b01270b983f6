"""Priority lanes and tenant shares on the real broker and a real local Ray (issue 17, items 4
and 5: the intake side; docs/service.md, "Priority lanes and tenant shares").

The executor's in-flight window is lowered to :data:`WINDOW` records so that a burst fills it
many times over. Interactive requests go through :class:`rayml.Client` at a steady :data:`RATE`
a second, each timed from its send to its result being read by the client. A burst is produced
straight onto its topic (:class:`Burst`: encoded up front, its results read back from a reply
topic of its own by one consumer), so that the process measuring the interactive client is not
also the one busy sending tens of thousands of requests through it:

* a burst of :data:`BULK` requests on the bulk lane while interactive requests keep coming:
  every request of both answered exactly once (one result per id, read again once the group
  has committed to the end), and the interactive p99 under :data:`INTERACTIVE_P99_S` and at most
  a :data:`WELL_BELOW`-th of the bulk p50 (interactive does not queue behind the backlog);
* bulk alone, sent with ``Client(...).request(..., priority="batch")``, takes more than its
  share of the window (the ingest's status shows it), every request answered once;
* tenant A's burst of :data:`TENANT_BURST` on its own topic while tenant B sends steadily: B's
  p99 under :data:`TENANT_P99_S`, B never held back, both answered exactly once;
* tenant A's burst while tenant B's requests are held at a gate (so B has work in flight for
  sure, whatever the machine's speed): A is held to its share, both answered exactly once.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from rayml.client import Client
from rayml.config import Settings
from rayml.executor.service import Executor
from rayml.kafka.topics import create_topics
from rayml.protocol.envelopes import Result, decode_result
from rayml.tenancy.rules import Lane, tenants_of
from tests.support.kafka_io import ResultCollector, committed_equals_end
from tests.support.models import breast_cancer_rows, store_breast_cancer
from tests.support.served import module_settings
from tests.support.waiting import Budget, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

PIPELINE = "breast_cancer.predict"
WINDOW = 2_000  # executor.max_in_flight: the bursts fill it many times over
BULK = 100_000  # issue 17: "a bulk burst of 100,000 low-priority requests"
TENANT_BURST = 20_000
RATE = 20.0  # interactive requests a second
# The bounds docs/service.md states for these tests, on a 2-core machine shared with other
# suites (measured p99: 0.15-0.28 s, 1.76 s at a load of 7; tenant b 0.37-0.54 s).
INTERACTIVE_P99_S = 2.5
WELL_BELOW = 3  # interactive p99 <= bulk p50 / WELL_BELOW
TENANT_P99_S = 2.5
PARTITIONS = 4


def lanes_settings(
    bootstrap: str, root: Path, prefix: str, tenants: list[dict[str, Any]] | None = None
) -> Settings:
    return module_settings(
        {"bootstrap_servers": bootstrap},
        root,
        prefix,
        {"job_runners": 0},
        topics={"input_partitions": PARTITIONS, "output_partitions": PARTITIONS},
        executor={
            "max_in_flight": WINDOW,
            "pipeline_modules": ["pipelines", "tests.support.gated_pipelines"],
        },
        tenants=tenants or [],
    )


@contextmanager
def serve(settings: Settings) -> Iterator[Executor]:
    create_topics(settings.kafka, settings.topics, tenants=tenants_of(settings))
    store_breast_cancer(settings.models.root, n_estimators=5)
    executor = Executor(settings)
    executor.start()
    try:
        yield executor
    finally:
        executor.drain(10)


@pytest.fixture(scope="module")
def default_tenant(
    bootstrap_servers: str, ray_runtime: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Executor, Settings]]:
    """One executor without tenants: the default tenant's two lanes."""
    settings = lanes_settings(bootstrap_servers, tmp_path_factory.mktemp("lanes"), "ln")
    with serve(settings) as executor:
        yield executor, settings


@pytest.fixture(scope="module")
def two_tenants(
    bootstrap_servers: str, ray_runtime: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Executor, Settings]]:
    """One executor for tenants a and b (weight 1 each)."""
    tag = f"ls-{uuid.uuid4().hex[:8]}"
    tenants = [
        {
            "name": name,
            "input_topic": f"{tag}.{name}.in",
            "result_topic": f"{tag}.{name}.out",
            "reply_prefix": f"{tag}.{name}.replies.",
        }
        for name in ("a", "b")
    ]
    settings = lanes_settings(
        bootstrap_servers, tmp_path_factory.mktemp("shares"), "ls", tenants=tenants
    )
    with serve(settings) as executor:
        yield executor, settings


class Timed:
    """Requests sent through one client, each timed from its send to its result being read
    (the future's completion, on the client's reply thread)."""

    def __init__(self, client: Client, priority: Lane, name: str, gate: Path | None = None) -> None:
        self.client = client
        self.priority = priority
        self.name = name
        # Requests of testing.gated, whose batches wait while this file exists.
        self.gate = gate
        self.sent: dict[str, float] = {}
        self.read: dict[str, float] = {}
        self.results: dict[str, Result] = {}
        self._rows = [row.tolist() for row in breast_cancer_rows(64)]
        self._lock = threading.Lock()

    def send(self) -> None:
        n = len(self.sent)
        rid = f"{self.name}-{n}"
        self.sent[rid] = time.monotonic()
        params: dict[str, Any] = {"features": self._rows[n % len(self._rows)]}
        if self.gate is not None:
            params["gate"] = str(self.gate)
        future = self.client.request(
            PIPELINE if self.gate is None else "testing.gated",
            params,
            request_id=rid,
            priority=self.priority,
        )
        future.add_done_callback(lambda f, rid=rid: self._done(rid, f))

    def _done(self, rid: str, future: Future[Result]) -> None:
        at = time.monotonic()
        if future.exception() is None:
            with self._lock:
                self.read[rid] = at
                self.results[rid] = future.result()

    def answered(self) -> bool:
        return len(self.read) == len(self.sent)

    def latencies(self, since: float = -np.inf) -> np.ndarray:
        """Seconds from send to read of the requests sent at ``since`` or later."""
        with self._lock:
            return np.array([self.read[r] - t for r, t in self.sent.items() if t >= since])

    def percentile(self, q: float, since: float = -np.inf) -> float:
        return float(np.percentile(self.latencies(since), q))


class Steady:
    """Sends ``rate`` requests a second through ``timed`` from a thread until :meth:`stop`."""

    def __init__(self, timed: Timed, rate: float) -> None:
        self.timed = timed
        self.rate = rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * self.rate) + 1
            while len(self.timed.sent) < due:
                self.timed.send()
            self._stop.wait(1.0 / self.rate / 4)

    def __enter__(self) -> Steady:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Burst:
    """A burst produced straight onto a request topic, as a backfill job's producer would, its
    results sent to a reply topic of its own; each request timed from its produce to its result
    being read there. Cheap on the test's CPU (values encoded up front, results read by one
    consumer), so that what is measured is the interactive client, not the burst's sender."""

    def __init__(self, settings: Settings, topic: str, reply_topic: str, name: str) -> None:
        self.settings, self.topic, self.reply_topic, self.name = settings, topic, reply_topic, name
        admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
        admin.create_topics([NewTopic(reply_topic, 1, 1)])[reply_topic].result(30)
        self.sent: list[float] = []
        self.read: dict[int, float] = {}
        self.copies: Counter[int] = Counter()
        self.not_ok = 0
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                "group.id": f"burst-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        self._consumer.assign([TopicPartition(reply_topic, 0, OFFSET_BEGINNING)])
        self._reader = threading.Thread(target=self._read, name="burst-reader", daemon=True)
        self._reader.start()

    def send(self, n: int) -> None:
        rows = [row.tolist() for row in breast_cancer_rows(64)]
        values = [
            json.dumps(
                {
                    "id": f"{self.name}-{i}",
                    "pipeline": PIPELINE,
                    "params": {"features": rows[i % len(rows)]},
                    "reply_to": self.reply_topic,
                }
            ).encode()
            for i in range(n)
        ]
        producer = Producer(
            {
                "bootstrap.servers": self.settings.kafka.bootstrap_servers,
                "linger.ms": 5,
                "enable.idempotence": True,
            }
        )
        for i, value in enumerate(values):
            self.sent.append(time.monotonic())
            while True:
                try:
                    producer.produce(self.topic, key=f"{self.name}-{i}".encode(), value=value)
                    break
                except BufferError:
                    producer.poll(0.05)
        assert producer.flush(60) == 0

    def _read(self) -> None:
        while not self._stop.is_set():
            self._take(self._consumer.consume(5_000, 0.1))

    def _take(self, messages: list[Any]) -> None:
        at = time.monotonic()
        for msg in messages:
            if msg.error() is not None:
                continue
            result = decode_result(msg.value())
            i = int(result.id.rsplit("-", 1)[1])
            self.copies[i] += 1
            self.read.setdefault(i, at)
            self.not_ok += result.status != "ok"

    def answered(self) -> bool:
        return len(self.read) == len(self.sent)

    def percentile(self, q: float) -> float:
        return float(np.percentile([self.read[i] - t for i, t in enumerate(self.sent)], q))

    def answered_once(self) -> None:
        """Every request answered ``ok`` exactly once: call it once the group has committed
        everything, so that every result there will be is on the reply topic; it is read to
        its end."""
        self._stop.set()
        self._reader.join(10)
        tp = TopicPartition(self.reply_topic, 0)
        _low, end = self._consumer.get_watermark_offsets(tp, timeout=10)
        deadline = time.monotonic() + 30
        while self._consumer.position([tp])[0].offset < end and time.monotonic() < deadline:
            self._take(self._consumer.consume(5_000, 0.5))
        self._consumer.close()
        assert self.answered()
        assert self.not_ok == 0
        twice = {i: n for i, n in self.copies.items() if n != 1}
        assert twice == {}, f"answered more than once: {list(twice.items())[:5]}"


def client_for(settings: Settings, reply_topic: str | None = None) -> Client:
    return Client(settings=settings, validate=False, reply_topic=reply_topic)


def answered_once(settings: Settings, timed: Timed) -> None:
    """Every request answered ``ok``, and its client's reply topic holds exactly one result
    per id (read again from the beginning, once the group committed everything)."""
    assert timed.answered(), f"{len(timed.sent) - len(timed.read)} of {timed.name} unanswered"
    assert {r.status for r in timed.results.values()} == {"ok"}
    collector = ResultCollector(settings, timed.client.reply_topic)
    try:
        wait_until(
            lambda: collector.poll(0.5) == 0 and len(collector.results) >= len(timed.sent),
            f"{timed.name}'s results are read again",
            60,
        )
        collector.poll_until_quiet(1.0)
    finally:
        collector.close()
    assert set(collector.results) >= set(timed.sent)
    twice = {rid: len(rs) for rid, rs in collector.results.items() if len(rs) != 1}
    assert twice == {}, f"answered more than once: {list(twice.items())[:5]}"


def committed(settings: Settings, topics: list[str]) -> None:
    """The group committed each of ``topics`` to its end."""
    for topic in topics:
        offsets, ends = committed_equals_end(
            settings, topic, settings.executor.group_id, PARTITIONS, timeout_s=30
        )
        assert offsets == ends, topic


def intake(executor: Executor) -> dict[str, Any]:
    [status] = executor.status()
    return status["intake"]


def test_interactive_requests_do_not_queue_behind_a_bulk_backlog(
    default_tenant: tuple[Executor, Settings],
) -> None:
    executor, settings = default_tenant
    budget = Budget(240)
    bulk = Burst(
        settings, settings.topics.input_batch, f"{settings.topics.input}.bulk-replies", "b"
    )
    with client_for(settings) as front:
        interactive = Timed(front, "interactive", "i")
        with Steady(interactive, RATE):
            # Interactive traffic is flowing (a second of it answered), then the burst comes.
            wait_until(lambda: len(interactive.read) > RATE, "interactive answers", budget.left(60))
            started = time.monotonic()
            bulk.send(BULK)
            wait_until(bulk.answered, "every bulk request is answered", budget.left(180))
            took = time.monotonic() - started
        wait_until(interactive.answered, "every interactive request is answered", 30)
        committed(settings, [settings.topics.input, settings.topics.input_batch])
        answered_once(settings, interactive)
        bulk.answered_once()
        state = intake(executor)
        # The interactive requests sent while the burst was sent and served.
        during = interactive.latencies(since=started)
        p99, bulk_p50 = float(np.percentile(during, 99)), bulk.percentile(50)
        print(
            f"\nbulk {BULK} in {took:.1f}s ({BULK / took:.0f}/s): p50 {bulk_p50:.2f}s, "
            f"p99 {bulk.percentile(99):.2f}s; interactive {len(during)} sent meanwhile at "
            f"{RATE:g}/s: p50 {np.percentile(during, 50):.3f}s, p99 {p99:.3f}s, "
            f"max {during.max():.3f}s; bulk lane paused {state['batch_pauses']} times, peak "
            f"{state['batch_peak']} in flight (share {state['batch_share_records']})"
        )
    assert len(during) >= RATE * took / 2, "interactive requests kept coming during the burst"
    assert state["batch_pauses"] > 0, "the bulk lane was held back while interactive waited"
    assert p99 < INTERACTIVE_P99_S
    assert p99 <= bulk_p50 / WELL_BELOW, "interactive does not queue behind the bulk backlog"


def test_bulk_alone_takes_more_than_its_share_of_the_window(
    default_tenant: tuple[Executor, Settings], tmp_path: Path
) -> None:
    """With no interactive work about, the bulk lane is read past its share: its batches are
    held at a gate (testing.gated), so what it holds grows for as long as the intake lets it,
    whatever the machine's speed (sent as a trickle and answered at once, it never held 500)."""
    executor, settings = default_tenant
    share = intake(executor)["batch_share_records"]
    assert share == WINDOW // 4
    gate = tmp_path / "gate"
    gate.touch()
    try:
        with client_for(settings) as back:
            bulk = Timed(back, "batch", "alone", gate=gate)
            wait_until(
                lambda: not intake(executor)["interactive_active"], "no interactive work about", 10
            )
            for _ in range(3 * share):
                bulk.send()

            def above_share() -> bool:
                # Twice the share: a lane held to its share overshoots it by a poll at most
                # (553 of 500 in the test above).
                state = intake(executor)
                held = state["in_flight"]["default"]["batch"]
                return not state["interactive_active"] and held >= 2 * share

            wait_until(above_share, f"bulk alone holds twice its share ({share}) or more", 60)
            gate.unlink()
            wait_until(bulk.answered, "every bulk request is answered", 60)
            answered_once(settings, bulk)
    finally:
        gate.unlink(missing_ok=True)


def test_a_tenants_burst_leaves_another_tenant_within_its_share(
    two_tenants: tuple[Executor, Settings],
) -> None:
    executor, settings = two_tenants
    budget = Budget(150)
    a_tenant, b_tenant = settings.tenants
    a = Burst(settings, a_tenant.input_topic, f"{a_tenant.reply_prefix}burst", "a")
    topics = settings.topics.model_copy(update={"input": b_tenant.input_topic})
    b_settings = settings.model_copy(update={"topics": topics})
    with client_for(b_settings, reply_topic=f"{b_tenant.reply_prefix}steady") as b_client:
        b = Timed(b_client, "interactive", "b")
        with Steady(b, RATE):
            wait_until(lambda: len(b.read) > RATE, "tenant b's answers", budget.left(60))
            started = time.monotonic()
            a.send(TENANT_BURST)
            wait_until(a.answered, "every request of tenant a is answered", budget.left(120))
            took = time.monotonic() - started
        wait_until(b.answered, "every request of tenant b is answered", 30)
        committed(settings, [a_tenant.input_topic, b_tenant.input_topic])
        a.answered_once()
        answered_once(settings, b)
        state = intake(executor)
        during = b.latencies(since=started)
        p99 = float(np.percentile(during, 99))
        print(
            f"\ntenant a: {TENANT_BURST} in {took:.1f}s, p50 {a.percentile(50):.2f}s; tenant b: "
            f"{len(during)} sent meanwhile at {RATE:g}/s: p50 {np.percentile(during, 50):.3f}s, "
            f"p99 {p99:.3f}s, max {during.max():.3f}s; a paused {state['tenant_pauses']['a']} "
            "times"
        )
    assert len(during) >= RATE * took / 2, "tenant b kept sending during the burst"
    # Whether tenant a was paused here depends on the machine: b's trickle is answered at once,
    # so it may have nothing in flight at the intake's decisions (seen in CI: a never paused,
    # b's p99 0.93 s). The next test holds b's work in flight to show a held to its share.
    assert state["tenant_pauses"].get("b", 0) == 0
    assert p99 < TENANT_P99_S


def test_a_tenant_with_work_in_flight_holds_another_tenants_burst_to_its_share(
    two_tenants: tuple[Executor, Settings], tmp_path: Path
) -> None:
    """Tenant b's requests wait at a gate (testing.gated), so b has records in flight for as
    long as the test needs; tenant a's burst then comes: the intake pauses a at its share of
    the window (weights 1 and 1), and once the gate opens both are answered exactly once."""
    executor, settings = two_tenants
    budget = Budget(150)
    a_tenant, b_tenant = settings.tenants
    a = Burst(settings, a_tenant.input_topic, f"{a_tenant.reply_prefix}held-burst", "ha")
    topics = settings.topics.model_copy(update={"input": b_tenant.input_topic})
    b_settings = settings.model_copy(update={"topics": topics})
    pauses_before = intake(executor)["tenant_pauses"].get("a", 0)
    gate = tmp_path / "gate"
    gate.touch()
    try:
        with client_for(b_settings, reply_topic=f"{b_tenant.reply_prefix}held") as b_client:
            b = Timed(b_client, "interactive", "hb", gate=gate)
            for _ in range(10):
                b.send()

            def b_in_flight() -> bool:
                return intake(executor)["in_flight"].get("b", {}).get("interactive", 0) > 0

            wait_until(b_in_flight, "tenant b's held requests are in flight", budget.left(60))
            a.send(2 * WINDOW)

            def a_held() -> bool:
                state = intake(executor)
                return state["tenant_pauses"].get("a", 0) > pauses_before and b_in_flight()

            wait_until(a_held, "tenant a is held to its share while b has work", budget.left(60))
            gate.unlink()
            wait_until(a.answered, "every request of tenant a is answered", budget.left(120))
            wait_until(b.answered, "every request of tenant b is answered", budget.left(60))
            committed(settings, [a_tenant.input_topic, b_tenant.input_topic])
            a.answered_once()
            answered_once(settings, b)
    finally:
        gate.unlink(missing_ok=True)
