"""The pools row (``python -m bench --only rayml-pools``): pools per pipeline under mixed traffic.

One rayml executor, on the bench's Ray and broker, serves the three pipelines of
:mod:`bench.pool_pipelines`, each with a pool of its own (docs/autoscaling.md, "Pools per
pipeline"): ``hot`` (one or two workers), ``cold`` (none while idle for a few seconds) and
``gpu`` (declares a GPU and no minimum; on CPU where the cluster has no GPU). Steps:

1. **Start.** The executor starts with the pool autoscaler on; the row waits until the hot
   pool has its worker and the cold and GPU pools are at zero.
2. **Warm-up** on the hot pipeline only (its worker loads the model; the clients connect).
3. **Hot alone**: a burst of as many requests as the mixed burst sends to ``hot``, on ``hot``
   only: the reference for what the mixed burst's cold starts cost the hot pipeline.
4. **Mixed burst.** N requests, 8 of every 10 on ``hot``, one on ``cold``, one on ``gpu``
   (interleaved: request ``i`` goes to the pipeline of ``i % 10``), produced as fast as the
   producer goes by the bench's load generator and read back by its result reader
   (:mod:`bench.clients`). The cold and GPU pools start from zero during it: their first cold
   starts. A thread samples every pool's size meanwhile.
5. **Released, and started again.** The row waits until the cold pool has released its worker
   (scale to zero, ``idle_timeout_s``), then sends it :data:`AGAIN_REQUESTS` requests: its
   second cold start, on a machine that is otherwise quiet.

Per pipeline: requests, answers, throughput (answers / (its last result received - its first
request produced)), p50 / p99 latency (result read back - request handed to the producer).
Per pool: the largest size seen, and ``cold_starts`` / ``last_cold_start_s`` from
``rayml status`` (:func:`rayml.cli.status.pools_summary`) after the burst and at the end.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bench import pool_pipelines as pp
from bench.clients import Clients
from bench.contenders import Endpoint, RaymlContender
from bench.workload import Run, clock, create_topics, make_run, new_tag

KEY = "rayml-pools"
LABEL = "rayml, pools per pipeline"
#: Of every 10 requests of the burst: 8 on hot, 1 on cold, 1 on the GPU-declared pipeline.
PATTERN = (pp.HOT,) * 8 + (pp.COLD, pp.GPU)
PIPELINES = (pp.HOT, pp.COLD, pp.GPU)
#: Requests of the second round on the cold pipeline (after its pool went back to zero).
AGAIN_REQUESTS = 200
#: The default pool (``breast_cancer.predict`` and the other examples; no traffic here).
DEFAULT_WORKER_CPUS = 0.25
# How long each step may take before the row fails (a loaded 2-core machine is slow).
START_S = 120.0
RUN_S = 300.0
IDLE_S = 60.0  # a run ends when no result came for this long (a cold start is longer than 3 s)

#: The pool autoscaler's settings for the row (rayml.config.AutoscaleSettings).
AUTOSCALE: dict[str, Any] = {
    "enabled": True,
    # The default pool (no traffic here) stays at its one worker.
    "min_workers": 1,
    "max_workers": 1,
    "target_lag_s": 1.0,
    "upscale_delay_s": 1.0,
    # No shrinking while the row runs: the hot pool's largest size is what it grew to.
    "downscale_delay_s": 3600.0,
    "interval_s": 0.5,
}

T = TypeVar("T")


@dataclass
class PipelineFigures:
    """One pipeline's requests in one run, as the result reader saw them."""

    pipeline: str
    requests: int
    answered: int
    throughput: float  # answered / (last result received - first request produced)
    span_s: float
    p50_ms: float
    p99_ms: float
    first_ms: float  # the first answer: its latency

    @property
    def lost(self) -> int:
        return self.requests - self.answered


@dataclass
class PoolsResult:
    """What the pools row measured (``failure`` set when it could not finish)."""

    requests: int
    settings: str
    pipelines: list[PipelineFigures] = field(default_factory=list)
    total: PipelineFigures | None = None
    hot_alone: PipelineFigures | None = None  # the reference burst, hot only
    # Counted by the result reader per run (not per pipeline): the burst and the second round.
    duplicates: int = 0
    wrong: int = 0
    errors: int = 0
    largest: dict[str, int] = field(default_factory=dict)  # largest size seen, per pool
    after_burst: dict[str, dict[str, Any]] = field(default_factory=dict)  # pools_summary rows
    at_end: dict[str, dict[str, Any]] = field(default_factory=dict)
    released_after_s: float = math.nan  # cold: its last answer of the burst -> seen at size 0
    again: PipelineFigures | None = None  # the second round on the cold pipeline
    cluster_gpus: float = 0.0
    wall_s: float = math.nan
    failure: str | None = None


