"""The pool autoscaling policy: bounds, delays, damping, and the load arithmetic."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayml.autoscaling.policy import AutoscalePolicy, LoadSample, PolicyConfig
from rayml.config import load_settings


def sample(now: float, workers: int, **load: float | int | None) -> LoadSample:
    return LoadSample(now=now, workers=workers, **load)  # type: ignore[arg-type]


def test_lag_and_arrival_give_the_size_that_drains_within_target() -> None:
    policy = AutoscalePolicy(PolicyConfig(max_workers=20, target_lag_s=2.0, upscale_delay_s=0))
    # 500/s arriving; of 10,000 behind, 1,000 (2 s of arrivals) is normal commit latency and
    # 9,000 is backlog to drain in 2 s: 500 + 4,500 = 5,000/s; 1,000/s per worker -> 5.
    d = policy.decide(sample(0, 2, lag=10_000, arrival_rate=500.0, throughput_per_worker=1_000.0))
    assert d.raw == pytest.approx(5.0)
    assert (d.action, d.desired) == ("up", 5)


def test_steady_load_keeps_the_pool_even_when_capacity_is_underestimated() -> None:
    # A pool that keeps up shows its arrival rate as throughput, not its capacity: the lag it
    # has is commit latency, so it must not grow.
    policy = AutoscalePolicy(PolicyConfig(max_workers=10, upscale_delay_s=0))
    for t in range(30):
        d = policy.decide(sample(t, 1, lag=25, arrival_rate=21.0, throughput_per_worker=20.0))
        assert (d.action, d.desired) == ("hold", 1)


def test_upscale_waits_for_the_delay_then_jumps_to_target() -> None:
    policy = AutoscalePolicy(PolicyConfig(max_workers=10, target_lag_s=2.0, upscale_delay_s=3.0))
    load = {"lag": 40_000, "arrival_rate": 0.0, "throughput_per_worker": 1_000.0}
    assert policy.decide(sample(0.0, 1, **load)).action == "hold"
    held = policy.decide(sample(2.0, 1, **load))
    assert (held.action, held.target) == ("hold", 10)
    acted = policy.decide(sample(3.0, 1, **load))
    assert (acted.action, acted.desired) == ("up", 10)


def test_a_spike_shorter_than_the_delay_changes_nothing() -> None:
    policy = AutoscalePolicy(PolicyConfig(max_workers=10, upscale_delay_s=3.0))
    busy = {"lag": 40_000, "throughput_per_worker": 1_000.0}
    assert policy.decide(sample(0.0, 2, **busy)).action == "hold"
    assert policy.decide(sample(1.0, 2, **busy)).action == "hold"
    # The lag is gone before 3 s: the wish to grow resets.
    assert policy.decide(sample(2.0, 2, lag=2_000, throughput_per_worker=1_000.0)).action == "hold"
    assert policy.decide(sample(3.5, 2, **busy)).action == "hold"


def test_idle_pool_shrinks_to_min_after_the_downscale_delay() -> None:
    policy = AutoscalePolicy(PolicyConfig(min_workers=2, max_workers=10, downscale_delay_s=5.0))
    idle = {"lag": 0, "arrival_rate": 0.0, "throughput_per_worker": 0.0}
    policy.capacity = 1_000.0
    assert policy.decide(sample(0.0, 8, **idle)).action == "hold"
    assert policy.decide(sample(4.9, 8, **idle)).action == "hold"
    d = policy.decide(sample(5.0, 8, **idle))
    assert (d.action, d.desired) == ("down", 2)


def test_smoothing_moves_part_of_the_way_but_at_least_one_step() -> None:
    cfg = PolicyConfig(
        max_workers=20,
        target_lag_s=2.0,
        upscale_delay_s=0,
        downscale_delay_s=0,
        upscale_smoothing=0.5,
        downscale_smoothing=0.1,
    )
    policy = AutoscalePolicy(cfg)
    up = policy.decide(sample(0, 2, lag=36_000, throughput_per_worker=1_000.0))
    assert up.desired == 10  # raw 18 (36,000 / 2 s / 1,000/s): halfway from 2
    policy = AutoscalePolicy(cfg)
    policy.capacity = 1_000.0
    down = policy.decide(sample(0, 4, lag=0, arrival_rate=0.0))
    assert down.desired == 3  # a tenth of the way is less than one worker: one step anyway


def test_out_of_bounds_is_corrected_without_delay() -> None:
    policy = AutoscalePolicy(
        PolicyConfig(min_workers=2, max_workers=4, upscale_delay_s=60, downscale_delay_s=60)
    )
    assert policy.decide(sample(0, 1)).desired == 2
    assert policy.decide(sample(0, 9)).desired == 4


def test_unknown_throughput_with_lag_does_not_shrink() -> None:
    policy = AutoscalePolicy(PolicyConfig(max_workers=8, downscale_delay_s=0))
    assert policy.decide(sample(0, 5, lag=1_000)).desired == 5


def test_in_flight_rule_grows_before_any_throughput_is_known() -> None:
    policy = AutoscalePolicy(
        PolicyConfig(max_workers=8, target_in_flight_per_worker=1_000, upscale_delay_s=0)
    )
    assert policy.decide(sample(0, 1, lag=5_000, in_flight=4_000)).desired == 4


def test_capacity_estimate_keeps_the_peak_and_forgets_slowly() -> None:
    policy = AutoscalePolicy(PolicyConfig(capacity_decay=0.5))
    policy.decide(sample(0, 2, throughput_per_worker=1_000.0))
    policy.decide(sample(1, 2, throughput_per_worker=100.0))
    assert policy.capacity == 500.0
    policy.decide(sample(2, 2, throughput_per_worker=0.0))  # idle says nothing of capacity
    assert policy.capacity == 500.0


@pytest.mark.parametrize(
    "bad",
    [
        {"min_workers": 0},
        {"min_workers": 3, "max_workers": 2},
        {"target_lag_s": 0},
        {"upscale_smoothing": 0},
        {"downscale_smoothing": 1.5},
        {"target_in_flight_per_worker": 0},
        {"tolerance": 1.0},
    ],
)
def test_bad_config_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        PolicyConfig(**bad)  # type: ignore[arg-type]


def test_settings_section_defaults() -> None:
    auto = load_settings().autoscale
    assert auto.enabled is False
    assert auto.min_workers <= auto.max_workers
    assert auto.upscale_delay_s < auto.downscale_delay_s


# -- properties --------------------------------------------------------------------------------

loads = st.builds(
    dict,
    lag=st.integers(0, 10_000_000),
    arrival_rate=st.none() | st.floats(0, 1e6),
    in_flight=st.integers(0, 100_000),
    throughput_per_worker=st.none() | st.floats(0, 1e6),
)
configs = st.builds(
    lambda lo, span, up, down, su, sd, inflight: PolicyConfig(
        min_workers=lo,
        max_workers=lo + span,
        upscale_delay_s=up,
        downscale_delay_s=down,
        upscale_smoothing=su,
        downscale_smoothing=sd,
        target_in_flight_per_worker=inflight,
    ),
    st.integers(1, 10),
    st.integers(0, 50),
    st.floats(0, 30),
    st.floats(0, 300),
    st.floats(0.05, 1),
    st.floats(0.05, 1),
    st.none() | st.integers(1, 10_000),
)


@settings(max_examples=200, deadline=None)
@given(cfg=configs, steps=st.lists(st.tuples(st.floats(0, 10), loads), min_size=1, max_size=40))
def test_size_stays_in_bounds_and_moves_only_after_a_held_delay(
    cfg: PolicyConfig, steps: list[tuple[float, dict[str, float]]]
) -> None:
    policy = AutoscalePolicy(cfg)
    now, workers = 0.0, cfg.min_workers
    last_change = -1e9
    for dt, load in steps:
        now += dt
        d = policy.decide(LoadSample(now=now, workers=workers, **load))  # type: ignore[arg-type]
        assert cfg.min_workers <= d.desired <= cfg.max_workers
        if d.desired != workers:
            delay = cfg.upscale_delay_s if d.desired > workers else cfg.downscale_delay_s
            # A change needs the wish to have held a full delay, which began after the last one.
            assert now - last_change >= delay - 1e-6
            # Smoothing never overshoots the load-based size.
            bounded = min(cfg.max_workers, max(cfg.min_workers, d.raw))
            if d.desired > workers:
                assert d.desired <= max(workers + 1, bounded + 1)
            else:
                assert d.desired >= min(workers - 1, bounded)
            last_change = now
            workers = d.desired


@settings(max_examples=200, deadline=None)
@given(
    cfg=configs,
    lag=st.integers(0, 10_000_000),
    more=st.integers(0, 10_000_000),
    rate=st.floats(1, 1e5),
)
def test_more_lag_never_wants_fewer_workers(
    cfg: PolicyConfig, lag: int, more: int, rate: float
) -> None:
    a = AutoscalePolicy(cfg).raw_desired(
        LoadSample(now=0, workers=1, lag=lag, throughput_per_worker=rate)
    )
    b = AutoscalePolicy(cfg).raw_desired(
        LoadSample(now=0, workers=1, lag=lag + more, throughput_per_worker=rate)
    )
    assert b >= a


@settings(max_examples=100, deadline=None)
@given(cfg=configs, start=st.integers(1, 60))
def test_idle_always_reaches_min_workers(cfg: PolicyConfig, start: int) -> None:
    policy = AutoscalePolicy(cfg)
    policy.capacity = 1_000.0
    workers, now = start, 0.0
    for _ in range(200):
        d = policy.decide(LoadSample(now=now, workers=workers, lag=0, arrival_rate=0.0))
        workers = d.desired
        now += max(1.0, cfg.downscale_delay_s / 2)
    assert workers == cfg.min_workers


# -- the controller, with Kafka and Ray replaced by fakes ----------------------------------------


class FakeExecutor:
    def __init__(self) -> None:
        self.actors: list[object] = []
        self.sizes: list[int] = []

    def resize(self, n: int) -> None:
        self.sizes.append(n)


def _controller(
    monkeypatch: pytest.MonkeyPatch,
    executor: Any,
    request: Any,
    worker_num_cpus: float,
    **autoscale: Any,
) -> tuple[Any, list[float], dict[str, int]]:
    """A controller of 1..4 workers (upscale after 1 s, downscale after 3 s) on a fake clock,
    reading the lag of one partition whose offsets the test moves; returns (controller,
    clock, offsets)."""
    from rayml.autoscaling import controller
    from rayml.kafka.lag import PartitionLag

    clock = [0.0]
    monkeypatch.setattr(controller.time, "monotonic", lambda: clock[0])
    offsets = {"end": 0, "committed": 0}
    settings = load_settings(
        executor={"num_workers": 1, "worker_num_cpus": worker_num_cpus},
        autoscale={
            "enabled": True,
            "min_workers": 1,
            "max_workers": 4,
            "upscale_delay_s": 1,
            "downscale_delay_s": 3,
            **autoscale,
        },
    )
    scaler = controller.PoolAutoscaler(
        settings,
        executor,
        read_lag=lambda _s: [PartitionLag("in", 0, offsets["committed"], offsets["end"])],
        count_nodes=lambda: 1,
        request=request,
    )
    return scaler, clock, offsets


def test_controller_grows_on_a_burst_asks_ahead_then_shrinks_and_clears(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requests: list[list[dict[str, float]]] = []
    fake = FakeExecutor()
    scaler, clock, offsets = _controller(monkeypatch, fake, requests.append, 1.0)
    # Steady: 100/s in, 100/s done.
    for _ in range(6):
        clock[0] += 1
        offsets["end"] += 100
        offsets["committed"] += 100
        scaler.tick()
    assert fake.sizes == []
    # Burst: 20,000 arrive at once; the one worker still does 100/s.
    offsets["end"] += 20_000
    for _ in range(3):
        clock[0] += 1
        offsets["committed"] += 100
        scaler.tick()
    assert fake.sizes == [4]
    assert requests == [[{"CPU": 1.0}] * 4], "asked Ray's autoscaler for the whole target"
    # Drained and idle: back to one worker after the downscale delay; the request is cleared.
    offsets["committed"] = offsets["end"]
    for _ in range(12):
        clock[0] += 1
        scaler.tick()
    assert fake.sizes == [4, 1]
    assert requests[-1] == []
    timeline = scaler.timeline_dicts()
    assert [t["pool"] for t in timeline][-1] == 1
    assert max(t["target"] for t in timeline) == 4


def test_keeping_up_with_only_a_lower_bound_on_capacity_probes_one_worker_down() -> None:
    # A cold start grew the pool to 2 while the first worker warmed up; now both keep up with
    # 20/s, so each shows ~10/s: a lower bound, not a capacity. The pool must find out.
    policy = AutoscalePolicy(PolicyConfig(min_workers=1, max_workers=3, downscale_delay_s=5))
    steady = dict(workers=2, lag=10, arrival_rate=20.0, throughput_per_worker=11.0)
    assert policy.decide(LoadSample(now=0.0, **steady)).action == "hold"  # type: ignore[arg-type]
    decision = policy.decide(LoadSample(now=6.0, **steady))  # type: ignore[arg-type]
    assert (decision.action, decision.desired) == ("down", 1)
    # Too few now: a backlog builds; the capacity seen under it is real and the pool grows back.
    policy.decide(
        LoadSample(now=7.0, workers=1, lag=400, arrival_rate=20.0, throughput_per_worker=15.0)
    )
    assert policy.capacity_saturated


class FakePoolsExecutor(FakeExecutor):
    def __init__(self) -> None:
        super().__init__()
        self.pool_sizes: list[tuple[str, int]] = []

    def resize_pool(self, name: str, n: int) -> None:
        self.pool_sizes.append((name, n))


def _pool(name: str, size: int, backlog: int, arrived: int, answered: int, **shape: Any) -> dict:
    return {
        "pool": name,
        "size": size,
        "backlog": backlog,
        "arrived": arrived,
        "answered": answered,
        **shape,
    }


def test_pools_per_pipeline_are_scaled_on_their_own_backlog_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rayml.autoscaling import controller
    from rayml.kafka.lag import PartitionLag

    clock = [0.0]
    monkeypatch.setattr(controller.time, "monotonic", lambda: clock[0])
    requests: list[list[dict[str, float]]] = []
    settings = load_settings(
        executor={"num_workers": 1, "worker_num_cpus": 1.0},
        autoscale={
            "enabled": True,
            "min_workers": 1,
            "max_workers": 4,
            "upscale_delay_s": 1,
            "downscale_delay_s": 3,
        },
    )
    fake = FakePoolsExecutor()
    # The group's lag is the hot pipeline's burst (20,000 more than the ingest holds): shared
    # out by the pools' arrivals, it must grow the hot pool only, never the default pool.
    lag = {"unread": 20_000, "held": 0}
    scaler = controller.PoolAutoscaler(
        settings,
        fake,
        read_lag=lambda _s: [PartitionLag("in", 0, 0, lag["unread"] + lag["held"])],
        count_nodes=lambda: 1,
        request=requests.append,  # type: ignore[arg-type]
    )
    gpu = {"num_cpus": 0.5, "num_gpus": 1.0, "min": 0, "max": 3}
    counts = {"arrived": 0, "answered": 0, "hot": 1}

    def tick(backlog: int, done_per_s: int) -> None:
        clock[0] += 1
        counts["answered"] += done_per_s
        scaler._fresh = True  # a new status came back since the last tick
        lag["held"] = backlog
        scaler._statuses = [
            {
                "in_flight": backlog,
                "pools": [
                    _pool("default", 1, 0, 100, 100, num_cpus=1.0, num_gpus=0.0, max=None),
                    _pool("hot", counts["hot"], backlog, 5_000, counts["answered"], **gpu),
                ],
            }
        ]
        scaler.tick()
        for name, n in fake.pool_sizes:
            if name == "hot":
                counts["hot"] = n

    for _ in range(4):
        tick(backlog=4_900, done_per_s=100)  # one worker answers 100/s of a 5,000 burst
    assert fake.sizes == [], "the default pool was never resized"
    assert fake.pool_sizes == [("hot", 3)]
    assert requests == [[{"CPU": 0.5, "GPU": 1.0}] * 3], "asked for the pool's own shape"
    # Drained: back to its minimum (1: a pool at zero is its ingest's business) after the delay.
    lag["unread"] = 0
    for _ in range(8):
        tick(backlog=0, done_per_s=0)
    assert fake.pool_sizes == [("hot", 3), ("hot", 1)]
    assert requests[-1] == []
    assert fake.sizes == []


def test_a_stale_status_is_not_decided_on_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    from rayml.autoscaling import controller
    from rayml.kafka.lag import PartitionLag

    clock = [0.0]
    monkeypatch.setattr(controller.time, "monotonic", lambda: clock[0])
    settings = load_settings(autoscale={"enabled": True, "upscale_delay_s": 0})
    fake = FakePoolsExecutor()
    scaler = controller.PoolAutoscaler(
        settings,
        fake,
        read_lag=lambda _s: [PartitionLag("in", 0, 0, 0)],
        count_nodes=lambda: 1,
        request=lambda _b: None,
    )
    status = {
        "pools": [
            _pool("default", 1, 0, 0, 0, num_cpus=1.0, max=None),
            _pool("hot", 1, 5_000, 5_000, 0, num_cpus=1.0, min=1, max=3),
        ]
    }
    scaler._statuses = [status]
    scaler._fresh = True
    clock[0] = 1.0
    scaler.tick()
    samples = len(scaler._pool_counters["hot"])
    for _ in range(5):  # the same status, no answer since: nothing sampled, nothing decided
        clock[0] += 1
        assert scaler.tick().action == "hold"
    assert len(scaler._pool_counters["hot"]) == samples
    assert fake.pool_sizes == []


def test_a_refused_capacity_request_never_stops_the_resize(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray's request_resources raised (its GCS client unset in this driver): the pool must grow
    anyway (it once raised out of the tick before the resize, every tick)."""
    from rayml.autoscaling import controller
    from rayml.kafka.lag import PartitionLag

    clock = [0.0]
    monkeypatch.setattr(controller.time, "monotonic", lambda: clock[0])

    def refuse(_bundles: list[dict[str, float]]) -> None:
        raise AttributeError("'NoneType' object has no attribute 'internal_kv_put'")

    settings = load_settings(
        autoscale={"enabled": True, "min_workers": 1, "max_workers": 4, "upscale_delay_s": 0}
    )
    fake = FakePoolsExecutor()
    scaler = controller.PoolAutoscaler(
        settings,
        fake,
        read_lag=lambda _s: [PartitionLag("in", 0, 0, 0)],
        count_nodes=lambda: 1,
        request=refuse,
    )
    answered = 0
    for _ in range(4):
        clock[0] += 1
        answered += 100
        scaler._fresh = True
        scaler._statuses = [
            {
                "pools": [
                    _pool("default", 1, 0, 0, 0, num_cpus=1.0, max=None),
                    _pool("hot", 1, 5_000, 5_000, answered, num_cpus=1.0, min=1, max=4),
                ]
            }
        ]
        scaler.tick()
    assert ("hot", 4) in fake.pool_sizes


