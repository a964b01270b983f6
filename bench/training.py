"""Training-sweep speed-up: trials of ``breast_cancer.train`` as parallel Ray tasks vs in turn.

Each trial is ``rayml.pipeline.run_training(spec, params, TrainingContext(nthread=1))`` --
what a training task runs -- with its own hyperparameters. The parallel run sends every trial as a
``num_cpus=1`` Ray task; the sequential run calls them one after another in this process. Both
return only the metrics (storing the models is the same work in both and not timed).

The Ray workers are warmed up first (a task per CPU that imports XGBoost and scikit-learn): a
long-running cluster has warm workers, and a process start costs about a second here, which
would otherwise be counted against the parallel run only. The two ways alternate, twice, and
the best time of each counts (see :func:`run_sweep`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

# ~1-2 s each on one core of the benchmark machine: many shallow-learning-rate rounds.
TRIALS: list[dict[str, Any]] = [
    {"n_estimators": 3000, "max_depth": depth, "learning_rate": rate, "random_state": seed}
    for seed, (depth, rate) in enumerate(
        [(4, 0.01), (6, 0.01), (8, 0.01), (5, 0.02), (4, 0.02), (6, 0.02), (8, 0.02), (5, 0.01)]
    )
]


@dataclass
class SweepResult:
    trials: int
    cpus: int
    sequential_s: float
    parallel_s: float
    trial_s: list[float]  # each trial's own time, best sequential run
    rounds_s: list[tuple[float, float]] = field(default_factory=list)  # (sequential, parallel)

    @property
    def speedup(self) -> float:
        return self.sequential_s / self.parallel_s


def _trial(params: dict[str, Any]) -> dict[str, float]:
    from rayml.pipeline import TrainingContext, load_spec_by_path, run_training

    spec = load_spec_by_path("pipelines.breast_cancer:train")
    trained = run_training(spec, spec.params(**params), TrainingContext(nthread=1))
    return dict(trained.metrics)


def _warm() -> int:
    import os

    import sklearn.datasets
    import xgboost

    del sklearn.datasets, xgboost
    time.sleep(0.5)  # hold the worker so that the other warm-up task lands on another one
    return os.getpid()


def run_sweep(trials: list[dict[str, Any]] | None = None, rounds: int = 2) -> SweepResult:
    """Time the sweep both ways, ``rounds`` times each, on this process's Ray runtime."""
    import ray

    trials = TRIALS if trials is None else trials
    cpus = int(ray.cluster_resources().get("CPU", 1))
    trial_task = ray.remote(num_cpus=1)(_trial)
    warm_task = ray.remote(num_cpus=1)(_warm)
    ray.get([warm_task.remote() for _ in range(cpus)])
    _trial({**trials[0], "n_estimators": 5})  # imports and data set cache, in this process too

    parallel: list[float] = []
    sequential: list[float] = []
    trial_s: list[float] = []
    # Alternate the two ways and keep the best of each: on a shared machine, interference only
    # ever adds time, so the minimum is the least disturbed measurement of each.
    for _ in range(rounds):
        started = time.perf_counter()
        ray.get([trial_task.remote(params) for params in trials])
        parallel.append(time.perf_counter() - started)

        times: list[float] = []
        started = time.perf_counter()
        for params in trials:
            t0 = time.perf_counter()
            _trial(params)
            times.append(time.perf_counter() - t0)
        sequential.append(time.perf_counter() - started)
        if sequential[-1] == min(sequential):
            trial_s = times
    sequential_s, parallel_s = min(sequential), min(parallel)
    return SweepResult(
        len(trials),
        cpus,
        sequential_s,
        parallel_s,
        trial_s,
        list(zip(sequential, parallel, strict=True)),
    )
