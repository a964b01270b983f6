"""``python -m bench``: every contender on one broker, one Ray, one model, then the table.

Order: the broker and Ray start; the example model is trained once and stored (rayml reads it
from its model store, the baselines from the same fitted model saved as an XGBoost file); then
each contender runs warm-up -> throughput burst -> latency run on topics of its own; then the
pools row (:mod:`bench.pools`: mixed traffic on three pipelines with pools of their own); then
the training sweep; then the report.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
import traceback
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bench.bare_flow import BareFlowContender
from bench.broker_warmup import warm_broker
from bench.clients import Clients
from bench.contenders import (
    REPO,
    Contender,
    Endpoint,
    KafkaFloor,
    RaymlContender,
    confluent_kafka_version,
    original_contender,
    quix_contender,
    quix_python,
    quix_version,
)
from bench.memory import GroupFn, RssSampler, cpu_seconds, jvm_thread_seconds, thread_kind_seconds
from bench.otlp_sink import OtlpSink
from bench.pools import PoolsResult, run_pools
from bench.report import (
    ContenderResult,
    delivery_lines,
    details_lines,
    markdown,
    pools_lines,
    shadow_lines,
    table,
    targets,
    tracing_lines,
)
from bench.training import TRIALS, SweepResult, run_sweep
from bench.workload import (
    Run,
    create_topics,
    feature_rows,
    make_run,
    new_tag,
    with_traceparents,
)

CONTENDERS = (
    "bare",
    "rayml",
    "rayml-eos",
    "rayml-tracing",
    "rayml-shadow",
    "kafka",
    "rayml-batch1",
    "quix",
    "original",
    "rayml-heavy",
    "rayml-pools",
    "rayml-2nodes",
)
# The model-bound rows: an MLP of three 3,072-unit layers (~1 ms a row on one core), stored as
# a version of the example model, served by 1 worker and then by 2 (one core each).
HEAVY_LAYERS = (3072, 3072, 3072)
PARTITIONS = 4

METHOD = """\
- **Workload.** Each request is one JSON envelope `{{"id", "pipeline": "breast_cancer.predict",
  "params": {{"features": [30 floats]}}}}` (key = id), rows drawn from scikit-learn's
  breast-cancer data; the model is the example `breast_cancer.train` with its default parameters
  (XGBoost, 100 trees, depth 4), fitted once and given to every contender. Each contender has its
  own input and output topic ({partitions} partitions each) on the same broker, and its own consumer
  group. A result counter reads the output topic and matches results to request ids: lost
  (no result), duplicated (more than one) and wrong (label differs from the model's offline
  prediction, or an error result) are counted.
- **Throughput is measured while producing.** The contender is started and warmed up first
  ({warmup} requests answered: consumer assigned, model loaded). Then the burst of N requests is
  produced as fast as the producer goes, with the contender already consuming, and throughput is
  N / (time of the last result received - time the first request was produced). So the figure
  includes producing, and the contender's start-up is not counted. (How long the producer
  alone took for the burst is under "Details".) Each contender runs {rounds} bursts in a row
  and the best is kept, with its CPU figures (one 2-core machine's noise moved a contender by
  up to a third between runs); every burst's losses and duplicates count.