def _single_pool_burst(
    monkeypatch: pytest.MonkeyPatch, request: Any, **autoscale: Any
) -> tuple[Any, FakePoolsExecutor]:
    """A controller of one pool (the ingests report only ``default``) that sees a burst of
    20,000 while its one worker does 100/s: it grows to 4 workers."""
    fake = FakePoolsExecutor()
    scaler, clock, offsets = _controller(monkeypatch, fake, request, 0.5, **autoscale)
    for _ in range(6):
        clock[0] += 1
        offsets["end"] += 100
        offsets["committed"] += 100
        scaler.tick()
    offsets["end"] += 20_000
    # An answer from before the resize (no actors here: nothing refreshes it).
    scaler._statuses = [
        {
            "pool_size": 1,
            "in_flight": 0,
            "workers": ["w0"],
            "pools": [_pool("default", 1, 0, 0, 0, num_cpus=0.5, max=None)],
        }
    ]
    for _ in range(3):
        clock[0] += 1
        offsets["committed"] += 100
        scaler.tick()
    return scaler, fake


def test_one_pool_is_resized_as_the_only_pool_and_its_old_statuses_dropped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import re

    requests: list[list[dict[str, float]]] = []
    with caplog.at_level("INFO", logger="rayml.autoscaling.controller"):
        scaler, fake = _single_pool_burst(monkeypatch, requests.append)
    assert fake.sizes == [4]
    assert fake.pool_sizes == []
    assert requests == [[{"CPU": 0.5}] * 4], "the workers' CPUs, the whole target at once"
    # Statuses asked before the resize carry the old size; the pool is not recorded as one of
    # several (that would switch the controller to per-pool scaling on the next tick).
    assert (scaler._statuses, scaler._status_refs, scaler.pool_sizes) == ([], None, {})
    assert scaler.tick().pool == 4
    # The line tests/integration/test_autoscale_cluster.py reads resizes from: no pool name.
    resizes = [
        (int(m[1]), int(m[2]))
        for r in caplog.records
        if (m := re.match(r"autoscaler: pool (\d+) -> (\d+) workers per ingest", r.getMessage()))
    ]
    assert resizes == [(1, 4)]
    assert "autoscaler: requested 4 bundles ahead (default: 4 x {'CPU': 0.5})" in caplog.messages