class PoolsContender(RaymlContender):
    """rayml with the pools row's pipelines and the pool autoscaler on."""

    def _settings(self, endpoint: Endpoint) -> Any:
        settings = super()._settings(endpoint)
        return settings.model_copy(
            update={"autoscale": settings.autoscale.model_copy(update=AUTOSCALE)}
        )

    def describe(self) -> str:
        scale = ", ".join(f"{k}={v}" for k, v in AUTOSCALE.items() if k != "enabled")
        return f"{super().describe()}; autoscale on ({scale})"

    def pools(self) -> dict[str, dict[str, Any]]:
        """Every pool, summed over the ingests, as ``rayml status --json`` shows it."""
        from rayml.cli.status import pools_summary

        return {p["pool"]: p for p in pools_summary(self.executor.status(timeout_s=30))}


class SizeWatch:
    """Samples every pool's size until stopped; keeps the largest seen of each."""

    def __init__(self, contender: PoolsContender, every_s: float = 0.25) -> None:
        self.largest: dict[str, int] = {}
        self._contender = contender
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pool-sizes", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            # A status call that timed out on a loaded machine: the next sample.
            with contextlib.suppress(Exception):
                for name, pool in self._contender.pools().items():
                    self.largest[name] = max(self.largest.get(name, 0), int(pool["size"]))
            self._stop.wait(self._every_s)

    def __enter__(self) -> SizeWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _wait_for(what: str, check: Callable[[], T | None], timeout_s: float) -> T:
    """Poll ``check`` until it returns something (a failed call is retried), or fail."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:  # a status call that timed out: again
            last = exc
        else:
            if value is not None:
                return value
        time.sleep(0.2)
    raise TimeoutError(f"pools row: {what} did not happen in {timeout_s:g} s") from last


def figures(pipeline: str, run: Run, mask: np.ndarray) -> PipelineFigures:
    """One pipeline's figures from the requests of ``run`` that ``mask`` selects."""
    sent, received = run.sent_at[mask], run.received_at[mask]
    answered = int(np.count_nonzero(~np.isnan(received)))
    if answered == 0:
        return PipelineFigures(pipeline, int(mask.sum()), 0, 0.0, math.nan, *[math.nan] * 3)
    span = float(np.nanmax(received) - np.nanmin(sent))
    latency_ms = (received - sent)[~np.isnan(received)] * 1000.0
    p50, p99 = (float(v) for v in np.percentile(latency_ms, (50, 99)))
    return PipelineFigures(
        pipeline,
        int(mask.sum()),
        answered,
        answered / span if span > 0 else math.inf,
        span,
        p50,
        p99,
        float(latency_ms.min()),
    )


def mixed_run(name: str, rows: np.ndarray, labels: np.ndarray, pipelines: list[str]) -> Run:
    return make_run(new_tag(name), rows, labels, pipelines)