- **Latency at a fixed offered load.** An open-loop, rate-limited producer sends requests on a
  fixed schedule for {latency_s:g} s at about half of rayml's measured maximum, after
  {latency_warmup_s:g} s at the same rate whose requests are answered and checked (lost,
  duplicated, wrong) but left out of the percentiles (the contender, the broker and the reader
  leave the burst's state behind and settle at that load; the first second otherwise held its
  own p99; "cores used during the latency run" and the achieved rate include them); a contender
  whose
  own maximum is lower is measured at half of its own maximum instead (otherwise its queue grows
  without bound and the percentile is just the run's length), and the load used is in the table.
  Latency = result read back by the counter - request handed to the producer (one monotonic
  clock for both): it includes both clients' batching and two broker round trips.
  The bursts of the original design and of rayml with batch size 1 are smaller ({slow}
  requests; they answer a few hundred per second), which changes nothing in a rate but keeps
  the run short.
- **Exactly-once.** "rayml, exactly-once" is rayml with the same settings and
  `delivery=exactly_once` (results and input offsets in one Kafka transaction per ingest,
  committed every `transaction_commit_interval_s`), run right after rayml (at-least-once) in the
  same run; the result counter reads with `isolation.level=read_committed`, so an exactly-once
  result counts when its transaction commits.
- **"Kafka alone"** is not a contender: the result counter reads the input topic itself, so it
  shows what the producer, the broker and the counter allow on this machine at that moment -- the
  ceiling over every contender's throughput and the floor under its latency.
- **CPU per request** (under "Details"): the time the threads of each process group ran on a
  CPU during the burst, divided by the requests answered, and the cores that makes at the
  measured rate (a single-threaded process near 1.0 core is the bottleneck); and the time they
  waited, ready to run, for a core that other processes held (from `/proc/*/schedstat`). A large
  wait means the machine, not the code, set the pace.
- **Memory.** Peak RSS sampled every 0.1 s during warm-up, burst and latency runs.
- **Load generator and result counter.** Each runs in a process of its own
  (`bench/clients.py`), not in the benchmark's driver process (which is also the Ray driver of
  rayml and of the bare flow), so their CPU is counted apart ("load generator", "result reader"
  under "Details") and not as the contender's driver's.
- **One machine.** Broker (JVM), contender, load generator and result counter share the
  {nproc} cores, as in the issues' calibration runs. Other work on the machine competes for them:
  the 1-min load average under "Machine" says how much (above {nproc}, every process got less
  than a core when it wanted one, which lowers throughput and lengthens latency tails).
- **Where rayml's time goes:** `python -m bench.profile_ingest` runs `rayml.executor.ingest.Ingest`
  in-process on a pre-produced backlog, once plain (rate, CPU per message) and once under
  cProfile (cost per message of each function); `--latency-rate R` compares latency with and
  without a consumer that returns as soon as a record is there.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--requests", type=int, default=100_000, help="burst size N (default 100000, as issue 15)"
    )
    p.add_argument(
        "--slow-requests",
        type=int,
        default=10_000,
        help="burst size for the original design and rayml with batch size 1, at most N "
        "(they answer a few hundred per second; default 10000)",
    )
    p.add_argument(
        "--heavy-requests",
        type=int,
        default=6_000,
        help="burst size of the model-bound rows (default 6000)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="bursts per contender, the best kept (default 2): one machine's noise",
    )
    p.add_argument(
        "--pools-requests",
        type=int,
        default=20_000,
        help="mixed burst of the pools row, 80/10/10 on its hot, cold and GPU-declared "
        "pipelines (default 20000)",
    )
    p.add_argument("--warmup", type=int, default=500, help="warm-up requests per contender")
    p.add_argument("--latency-seconds", type=float, default=8.0, help="length of latency runs")
    p.add_argument(
        "--latency-warmup-seconds",
        type=float,
        default=2.0,
        help="requests sent at the latency run's rate before the measured ones, not measured",
    )
    p.add_argument("--latency-rate", type=float, default=None, help="offered load (req/s)")
    p.add_argument("--quick", action="store_true", help="small runs (~2-3 min): N=10000 etc.")
    p.add_argument(
        "--only", default=",".join(CONTENDERS), help=f"comma list of {', '.join(CONTENDERS)}"
    )
    p.add_argument("--no-sweep", action="store_true", help="skip the training sweep")
    p.add_argument("--batch-size", type=int, default=1024, help="rayml max_batch_size")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="rayml max_batch_wait_ms")
    p.add_argument("--workers", type=int, default=1, help="rayml num_workers")
    p.add_argument("--worker-cpus", type=float, default=1.0, help="rayml worker_num_cpus")
    p.add_argument(
        "--poll-max", type=int, default=2048, help="rayml poll_max_messages (its default)"
    )
    p.add_argument(
        "--txn-interval-ms",
        type=float,
        default=None,
        help="rayml-eos transaction_commit_interval_s in ms (default: rayml's default)",
    )
    p.add_argument("--quix-venv", type=Path, default=REPO / ".rayml" / "bench" / "quix-venv")
    p.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = p.parse_args(argv)
    if args.quick:
        args.requests = min(args.requests, 10_000)
        args.slow_requests = min(args.slow_requests, 3_000)
        args.heavy_requests = min(args.heavy_requests, 2_000)
        args.pools_requests = min(args.pools_requests, 10_000)
        args.latency_seconds = min(args.latency_seconds, 4.0)
    args.slow_requests = min(args.slow_requests, args.requests)
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = set(args.only) - set(CONTENDERS)
    if unknown:
        p.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    return args


