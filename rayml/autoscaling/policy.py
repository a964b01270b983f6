"""The pool autoscaling policy: load figures in, a desired number of workers out. Pure code.

The policy follows Ray Serve's autoscaler (a desired size from load over target, damped by a
smoothing factor, applied only once it has held for an up/down delay) but reads the load a
Kafka consumer actually has:

* **lag** (records behind: end offset - committed offset, summed over the partitions) and the
  **arrival rate** A (records/s appended to the input topic). A lag of up to
  ``A x target_lag_s`` is normal: records are committed only after their results, once per
  commit interval. Beyond it is a backlog to drain within ``target_lag_s``, so the pool needs a
  throughput of ``A + max(0, lag - A x target_lag_s) / target_lag_s``; divided by what one
  worker does (``capacity_per_worker``) that is the load-based size. Lag alone, as in a plain
  lag scaler, would under-size the pool at steady load (lag stays small while the pool keeps
  up) and over-size it for a burst that is already draining.
* **in-flight** records, when ``target_in_flight_per_worker`` is set: Serve's
  ongoing-requests rule (``in_flight / target``), useful before any throughput is known.
* **observed per-worker throughput**: what each worker answered per second since the last
  sample. Only a saturated worker shows its capacity, so the policy keeps the highest recent
  figure (slowly forgotten) as its capacity estimate. A figure seen while the pool keeps up
  (no backlog) is only a lower bound -- the workers answer what arrives, nothing more -- so
  until a capacity has been seen under backlog, a pool that keeps up with a worker to spare
  sheds one at a time (after the downscale delay) to find out: if that is too few, the backlog
  that builds shows the real capacity, and the pool grows back to it.

The larger of the two load-based sizes is the *raw* desired size, clamped to
``[min_workers, max_workers]``. The pool grows only when that is more than ``tolerance``
above its size (rates are noisy; a pool at its need must not flap). Smoothing moves only
part of the way from the current size to it (``current + factor x (raw - current)``, rounded
away from the current size so a step is never lost). A change is applied only after the wish
to move in that direction has held for ``upscale_delay_s`` / ``downscale_delay_s``: a short
spike does not start workers, a short lull does not end them. A size outside the bounds is
corrected at once.

Example:
    >>> policy = AutoscalePolicy(PolicyConfig(min_workers=1, max_workers=8, upscale_delay_s=0))
    >>> policy.decide(LoadSample(now=0.0, workers=1, lag=5_200, arrival_rate=100.0,
    ...                          throughput_per_worker=1_000.0)).desired
    3
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Bounds, targets, delays and damping of :class:`AutoscalePolicy`.

    Args:
        min_workers: Never fewer workers than this.
        max_workers: Never more workers than this.
        target_lag_s: Drain any backlog within this many seconds (the lag-based target).
        target_in_flight_per_worker: In-flight records one worker should carry; ``None``
            leaves the in-flight rule out.
        upscale_delay_s: How long a wish to grow must hold before the pool grows.
        downscale_delay_s: How long a wish to shrink must hold before the pool shrinks.
        upscale_smoothing: Fraction of the way to the raw desired size taken per upscale (1:
            all the way).
        downscale_smoothing: The same for downscales.
        capacity_decay: Per decision, the capacity estimate falls towards lower observed
            throughputs by this factor (1: never forgets its peak).
        tolerance: Grow only when the load-based size exceeds the pool by this fraction.
    """

    min_workers: int = 1
    max_workers: int = 8
    target_lag_s: float = 5.0
    target_in_flight_per_worker: int | None = None
    upscale_delay_s: float = 3.0
    downscale_delay_s: float = 60.0
    upscale_smoothing: float = 1.0
    downscale_smoothing: float = 1.0
    capacity_decay: float = 0.98
    tolerance: float = 0.1

    def __post_init__(self) -> None:
        if self.min_workers < 1:
            raise ValueError(f"min_workers must be at least 1, got {self.min_workers}")
        if self.max_workers < self.min_workers:
            raise ValueError(
                f"max_workers ({self.max_workers}) must be >= min_workers ({self.min_workers})"
            )
        if self.target_lag_s <= 0:
            raise ValueError(f"target_lag_s must be > 0, got {self.target_lag_s}")
        if self.target_in_flight_per_worker is not None and self.target_in_flight_per_worker < 1:
            raise ValueError("target_in_flight_per_worker must be >= 1 or None")
        if self.upscale_delay_s < 0 or self.downscale_delay_s < 0:
            raise ValueError("delays must be >= 0")
        for name in ("upscale_smoothing", "downscale_smoothing"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance}")
        if not 0 < self.capacity_decay <= 1:
            raise ValueError(f"capacity_decay must be in (0, 1], got {self.capacity_decay}")


