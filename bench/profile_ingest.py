"""Where the ingest spends its time per message: ``python -m bench.profile_ingest``.

:class:`rayml.executor.ingest.Ingest` is a plain class, so it runs here in a thread of this process
(its ModelWorker pool still runs as Ray actors on a local Ray) against a pre-produced backlog:

1. a plain run measures the ingest's capacity from a backlog (no profiler);
2. a run under ``cProfile`` (only the ingest thread is profiled) gives the cost per message of
   each function, sorted by own time, and of the main steps of the loop (cumulative).

The profiler's clock is the ingest thread's CPU time, so time the thread spent descheduled (a
busy 2-core machine) is not charged to whatever function it was in. cProfile still inflates the
cost of small Python calls, so read the profile for proportions, and the plain run for the
absolute rate and CPU per message. Run it on a quiet machine: ``--requests 50000`` by default.

``--delivery both`` instead runs plain runs alternately with ``delivery=at_least_once`` and
``exactly_once`` (twice each) and prints the throughput ratio: the ingest's own cost of
exactly-once, without a load generator in the way. A run ends when every request is answered
*and* done (acknowledged, or for exactly-once, its transaction committed).

``--latency-rate R`` instead measures latency at a fixed offered load twice, back to back: with
the ingest as it is, and with its consumer wrapped so that ``consume`` returns as soon as any
record is there (:class:`EagerConsumer`, the change this benchmark suggests for rayml).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from bench.contenders import REPO
from bench.workload import feature_rows, make_run

STEPS = (
    "step",
    "_accept",
    "decode_request",
    "_route",
    "validate_params",
    "_dispatch",
    "_send",
    "_collect",
    "_answer_batch",
    "_answer",
    "encode_result",
    "_produce",
    "delivered",
    "poll",
    "consume",
    "wait",
    "get",
    "submit",
    "commit",
    "_commit_transaction",
    "_apply_backpressure",
)


def _settings(
    bootstrap: str, models_root: str, args: argparse.Namespace, delivery: str | None = None
) -> Any:
    from rayml.config import TopicSettings, load_settings

    tag = uuid.uuid4().hex[:8]
    delivery = delivery or args.delivery
    topics: dict[str, Any] = {
        name: f"prof-{tag}.{name}"
        for name, default in TopicSettings().model_dump().items()
        if isinstance(default, str)
    }
    topics.update(input_partitions=4, output_partitions=4)
    return load_settings(
        state_dir=Path(models_root).parent / "state",
        kafka={"bootstrap_servers": bootstrap},
        topics=topics,
        executor={
            "group_id": f"prof-{tag}",
            "jobs_group_id": f"prof-{tag}-jobs",
            "max_batch_size": args.batch_size,
            "max_batch_wait_ms": args.batch_wait_ms,
            "num_workers": args.workers,
            "worker_num_cpus": 1.0,
            "poll_max_messages": args.poll_max,
            "delivery": delivery,
            **(
                {}
                if args.txn_interval_ms is None
                else {"transaction_commit_interval_s": args.txn_interval_ms / 1000.0}
            ),
        },
        models={"root": models_root},
        log_level="WARNING",
    )


def _backlog(settings: Any, n: int, model: Any) -> None:
    from bench.workload import produce_burst

    rows = feature_rows(n, seed=1)
    run = make_run("prof", rows, model.predict(rows))
    produce_burst(settings.kafka.bootstrap_servers, settings.topics.input, run)


class EagerConsumer:
    """A what-if for rayml: ``consume(n, timeout)`` that returns as soon as a record is there.

    librdkafka's ``consume(n, timeout)`` returns only when ``n`` records are there or the
    timeout has passed, so an idle ingest waits its full poll timeout (0.1 s) for a batch that
    a moderate load never fills. This drains what is queued without blocking, and blocks (up to
    the timeout) only for the first record when nothing is queued.
    """

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        messages: list[Any] = self._consumer.consume(num_messages, 0)
        if messages or timeout <= 0:
            return messages
        first: list[Any] = self._consumer.consume(1, timeout)
        if not first or num_messages == 1:
            return first
        return first + self._consumer.consume(num_messages - 1, 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def _new_ingest(settings: Any, eager: bool = False) -> Any:
    from rayml.executor.ingest import Ingest
    from rayml.pipeline import Registry

    registry = Registry()
    registry.discover(settings.executor.pipeline_modules)
    ingest = Ingest(settings, f"prof-{uuid.uuid4().hex[:4]}", registry)
    if eager:
        ingest.consumer = EagerConsumer(ingest.consumer)
    # Warm the pool (actor start, model load) before the clock starts: one tiny batch.
    ray_ready(ingest)
    return ingest


def _latency(settings: Any, model: Any, rate: float, seconds: float, eager: bool) -> list[float]:
    """p50/p95/p99 (ms) of requests offered at ``rate`` req/s to an in-process ingest."""
    from bench.workload import ResultCounter, produce_at_rate, run_in_thread

    ingest = _new_ingest(settings, eager)
    thread = threading.Thread(target=ingest.run, name="ingest", daemon=True)
    thread.start()
    counter = ResultCounter(settings.kafka.bootstrap_servers, settings.topics.output)
    rows = feature_rows(max(100, int(rate * seconds)), seed=2)
    run = make_run("lat", rows, model.predict(rows))
    counter.track(run)
    producer = run_in_thread(
        produce_at_rate, settings.kafka.bootstrap_servers, settings.topics.input, run, rate
    )
    counter.wait(run, timeout_s=seconds + 120, idle_s=30)
    producer.join()
    counter.close()
    ingest.stop(60)
    thread.join(60)
    if run.lost:
        print(f"  ({run.lost} requests got no result)")
    return run.latency_ms()


def _run_ingest(settings: Any, n: int, profiler: cProfile.Profile | None) -> tuple[float, Any]:
    """Consume a backlog of ``n`` requests; returns (seconds to the n-th result, Ingest)."""
    ingest = _new_ingest(settings)

    def target() -> None:
        if profiler is None:
            ingest.run()
        else:
            profiler.runcall(ingest.run)

    thread = threading.Thread(target=target, name="ingest", daemon=True)
    me = psutil.Process()
    cpu = me.cpu_times()
    started = time.perf_counter()
    thread.start()
    while thread.is_alive():
        status = ingest.status()
        if status["results_ok"] >= n and status["in_flight"] == 0:
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    after = me.cpu_times()
    ingest.cpu_us_per_message = (
        (after.user + after.system - cpu.user - cpu.system) / max(1, n) * 1e6
    )
    ingest.stop(60)
    thread.join(60)
    return elapsed, ingest


def ray_ready(ingest: Any) -> None:
    import ray

    from pipelines.breast_cancer import PredictParams

    params = [PredictParams(features=[1.0] * 30)]
    refs = [
        ingest.pool.handle(w).run_batch.remote("pipelines.breast_cancer:predict", None, params)
        for w in ingest.pool.worker_ids()
    ]
    ray.get(refs, timeout=120)


def main(argv: list[str] | None = None) -> int:
    import ray

    from bench.cli import _train_model
    from rayml.kafka.topics import create_topics
    from rayml.localkafka import LocalBroker

    p = argparse.ArgumentParser(prog="python -m bench.profile_ingest", description=__doc__)
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--poll-max", type=int, default=2048)
    p.add_argument("--top", type=int, default=35)
    p.add_argument("--no-plain", action="store_true", help="profiled run only")
    p.add_argument("--no-profile", action="store_true", help="plain run only")
    p.add_argument("--stats-file", type=Path, default=None, help="also dump pstats here")
    p.add_argument("--latency-rate", type=float, default=None, help="A/B latency mode (req/s)")
    p.add_argument("--latency-seconds", type=float, default=8.0)
    p.add_argument(
        "--delivery",
        choices=("at_least_once", "exactly_once", "both"),
        default="at_least_once",
        help="executor.delivery; 'both' compares the two (plain runs only)",
    )
    p.add_argument("--txn-interval-ms", type=float, default=None, help="exactly-once commits")
    args = p.parse_args(argv)

    with (
        tempfile.TemporaryDirectory(prefix="prof-", dir=REPO / ".rayml") as tmp,
        LocalBroker.ephemeral(state_dir=REPO / ".rayml") as broker,
    ):
        work = Path(tmp)
        ray.init(
            address="local",
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
            object_store_memory=400 * 1024 * 1024,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
        )
        try:
            model = _train_model(work / "models", work / "breast_cancer.ubj")
            if args.latency_rate is not None:
                for eager in (False, True, False, True):
                    settings = _settings(broker.bootstrap_servers, str(work / "models"), args)
                    create_topics(settings.kafka, settings.topics)
                    p50, p95, p99 = _latency(
                        settings, model, args.latency_rate, args.latency_seconds, eager
                    )
                    print(
                        f"{'eager consume' if eager else 'ingest as is'}: "
                        f"{args.latency_rate:,.0f} req/s -> p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
                        f"p99 {p99:.1f} ms",
                        flush=True,
                    )
                return 0
            n = args.requests
            if args.delivery == "both":
                best: dict[str, float] = {}
                for delivery in ("at_least_once", "exactly_once") * 2:
                    settings = _settings(
                        broker.bootstrap_servers, str(work / "models"), args, delivery
                    )
                    create_topics(settings.kafka, settings.topics)
                    _backlog(settings, n, model)
                    elapsed, ingest = _run_ingest(settings, n, None)
                    best[delivery] = max(best.get(delivery, 0.0), n / elapsed)
                    print(
                        f"{delivery}: {n:,} requests from a backlog in {elapsed:.2f} s = "
                        f"{n / elapsed:,.0f} req/s; {ingest.status()['commits']:,} commits "
                        f"({ingest.status().get('transaction_commit_s', 0.0):.2f} s in "
                        "transaction commits); "
                        f"{ingest.cpu_us_per_message:.1f} us of CPU per message",
                        flush=True,
                    )
                alo, eos = best["at_least_once"], best["exactly_once"]
                print(
                    f"best of 2: exactly_once {eos:,.0f} req/s / at_least_once {alo:,.0f} "
                    f"req/s = {eos / alo:.2f}x"
                )
                return 0
            if not args.no_plain:
                settings = _settings(broker.bootstrap_servers, str(work / "models"), args)
                create_topics(settings.kafka, settings.topics)
                _backlog(settings, n, model)
                elapsed, ingest = _run_ingest(settings, n, None)
                print(
                    f"plain run: {n:,} requests from a backlog in {elapsed:.2f} s = "
                    f"{n / elapsed:,.0f} req/s; {ingest.status()['batches']:,} batches "
                    f"(mean {n / max(1, ingest.status()['batches']):,.0f}); this process used "
                    f"{ingest.cpu_us_per_message:.1f} us of CPU per message (ingest thread and "
                    f"librdkafka's threads)"
                )
            if args.no_profile:
                return 0
            settings = _settings(broker.bootstrap_servers, str(work / "models"), args)
            create_topics(settings.kafka, settings.topics)
            _backlog(settings, n, model)
            profiler = cProfile.Profile(time.thread_time_ns, 1e-9)
            elapsed, ingest = _run_ingest(settings, n, profiler)
            print(
                f"profiled run: {n / elapsed:,.0f} req/s under cProfile; "
                f"{ingest.status()['batches']:,} batches"
            )
        finally:
            ray.shutdown()

    if args.stats_file:
        profiler.dump_stats(str(args.stats_file))
    stats = pstats.Stats(profiler)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    print(f"\nprofiled ingest thread: {total:.2f} s own time in all, {total / n * 1e6:.1f} us/msg")
    print("\nTop functions by own time (us per message, % of the ingest thread):")
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    for (filename, line, func), (_cc, calls, tottime, cumtime, _callers) in rows[: args.top]:
        where = _short(filename, line)
        print(
            f"  {tottime / n * 1e6:7.2f} us  {100 * tottime / total:5.1f}%  "
            f"cum {cumtime / n * 1e6:7.2f} us  {calls:>9,} calls  {func}  ({where})"
        )
    print("\nMain steps, cumulative (us per message):")
    for (filename, line, func), (_cc, calls, _tottime, cumtime, _callers) in rows:
        if func in STEPS and ("rayml" in filename or "~" in filename or "confluent" in filename):
            print(
                f"  cum {cumtime / n * 1e6:8.2f} us  {calls:>9,} calls  {func}  "
                f"({_short(filename, line)})"
            )
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(40)
    if args.stats_file:
        args.stats_file.with_suffix(".txt").write_text(buf.getvalue())
    return 0


def _short(filename: str, line: int) -> str:
    for marker in ("/rayml/", "/pipelines/", "/site-packages/", "/bench/"):
        if marker in filename:
            return marker.strip("/") + "/" + filename.split(marker, 1)[1] + f":{line}"
    return f"{filename}:{line}"


if __name__ == "__main__":
    raise SystemExit(main())
