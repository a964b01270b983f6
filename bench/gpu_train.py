"""Time the example XGBoost training on a GPU against the CPU: ``python -m bench.gpu_train``.

Runs ``breast_cancer.train`` as the job runner would (``TrainingContext(device=...)``), without
Ray or Kafka, so it can run on a bare GPU machine with only xgboost, scikit-learn and pydantic.
"""

from __future__ import annotations

import argparse
import time

from pipelines.breast_cancer import TrainParams, train
from rayml.pipeline.contract import TrainingContext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-estimators", type=int, default=2000)
    parser.add_argument("--max-depth", type=int, default=8)
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--devices", default="cuda,cpu")
    args = parser.parse_args()
    params = TrainParams(n_estimators=args.n_estimators, max_depth=args.max_depth)
    for device in args.devices.split(","):
        ctx = TrainingContext(nthread=args.cpu_threads, device=device)
        train(TrainParams(n_estimators=5), ctx)  # warm-up: CUDA context, library load
        started = time.perf_counter()
        trained = train(params, ctx)
        seconds = time.perf_counter() - started
        print(
            f"device={device} threads={args.cpu_threads} n_estimators={args.n_estimators} "
            f"max_depth={args.max_depth}: {seconds:.2f} s, "
            f"accuracy {trained.metrics['accuracy']:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
