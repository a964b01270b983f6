"""The pool autoscaler's controller: measure, ask the policy, resize the ingest pools.

A daemon thread in the executor's driver (started by :meth:`rayml.executor.service.Executor.start`
when ``autoscale.enabled``) that, every ``autoscale.interval_s``:

1. reads the consumer group's offsets from Kafka (:func:`rayml.kafka.lag.group_lag`): the lag,
   and over a short window the **arrival rate** (end offsets moving) and the **throughput**
   (committed offsets moving). Kafka answers even while every worker is busy or pending, so
   the controller never waits on a saturated pool to learn that it is saturated;
2. refreshes the ingest actors' status (pool size, in-flight) without blocking: a status call
   waits up to 5 s on workers that have no node yet, so its answer is used when it comes;
3. feeds :class:`rayml.autoscaling.policy.AutoscalePolicy` (per ingest actor: every ingest owns a
pool
   and the partitions are spread over them) and applies a changed size with
   :meth:`Executor.resize`. Workers that do not fit stay pending and Ray's autoscaler starts
   nodes for them. On a sharp burst (the target is ``burst_factor`` times the pool or more)
   it also asks Ray's autoscaler for the whole target's CPUs at once
   (``request_resources``), so the nodes start together instead of one scheduling round at a
   time; the request is cleared when the pool shrinks and when the controller stops.

Pipelines with a pool of their own (:class:`rayml.pipeline.Pool`, :mod:`rayml.executor.pools`)
are scaled pool by pool: each on its own backlog (requests queued and in flight for it in the
ingests), its own arrival rate (requests handed to it) and its own service rate (requests it
answered), within ``[max(1, min_replicas), max_replicas]``, by a policy of its own with the
``[autoscale]`` targets and delays. Kafka's lag cannot be split by pipeline (the pipelines share
the input partitions), so once any pipeline has its own pool the default pool is scaled the same
way, on its own backlog; a burst on one pipeline then grows only its pool. The group's lag
beyond what the ingests hold (records their full windows left in Kafka) is shared out to the
pools by their share of the arrivals; a pool's figures are sampled once per status the
ingests answer. A pool that went to
zero is started by its ingest when work comes for it, not here. A burst asks Ray's autoscaler
for the pool's own shape (GPUs included). Inside a pool, model-affinity routing
(``model_replicas``, spill-over to any worker with room) spreads a hot model.

Each tick is kept in :attr:`PoolAutoscaler.timeline` (bounded) and logged at INFO when the
pool (asked for or running), the target or the node count changes, or every 10 s while there is
lag.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import ray

from rayml.autoscaling.policy import AutoscalePolicy, Decision, LoadSample, PolicyConfig
from rayml.config import Settings
from rayml.errors import ConfigError, RaymlError
from rayml.kafka.lag import PartitionLag, group_lag

logger = logging.getLogger(__name__)

# Rates are measured over this window at least: offsets are committed once per
# commit_interval_s, so a one-tick window would see the throughput jump between 0 and twice
# its value.
_MIN_RATE_WINDOW_S = 4.0
_QUIET_LOG_S = 10.0


@dataclass(frozen=True, slots=True)
class Tick:
    """One sample of the timeline (times in seconds since the controller started)."""

    t: float
    lag: int
    arrival_rate: float | None
    throughput: float | None
    in_flight: int
    pool: int  # serving workers per ingest (what the pool was asked for)
    running: int  # workers that answered their last status, all ingests
    target: int
    desired: int
    nodes: int
    action: str
    reason: str


def policy_config(settings: Settings) -> PolicyConfig:
    """The policy's configuration from the ``[autoscale]`` settings.

    Raises:
        ConfigError: if the bounds or targets are inconsistent (``min_workers > max_workers``).
    """
    a = settings.autoscale
    try:
        return PolicyConfig(
            min_workers=a.min_workers,
            max_workers=a.max_workers,
            target_lag_s=a.target_lag_s,
            target_in_flight_per_worker=a.target_in_flight_per_worker,
            upscale_delay_s=a.upscale_delay_s,
            downscale_delay_s=a.downscale_delay_s,
            upscale_smoothing=a.upscale_smoothing,
            downscale_smoothing=a.downscale_smoothing,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid autoscale settings: {exc}") from exc


def _alive_nodes() -> int:
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def _request_resources(bundles: list[dict[str, float]]) -> None:
    from ray.autoscaler.sdk import request_resources

    if bundles:
        request_resources(bundles=bundles)
    else:
        request_resources(num_cpus=0)  # clears an earlier request


class ScalableExecutor(Protocol):
    """What the autoscaler uses of an executor (:class:`rayml.executor.service.Executor` is one):
    its ingest actors, asked for their status, and a resize of every ingest's pool."""

    @property
    def actors(self) -> list[Any]: ...

    def resize(self, workers: int) -> None: ...

    def resize_pool(self, name: str, workers: int) -> None: ...