class Bench:
    """Holds the shared pieces (broker address, rows, labels) and runs one contender at a time."""

    def __init__(
        self,
        args: argparse.Namespace,
        bootstrap: str,
        broker_pid: int | None,
        rows: np.ndarray,
        labels: Any,
    ):
        self.args = args
        self.bootstrap = bootstrap
        self.broker_pid = broker_pid
        self.rows = rows
        self.labels = np.asarray(labels)
        self._expected: np.ndarray | None = None  # a contender's own model's labels
        self._traceparents = False  # a contender's requests carry a traceparent header
        self._offset = 0

    def _run(self, name: str, n: int, echo: bool = False) -> Run:
        # Consecutive slices of the row pool (wrapping around), so runs differ in content.
        idx = (self._offset + np.arange(n)) % len(self.rows)
        self._offset += n
        labels = self.labels if self._expected is None else self._expected
        run = make_run(new_tag(name), self.rows[idx], labels[idx])
        run.echo = echo
        if self._traceparents:
            with_traceparents(run)
        return run

    def run(self, contender: Contender, n: int, target_rate: float | None) -> ContenderResult:
        result = ContenderResult(contender.key, contender.label, contender.describe(), requests=n)
        expected = getattr(contender, "expected", None)
        self._expected = None if expected is None else np.asarray(expected)
        self._traceparents = bool(getattr(contender, "traceparents", False))
        tag = uuid.uuid4().hex[:8]
        echo = getattr(contender, "echo", False)
        endpoint = Endpoint(
            self.bootstrap,
            f"bench-{contender.key}-{tag}.in",
            f"bench-{contender.key}-{tag}." + ("in" if echo else "out"),
            f"bench-{contender.key}-{tag}",
        )
        create_topics(
            self.bootstrap, sorted({endpoint.input_topic, endpoint.output_topic}), PARTITIONS
        )
        # The load generator and the result reader: processes of their own, ready (the reader
        # assigned its partitions) before the contender starts.
        clients = Clients(self.bootstrap, endpoint.input_topic, endpoint.output_topic)
        print(f"bench: {contender.label}: starting ({contender.describe()})", flush=True)
        try:
            clients.start()
            contender.start(endpoint)
            groups, counted = contender.memory_groups()
            with RssSampler(_with_clients(groups, clients), counted) as memory:
                self._phases(contender, clients, n, target_rate, result)
            result.peak_rss = memory.peak_total
            result.rss_by_group = memory.peak_by_group
        finally:
            contender.stop()
            clients.close()
        final_status = getattr(contender, "final_status", None)
        if final_status:  # rayml's ingest status, or the bare flow's counters
            result.extra["status"] = final_status
        return result

    def _burst(
        self,
        contender: Contender,
        clients: Clients,
        n: int,
        cpu_groups: dict[str, list[int]],
        result: ContenderResult,
        round_no: int,
    ) -> Run:
        """One burst of ``n`` requests: throughput and CPU per request into ``result``."""
        echo = getattr(contender, "echo", False)
        burst = self._run(f"{contender.key}.burst{round_no}", n, echo)
        clients.prepare(burst)
        cpu_before = cpu_seconds(cpu_groups)
        ingest_pids = cpu_groups.get("ingest", [])
        threads_before = thread_kind_seconds(ingest_pids)
        broker_before = jvm_thread_seconds(self.broker_pid) if self.broker_pid else {}
        clients.run(burst, timeout_s=600, idle_s=30)
        cpu_after = cpu_seconds(cpu_groups)
        threads_after = thread_kind_seconds(ingest_pids)
        broker_after = jvm_thread_seconds(self.broker_pid) if self.broker_pid else {}
        # Threads that ended during the burst drop out of the sums: clamp at zero.
        answered = max(1, burst.received)
        result.cpu_us_per_request = {
            group: max(0.0, cpu_after[group][0] - cpu_before[group][0]) / answered * 1e6
            for group in cpu_groups
        }
        result.broker_threads_us_per_request = {
            kind: max(0.0, broker_after[kind] - broker_before[kind]) / answered * 1e6
            for kind in broker_after
        }
        if ingest_pids:
            result.ingest_threads_us_per_request = {
                kind: max(0.0, threads_after[kind] - threads_before[kind]) / answered * 1e6
                for kind in threads_after
            }
        result.wait_us_per_request = {
            group: max(0.0, cpu_after[group][1] - cpu_before[group][1]) / answered * 1e6
            for group in cpu_groups
        }
        result.throughput = burst.throughput()
        result.produce_s = burst.produce_s
        print(
            f"bench: {contender.label}: burst {round_no + 1}: {result.throughput:,.0f} req/s "
            f"(lost {burst.lost}, dup {burst.duplicates}, wrong {burst.wrong}, "
            f"errors {burst.errors}; producing took {burst.produce_s:.2f} s)",
            flush=True,
        )
        return burst

    def _cpu_groups(self, contender: Contender, clients: Clients) -> dict[str, list[int]]:
        groups = _with_clients(contender.memory_groups()[0], clients)()
        if "driver" not in groups:
            groups["bench driver"] = [os.getpid()]
        if self.broker_pid is not None:
            groups["broker"] = [self.broker_pid]
        return groups

    def _phases(
        self,
        contender: Contender,
        clients: Clients,
        n: int,
        target_rate: float | None,
        result: ContenderResult,
    ) -> None:
        alive = getattr(contender, "check_alive", None)
        echo = getattr(contender, "echo", False)
        warm = self._run(f"{contender.key}.warm", self.args.warmup, echo)
        clients.prepare(warm)
        clients.run(warm, timeout_s=240, idle_s=180)
        if alive:
            alive()
        if warm.lost:
            raise RuntimeError(f"warm-up: {warm.lost} of {len(warm)} requests got no result")

        # The burst, ``--rounds`` times: the best round is kept (with its CPU figures), as
        # timeit keeps its best; every round's losses and duplicates count.
        cpu_groups = self._cpu_groups(contender, clients)
        best: ContenderResult | None = None
        rounds: list[float] = []
        for round_no in range(self.args.rounds):
            one = ContenderResult(contender.key, contender.label, contender.describe())
            burst = self._burst(contender, clients, n, cpu_groups, one, round_no)
            rounds.append(one.throughput)
            result.lost += burst.lost
            result.duplicates += burst.duplicates
            result.wrong += burst.wrong
            result.errors += burst.errors
            if alive:
                alive()
            if best is None or one.throughput > best.throughput:
                best = one
        assert best is not None
        result.throughput, result.produce_s = best.throughput, best.produce_s
        result.cpu_us_per_request = best.cpu_us_per_request
        result.wait_us_per_request = best.wait_us_per_request
        result.ingest_threads_us_per_request = best.ingest_threads_us_per_request
        result.broker_threads_us_per_request = best.broker_threads_us_per_request
        result.burst_rounds = rounds
        if self.args.latency_seconds <= 0 or result.throughput <= 0:
            return
        own_half = 0.5 * result.throughput
        rate = own_half if target_rate is None else min(target_rate, own_half)
        # A warm-up at the same rate first, in the same stream, left out of the figures: the
        # contender (and the broker, the reader) leave the burst's state behind and settle at
        # this load before the measured requests are sent.
        n_warmup = int(rate * self.args.latency_warmup_seconds)
        n_latency = max(100, int(rate * self.args.latency_seconds))
        latency = self._run(f"{contender.key}.lat", n_warmup + n_latency, echo)
        latency.warmup = n_warmup
        clients.prepare(latency)
        cpu_before = cpu_seconds(cpu_groups)
        clients.run(latency, timeout_s=self.args.latency_seconds + 120, idle_s=30, rate=rate)
        cpu_after = cpu_seconds(cpu_groups)
        # The machine at that load: cores each group used, and in all (of the cores there are).
        span = max(1e-9, float(np.nanmax(latency.received_at) - np.nanmin(latency.sent_at)))
        result.latency_cores = {
            group: max(0.0, cpu_after[group][0] - cpu_before[group][0]) / span
            for group in cpu_groups
        }
        result.latency_rate = rate
        result.latency_requests = len(latency) - n_warmup
        result.latency_warmup = n_warmup
        result.latency_lost = latency.lost
        result.latency_ms = latency.latency_ms()
        result.achieved_rate = len(latency) / latency.produce_s if latency.produce_s else math.nan
        result.duplicates += latency.duplicates
        result.wrong += latency.wrong
        result.errors += latency.errors
        result.server_latency_ms = latency.server_latency_ms()
        result.queued_latency_ms = latency.queued_latency_ms()
        p50, p95, p99 = result.latency_ms
        s50, _, s99 = result.server_latency_ms
        q50, _, q99 = result.queued_latency_ms
        print(
            f"bench: {contender.label}: at {rate:,.0f} req/s p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
            f"p99 {p99:.1f} ms (lost {latency.lost}; contender's own total_ms p50 {s50:.1f}, "
            f"p99 {s99:.1f}; queued_ms p50 {q50:.1f}, p99 {q99:.1f}; cores used "
            f"{sum(result.latency_cores.values()):.2f})",
            flush=True,
        )