@dataclass(frozen=True, slots=True)
class LoadSample:
    """One observation of the pool's load.

    Args:
        now: A monotonic time in seconds.
        workers: Serving workers now.
        lag: Records behind (end offset - committed offset, all partitions).
        arrival_rate: Records/s appended to the input since the previous sample (``None``:
            unknown, treated as 0).
        in_flight: Records polled and not finished.
        throughput_per_worker: Records/s each worker answered since the previous sample
            (``None``: unknown).
    """

    now: float
    workers: int
    lag: int = 0
    arrival_rate: float | None = None
    in_flight: int = 0
    throughput_per_worker: float | None = None


Action = Literal["up", "down", "hold"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy wants: ``desired`` workers now (== ``workers`` on hold), and why."""

    desired: int
    action: Action
    raw: float  # the load-based size before bounds, smoothing and delays
    target: int  # where the pool goes once the delay has passed
    capacity_per_worker: float | None
    reason: str


class AutoscalePolicy:
    """Stateful (delays, capacity estimate) but pure: call :meth:`decide` per interval."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.capacity: float | None = None
        # Whether the capacity was seen under backlog (a real capacity, not a lower bound).
        self.capacity_saturated = False
        self._want: Literal["up", "down"] | None = None
        self._since = 0.0

    def raw_desired(self, sample: LoadSample) -> float:
        """The load-based size, before bounds, smoothing and delays (updates the capacity)."""
        cfg = self.config
        arrival = max(0.0, sample.arrival_rate or 0.0)
        backlog = max(0.0, sample.lag - arrival * cfg.target_lag_s)
        observed = sample.throughput_per_worker
        if observed is not None and observed > 0:
            decayed = 0.0 if self.capacity is None else self.capacity * cfg.capacity_decay
            self.capacity = max(observed, decayed)
            self.capacity_saturated = self.capacity_saturated or backlog > 0
        wanted = [float(cfg.min_workers)]
        if self.capacity is not None:
            needed_rate = arrival + backlog / cfg.target_lag_s
            load_based = needed_rate / self.capacity
            if backlog == 0 and not self.capacity_saturated and load_based < sample.workers:
                # Keeping up, with only a lower bound on capacity: a worker may be spare, so
                # probe one down (after the downscale delay) rather than wait for the estimate.
                load_based = min(load_based, sample.workers - 1.0)
            wanted.append(load_based)
        elif sample.lag > 0:
            # Backlog but no throughput seen yet (workers still loading): no reason to shrink.
            wanted.append(float(sample.workers))
        if cfg.target_in_flight_per_worker is not None:
            wanted.append(max(0, sample.in_flight) / cfg.target_in_flight_per_worker)
        return max(wanted)

    def decide(self, sample: LoadSample) -> Decision:
        """The number of workers the pool should have after this sample."""
        cfg = self.config
        current = sample.workers
        raw = self.raw_desired(sample)
        bounded = min(float(cfg.max_workers), max(float(cfg.min_workers), raw))
        if current < cfg.min_workers or current > cfg.max_workers:
            # Out of bounds (settings changed, or the pool started there): fix it at once.
            self._want = None
            fixed = min(cfg.max_workers, max(cfg.min_workers, current))
            return self._decision(
                fixed,
                "up" if fixed > current else "down",
                raw,
                fixed,
                "outside [min_workers, max_workers]",
            )
        if bounded > current * (1 + cfg.tolerance):
            step = current + cfg.upscale_smoothing * (bounded - current)
            target = min(math.ceil(bounded), max(current + 1, math.ceil(step - 1e-9)))
            direction: Literal["up", "down"] = "up"
            delay = cfg.upscale_delay_s
        else:
            step = current + cfg.downscale_smoothing * (bounded - current)
            target = min(
                current,
                max(math.ceil(bounded - 1e-9), min(current - 1, math.floor(step + 1e-9))),
            )
            direction = "down"
            delay = cfg.downscale_delay_s
        if target == current:
            self._want = None
            return self._decision(current, "hold", raw, current, "at the desired size")
        if self._want != direction:
            self._want = direction
            self._since = sample.now
        held = sample.now - self._since
        if held + 1e-9 < delay:
            return self._decision(
                current, "hold", raw, target, f"{direction} to {target} held {held:.1f}s/{delay}s"
            )
        # Acted: a further move the same way must hold for a full delay again (as in Serve).
        self._want = None
        return self._decision(target, direction, raw, target, f"{direction} after {held:.1f}s")

    def _decision(
        self, desired: int, action: Action, raw: float, target: int, why: str
    ) -> Decision:
        return Decision(desired, action, raw, target, self.capacity, why)