class PoolAutoscaler:
    """Resizes an executor's pools from Kafka lag and the ingest actors' status.

    Args:
        settings: The executor's settings (``autoscale``, ``executor.worker_num_cpus``).
        executor: The started executor whose ingest actors it resizes.
        read_lag: Reads per-partition lag (Kafka); replaceable in tests.
        count_nodes: Alive Ray nodes (for the timeline).
        request: Asks Ray's autoscaler for capacity (``[]`` clears the request).
    """

    def __init__(
        self,
        settings: Settings,
        executor: ScalableExecutor,
        *,
        read_lag: Callable[[Settings], list[PartitionLag]] = group_lag,
        count_nodes: Callable[[], int] = _alive_nodes,
        request: Callable[[list[dict[str, float]]], None] = _request_resources,
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.policy = AutoscalePolicy(policy_config(settings))
        self._read_lag = read_lag
        self._count_nodes = count_nodes
        self._request = request
        self._requested = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._offsets: deque[tuple[float, int, int]] = deque()  # (t, sum end, sum committed)
        self._status_refs: list[Any] | None = None
        self._statuses: list[dict[str, Any]] = []
        self._pool = settings.executor.num_workers
        self._last_logged: tuple[int, int, int, int] | None = None
        self._last_log_t = 0.0
        self.timeline: deque[Tick] = deque(maxlen=3600)
        # Per pool (once any pipeline has its own): its policy, its counters over the rate
        # window (t, arrived, answered), and the capacity asked of Ray's autoscaler for it.
        self._pool_policies: dict[str, AutoscalePolicy] = {}
        self._pool_counters: dict[str, deque[tuple[float, int, int]]] = {}
        self._ahead: dict[str, list[dict[str, float]]] = {}
        self.pool_sizes: dict[str, int] = {}
        # Whether the ingests' statuses came back since the pools were last decided on (a
        # status can take seconds: deciding twice on one would count its figures twice).
        self._fresh = False
        self._rates_of: dict[str, tuple[float | None, float | None]] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rayml-autoscaler", daemon=True)
        self._thread.start()
        a = self.settings.autoscale
        logger.info(
            "autoscaler started: workers per ingest %d..%d, target lag %.1fs, delays up %.0fs "
            "down %.0fs",
            a.min_workers,
            a.max_workers,
            a.target_lag_s,
            a.upscale_delay_s,
            a.downscale_delay_s,
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread and withdraw any capacity request (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._clear_request()

    def _run(self) -> None:
        interval = self.settings.autoscale.interval_s
        while not self._stop.wait(interval):
            try:
                self.tick()
            except (RaymlError, ray.exceptions.RayError, TimeoutError) as exc:
                # The broker or the cluster is away for a moment: skip this sample; the
                # policy's delays make one missing sample harmless.
                logger.warning("autoscaler: no sample this time: %s", exc)
            except Exception:
                logger.exception("autoscaler: tick failed")

    # -- one step ----------------------------------------------------------------------------

    def tick(self) -> Tick:
        """Measure, decide and (maybe) resize once."""
        now = time.monotonic()
        lags = self._read_lag(self.settings)
        lag = sum(max(0, p.lag) for p in lags)
        arrival, throughput = self._rates(
            now, sum(p.end for p in lags), sum(p.committed or 0 for p in lags)
        )
        self._refresh_status()
        ingests = max(1, len(self.executor.actors))
        statuses = self._statuses
        pools = _pools_of(statuses)
        if len(pools) > 1 or (self.pool_sizes and not pools):
            # Pools per pipeline: each is scaled on its own figures, the default one too (and
            # nothing is decided on the group's lag while the ingests' answers are awaited).
            return self._tick_pools(now, pools, ingests, lag, arrival, throughput)
        if statuses:
            self._pool = max(int(s.get("pool_size", self._pool)) for s in statuses)
        in_flight = sum(int(s.get("in_flight", 0)) for s in statuses)
        running = sum(len(s.get("workers", [])) for s in statuses)
        per_worker = None if throughput is None else throughput / (ingests * max(1, self._pool))
        decision = self.policy.decide(
            LoadSample(
                now=now,
                workers=self._pool,
                lag=lag // ingests,
                arrival_rate=None if arrival is None else arrival / ingests,
                in_flight=in_flight // ingests,
                throughput_per_worker=per_worker,
            )
        )
        if decision.desired != self._pool:
            cpus = self.settings.executor.worker_num_cpus
            self._resize(
                "default",
                {"CPU": 1.0 if cpus is None else cpus},
                self.policy.config.max_workers,
                self._pool,
                decision,
                ingests,
                only=True,
            )
            self._pool = decision.desired
            # Answers to status calls made before this resize carry the old size: drop them.
            self._statuses = []
            self._status_refs = None
        tick = Tick(
            t=round(now - self._started, 3),
            lag=lag,
            arrival_rate=None if arrival is None else round(arrival, 1),
            throughput=None if throughput is None else round(throughput, 1),
            in_flight=in_flight,
            pool=self._pool,
            running=running,
            target=decision.target,
            desired=decision.desired,
            nodes=self._count_nodes(),
            action=decision.action,
            reason=decision.reason,
        )
        self.timeline.append(tick)
        self._log(tick, now)
        return tick

    def _tick_pools(
        self,
        now: float,
        pools: dict[str, list[dict[str, Any]]],
        ingests: int,
        lag: int,
        arrival: float | None,
        throughput: float | None,
    ) -> Tick:
        """One step with pools per pipeline: a decision per pool, on its own backlog, with the
        group's unread lag shared out by each pool's arrivals (the ingests hold only what
        their window lets in: the rest waits in Kafka, and is some pool's backlog too)."""
        acted: list[str] = []
        default_decision: Decision | None = None
        if not self._fresh:
            pools = {}  # nothing new: hold (the counters are sampled once per status)
        self._fresh = False
        unread = self._unread_by_pool(now, pools, lag)
        for name, per_ingest in sorted(pools.items()):
            size = max(int(p.get("size", 0)) for p in per_ingest)
            self.pool_sizes[name] = size
            if size == 0:
                self._pool_counters.pop(name, None)
                continue  # released while idle: its ingest starts it when work comes
            policy = self._pool_policies.get(name)
            if policy is None:
                policy = self._pool_policies[name] = AutoscalePolicy(
                    self._pool_config(per_ingest[0])
                )
            backlog = sum(int(p.get("backlog", 0)) for p in per_ingest) + unread.get(name, 0)
            arrived_rate, answered_rate = self._rates_of.get(name, (None, None))
            decision = policy.decide(
                LoadSample(
                    now=now,
                    workers=size,
                    lag=backlog // ingests,
                    arrival_rate=None if arrived_rate is None else arrived_rate / ingests,
                    in_flight=backlog // ingests,
                    throughput_per_worker=None
                    if answered_rate is None
                    else answered_rate / (ingests * size),
                )
            )
            if name == "default":
                default_decision = decision
            if decision.desired != size:
                self._resize(
                    name,
                    _shape(per_ingest[0]),
                    policy.config.max_workers,
                    size,
                    decision,
                    ingests,
                )
                self.pool_sizes[name] = decision.desired
                acted.append(f"{name} {size}->{decision.desired}")
        if acted:
            self._statuses = []  # answers from before the resizes carry the old sizes
            self._status_refs = None
        pool = self.pool_sizes.get("default", self._pool)
        self._pool = pool
        tick = Tick(
            t=round(now - self._started, 3),
            lag=lag,
            arrival_rate=None if arrival is None else round(arrival, 1),
            throughput=None if throughput is None else round(throughput, 1),
            in_flight=sum(int(p.get("backlog", 0)) for ps in pools.values() for p in ps),
            pool=pool,
            running=sum(self.pool_sizes.values()),
            target=pool if default_decision is None else default_decision.target,
            desired=pool if default_decision is None else default_decision.desired,
            nodes=self._count_nodes(),
            action="resize" if acted else "hold",
            reason="; ".join(acted) or "pools at their desired sizes",
        )
        self.timeline.append(tick)
        self._log(tick, now)
        return tick

    def _unread_by_pool(
        self, now: float, pools: dict[str, list[dict[str, Any]]], lag: int
    ) -> dict[str, int]:
        """Each pool's rates (kept in ``_rates_of``), and its share of the records the group
        has not read yet (lag beyond what the ingests hold), by its share of the arrivals
        (of the backlogs while no rate is known; none to any pool without either)."""
        self._rates_of = {}
        for name, per_ingest in pools.items():
            self._rates_of[name] = self._pool_rates(
                name,
                now,
                sum(int(p.get("arrived", 0)) for p in per_ingest),
                sum(int(p.get("answered", 0)) for p in per_ingest),
            )
        held = sum(int(s.get("in_flight", 0)) for s in self._statuses)
        unread = max(0, lag - held)
        if not unread or not pools:
            return {}
        weights = {n: max(0.0, r[0] or 0.0) for n, r in self._rates_of.items()}
        if not sum(weights.values()):
            weights = {
                n: float(sum(int(p.get("backlog", 0)) for p in ps)) for n, ps in pools.items()
            }
        total = sum(weights.values())
        if not total:
            # Nothing arrives and nothing waits in a pool: the lag is records already answered
            # and not committed yet (one commit interval's worth), no pool's backlog.
            return {}
        return {n: round(unread * w / total) for n, w in weights.items()}

    def _pool_config(self, pool: dict[str, Any]) -> PolicyConfig:
        """A pool's policy: its own bounds, the [autoscale] targets and delays."""
        base = policy_config(self.settings)
        if pool.get("pool") == "default" or pool.get("max") is None:
            return base
        return PolicyConfig(
            min_workers=max(1, int(pool.get("min") or 0)),
            max_workers=max(1, int(pool["max"])),
            target_lag_s=base.target_lag_s,
            target_in_flight_per_worker=base.target_in_flight_per_worker,
            upscale_delay_s=base.upscale_delay_s,
            downscale_delay_s=base.downscale_delay_s,
            upscale_smoothing=base.upscale_smoothing,
            downscale_smoothing=base.downscale_smoothing,
        )

    def _pool_rates(
        self, name: str, now: float, arrived: int, answered: int
    ) -> tuple[float | None, float | None]:
        """A pool's arrival and service rates (requests/s) over the last few seconds."""
        window = max(_MIN_RATE_WINDOW_S, 4 * self.settings.autoscale.interval_s)
        samples = self._pool_counters.setdefault(name, deque())
        if samples and (arrived < samples[-1][1] or answered < samples[-1][2]):
            samples.clear()  # an ingest restarted: its counters began again
        samples.append((now, arrived, answered))
        while len(samples) > 2 and now - samples[1][0] >= window:
            samples.popleft()
        t0, arrived0, answered0 = samples[0]
        if now - t0 <= 0:
            return None, None
        return (arrived - arrived0) / (now - t0), (answered - answered0) / (now - t0)

    def _resize(
        self,
        name: str,
        shape: dict[str, float],
        max_workers: int,
        previous: int,
        decision: Decision,
        ingests: int,
        *,
        only: bool = False,
    ) -> None:
        """Log, ask ahead and resize pool ``name`` (``"default"``: the ingests' own pool) from
        ``previous`` to ``decision.desired`` workers per ingest.

        On a sharp burst (``burst_factor`` times the pool or more) Ray's autoscaler is asked
        for the target's workers of ``shape`` at once, up to ``max_workers`` per ingest; a
        shrink withdraws the pool's request. ``only``: the executor's only pool, logged without
        its name. The caller records the new size.
        """
        size = decision.desired
        logger.info(
            "autoscaler: pool %s%d -> %d workers per ingest (raw %.2f, capacity %s/s per "
            "worker): %s",
            "" if only else f"{name} ",
            previous,
            size,
            decision.raw,
            "?" if decision.capacity_per_worker is None else f"{decision.capacity_per_worker:.0f}",
            decision.reason,
        )
        a = self.settings.autoscale
        shape = {k: v for k, v in shape.items() if v > 0}
        if size > previous and a.request_resources and shape:
            ahead = min(max_workers, max(size, round(decision.raw)))
            # A sharp burst: ask for the nodes of the whole target now.
            if ahead >= a.burst_factor * previous:
                self._ahead[name] = [shape] * (ahead * ingests)
                self._send_ahead()
        elif size < previous and self._ahead.pop(name, None) is not None:
            self._send_ahead()
        if name == "default":
            self.executor.resize(size)
        else:
            self.executor.resize_pool(name, size)

    def _send_ahead(self) -> None:
        bundles = [b for wanted in self._ahead.values() for b in wanted]
        if bundles:
            if self._ask(bundles):
                logger.info(
                    "autoscaler: requested %d bundles ahead (%s)",
                    len(bundles),
                    ", ".join(f"{n}: {len(b)} x {b[0]}" for n, b in self._ahead.items() if b),
                )
        else:
            self._clear_request()

    def _ask(self, bundles: list[dict[str, float]]) -> bool:
        """Ask Ray's autoscaler for capacity ahead; a refusal (no autoscaler, a driver not
        connected to the GCS) is logged and never stops the resize that follows."""
        try:
            self._request(bundles)
        except Exception as exc:
            logger.warning("autoscaler: could not ask Ray's autoscaler for capacity: %s", exc)
            return False
        self._requested = True
        return True

    def _rates(self, now: float, end: int, committed: int) -> tuple[float | None, float | None]:
        """Arrival rate and throughput (records/s) over the last few seconds of offsets."""
        window = max(_MIN_RATE_WINDOW_S, 4 * self.settings.executor.commit_interval_s)
        self._offsets.append((now, end, committed))
        while len(self._offsets) > 2 and now - self._offsets[1][0] >= window:
            self._offsets.popleft()
        t0, end0, committed0 = self._offsets[0]
        if now - t0 <= 0 or end < end0 or committed < committed0:
            if end < end0 or committed < committed0:
                self._offsets.clear()  # offsets reset (topic re-created): start over
                self._offsets.append((now, end, committed))
            return None, None
        return (end - end0) / (now - t0), (committed - committed0) / (now - t0)

    def _refresh_status(self) -> None:
        if not self.executor.actors:
            return
        if self._status_refs is None:
            self._status_refs = [a.status.remote() for a in self.executor.actors]
        ready, _ = ray.wait(self._status_refs, num_returns=len(self._status_refs), timeout=0)
        if len(ready) == len(self._status_refs):
            try:
                self._statuses = ray.get(self._status_refs)
                self._fresh = True
            finally:
                self._status_refs = None

    def _clear_request(self) -> None:
        if not self._requested:
            return
        try:
            self._request([])
            self._requested = False
        except Exception as exc:  # the cluster is going away: nothing left to release
            logger.warning("autoscaler: could not clear the resource request: %s", exc)

    def _log(self, tick: Tick, now: float) -> None:
        state = (tick.pool, tick.running, tick.target, tick.nodes)
        quiet = now - self._last_log_t < _QUIET_LOG_S
        if state == self._last_logged and (quiet or tick.lag == 0):
            return
        self._last_logged = state
        self._last_log_t = now
        logger.info(
            "autoscale tick: pool=%d running=%d target=%d nodes=%d lag=%d in_flight=%d "
            "arrival=%s/s throughput=%s/s action=%s (%s)",
            tick.pool,
            tick.running,
            tick.target,
            tick.nodes,
            tick.lag,
            tick.in_flight,
            tick.arrival_rate,
            tick.throughput,
            tick.action,
            tick.reason,
        )

    def timeline_dicts(self) -> list[dict[str, Any]]:
        return [asdict(t) for t in self.timeline]


def _shape(pool: dict[str, Any]) -> dict[str, float]:
    """What one worker of a pool reserves, from its entry in an ingest's status."""
    return {"CPU": float(pool.get("num_cpus") or 0), "GPU": float(pool.get("num_gpus") or 0)}


def _pools_of(statuses: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each pool's entries in the ingests' statuses, by pool name."""
    pools: dict[str, list[dict[str, Any]]] = {}
    for status in statuses:
        for pool in status.get("pools", []):
            pools.setdefault(str(pool.get("pool")), []).append(pool)
    return pools