def _with_clients(groups: GroupFn, clients: Clients) -> GroupFn:
    """``groups`` without the client processes (spawned children of the driver, named
    ``python``, which the contenders' groups would count as Ray's), plus one group for each."""

    def with_clients() -> dict[str, list[int]]:
        helpers = clients.helper_pids()
        out = {g: [p for p in pids if p not in helpers] for g, pids in groups().items()}
        out.update(clients.groups())
        return out

    return with_clients


def _train_model(models_root: Path, model_file: Path) -> Any:
    from pipelines.breast_cancer import TrainParams, train
    from rayml.models.store import ModelStore
    from rayml.pipeline import TrainingContext

    params = TrainParams()
    trained = train(params, TrainingContext(nthread=1))
    ModelStore(str(models_root)).save(
        "breast_cancer",
        trained.model,
        pipeline="breast_cancer.train",
        params=params.model_dump(),
        metrics=trained.metrics,
    )
    trained.model.save_model(str(model_file))  # the same fitted model, for the baselines
    return trained.model


def _store_twice(models_root: Path, model: Any) -> None:
    """The example model as versions 000001 and 000002 (a shadow's candidate)."""
    from rayml.models.store import ModelStore

    store = ModelStore(str(models_root))
    for _ in range(2):
        store.save("breast_cancer", model, pipeline="breast_cancer.train", params={}, metrics={})


