"""``rayml train`` and ``rayml models``: start a training job, list model versions.

Both are plain typer-annotated functions; :mod:`rayml.cli.main` registers them::

    app.command("train")(train)
    app.command("models")(models)

Examples::

    rayml train breast_cancer.train --params '{"n_estimators": 50}' --wait
    rayml train iris.train --params '{"grid": {"n_estimators": [10, 50], "max_depth": [2, 4]}}'
    rayml models
    rayml models breast_cancer --json

``train`` sends the request to the input topic (the executor hands it to the job runner) and
prints the job id; with ``--wait`` it follows the job's events on the events topic (progress on
stderr) and prints the result as JSON, exiting 1 if the job failed.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import typer
from confluent_kafka import TopicPartition

from rayml.cli.options import BootstrapOpt, JsonOpt, command_settings, parse_params
from rayml.config import Settings
from rayml.errors import RaymlError
from rayml.kafka import clients as kafka_clients
from rayml.models.store import ModelStore, ModelVersion
from rayml.models.versions import is_trial, newest_servable
from rayml.protocol.envelopes import Request, Result, decode_result, encode_request
from rayml.protocol.training import JobEvent, decode_event

__all__ = ["follow_job", "models", "train"]


def train(
    pipeline: Annotated[str, typer.Argument(help="A registered training pipeline.")],
    params: Annotated[
        str,
        typer.Option(
            help='Parameters as a JSON object; a sweep adds "grid": {"p": [..]} or '
            '"sweep": [{..}, ..].'
        ),
    ] = "{}",
    wait: Annotated[
        bool, typer.Option(help="Follow the job (progress on stderr) and print its result.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 3600.0,
    bootstrap_servers: BootstrapOpt = None,
    request_id: Annotated[str | None, typer.Option("--id", help="Job id [random].")] = None,
) -> None:
    """Start a training job; with --wait, show its progress and print its result."""
    parsed = parse_params(params)
    settings = command_settings(bootstrap_servers)
    job_id = request_id or f"train-{uuid.uuid4().hex}"
    request = Request(
        id=job_id, pipeline=pipeline, params=parsed, sent_at_ms=int(time.time() * 1000)
    )
    if not wait:
        _send(settings, request, timeout_s=30.0)
        typer.echo(job_id)
        return
    result = follow_job(settings, request, timeout_s=timeout, on_event=_print_event)
    typer.echo(json.dumps(result.model_dump(mode="json", exclude_none=True), indent=2))
    raise typer.Exit(0 if result.status == "ok" else 1)


def follow_job(
    settings: Settings,
    request: Request,
    *,
    timeout_s: float,
    on_event: Callable[[JobEvent], None] | None = None,
) -> Result:
    """Send a training request and wait for its result, passing its events to ``on_event``.

    The output and events topics are read from their current ends, taken *before* the request
    goes out, so nothing about this job can be missed however fast it runs.

    Raises:
        RaymlError: A topic is missing, the request was not delivered, or no result came in
            ``timeout_s``.
    """
    consumer = kafka_clients.consumer(settings.kafka, f"rayml-train-{uuid.uuid4().hex[:12]}")
    try:
        consumer.assign(
            _ends(consumer, settings.topics.output) + _ends(consumer, settings.topics.events)
        )
        _send(settings, request, timeout_s=30.0)
        key = request.id.encode()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.2):
                if msg.error() is not None or msg.key() != key:
                    continue
                if msg.topic() == settings.topics.output:
                    return decode_result(msg.value() or b"")
                if on_event is not None:
                    try:
                        on_event(decode_event(msg.value() or b""))
                    except ValueError:
                        continue  # not an event this version understands
        raise RaymlError(f"no result for job {request.id!r} within {timeout_s:.0f}s")
    finally:
        consumer.close()


def _ends(consumer: Any, topic: str) -> list[TopicPartition]:
    meta = consumer.list_topics(topic, timeout=10)
    topic_meta = meta.topics.get(topic)
    if topic_meta is None or topic_meta.error is not None:
        raise RaymlError(f"topic {topic!r} is not available (run `rayml topics create`)")
    starts = []
    for partition in topic_meta.partitions:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        starts.append(TopicPartition(topic, partition, high))
    return starts


def _send(settings: Settings, request: Request, *, timeout_s: float) -> None:
    producer = kafka_clients.producer(settings.kafka)
    producer.produce(settings.topics.input, key=request.id.encode(), value=encode_request(request))
    if producer.flush(timeout_s) != 0:
        raise RaymlError(
            f"could not deliver the request to {settings.kafka.bootstrap_servers} "
            f"within {timeout_s:.0f}s"
        )


class _Progress:
    """Turns job events into one stderr line per change (job progress: mean over trials)."""

    def __init__(self) -> None:
        self.fractions: dict[int, float] = {}
        self.last = ""

    def __call__(self, event: JobEvent) -> None:
        if event.progress is not None and event.trial is not None:
            self.fractions[event.trial] = event.progress
        trials = event.trials or 1
        done = sum(self.fractions.values()) / trials if self.fractions else 0.0
        where = f" trial {event.trial}/{trials}" if trials > 1 and event.trial is not None else ""
        line = f"{event.state}{where} {done:4.0%}"
        if event.message:
            line += f" {event.message}"
        if event.error is not None:
            line += f" {event.error.type}: {event.error.message}"
        if line != self.last:
            self.last = line
            sys.stderr.write(line + "\n")


_print_event = _Progress()


def models(
    name: Annotated[str | None, typer.Argument(help="A model: list its versions.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the models in the store, or one model's versions, with metrics; mark the newest."""
    settings = command_settings()
    store = ModelStore(settings.models.root, allow_pickle=settings.models.allow_pickle)
    if name is None:
        rows = [_model_row(store, model) for model in store.names()]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        if not rows:
            typer.echo(f"no models in {settings.models.root}")
        for row in rows:
            typer.echo(
                f"{row['name']:<24} {row['versions']:>4} versions  newest {row['newest'] or '-'}"
                f"  {_metrics_text(row['metrics'])}"
            )
        return
    versions = store.versions(name)
    newest = newest_servable(store, name)
    entries = [_version_row(v, newest) for v in versions]
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        typer.echo(f"model {name!r} has no versions in {settings.models.root}")
        raise typer.Exit(1)
    for e in entries:
        mark = "*" if e["newest"] else " "
        typer.echo(
            f"{mark} {e['version']}  {e['created_at'] or '-':<32} {e['role']:<8} "
            f"{e['pipeline'] or '-':<24} {_metrics_text(e['metrics'])}"
            + (f"  job {e['job_id']}" if e["job_id"] else "")
        )
    typer.echo("* newest (what requests without model_version get)")


def _model_row(store: ModelStore, name: str) -> dict[str, Any]:
    newest = newest_servable(store, name)
    return {
        "name": name,
        "versions": len(store.versions(name)),
        "newest": newest.version if newest else None,
        "metrics": newest.metrics if newest else {},
        "created_at": newest.created_at if newest else None,
    }


def _version_row(version: ModelVersion, newest: ModelVersion | None) -> dict[str, Any]:
    extra = version.metadata.get("extra")
    extra = extra if isinstance(extra, dict) else {}
    role = "trial" if is_trial(version) else "model"
    if extra.get("promoted_from"):
        role = "promoted"
    return {
        "version": version.version,
        "newest": newest is not None and newest.version == version.version,
        "created_at": version.created_at,
        "pipeline": version.metadata.get("pipeline"),
        "role": role,
        "promoted_from": extra.get("promoted_from"),
        "job_id": extra.get("job_id"),
        "metrics": version.metrics,
        "params": version.metadata.get("params"),
        "framework": version.framework,
    }


def _metrics_text(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
