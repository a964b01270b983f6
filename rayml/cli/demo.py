"""``make demo``: the whole of rayml on a local Kafka broker and a local Ray, then clean up.

It starts a real Apache Kafka broker (``.rayml/demo-kafka``, a free port), a local Ray and the
executor; trains the example XGBoost model through Kafka (a training request, followed with a
progress bar); sends a burst of prediction requests through the Python client; prints a summary
(throughput, latency p50/p99, sample predictions); and stops everything it started. It can run
any number of times in a row.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from typing import Any

import numpy as np

from rayml.config import Settings, load_settings
from rayml.localkafka import LocalBroker, free_port

logger = logging.getLogger("rayml.cli.demo")


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _run(settings: Settings, requests: int) -> dict[str, Any]:
    from sklearn.datasets import load_breast_cancer

    import rayml
    from rayml.executor.service import Executor

    executor = Executor(settings)
    executor.start()
    try:
        with rayml.Client(settings=settings) as client:
            print("\npipelines:", ", ".join(p.name for p in client.pipelines()))
            print("\ntraining breast_cancer (XGBoost) through Kafka ...")
            trained = client.train("breast_cancer.train", n_estimators=60, timeout_s=300)
            if trained.status != "ok":
                raise SystemExit(f"training failed: {trained.error}")
            info = trained.result
            print(
                f"  model {info['model']} version {info['version']}, "
                f"accuracy {info['metrics']['accuracy']:.3f}"
            )

            data = load_breast_cancer()
            rng = np.random.default_rng(0)
            rows = data.data[rng.integers(0, len(data.data), size=requests)]
            print(f"\nsending {requests} prediction requests ...")
            started = time.perf_counter()
            results = client.submit_many(
                "breast_cancer.predict",
                ({"features": row.tolist()} for row in rows),
                max_in_flight=5000,
                timeout_s=300,
            )
            elapsed = time.perf_counter() - started
    finally:
        executor.drain()
    ok = [r for r in results if r.status == "ok"]
    latencies = [r.timings.total_ms for r in ok if r.timings.total_ms is not None]
    return {
        "requests": requests,
        "ok": len(ok),
        "errors": len(results) - len(ok),
        "seconds": elapsed,
        "throughput": len(results) / elapsed,
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
        "version": info["version"],
        "samples": [
            (data.target_names[r.result["label"]], r.result["probability"]) for r in ok[:5]
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("rayml.cli.demo").setLevel(logging.INFO)

    base = load_settings()
    data_dir = base.state_dir / "demo-kafka"
    shutil.rmtree(data_dir, ignore_errors=True)
    broker = LocalBroker(data_dir, port=free_port(), state_dir=base.state_dir)
    t0 = time.monotonic()
    broker.start()
    logger.info(
        "Kafka %s broker ready at %s in %.1fs",
        "4.4.0",
        broker.bootstrap_servers,
        time.monotonic() - t0,
    )
    import ray

    try:
        models = base.state_dir / "demo-models"
        shutil.rmtree(models, ignore_errors=True)
        settings = load_settings(
            kafka={"bootstrap_servers": broker.bootstrap_servers},
            # A 2-core laptop: half a CPU per model worker leaves room for training tasks.
            executor={"worker_num_cpus": 0.5, "num_workers": 2},
            models={"root": str(models.resolve())},
        )
        ray.init(
            address="local",
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
        summary = _run(settings, args.requests)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        logger.info("stopped the executor, Ray and the broker this demo started")

    print("\n== rayml demo summary ==")
    print(f"model breast_cancer version {summary['version']} (trained through Kafka)")
    print(
        f"{summary['requests']} requests: {summary['ok']} ok, {summary['errors']} errors "
        f"in {summary['seconds']:.1f}s -> {summary['throughput']:,.0f} requests/s "
        f"(client to client, one local broker, 2 model workers)"
    )
    print(
        f"latency in the burst (5,000 in flight, so mostly queueing): "
        f"p50 {summary['p50_ms']:.1f} ms, "
        f"p99 {summary['p99_ms']:.1f} ms"
    )
    for label, probability in summary["samples"]:
        print(f"  prediction: {label} (p={probability:.3f})")
    return 0 if summary["errors"] == 0 and summary["ok"] == summary["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