def _run_on_two_nodes(
    bench: Bench,
    args: argparse.Namespace,
    work: Path,
    half_rayml: float | None,
    done: list[str],
) -> ContenderResult:
    """rayml on a cluster of two local Ray nodes (one CPU each, and a head without CPUs),
    ``ingest_actors="auto"``: an ingest actor and a worker on each node (item 4 of issue 15).

    Both nodes share this machine's cores, so the row shows that the flow spans nodes with
    nothing lost, not a speed-up; on real machines each node brings its own cores.
    """
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": 200 * 1024 * 1024},
    )
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, object_store_memory=200 * 1024 * 1024)
        cluster.wait_for_nodes()
        ray.init(
            address=cluster.address,
            logging_level="ERROR",
            log_to_driver=False,
            namespace=f"rayml-bench-{uuid.uuid4().hex[:6]}",
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
        )
        contender = RaymlContender(
            "rayml-2nodes",
            "rayml, 2 Ray nodes (1 CPU each)",
            str(work / "models"),
            work / "state",
            {
                **_rayml_settings(args, args.batch_size),
                "ingest_actors": "auto",
                "num_workers": 1,
                "worker_num_cpus": 1.0,
            },
        )
        try:
            return bench.run(contender, args.requests, half_rayml)
        except Exception as exc:
            return _failed(contender, exc)
    finally:
        ray.shutdown()
        cluster.shutdown()


