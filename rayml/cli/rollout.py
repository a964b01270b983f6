"""``rayml rollout ...``: roll a candidate model version out on live traffic (docs/rollouts.md).

Examples::

    rayml rollout start breast_cancer 000004 --mode shadow
    rayml rollout start breast_cancer 000004 --mode canary --fraction 0.2
    rayml rollout status breast_cancer --json
    rayml rollout promote breast_cancer
    rayml rollout abort breast_cancer --reason "p99 too high"
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from rayml.cli.options import BootstrapOpt, JsonOpt, command_settings
from rayml.client import rollouts
from rayml.rollouts.status import rollout_status

rollout_app = typer.Typer(
    help="Roll a candidate model version out beside the served one: shadow or canary, "
    "judged on live traffic, promoted or aborted.",
    no_args_is_help=True,
)

ModelArg = Annotated[str, typer.Argument(help="The model's name.")]
ReasonOpt = Annotated[str | None, typer.Option(help="Why, kept on the serving record.")]


@rollout_app.command("start")
def start_cmd(
    model: ModelArg,
    version: Annotated[str, typer.Argument(help="The candidate version.")],
    mode: Annotated[
        str, typer.Option(help="shadow: runs on a copy, answers no one; canary: answers a share.")
    ] = "shadow",
    fraction: Annotated[
        float | None, typer.Option(help="canary: the share of requests it answers, in (0, 1].")
    ] = None,
    reason: ReasonOpt = None,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """Start rolling VERSION of MODEL out beside the served version.

    Needs Write on the models topic and write access to the model store.
    """
    if mode not in ("shadow", "canary"):
        raise typer.BadParameter("shadow or canary", param_hint="--mode")
    settings = command_settings(bootstrap_servers)
    record = rollouts.start_rollout(
        settings,
        model,
        version,
        "shadow" if mode == "shadow" else "canary",
        fraction=fraction,
        reason=reason,
    )
    r = record.rollout
    assert r is not None
    share = f" answering {r.fraction:g} of requests" if r.mode == "canary" else ""
    typer.echo(f"model {record.name}: {r.mode} of {r.candidate}{share} beside {record.version}")


@rollout_app.command("promote")
def promote_cmd(
    model: ModelArg, reason: ReasonOpt = None, bootstrap_servers: BootstrapOpt = None
) -> None:
    """Serve MODEL's candidate from now on (the rollout ends)."""
    settings = command_settings(bootstrap_servers)
    record = rollouts.promote_rollout(settings, model, reason=reason)
    typer.echo(f"model {record.name}: serving {record.version} ({record.reason})")


@rollout_app.command("abort")
def abort_cmd(
    model: ModelArg, reason: ReasonOpt = None, bootstrap_servers: BootstrapOpt = None
) -> None:
    """End MODEL's rollout; the served version stays."""
    settings = command_settings(bootstrap_servers)
    record = rollouts.abort_rollout(settings, model, reason=reason)
    typer.echo(f"model {record.name}: serving {record.version} ({record.reason})")


@rollout_app.command("status")
def status_cmd(
    model: Annotated[
        str | None, typer.Argument(help="Only this model [all under rollout].")
    ] = None,
    as_json: JsonOpt = False,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """Each rollout: its candidate, live figures per version, agreement, drift, and what the
    policy would decide now (read from the shadow, feedback and models topics, and the drift
    references from the model store)."""
    settings = command_settings(bootstrap_servers)
    shown = rollout_status(settings, model)
    if as_json:
        typer.echo(json.dumps(shown, indent=2, default=str))
        return
    if not shown:
        typer.echo("no rollout under way" + (f" for model {model}" if model else ""))
        return
    for fig in shown:
        typer.echo(_text(fig))


def _text(fig: dict[str, Any]) -> str:
    lines = [f"model {fig['model']}: serving {fig['served']}"]
    r = fig.get("rollout")
    if r is None:
        last = fig["last_action"]
        lines.append(f"  no rollout under way (last: {last['action']}: {last['reason']})")
    else:
        share = f" at {r['fraction']:g}" if r["mode"] == "canary" else ""
        lines.append(f"  {r['mode']}{share} of {r['candidate']}")
    for version, s in fig["versions"].items():
        acc = "-" if s["accuracy"] is None else f"{s['accuracy']:.4f}"
        p99 = "-" if s["p99_ms"] is None else f"{s['p99_ms']:.1f} ms"
        lines.append(
            f"  {version}: {s['answers']} answers, {s['errors']} errors, "
            f"{s['labelled']} labelled, accuracy {acc}, p99 compute {p99}"
        )
    for version, d in fig.get("drift", {}).items():
        lines.append(f"  {version} drift: {_drift_text(d)}")
    if r is not None:
        a, labels = fig["agreement"], fig["labels"]
        rate = "-" if a["rate"] is None else f"{a['rate']:.4f}"
        lines.append(f"  agreement {rate} over {a['compared']} requests")
        lines.append(
            f"  labels: serving {labels['serving']}/{labels['needed']}, "
            f"candidate {labels['candidate']}/{labels['needed']}"
        )
        decision = fig["decision"]
        lines.append(
            "  policy: waiting for labels"
            if decision is None
            else f"  policy: {decision['action']} ({decision['reason']})"
        )
    return "\n".join(lines)


def _drift_text(d: dict[str, Any] | None) -> str:
    """One version's drift in a line: the feature that moved most, and the output."""
    if d is None:
        return "no reference stored with this version"
    if d["max_psi"] is None:
        inputs = "no input vectors" + (
            f" ({d['mismatched']} of another length)" if d["mismatched"] else ""
        )
    else:
        inputs = (
            f"max feature PSI {d['max_psi']:.3f} (feature {d['max_feature']}) over {d['rows']} rows"
        )
    output = "-" if d["output_psi"] is None else f"{d['output_psi']:.3f}"
    level = f" [{d['level']}]" if d["level"] else ""
    return f"{inputs}; output PSI {output} over {d['outputs']} answers{level}"