def run_pools(
    bootstrap: str,
    models_root: str,
    state_dir: Path,
    rows: np.ndarray,
    labels: np.ndarray,
    n: int,
    warmup: int,
    executor: dict[str, Any],
    partitions: int,
) -> PoolsResult:
    """Run the row (module docstring) against the broker at ``bootstrap`` on this process's
    Ray; ``rows`` and ``labels``: the request rows and the example model's label of each."""
    import ray

    started = time.perf_counter()
    contender = PoolsContender(
        KEY,
        LABEL,
        models_root,
        state_dir,
        {
            **executor,
            "pipeline_modules": ["bench.pool_pipelines"],
            "num_workers": 1,
            "worker_num_cpus": DEFAULT_WORKER_CPUS,
        },
    )
    result = PoolsResult(n, contender.describe())
    result.cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    tag = uuid.uuid4().hex[:8]
    endpoint = Endpoint(
        bootstrap, f"bench-{KEY}-{tag}.in", f"bench-{KEY}-{tag}.out", f"bench-{KEY}-{tag}"
    )
    create_topics(bootstrap, [endpoint.input_topic, endpoint.output_topic], partitions)
    clients = Clients(bootstrap, endpoint.input_topic, endpoint.output_topic)
    offset = 0

    def take(count: int) -> tuple[np.ndarray, np.ndarray]:
        nonlocal offset
        idx = (offset + np.arange(count)) % len(rows)
        offset += count
        return rows[idx], labels[idx]

    print(f"bench: {LABEL}: starting ({result.settings})", flush=True)
    try:
        clients.start()
        contender.start(endpoint)
        _wait_for(
            "the hot pool up, the cold and GPU pools at zero",
            lambda: (
                True
                if (p := contender.pools())[pp.HOT]["size"] == 1
                and p[pp.COLD]["size"] == p[pp.GPU]["size"] == 0
                else None
            ),
            START_S,
        )
        # Warm-up: the hot pool's worker loads the model; the cold and GPU pools stay at zero.
        warm_rows, warm_labels = take(warmup)
        warm = mixed_run(f"{KEY}.warmup", warm_rows, warm_labels, [pp.HOT] * warmup)
        _run(clients, warm, "warm-up")

        names = [PATTERN[i % len(PATTERN)] for i in range(n)]
        hot_n = names.count(pp.HOT)
        alone_rows, alone_labels = take(hot_n)
        alone = mixed_run(f"{KEY}.alone", alone_rows, alone_labels, [pp.HOT] * hot_n)
        _run(clients, alone, "hot alone")
        result.hot_alone = figures(pp.HOT, alone, np.ones(hot_n, dtype=bool))
        print(f"bench: {LABEL}: hot alone: {_line(result.hot_alone)}", flush=True)

        burst_rows, burst_labels = take(n)
        burst = mixed_run(f"{KEY}.burst", burst_rows, burst_labels, names)
        with SizeWatch(contender) as watch:
            _run(clients, burst, "mixed burst")
        result.largest = watch.largest
        which = np.asarray(names)
        result.pipelines = [figures(p, burst, which == p) for p in PIPELINES]
        result.total = figures("all", burst, np.ones(n, dtype=bool))
        result.after_burst = _wait_for(
            "a status after the burst", contender.pools, START_S
        )  # each pool's first cold start (the cold and GPU pools started during the burst)
        print(f"bench: {LABEL}: burst: {_line(result.total)}", flush=True)
        for fig in result.pipelines:
            print(f"bench: {LABEL}:   {fig.pipeline}: {_line(fig)}", flush=True)

        # The cold pool, idle for its idle_timeout_s, releases its worker; then a second
        # cold start.
        _wait_for(
            "the idle cold pool back at zero",
            lambda: True if contender.pools()[pp.COLD]["size"] == 0 else None,
            pp.COLD_IDLE_S + IDLE_S,
        )
        last_cold_answer = float(np.nanmax(burst.received_at[which == pp.COLD]))
        result.released_after_s = clock() - last_cold_answer
        again_rows, again_labels = take(AGAIN_REQUESTS)
        again = mixed_run(f"{KEY}.again", again_rows, again_labels, [pp.COLD] * AGAIN_REQUESTS)
        _run(clients, again, "second cold start")
        result.again = figures(pp.COLD, again, np.ones(AGAIN_REQUESTS, dtype=bool))
        result.at_end = _wait_for("a status at the end", contender.pools, START_S)
        for run in (alone, burst, again):
            result.duplicates += run.duplicates
            result.wrong += run.wrong
            result.errors += run.errors
        print(
            f"bench: {LABEL}: cold pool released {result.released_after_s:.1f} s after its last "
            f"answer; again: {_line(result.again)}; cold starts: "
            + ", ".join(
                f"{name} {pool['cold_starts']} (last {pool['last_cold_start_s']} s)"
                for name, pool in result.at_end.items()
            ),
            flush=True,
        )
    finally:
        contender.stop()
        clients.close()
        result.wall_s = time.perf_counter() - started
    return result


def _run(clients: Clients, run: Run, what: str) -> None:
    clients.prepare(run)
    clients.run(run, timeout_s=RUN_S, idle_s=IDLE_S)
    if run.lost and what == "warm-up":
        raise RuntimeError(f"pools row: {run.lost} of {len(run)} warm-up requests unanswered")


def _line(fig: PipelineFigures) -> str:
    return (
        f"{fig.answered:,}/{fig.requests:,} answered, {fig.throughput:,.0f} req/s, "
        f"p50 {fig.p50_ms:,.0f} ms, p99 {fig.p99_ms:,.0f} ms"
    )