def _train_heavy_model(models_root: Path, rows: np.ndarray) -> Any:
    """The model-bound rows' model: an MLP (:data:`HEAVY_LAYERS`) fitted for one pass on a few
    rows (its accuracy does not matter, its cost per row does), stored as ``breast_cancer``."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.neural_network import MLPClassifier

    from rayml.models.store import ModelStore

    x, y = load_breast_cancer(return_X_y=True)
    model = MLPClassifier(hidden_layer_sizes=HEAVY_LAYERS, max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one pass does not converge, by design
        model.fit(x[:256], y[:256])
    ModelStore(str(models_root)).save(
        "breast_cancer", model, pipeline="bench.heavy", params={}, metrics={}
    )
    started = time.perf_counter()
    model.predict(rows[:1024])
    print(
        f"bench: model-bound model: MLP {HEAVY_LAYERS}, "
        f"{(time.perf_counter() - started) / 1024 * 1e6:,.0f} us a row in this process",
        flush=True,
    )
    return model


def _rayml_settings(args: argparse.Namespace, batch_size: int) -> dict[str, Any]:
    return {
        "max_batch_size": batch_size,
        "max_batch_wait_ms": args.batch_wait_ms,
        "num_workers": args.workers,
        "worker_num_cpus": args.worker_cpus,
        "poll_max_messages": args.poll_max,
        "drain_timeout_s": 20.0,
    }


def _run_pools(bench: Bench, args: argparse.Namespace, work: Path) -> PoolsResult:
    """The pools row (:mod:`bench.pools`) on this run's broker, Ray and model."""
    try:
        return run_pools(
            bench.bootstrap,
            str(work / "models"),
            work / "state",
            bench.rows,
            bench.labels,
            args.pools_requests,
            args.warmup,
            _rayml_settings(args, args.batch_size),
            PARTITIONS,
        )
    except Exception as exc:
        traceback.print_exc()
        return PoolsResult(args.pools_requests, "", failure=_summary(exc))


def _failed(contender: Contender, exc: BaseException) -> ContenderResult:
    traceback.print_exc()
    return ContenderResult(
        contender.key, contender.label, contender.describe(), failure=_summary(exc)
    )


def _summary(exc: BaseException) -> str:
    # Ray's errors carry ANSI colours and whole remote tracebacks: keep a readable summary.
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{type(exc).__name__}: {exc}")
    lines = [line for line in text.splitlines() if line.strip()]
    summary = " / ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else text
    return summary[:600]


