"""``rayml replay``: re-send dead letters, re-score a time range against a pinned version, and
compare two result topics. The work is :mod:`rayml.replay`'s; this module parses and prints.

Examples::

    rayml replay dlq --error-type retries_exhausted --since -2h --dry-run
    rayml replay dlq --error-type retries_exhausted --since -2h
    rayml replay range --from -1d --to now --pin iris@3 --to-topic iris.replay.v3
    rayml replay range --from 2026-12-06T10:00:00Z --to 2026-12-06T11:00:00Z \\
        --pipeline iris.predict --pin iris@4 --to-topic iris.replay.v4
    rayml replay diff iris.replay.v3 iris.replay.v4 --field label
    rayml replay diff iris.replay.v3 iris.replay.v4 --json

Times are ISO-8601 (UTC when no offset is given) or relative to now (``-15m``, ``-2h``,
``-1d``, ``now``). docs/service.md, "Replay and backfill", says what each command guarantees.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from rayml.cli.options import BootstrapOpt, JsonOpt, command_settings
from rayml.replay.compare import diff_topics
from rayml.replay.dlq import DEFAULT_DLQ_GROUP, replay_dlq
from rayml.replay.letters import LetterFilter
from rayml.replay.ranges import DEFAULT_RANGE_GROUP, replay_range
from rayml.replay.rewrite import parse_pin
from rayml.replay.times import parse_time

__all__ = ["replay_app"]

replay_app = typer.Typer(
    help="Replay dead letters, re-score a time range against a pinned version, compare results.",
    no_args_is_help=True,
)

_TIME_HELP = "ISO-8601 (UTC without an offset) or relative: -15m, -2h, -1d, now."


def _at(value: str, option: str, now_ms: int) -> int:
    try:
        return parse_time(value, now_ms)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _time(value: str | None, option: str, now_ms: int) -> int | None:
    return None if value is None else _at(value, option, now_ms)


@replay_app.command("dlq")
def dlq(
    error_type: Annotated[
        list[str] | None,
        typer.Option(
            "--error-type", help="Replay only letters of this rayml.error.type (repeatable)."
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help=f"Only letters dead-lettered at or after. {_TIME_HELP}")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help=f"Only letters dead-lettered before. {_TIME_HELP}")
    ] = None,
    group: Annotated[
        str,
        typer.Option(
            help="Consumer group that remembers which letters were handled (another group "
            "starts from the beginning of the dead-letter topic)."
        ),
    ] = DEFAULT_DLQ_GROUP,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Replay at most this many letters.")
    ] = None,
    skip_refused: Annotated[
        bool,
        typer.Option(
            "--skip-refused",
            help="Commit past letters that may not be replayed (a source topic that is not a "
            "request topic) instead of stopping at the first.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be replayed; write nothing.")
    ] = False,
    bootstrap_servers: BootstrapOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-send dead letters to the bulk lane of their source topic's tenant (training requests
    to their training topic), each at most once per group.

    Letters the filter leaves out are committed too: a later run of the same group does not
    see them.
    """
    now_ms = int(time.time() * 1000)
    letters = LetterFilter(
        error_types=frozenset(error_type or ()),
        since_ms=_time(since, "--since", now_ms),
        until_ms=_time(until, "--until", now_ms),
    )
    filtered = bool(error_type or since or until)
    if filtered and group == DEFAULT_DLQ_GROUP and not dry_run:
        # The letters a filter leaves out are committed past in the group it runs under: in the
        # default group, a later unfiltered replay would never see them.
        raise typer.BadParameter(
            "a filtered replay commits past the letters it leaves out: name a group of its own "
            "for it (--group), so the default group still sees them",
            param_hint="--group",
        )
    settings = command_settings(bootstrap_servers)
    report = replay_dlq(
        settings,
        group=group,
        letters=letters,
        dry_run=dry_run,
        limit=limit,
        skip_refused=skip_refused,
    )
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            typer.echo(line)


@replay_app.command("range")
def range_(
    from_: Annotated[
        str, typer.Option("--from", help=f"Start of the range (inclusive). {_TIME_HELP}")
    ],
    to: Annotated[str, typer.Option("--to", help=f"End of the range (exclusive). {_TIME_HELP}")],
    pin: Annotated[str, typer.Option(help="MODEL@VERSION to re-score against.")],
    to_topic: Annotated[str, typer.Option(help="Side topic for the results (created if missing).")],
    pipeline: Annotated[
        str | None,
        typer.Option(help="Only requests of these pipelines (an fnmatch pattern: iris.*)."),
    ] = None,
    topic: Annotated[
        list[str] | None,
        typer.Option(
            help="Only this request topic (repeatable) [every tenant's input topics, both lanes]."
        ),
    ] = None,
    group: Annotated[
        str, typer.Option(help="Consumer group the range is read under (not the executor's).")
    ] = DEFAULT_RANGE_GROUP,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
    bootstrap_servers: BootstrapOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-score a time range of requests against a pinned model version, into a side topic.

    Each request is sent again, with its id, to the bulk lane of the topic it came from, pinned
    and with reply_to = the side topic: the executor answers it through its normal path.
    """
    now_ms = int(time.time() * 1000)
    start_ms = _at(from_, "--from", now_ms)
    stop_ms = _at(to, "--to", now_ms)
    try:
        pinned = parse_pin(pin)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--pin") from None
    settings = command_settings(bootstrap_servers)
    report = replay_range(
        settings,
        start_ms=start_ms,
        stop_ms=stop_ms,
        pin=pinned,
        to_topic=to_topic,
        pipeline=pipeline,
        topics=topic or None,
        group=group,
        progress=progress and not as_json,
    )
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            typer.echo(line)


@replay_app.command("diff")
def diff(
    left: Annotated[str, typer.Argument(help="A result topic (T1).")],
    right: Annotated[str, typer.Argument(help="Another result topic (T2).")],
    field: Annotated[
        str | None,
        typer.Option(help="Compare this field of each result (a dotted path: label, a.b)."),
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Changed-label pairs to show.")] = 10,
    bootstrap_servers: BootstrapOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two result topics by request id: counts, agreement, changed labels, errors,
    mean latencies."""
    settings = command_settings(bootstrap_servers)
    found = diff_topics(settings, left, right, field=field, top=top)
    if as_json:
        typer.echo(json.dumps(found.to_json(), indent=2))
    else:
        for line in found.table():
            typer.echo(line)
