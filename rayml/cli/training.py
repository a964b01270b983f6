"""``rayml train`` and ``rayml models``: start a training job; list, promote, roll back and
delete model versions.

``train`` is a plain typer-annotated function and ``models`` a typer group;
:mod:`rayml.cli.main` registers them::

    app.command("train")(train)
    app.add_typer(models, name="models")

Examples::

    rayml train breast_cancer.train --params '{"n_estimators": 50}' --wait
    rayml train iris.train --params '{"grid": {"n_estimators": [10, 50], "max_depth": [2, 4]}}'
    rayml models                              # = rayml models list
    rayml models breast_cancer --json         # = rayml models list breast_cancer --json
    rayml models promote breast_cancer 000007
    rayml models rollback breast_cancer
    rayml models gc --dry-run

``models promote`` and ``models rollback`` write the model's serving record to the models
topic themselves (:mod:`rayml.client.promotion`): Kafka's ACLs decide who may (Write on that
topic). ``models gc`` deletes from the store all but the newest ``models.keep_versions`` of each
model, every promoted version, the served one and those served before it.

``train`` sends the request to the training topic (``topics.jobs``, which the job runner
reads; training is a right apart from inference, docs/security.md) and prints the job id; with
``--wait`` it follows the job's events on the events topic (progress on stderr) and prints the
result as JSON, exiting 1 if the job failed.
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
from typer.core import TyperGroup

from rayml.cli.options import BootstrapOpt, JsonOpt, command_settings, parse_params
from rayml.client import promotion
from rayml.config import Settings
from rayml.errors import RaymlError
from rayml.kafka import clients as kafka_clients
from rayml.models.promotion import ServingRecord, retention_plan
from rayml.models.store import ModelStore, ModelVersion
from rayml.models.versions import is_trial, needs_promotion, newest_servable
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
    """Produce a training request to the training topic."""
    producer = kafka_clients.producer(settings.kafka)
    producer.produce(settings.topics.jobs, key=request.id.encode(), value=encode_request(request))
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


class _ListsByDefault(TyperGroup):
    """``rayml models`` and ``rayml models NAME [--json]`` still list, as before the group."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["list", *args]
        return super().parse_args(ctx, args)


models = typer.Typer(
    cls=_ListsByDefault,
    help="Model versions: list them, promote one, roll back, delete old ones (gc).",
)

NameArg = Annotated[str, typer.Argument(help="A model name.")]