def test_one_pool_grows_only_to_the_burst_factor_before_asking_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requests: list[list[dict[str, float]]] = []
    _scaler, fake = _single_pool_burst(monkeypatch, requests.append, burst_factor=5.0)
    assert fake.sizes == [4]
    assert requests == [], "1 -> 4 is below a burst factor of 5: no request ahead"


def test_a_refused_capacity_request_is_logged_and_one_pool_still_grows(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(_bundles: list[dict[str, float]]) -> None:
        raise AttributeError("'NoneType' object has no attribute 'internal_kv_put'")

    with caplog.at_level("INFO", logger="rayml.autoscaling.controller"):
        scaler, fake = _single_pool_burst(monkeypatch, refuse)
    assert fake.sizes == [4]
    assert [
        m for m in caplog.messages if m.startswith("autoscaler: could not ask Ray's autoscaler")
    ] == [
        "autoscaler: could not ask Ray's autoscaler for capacity: 'NoneType' object has no "
        "attribute 'internal_kv_put'"
    ]
    assert not any("bundles ahead" in m for m in caplog.messages)
    assert scaler._requested is False  # nothing to withdraw at stop


def test_a_pool_of_its_own_is_logged_by_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from rayml.autoscaling import controller
    from rayml.kafka.lag import PartitionLag

    clock = [0.0]
    monkeypatch.setattr(controller.time, "monotonic", lambda: clock[0])
    settings = load_settings(
        autoscale={"enabled": True, "min_workers": 1, "max_workers": 4, "upscale_delay_s": 0}
    )
    fake = FakePoolsExecutor()
    requests: list[list[dict[str, float]]] = []
    scaler = controller.PoolAutoscaler(
        settings,
        fake,
        read_lag=lambda _s: [PartitionLag("in", 0, 0, 0)],
        count_nodes=lambda: 1,
        request=requests.append,  # type: ignore[arg-type]
    )
    answered, hot = 0, 1
    with caplog.at_level("INFO", logger="rayml.autoscaling.controller"):
        for _ in range(4):
            clock[0] += 1
            answered += 100
            scaler._fresh = True
            scaler._statuses = [
                {
                    "pools": [
                        _pool("default", 1, 0, 0, 0, num_cpus=1.0, max=None),
                        _pool("hot", hot, 5_000, 5_000, answered, num_cpus=1.0, min=1, max=4),
                    ]
                }
            ]
            scaler.tick()
            hot = fake.pool_sizes[-1][1] if fake.pool_sizes else 1
    assert fake.pool_sizes == [("hot", 4)]
    assert scaler.pool_sizes["hot"] == 4
    assert requests == [[{"CPU": 1.0}] * 4], "capped by the pool's own max"
    assert any(
        m.startswith("autoscaler: pool hot 1 -> 4 workers per ingest") for m in caplog.messages
    )
    assert "autoscaler: requested 4 bundles ahead (hot: 4 x {'CPU': 1.0})" in caplog.messages
