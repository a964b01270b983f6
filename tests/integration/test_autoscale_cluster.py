"""A burst on Kafka grows the pool, Ray adds nodes, the lag drains, and both shrink back.

Runs on a cluster of its own: ``ray start --head --block`` with Ray's fake multi-node provider
(``cluster-local.yaml``: a head with no CPU, worker nodes of one CPU each, started as extra
raylets on this machine by Ray's autoscaler). The executor is a ``rayml serve`` subprocess
joined to that head, so this test process never calls ``ray.init`` and the session's own Ray
is not touched. Everything the head started is ended by pid at the end (never ``ray stop``).

The pipeline sleeps 20 ms per batch of at most 10 requests, so a worker, not the ingest, is the
bottleneck (~400 requests/s) and one worker per one-CPU node is what the pool can add.

Every step waits on a condition (from Kafka and the controller's log lines), each capped, and all
the caps share one :class:`~tests.support.waiting.Budget` inside the test's own timeout: a step
that never comes fails with its samples, not by pytest-timeout. How fast the pool grows is
timed from the controller's first sight of the burst's lag, not from before the burst was
produced, so the time this machine takes to produce 10,000 records is not counted against it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from confluent_kafka import Producer

from rayml.config import Settings
from rayml.kafka.lag import group_lag
from rayml.kafka.topics import create_topics
from tests.support.executor_process import ExecutorProcess
from tests.support.kafka_io import send_requests
from tests.support.models import store_breast_cancer
from tests.support.waiting import Budget

pytestmark = [pytest.mark.kafka, pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
STEADY_RATE = 20  # requests/s before, during and after the burst
BURST = 10_000  # requests produced at once: several hundred times the steady rate
PIPELINE = "testing.slow"
# The test's own timeout and the share of it its waits may take: the rest is for the fixture's
# head (up to 60 s), the executor's drain and the cluster's stop (up to 30 + 10 s).
TEST_TIMEOUT_S = 600
WAIT_BUDGET_S = 450.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class FakeCluster:
    """``ray start --head --block`` on the fake multi-node provider, owned by this test."""

    def __init__(self, config: Path) -> None:
        # Short: Ray's unix socket paths live under it and must stay under ~107 characters.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rfc-", dir="/tmp"))
        self.port = free_port()
        from ray._private.services import get_node_ip_address

        self.ip = get_node_ip_address()
        self.address = f"{self.ip}:{self.port}"
        cluster = yaml.safe_load(config.read_text())
        # Worker nodes join the head at this address (the provider assumes port 6379 otherwise).
        cluster["provider"]["gcs_address"] = self.address
        self.config = self.temp_dir / "cluster.yaml"
        self.config.write_text(yaml.safe_dump(cluster))
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._seen: dict[int, psutil.Process] = {}

    def start(self, env: dict[str, str], timeout_s: float = 60) -> FakeCluster:
        ray_bin = Path(sys.executable).with_name("ray")
        self.proc = subprocess.Popen(
            [
                str(ray_bin),
                "start",
                "--head",
                "--block",
                f"--autoscaling-config={self.config}",
                "--num-cpus=0",
                "--object-store-memory=200000000",
                f"--port={self.port}",
                f"--temp-dir={self.temp_dir}",
                f"--ray-client-server-port={free_port()}",
                "--dashboard-agent-listen-port=0",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()

        def read() -> None:
            assert self.proc is not None
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log.append(line.rstrip())
                if "Ray runtime started" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout_s):
            self.stop()
            raise AssertionError("the fake cluster's head did not start:\n" + "\n".join(self.log))
        self.track()
        return self

    def track(self) -> None:
        """Remember every process of this cluster: our child's descendants and any process
        whose command line names our temp dir (the raylets the autoscaler starts)."""
        assert self.proc is not None
        mine = str(self.temp_dir)
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                self._seen[p.pid] = p
        for p in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(mine in arg for arg in p.info["cmdline"] or []):
                    self._seen[p.pid] = p
                    for child in p.children(recursive=True):
                        self._seen[child.pid] = child

    def stop(self) -> None:
        """SIGTERM the head (it ends what it started), then kill whatever of ours is left."""
        if self.proc is None:
            return
        with contextlib.suppress(psutil.Error):
            self.track()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.track_leftovers_and_kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def track_leftovers_and_kill(self) -> None:
        alive = []
        for p in self._seen.values():
            # Same pid *and* same start time: never a stranger that reused the pid.
            with contextlib.suppress(psutil.Error):
                if p.is_running():
                    p.terminate()
                    alive.append(p)
        _gone, still = psutil.wait_procs(alive, timeout=10)
        for p in still:
            with contextlib.suppress(psutil.Error):
                p.kill()


@pytest.fixture
def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCluster]:
    # A test head opts out of token auth (it listens on this machine only, for one test);
    # the executor subprocess inherits the same mode.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("SLOW_PIPELINE_S", "0.02")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYML_")}
    env.update(
        {
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": str(REPO),
        }
    )
    cluster = FakeCluster(REPO / "cluster-local.yaml").start(env)
    try:
        yield cluster
    finally:
        cluster.stop()


def cluster_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "executor": settings.executor.model_copy(
                update={
                    "worker_num_cpus": 1.0,  # one worker per one-CPU node
                    "num_workers": 1,
                    "max_batch_size": 10,
                    "drain_timeout_s": 10.0,
                    "pipeline_modules": ["tests.support.executor_pipelines"],
                }
            ),
            "training": settings.training.model_copy(update={"job_runners": 0}),
            "autoscale": settings.autoscale.model_copy(
                update={
                    "enabled": True,
                    "min_workers": 1,
                    "max_workers": 3,
                    "target_lag_s": 5.0,
                    "upscale_delay_s": 1.0,
                    "downscale_delay_s": 5.0,
                    "interval_s": 1.0,
                }
            ),
        }
    )


class SteadyLoad:
    """Produces ``rate`` requests/s on a thread until stopped."""

    def __init__(self, settings: Settings, rate: float) -> None:
        self.settings = settings
        self.rate = rate
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        producer = Producer({"bootstrap.servers": self.settings.kafka.bootstrap_servers})
        while not self._stop.wait(1.0 / self.rate):
            rid = f"s{self.sent}-{uuid.uuid4().hex[:6]}"
            request = {"id": rid, "pipeline": PIPELINE, "params": {"features": [1.0]}}
            producer.produce(self.settings.topics.input, json.dumps(request).encode(), rid.encode())
            producer.poll(0)
            self.sent += 1
        producer.flush(10)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)


_TICK = re.compile(
    r"^(\S+ \S+) INFO rayml\.autoscaling\.controller: autoscale tick: pool=(\d+) running=(\d+) "
    r"target=(\d+) nodes=(\d+) lag=(\d+)"
)
_RESIZE = re.compile(
    r"^(\S+ \S+) INFO rayml\.autoscaling\.controller: autoscaler: pool (\d+) -> (\d+)"
)


def _when(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


@dataclass
class Sample:
    t: float  # seconds since the burst was produced
    lag: int
    pool: int
    running: int
    target: int
    nodes: int


class Timeline:
    """Lag from Kafka (this process), pool and nodes from the controller's log lines."""

    def __init__(self, settings: Settings, executor: ExecutorProcess) -> None:
        self.settings = settings
        self.executor = executor
        self.t0 = time.time()
        self.samples: list[Sample] = []
        self.pool = self.running = self.target = self.nodes = 0

    def lag_logged_at(self, after: float, at_least: int) -> float | None:
        """When (epoch s) the controller first logged a lag of ``at_least`` after ``after``.

        The controller logs a tick whenever its target or pool changes, and a burst changes its
        target: this is its first sight of the burst, from which the upscale delay runs.
        """
        for line in list(self.executor.log):
            if (m := _TICK.match(line)) and int(m[6]) >= at_least and _when(m[1]) >= after:
                return _when(m[1])
        return None

    def resizes(self) -> list[tuple[float, int, int]]:
        return [
            (_when(m[1]), int(m[2]), int(m[3]))
            for line in list(self.executor.log)
            if (m := _RESIZE.match(line))
        ]

    def sample(self) -> Sample:
        for line in list(self.executor.log):
            if m := _TICK.match(line):
                self.pool, self.running, self.target = int(m[2]), int(m[3]), int(m[4])
                self.nodes = int(m[5])
        lag = sum(p.lag for p in group_lag(self.settings))
        s = Sample(
            round(time.time() - self.t0, 1), lag, self.pool, self.running, self.target, self.nodes
        )
        self.samples.append(s)
        return s

    def until(self, done: Any, timeout_s: float, every_s: float = 0.5) -> Sample:
        deadline = time.monotonic() + timeout_s
        while True:
            s = self.sample()
            if done(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s:.0f}s; last samples {self.samples[-5:]}\n"
                    + "\n".join(line for line in self.executor.log[-30:] if "autoscal" in line)
                )
            time.sleep(every_s)


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_burst_grows_pool_and_nodes_then_both_shrink(
    settings: Settings, fake_cluster: FakeCluster
) -> None:
    started = time.monotonic()
    budget = Budget(WAIT_BUDGET_S)
    settings = cluster_settings(settings)
    create_topics(settings.kafka, settings.topics)
    store_breast_cancer(settings.models.root)
    executor = ExecutorProcess(settings, fake_cluster.address).start(budget.left(120))
    try:
        fake_cluster.track()
        timeline = Timeline(settings, executor)
        # Warm up without load: the first worker's node starts (the head has no CPU).
        timeline.until(lambda s: s.running >= 1 and s.nodes >= 2, budget.left(90))
        with SteadyLoad(settings, STEADY_RATE) as steady:
            # A cold start (the first worker waiting for its node while steady load arrives)
            # may grow the pool once; the steady state is one worker on one node beside the
            # head, no lag (an extra node leaves after idle_timeout_minutes), and a controller
            # that wants no more. The sample that met it is the baseline (a later one could
            # already see the pool grow again: the policy estimates an unsaturated worker's
            # capacity from what it did, which may ask for a second one for a while).
            before = timeline.until(
                lambda s: (
                    steady.sent > 60
                    and s.lag < STEADY_RATE * 2
                    and s.pool == 1
                    and s.target == 1
                    and s.nodes <= 2
                ),
                budget.left(90),
            )
            baseline_nodes = before.nodes

            timeline.t0 = time.time()
            timeline.samples.clear()
            burst_at = time.time()
            send_requests(
                settings,
                (
                    {
                        "id": f"b{i}-{uuid.uuid4().hex[:6]}",
                        "pipeline": PIPELINE,
                        "params": {"features": [1.0]},
                    }
                    for i in range(BURST)
                ),
            )
            lag_seen = timeline.until(lambda s: s.lag > STEADY_RATE * 10, budget.left(10))
            grown = timeline.until(lambda s: s.pool >= 3, budget.left(20))
            more_nodes = timeline.until(lambda s: s.nodes > baseline_nodes, budget.left(60))
            drained = timeline.until(lambda s: s.lag < STEADY_RATE * 2, budget.left(90))
        # Idle: the steady load stops too; everything must go back to where it started.
        zero = timeline.until(lambda s: s.lag == 0, budget.left(20))
        shrunk = timeline.until(lambda s: s.pool == 1, budget.left(30))
        nodes_back = timeline.until(lambda s: s.nodes == baseline_nodes, budget.left(90))
        fake_cluster.track()

        resizes = timeline.resizes()
        controller_saw = timeline.lag_logged_at(burst_at, STEADY_RATE * 10)
        assert controller_saw is not None, "the controller logs the burst's lag"
        # The first growth after that sight (a resize in the same tick is logged just before
        # its tick line); not one the steady load asked for before the burst.
        grew_at = next(t for t, old, new in resizes if new > old and t >= controller_saw - 0.1)
        peak_nodes = max(s.nodes for s in timeline.samples)
        report = {
            "steady_rate_per_s": STEADY_RATE,
            "burst": BURST,
            "lag_seen_s": lag_seen.t,
            "pool_grew_s": round(grew_at - timeline.t0, 1),
            "pool_grew_after_burst_s": round(grew_at - burst_at, 1),
            "controller_saw_lag_s": round(controller_saw - timeline.t0, 1),
            "pool_grew_after_controller_saw_s": round(grew_at - controller_saw, 1),
            "pool_3_s": grown.t,
            "nodes_added_s": more_nodes.t,
            "peak_nodes": peak_nodes,
            "baseline_nodes": baseline_nodes,
            "lag_drained_s": drained.t,
            "lag_zero_s": zero.t,
            "pool_shrunk_s": shrunk.t,
            "nodes_back_s": nodes_back.t,
            "resizes": [(round(t - timeline.t0, 1), a, b) for t, a, b in resizes],
            "test_s": round(time.monotonic() - started, 1),
            "samples": [asdict(s) for s in timeline.samples],
        }
        out = REPO / ".rayml" / "autoscale-timeline.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))

        # The policy grows the pool once the wish to grow has held upscale_delay_s: timed from
        # the controller's first sight of the lag, a few ticks (interval_s each) at most.
        a = settings.autoscale
        reaction_bound = a.upscale_delay_s + 4 * a.interval_s
        assert grew_at - controller_saw <= reaction_bound, (
            f"the pool grows within {reaction_bound:.0f} s of the controller seeing the lag"
        )
        assert all(b == 1 for t, a, b in resizes if b < a), "it shrank to the minimum"
        assert peak_nodes > baseline_nodes, "Ray added nodes for workers that did not fit"
        assert zero.lag == 0, "the lag drained to zero"
        assert shrunk.pool == 1
        assert nodes_back.nodes == baseline_nodes
    finally:
        executor.stop()