def main(argv: list[str] | None = None) -> int:
    import ray

    from rayml.localkafka import LocalBroker

    args = parse_args(argv)
    # Only warnings, and librdkafka's own chatter (coordinator loading, disconnects at the end)
    # only when it is an error.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("rayml.librdkafka").setLevel(logging.ERROR)
    command = " ".join(["python -m bench", shlex.join(sys.argv[1:] if argv is None else argv)])
    command = command.rstrip()
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    state = REPO / ".rayml" / "bench"
    state.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=state))
    extra_versions: dict[str, str] = {}
    method_notes: list[str] = []
    quix_py = None
    if "quix" in args.only:
        quix_py = quix_python(args.quix_venv)
        quix_kafka = confluent_kafka_version(quix_py)
        extra_versions["quixstreams"] = (
            f"{quix_version(quix_py)} (own venv, confluent-kafka {quix_kafka})"
        )

    results: list[ContenderResult] = []
    sweep: SweepResult | None = None
    pools: PoolsResult | None = None
    with LocalBroker.ephemeral(state_dir=REPO / ".rayml") as broker:
        print(f"bench: broker at {broker.bootstrap_servers}", flush=True)
        ray.init(
            address="local",  # a runtime of our own, never a cluster found on the machine
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
            namespace=f"rayml-bench-{uuid.uuid4().hex[:6]}",
            object_store_memory=400 * 1024 * 1024,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
        )
        try:
            model = _train_model(work / "models", work / "breast_cancer.ubj")
            rows = feature_rows(20_000)
            proc = broker._live_process()
            if proc is not None:
                warm = warm_broker(broker.bootstrap_servers, proc.pid)
                print(
                    f"bench: broker warmed up in {warm['rounds']} rounds, {warm['seconds']:.0f} s "
                    f"(its JIT compilers used {warm['compiler_s']:.1f} s of CPU; "
                    f"{warm['last_round_compiler_s']:.2f} s in the last round)",
                    flush=True,
                )
                method_notes.append(
                    f"- **Broker warm-up.** Before any contender, throwaway traffic ran through "
                    f"the broker until its JIT compilers settled ({warm['rounds']} rounds of "
                    f"100,000 records, {warm['seconds']:.0f} s, {warm['compiler_s']:.1f} s of "
                    f"compiler CPU): otherwise the first contender pays for the JVM's warm-up."
                )
            bench = Bench(
                args,
                broker.bootstrap_servers,
                proc.pid if proc else None,
                rows,
                model.predict(rows),
            )
            model_file = str(work / "breast_cancer.ubj")
            sink: OtlpSink | None = None
            half_rayml: float | None = args.latency_rate
            plan: list[tuple[Contender, int]] = []
            if "bare" in args.only:
                # First: the upper bound rayml is measured against (DESIGN.md: >= 85% of it).
                plan.append((BareFlowContender(model_file, args.worker_cpus), args.requests))
            if "rayml" in args.only:
                plan.append(
                    (
                        RaymlContender(
                            "rayml",
                            "rayml",
                            str(work / "models"),
                            work / "state",
                            _rayml_settings(args, args.batch_size),
                        ),
                        args.requests,
                    )
                )
            if "rayml-eos" in args.only:
                # Right after rayml: the two delivery modes side by side, same machine state.
                eos = {**_rayml_settings(args, args.batch_size), "delivery": "exactly_once"}
                if args.txn_interval_ms is not None:
                    eos["transaction_commit_interval_s"] = args.txn_interval_ms / 1000.0
                plan.append(
                    (
                        RaymlContender(
                            "rayml-eos",
                            "rayml, exactly-once",
                            str(work / "models"),
                            work / "state",
                            eos,
                        ),
                        args.requests,
                    )
                )
            if "rayml-tracing" in args.only:
                # Both with the traceparent header rayml's clients send; tracing off, then on
                # at 1% (to a receiver in a process of its own): the cost of tracing, one run.
                sink = OtlpSink()
                for key, label, tracing in (
                    ("rayml-trace-off", "rayml, traceparent headers, tracing off", {}),
                    (
                        "rayml-trace-1pct",
                        "rayml, tracing on at 1%",
                        {"otlp_endpoint": sink.url, "sample_ratio": 0.01},
                    ),
                ):
                    plan.append(
                        (
                            RaymlContender(
                                key,
                                label,
                                str(work / "models"),
                                work / "state",
                                _rayml_settings(args, args.batch_size),
                                tracing=tracing,
                                traceparents=True,
                            ),
                            args.requests,
                        )
                    )
            if "rayml-shadow" in args.only:
                # A shadow of another version (the same model stored again, so both answer
                # alike): what a shadow costs, against the rayml row of this run.
                shadow_root = work / "shadow-models"
                _store_twice(shadow_root, model)
                plan.append(
                    (
                        RaymlContender(
                            "rayml-shadow",
                            "rayml, shadow running",
                            str(shadow_root),
                            work / "state",
                            _rayml_settings(args, args.batch_size),
                            shadow="000002",
                        ),
                        args.requests,
                    )
                )
            if "kafka" in args.only:
                # After rayml, so that its latency run uses the same offered load.
                plan.append((KafkaFloor(), args.requests))
            if "rayml-batch1" in args.only:
                plan.append(
                    (
                        RaymlContender(
                            "rayml-batch1",
                            "rayml, batch size 1",
                            str(work / "models"),
                            work / "state",
                            _rayml_settings(args, 1),
                        ),
                        args.slow_requests,
                    )
                )
            if quix_py is not None:
                plan.append((quix_contender(quix_py, model_file, work), args.requests))
            if "rayml-heavy" in args.only:
                heavy_root = work / "heavy-models"
                heavy = _train_heavy_model(heavy_root, rows)
                for workers in (1, 2):
                    contender = RaymlContender(
                        f"rayml-heavy{workers}",
                        f"rayml, model-bound, {workers} worker{'s' if workers > 1 else ''}",
                        str(heavy_root),
                        work / "state",
                        {
                            **_rayml_settings(args, args.batch_size),
                            "num_workers": workers,
                            "worker_num_cpus": 1.0,
                        },
                    )
                    contender.expected = heavy.predict(rows)
                    plan.append((contender, args.heavy_requests))
            if "original" in args.only:
                plan.append((original_contender(model_file, work), args.slow_requests))
            for contender, n in plan:
                try:
                    res = bench.run(contender, n, half_rayml)
                except Exception as exc:
                    res = _failed(contender, exc)
                results.append(res)
                if sink is not None and res.key == "rayml-trace-1pct":
                    res.extra["spans_exported"] = sink.spans()
                if res.key == "rayml" and half_rayml is None and not res.failure:
                    half_rayml = res.latency_rate
            if "rayml-pools" in args.only:
                pools = _run_pools(bench, args, work)
            if not args.no_sweep:
                print(f"bench: training sweep, {len(TRIALS)} trials", flush=True)
                sweep = run_sweep(TRIALS)
            if "rayml-2nodes" in args.only:
                # Last: it leaves this process's Ray runtime for a cluster of its own.
                ray.shutdown()
                results.append(
                    _run_on_two_nodes(bench, args, work, half_rayml, [r.key for r in results])
                )
        finally:
            ray.shutdown()
            if sink is not None:
                sink.close()

    wall_s = time.perf_counter() - started
    print()
    print(table(results))
    print()
    # CPU per request per process group, batches: also on stdout, for --no-write runs.
    print(details_lines(results))
    print()
    for line in delivery_lines(results):
        print(line)
    for line in tracing_lines(results):
        print(line)
    for line in shadow_lines(results):
        print(line)
    for line in pools_lines(pools):
        print(line)
    for line in targets(results, sweep):
        print(line)
    if sweep is not None:
        print(
            f"training sweep: sequential {sweep.sequential_s:.2f} s, parallel "
            f"{sweep.parallel_s:.2f} s -> {sweep.speedup:.2f}x"
        )
    if not args.no_write:
        from bench.report import versions

        method = METHOD.format(
            partitions=PARTITIONS,
            warmup=args.warmup,
            slow=f"{args.slow_requests:,}",
            latency_s=args.latency_seconds,
            latency_warmup_s=args.latency_warmup_seconds,
            rounds=args.rounds,
            nproc=len(os.sched_getaffinity(0)),
        )
        method = "\n".join([method.rstrip("\n"), *method_notes]) + "\n"
        load = f"{load_at_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end"
        text = markdown(
            command, results, sweep, versions(extra_versions), method, wall_s, load, pools
        )
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"\nbench: wrote {args.output} ({wall_s:.0f} s in all)")
    if any(r.failure for r in results) or (pools is not None and pools.failure):
        print(f"bench: logs and models kept in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0
