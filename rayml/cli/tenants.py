"""``rayml tenants apply`` and ``rayml tenants list``: the tenants' topics and Kafka ACLs.

The tenants come from the settings (``[[tenants]]`` in the TOML file, ``RAYML_TENANTS``); what
each principal is granted is :mod:`rayml.tenancy.grants`' table (docs/security.md, "Tenants and
ACLs"). Run them as an admin (a super user, or a principal with Alter and Describe on the
cluster and Create on the topics)::

    rayml --config tenants.toml tenants apply --executor-principal User:rayml --dry-run
    rayml --config tenants.toml tenants apply --executor-principal User:rayml
    rayml --config tenants.toml tenants list --executor-principal User:rayml
"""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer

from rayml.cli.options import BootstrapOpt, JsonOpt, command_settings

tenants_app = typer.Typer(
    help="Tenants: their topics and the Kafka ACLs of their principals and the executor's.",
    no_args_is_help=True,
)

_PRINCIPAL = re.compile(r"^[A-Za-z]+:.+$")


def _principal(value: str | None) -> str | None:
    if value is not None and not _PRINCIPAL.match(value):
        raise typer.BadParameter(f"{value!r} is not a Kafka principal (e.g. User:rayml)")
    return value


ExecutorPrincipalOpt = Annotated[
    str | None,
    typer.Option(
        "--executor-principal",
        help="The executor's Kafka principal (e.g. User:rayml): Read on the tenants' request "
        "topics, Write on their results and reply prefixes, rayml's own topics, its groups "
        "and transactional ids. Left out: no ACLs for the executor.",
        callback=_principal,
    ),
]


@tenants_app.command("apply")
def tenants_apply(
    executor_principal: ExecutorPrincipalOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the ACL bindings; touch nothing.")
    ] = False,
    bootstrap_servers: BootstrapOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create rayml's and the tenants' topics and their ACLs (idempotent: what exists stays)."""
    from rayml.tenancy import acls, grants  # the Kafka admin client, only for this command

    settings = command_settings(bootstrap_servers)
    if dry_run:
        planned = grants.plan(settings, executor_principal)
        if as_json:
            typer.echo(json.dumps([str(g) for g in planned], indent=2))
        else:
            for grant in planned:
                typer.echo(f"acl: {grant}")
        return
    report = acls.apply(settings, executor_principal)
    if as_json:
        body = {
            "topics": report.topics,
            "acls": [{"acl": str(g), "outcome": what} for g, what in report.acls],
            "without_principal": report.without_principal,
        }
        typer.echo(json.dumps(body, indent=2))
        return
    for name, what in report.topics.items():
        typer.echo(f"topic {name}: {what}")
    for grant, what in report.acls:
        typer.echo(f"acl {grant}: {what}")
    for name in report.without_principal:
        typer.echo(f"tenant {name}: no principal in the settings, so no ACLs for it")
    if executor_principal is None:
        typer.echo("no --executor-principal: no ACLs for the executor")


@tenants_app.command("list")
def tenants_list(
    executor_principal: ExecutorPrincipalOpt = None,
    bootstrap_servers: BootstrapOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show each tenant's topics and whether its ACLs are on the broker; exit 1 if any is not."""
    from rayml.tenancy import acls

    settings = command_settings(bootstrap_servers)
    rows = acls.status(settings, executor_principal)
    complete = all(not r.missing and all(r.topics.values()) for r in rows)
    if as_json:
        body = [
            {
                "tenant": r.tenant,
                "principal": r.principal,
                "topics": r.topics,
                "acls_present": len(r.present),
                "acls_missing": [str(g) for g in r.missing],
            }
            for r in rows
        ]
        typer.echo(json.dumps(body, indent=2))
    else:
        for r in rows:
            total = len(r.present) + len(r.missing)
            state = "no principal" if r.principal is None else f"ACLs {len(r.present)}/{total}"
            typer.echo(f"{r.tenant} ({r.principal or '-'}): {state}")
            for topic, exists in r.topics.items():
                typer.echo(f"  topic {topic}: {'exists' if exists else 'missing'}")
            for grant in r.missing:
                typer.echo(f"  missing acl: {grant}")
    if not complete:
        raise typer.Exit(1)
