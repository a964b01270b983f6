"""The ``rayml`` command line. Only this module (and the actors rayml starts) configures logging.

Examples::

    rayml kafka start --port 19092 --data-dir ./kafka-check
    rayml topics create --bootstrap-servers 127.0.0.1:19092
    rayml kafka stop --data-dir ./kafka-check
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from rayml import logs
from rayml.cli.options import (
    BootstrapOpt,
    ConfigOpt,
    JsonOpt,
    command_settings,
    parse_params,
    state,
)
from rayml.cli.replay import replay_app
from rayml.cli.rollout import rollout_app
from rayml.cli.tenants import tenants_app
from rayml.cli.training import models, train
from rayml.config import load_settings
from rayml.errors import RaymlError

app = typer.Typer(
    help="Machine-learning pipelines on Ray, requested and answered over Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(
    help="A local Apache Kafka broker for development and tests.", no_args_is_help=True
)
topics_app = typer.Typer(help="rayml's Kafka topics.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(tenants_app, name="tenants")
app.add_typer(replay_app, name="replay")
app.add_typer(rollout_app, name="rollout")

logger = logging.getLogger("rayml.cli.main")


@app.callback()
def _main(
    config: ConfigOpt = None,
    log_level: Annotated[
        str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR [settings' log_level].")
    ] = None,
) -> None:
    state.config = config
    state.log_level = None if log_level is None else log_level.upper()
    level = state.log_level
    if level is None:
        try:
            level = load_settings(config).log_level
        except RaymlError:
            level = "INFO"  # the command itself reports the bad settings
    logs.configure(level)


# --- rayml kafka ... ----------------------------------------------------------------------------


def _default_data_dir() -> Path:
    return load_settings(state.config).state_dir / "kafka"


@kafka_app.command("start")
def kafka_start(
    port: Annotated[int, typer.Option(help="Client port on 127.0.0.1.")] = 9092,
    data_dir: Annotated[Path | None, typer.Option(help="Broker data dir [.rayml/kafka].")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 90.0,
    secure: Annotated[
        bool,
        typer.Option(
            help="SASL_SSL only: a test CA and SCRAM user kept in <data-dir>/tls; client "
            "settings go to <data-dir>/tls/client.env and client.properties (never printed)."
        ),
    ] = False,
) -> None:
    """Start the local broker in the background and wait until it is ready."""
    from rayml.localkafka import LocalBroker, SecureListener

    settings = load_settings(state.config)
    folder = (data_dir or _default_data_dir()).resolve()
    security = SecureListener.load_or_generate(folder / "tls") if secure else None
    broker = LocalBroker(folder, port, state_dir=settings.state_dir, security=security)
    started = time.monotonic()
    info = broker.start(timeout_s=timeout)
    logger.info(
        "Kafka %s ready in %.1fs (pid %d, %s, data dir %s, log %s)",
        info.kafka_version,
        time.monotonic() - started,
        info.pid,
        info.security_protocol,
        info.data_dir,
        broker.log_file,
    )
    if security is not None:
        env_file, props_file = security.write_client_files(folder / "tls", info.bootstrap_servers)
        logger.info(
            "client settings (with the password, owner-only): `set -a; . %s; set +a` for rayml, "
            "`--kafka-config %s` for the Java client",
            env_file,
            props_file,
        )
    typer.echo(info.bootstrap_servers)


@kafka_app.command("stop")
def kafka_stop(
    data_dir: Annotated[Path | None, typer.Option(help="Broker data dir [.rayml/kafka].")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds before SIGKILL.")] = 30.0,
) -> None:
    """Stop the broker of this data dir (controlled shutdown, SIGKILL after the bound)."""
    from rayml.localkafka import LocalBroker

    broker = LocalBroker(data_dir or _default_data_dir())
    if broker.stop(timeout_s=timeout):
        typer.echo(f"stopped the broker of {broker.data_dir}")
    else:
        typer.echo(f"no broker was running for {broker.data_dir}")


@kafka_app.command("status")
def kafka_status(
    data_dir: Annotated[Path | None, typer.Option(help="Broker data dir [.rayml/kafka].")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Say whether the broker of this data dir runs; exit 1 if not."""
    from rayml.localkafka import LocalBroker

    status = LocalBroker(data_dir or _default_data_dir()).status()
    if as_json:
        typer.echo(json.dumps(asdict(status), indent=2))
    elif status.running and status.info:
        typer.echo(
            f"running: pid {status.info.pid}, {status.info.bootstrap_servers}, "
            f"Kafka {status.info.kafka_version}, data dir {status.data_dir}"
        )
    else:
        typer.echo(f"not running (data dir {status.data_dir})")
    raise typer.Exit(0 if status.running else 1)


# --- rayml topics ... ---------------------------------------------------------------------------


@topics_app.command("create")
def topics_create(bootstrap_servers: BootstrapOpt = None, as_json: JsonOpt = False) -> None:
    """Create rayml's topics (idempotent)."""
    from rayml.kafka.topics import create_topics

    settings = command_settings(bootstrap_servers)
    outcome = create_topics(settings.kafka, settings.topics)
    if as_json:
        typer.echo(json.dumps(outcome, indent=2))
    else:
        for name, what in outcome.items():
            typer.echo(f"{name}: {what}")


