"""Traffic for the cluster scenarios: producers that keep sending while things break, and a
collector that counts results by id and measures the longest pause between them.

Each scenario ends with a :class:`Tally` (sent, answered, lost, duplicated, longest pause),
printed as one line of the table in the cluster tests' module docstring.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Producer

from rayml.config import Settings
from tests.support.kafka_io import CLIENT_LOG, ResultCollector, predict_request
from tests.support.models import breast_cancer_rows


class SteadyProducer:
    """Sends ``rate`` requests a second from a thread until :meth:`stop`; keeps every id.

    librdkafka keeps undelivered records and retries them (``message.timeout.ms`` 5 min), so
    sending goes on through a broker restart or an executor outage, as a real service's would.
    """

    def __init__(
        self, settings: Settings, rate: float, pipeline: str = "testing.slow", tag: str = ""
    ) -> None:
        self.settings = settings
        self.rate = rate
        self.pipeline = pipeline
        self.tag = tag or uuid.uuid4().hex[:6]
        self.ids: list[str] = []
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._row = breast_cancer_rows(1)[0].tolist()
        self._producer = Producer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                "logger": CLIENT_LOG,
                "linger.ms": 5,
                "enable.idempotence": True,
            }
        )
        self._thread = threading.Thread(target=self._run, name="steady-producer", daemon=True)

    def start(self) -> SteadyProducer:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        tick = 0.02
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * self.rate)
            for _ in range(due - len(self.ids)):
                rid = f"{self.tag}-{len(self.ids)}"
                request = predict_request(rid, self._row, pipeline=self.pipeline)
                self._producer.produce(
                    self.settings.topics.input,
                    value=json.dumps(request).encode(),
                    key=rid.encode(),
                    on_delivery=self._delivered,
                )
                self.ids.append(rid)
            self._producer.poll(tick)

    def _delivered(self, err: object, msg: object) -> None:
        if err is not None:
            self.failed.append(str(err))

    def halt(self) -> None:
        """Stop sending (idempotent; for cleanup)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def stop(self, flush_timeout_s: float = 120.0) -> list[str]:
        """Stop sending; wait until every request sent is acknowledged by the broker."""
        self.halt()
        remaining = self._producer.flush(flush_timeout_s)
        assert remaining == 0, f"{remaining} requests were never acknowledged by the broker"
        assert not self.failed, f"requests failed to send: {self.failed[:3]}"
        return list(self.ids)


class TimedCollector(ResultCollector):
    """A :class:`ResultCollector` that also records when each result arrived."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.arrivals: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self, timeout_s: float = 0.2) -> int:
        with self._lock:
            got = super().poll(timeout_s)
            if got:
                self.arrivals.extend([time.monotonic()] * got)
            return got

    def start_background(self) -> TimedCollector:
        """Poll in a thread, so that arrivals are timed while the test does other things."""

        def run() -> None:
            while not self._stop.is_set():
                self.poll(0.1)

        self._thread = threading.Thread(target=run, name="collector", daemon=True)
        self._thread.start()
        return self

    def stop_background(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def longest_pause_s(self) -> float:
        """The longest time between two consecutive results (0 with fewer than two)."""
        times = sorted(self.arrivals)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def wait_count(self, at_least: int, timeout_s: float = 60.0) -> int:
        deadline = time.monotonic() + timeout_s
        while self.count() < at_least and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.count()

    def wait_all(self, ids: list[str], timeout_s: float = 180.0) -> None:
        """Wait (in the background thread) until every id has a result, or the timeout."""
        wanted = set(ids)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if wanted <= self.results.keys():
                    return
            time.sleep(0.1)


@dataclass(frozen=True)
class Tally:
    """What one scenario delivered: the line of the closing table."""

    scenario: str
    sent: int
    answered: int
    lost: int
    duplicated: int
    longest_pause_s: float

    @classmethod
    def of(cls, scenario: str, ids: list[str], collector: TimedCollector) -> Tally:
        results = {i: collector.results.get(i, []) for i in ids}
        return cls(
            scenario=scenario,
            sent=len(ids),
            answered=sum(1 for rs in results.values() if rs),
            lost=sum(1 for rs in results.values() if not rs),
            duplicated=sum(max(0, len(rs) - 1) for rs in results.values()),
            longest_pause_s=round(collector.longest_pause_s(), 2),
        )

    def line(self) -> str:
        return (
            f"| {self.scenario} | {self.sent} | {self.answered} | {self.lost} | "
            f"{self.duplicated} | {self.longest_pause_s:.2f} s |"
        )