@models.command("list")
def list_models(
    name: Annotated[str | None, typer.Argument(help="A model: list its versions.")] = None,
    as_json: JsonOpt = False,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """List the models, or one model's versions: metrics, served (*) and promoted (+)."""
    settings = command_settings(bootstrap_servers)
    store = ModelStore(settings.models.root, allow_pickle=settings.models.allow_pickle)
    names = store.names() if name is None else [name]
    records = _records_or_none(settings) if names else None
    if name is None:
        rows = [_model_row(store, model, records) for model in names]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        if not rows:
            typer.echo(f"no models in {settings.models.root}")
        for row in rows:
            typer.echo(
                f"{row['name']:<24} {row['versions']:>4} versions  served {row['served'] or '-'}"
                f"  {_metrics_text(row['metrics'])}"
            )
        return
    versions = store.versions(name)
    served_now = _served(store, name, records)
    promoted = store.promoted_versions(name)
    entries = [_version_row(v, served_now, promoted) for v in versions]
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        typer.echo(f"model {name!r} has no versions in {settings.models.root}")
        raise typer.Exit(1)
    for e in entries:
        mark = "*" if e["served"] else "+" if e["promoted"] else " "
        typer.echo(
            f"{mark} {e['version']}  {e['created_at'] or '-':<32} {e['role']:<8} "
            f"{e['pipeline'] or '-':<24} {_metrics_text(e['metrics'])}"
            + (f"  job {e['job_id']}" if e["job_id"] else "")
        )
    typer.echo("* served (what requests without model_version get)   + promoted")


@models.command("promote")
def promote_cmd(
    name: NameArg,
    version: Annotated[str, typer.Argument(help="The version to serve.")],
    reason: Annotated[str | None, typer.Option(help="Why, kept with the promotion.")] = None,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """Serve VERSION of NAME from now on, whatever the promotion gate said of it.

    Needs Write on the models topic and write access to the model store.
    """
    settings = command_settings(bootstrap_servers)
    record = promotion.promote(settings, name, version, reason=reason)
    was = record.previous[-1] if record.previous else "-"
    typer.echo(f"model {record.name}: serving {record.version} (before: {was})")


@models.command("rollback")
def rollback_cmd(name: NameArg, bootstrap_servers: BootstrapOpt = None) -> None:
    """Serve the version of NAME that was served before the current one, at once.

    Needs Write on the models topic.
    """
    settings = command_settings(bootstrap_servers)
    record = promotion.rollback(settings, name)
    typer.echo(f"model {record.name}: serving {record.version} ({record.reason})")


@models.command("gc")
def gc_cmd(
    name: Annotated[str | None, typer.Argument(help="Only this model [all].")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    keep: Annotated[
        int | None,
        typer.Option(min=1, help="Newest versions kept per model [models.keep_versions]."),
    ] = None,
    as_json: JsonOpt = False,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """Delete old versions, keeping the newest N, the promoted and the served (and rollback's).

    Needs the serving records from the models topic, and refuses to run without them.
    """
    settings = command_settings(bootstrap_servers)
    store = ModelStore(settings.models.root, allow_pickle=settings.models.allow_pickle)
    # Without the serving records a served version could look unused: refuse rather than guess.
    records = promotion.serving_records(settings)
    keep_last = keep if keep is not None else settings.models.keep_versions
    plan: dict[str, list[str]] = {}
    for model in [name] if name is not None else store.names():
        plan[model] = retention_plan(
            [v.version for v in store.versions(model)],
            keep_last,
            _protected(store, model, records.get(model)),
        )
    if not dry_run:
        for model, doomed in plan.items():
            for version in doomed:
                store.delete(model, version)
    if as_json:
        typer.echo(json.dumps({"dry_run": dry_run, "deleted": plan}, indent=2))
        return
    verb = "would delete" if dry_run else "deleted"
    for model, doomed in plan.items():
        if doomed:
            typer.echo(f"{model}: {verb} {len(doomed)}: {' '.join(doomed)}")
    total = sum(len(d) for d in plan.values())
    typer.echo(f"{verb} {total} versions; kept the newest {keep_last}, promoted and served ones")


def _protected(store: ModelStore, model: str, record: ServingRecord | None) -> set[str]:
    keep = set(store.promoted_versions(model))
    if record is not None:
        keep |= {record.version, *record.previous}
    else:
        served_now = newest_servable(store, model)
        if served_now is not None:
            keep.add(served_now.version)
    return keep


def _records_or_none(settings: Settings) -> dict[str, ServingRecord] | None:
    """The serving records, or ``None`` (said on stderr) if the topic cannot be read now."""
    try:
        return promotion.serving_records(settings, timeout_s=10.0)
    except RaymlError as exc:
        typer.echo(f"cannot read {settings.topics.models} ({exc}); served = the store's", err=True)
        return None


def _served(store: ModelStore, name: str, records: dict[str, ServingRecord] | None) -> str | None:
    record = (records or {}).get(name)
    if record is not None:
        return record.version
    found = newest_servable(store, name)
    return found.version if found is not None else None


def _model_row(
    store: ModelStore, name: str, records: dict[str, ServingRecord] | None
) -> dict[str, Any]:
    served_now = _served(store, name, records)
    found = store.describe(name, served_now) if served_now is not None else None
    return {
        "name": name,
        "versions": len(store.versions(name)),
        "served": served_now,
        "metrics": found.metrics if found else {},
        "created_at": found.created_at if found else None,
    }


def _version_row(
    version: ModelVersion, served_now: str | None, promoted: set[str]
) -> dict[str, Any]:
    extra = version.metadata.get("extra")
    extra = extra if isinstance(extra, dict) else {}
    role = "trial" if is_trial(version) else "model"
    if extra.get("promoted_from"):
        role = "best"  # a sweep's copy of its best trial
    return {
        "version": version.version,
        "served": version.version == served_now,
        "promoted": version.version in promoted,
        # Saved by a training job: served or pinned only once promoted.
        "gated": needs_promotion(version),
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