# --- rayml serve / submit -----------------------------------------------------------------------


@app.command("serve")
def serve(
    bootstrap_servers: BootstrapOpt = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Join this Ray cluster ('auto': the one on this machine) [RAYML_RAY__ADDRESS, "
            "else RAY_ADDRESS, else a local Ray of its own, in a session apart].",
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="ModelWorkers per ingest actor.")] = None,
    ingest_actors: Annotated[
        str | None,
        typer.Option(
            help="Ingest actors (consumers): a number, or 'auto' (one per 4 CPUs of each node)."
        ),
    ] = None,
    create_topics: Annotated[bool, typer.Option(help="Create missing topics at start.")] = True,
) -> None:
    """Run the executor in the foreground; SIGTERM/SIGINT drain it gracefully.

    Exit code 0 after a clean drain, 1 if the drain ran out of time or lost an actor (the
    unfinished work is redelivered). Without a Ray address it starts a local Ray of its own in
    a session apart (rayml.cli.local_ray), so a signal to its process group reaches this
    process only, and it ends that Ray after the drain (docs/service.md).
    """
    import os
    import signal
    import threading

    from rayml.cli.local_ray import LocalRay
    from rayml.tenancy.access_check import check_executor_access

    settings = command_settings(bootstrap_servers)
    options = {"num_workers": "--workers", "ingest_actors": "--ingest-actors"}
    executor_overrides = {
        k: v
        for k, v in {"num_workers": workers, "ingest_actors": ingest_actors}.items()
        if v is not None
    }
    try:  # validated, not merely copied in: a bad option fails here, in words, before Kafka
        executor_settings = type(settings.executor).model_validate(
            {**settings.executor.model_dump(), **executor_overrides}
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        raise typer.BadParameter(first["msg"], param_hint=options.get(field, field)) from None
    # Before Ray starts: a refused password or a missing ACL fails here, named, in a second.
    check_executor_access(settings, create_missing=create_topics)
    address = ray_address or settings.ray.address
    stop = threading.Event()
    received: list[int] = []
    bound = settings.executor.drain_timeout_s

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            # Another signal (a second Ctrl-C, an impatient `kill`): the drain is not cut
            # short -- that would leave answered requests uncommitted. SIGKILL stops at once.
            logger.warning(
                "signal %s again: already draining (bound %.0fs); the drain goes on. SIGKILL "
                "stops at once, and what is unfinished or uncommitted is then answered again "
                "after a restart",
                signum,
                bound,
            )
            return
        received.append(signum)
        stop.set()

    # From here on a signal is remembered: one during the start drains right after it.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    local_ray: LocalRay | None = None
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # What ray.init() does for a new local runtime: token auth on unless RAY_AUTH_MODE
        # says otherwise. Set before Ray is imported here (Ray reads it once, at import) and
        # before the helper starts, so that the runtime and this driver agree.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        local_ray = LocalRay.start()
        address = local_ray.address
        logger.info(
            "local Ray started apart: session %d, address %s",
            local_ray.session_id,
            local_ray.address,
        )

    import ray

    from rayml.executor.service import Executor

    settings = settings.model_copy(
        update={
            "executor": executor_settings,
            "ray": settings.ray.model_copy(update={"address": address}),
        }
    )
    clean = True
    try:
        # Connect here rather than in Executor.start (which then finds Ray initialised): ray.init
        # installs its own SIGTERM handler (sys.exit), and ours goes back at once, before any
        # actor exists, so a signal during the start is a drain, not an exit without one.
        ray.init(address=address, namespace=settings.ray.namespace, logging_level=logging.WARNING)
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        executor = Executor(settings)
        if not stop.is_set():
            executor.start(create_missing_topics=create_topics)
            typer.echo(
                f"rayml executor {executor.instance_id} serving {settings.topics.input} -> "
                f"{settings.topics.output} on {settings.kafka.bootstrap_servers}",
                err=True,
            )
            # Readiness line for scripts and tests that start `rayml serve` in the background.
            typer.echo("READY", err=True)
        while not stop.wait(1.0):
            pass
        logger.info("signal %s: draining (bound %.0fs)", received[0], bound)
        clean = executor.drain()
        logger.info(
            "drained %s", "cleanly" if clean else "with unfinished work (will be redelivered)"
        )
    finally:
        if ray.is_initialized():
            ray.shutdown()  # this driver only: its actors are gone after the drain
        if local_ray is not None:
            killed = local_ray.stop()
            logger.info(
                "local Ray stopped (session %d)%s",
                local_ray.session_id,
                f"; killed {len(killed)} processes left after the grace: {killed}"
                if killed
                else "",
            )
    if not clean:
        raise typer.Exit(1)


@app.command("submit")
def submit(
    pipeline: Annotated[str, typer.Argument(help="A registered pipeline name.")],
    params: Annotated[str, typer.Option(help="Parameters as a JSON object.")] = "{}",
    wait: Annotated[bool, typer.Option(help="Wait for the result and print it.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 60.0,
    request_id: Annotated[str | None, typer.Option("--id", help="Request id [random].")] = None,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """Send one request; with --wait, print its result (exit 1 if it is an error)."""
    import uuid

    from rayml.cli.submit import submit_one

    parsed = parse_params(params)
    settings = command_settings(bootstrap_servers)
    rid = request_id or uuid.uuid4().hex
    result = submit_one(settings, rid, pipeline, parsed, wait=wait, timeout_s=timeout)
    if result is None:
        typer.echo(rid)
        return
    typer.echo(json.dumps(result.model_dump(mode="json", exclude_none=True), indent=2))
    raise typer.Exit(0 if result.status == "ok" else 1)


@app.command("status")
def status(
    bootstrap_servers: BootstrapOpt = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", help="Ray cluster of the executors [RAYML_RAY__ADDRESS, else auto]."
        ),
    ] = None,
    kafka_only: Annotated[
        bool,
        typer.Option(
            "--kafka-only", help="Only the consumer lag; don't look for executors on Ray."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Consumer lag per partition, and in-flight work, pool size, throughput, models loaded."""
    from rayml.cli.status import (
        cluster_status,
        delivery_lines,
        pools_lines,
        summarize,
        tenants_lines,
        training_lines,
    )
    from rayml.kafka.lag import group_lag
    from rayml.tenancy.rules import Tenancy

    settings = command_settings(bootstrap_servers)
    lags = group_lag(settings)
    ingests: list[dict[str, Any]] = []
    runners: list[dict[str, Any]] = []
    if not kafka_only:
        try:
            ingests, runners = cluster_status(
                ray_address or settings.ray.address, settings.ray.namespace
            )
        except Exception as exc:  # no cluster reachable: lag alone is still worth showing
            logger.warning("no executor status from Ray: %s", exc)
    tenancy = Tenancy(settings)
    classes = {
        topic: (tenancy.of_topic(topic).name, str(tenancy.lane_of(topic)))
        for topic in tenancy.input_topics
    }
    summary = summarize(lags, ingests, runners, topic_classes=classes)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    typer.echo(
        f"input {settings.topics.input} (group {settings.executor.group_id}): "
        f"lag {summary['lag']['total']}"
    )
    for p in summary["lag"]["partitions"]:
        typer.echo(f"  [{p['partition']}] committed {p['committed']} end {p['end']} lag {p['lag']}")
    ex = summary["executors"]
    if not ingests:
        typer.echo("executors: none found on Ray")
        return
    typer.echo(
        f"executors: {ex['ingest_actors']} ingest actors, pool {ex['pool_size']} workers "
        f"({ex['workers_starting']} not serving yet), "
        f"in flight {ex['in_flight']}, answered {ex['answered']} "
        f"({ex['avg_throughput_per_s']}/s since start), paused {ex['paused']}"
    )
    if ex["out_of_group"]:
        typer.echo(
            f"  {ex['out_of_group']} ingest actors left the consumer group: their workers wait "
            "for a node with room (they rejoin once one serves)"
        )
    for line in delivery_lines(ex):
        typer.echo(f"  {line}")
    for line in pools_lines(summary["pools"]):
        typer.echo(f"  {line}")
    for line in tenants_lines(summary["tenants"]):
        typer.echo(f"  {line}")
    typer.echo(f"models loaded: {', '.join(ex['models_loaded']) or 'none'}")
    for line in training_lines(summary["training"]):
        typer.echo(line)


@app.command("pipelines")
def pipelines(bootstrap_servers: BootstrapOpt = None, as_json: JsonOpt = False) -> None:
    """List the pipelines the executors published, with their parameters, and whether a
    running executor serves each (its live lease on the registry topic)."""
    from rayml.client.client import Client

    settings = command_settings(bootstrap_servers)
    with Client(settings=settings) as client:
        found = client.pipelines()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "name": p.name,
                        "kind": p.kind,
                        "model": p.model,
                        "doc": p.doc,
                        "params_schema": p.params_schema,
                        "live": p.live,
                        "served_by": p.served_by,
                    }
                    for p in found
                ],
                indent=2,
            )
        )
        return
    if not found:
        typer.echo(
            f"no pipelines published on {settings.topics.registry} yet (is an executor running?)"
        )
    for p in found:
        required = ", ".join(p.required) or "-"
        served = "" if p.live else "  NOT SERVED (no running executor has it)"
        typer.echo(f"{p.name:28} {p.kind:9} model={p.model:16} params: {required}{served}")
        if p.doc:
            typer.echo(f"{'':28} {p.doc}")


# rayml train / rayml models live with the training code.
app.command("train")(train)
app.add_typer(models, name="models")


def main() -> None:
    """Entry point of the ``rayml`` script: errors become one clear line and exit code 2."""
    try:
        app()
    except RaymlError as exc:
        typer.echo(f"rayml: error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
