"""What every ``rayml`` command shares: the global options, the settings they select, and the
parsing of ``--params``.

Kept apart from :mod:`rayml.cli.main` (which builds the typer app) so that the command modules
(:mod:`rayml.cli.training`, ...) use the same options without importing the app back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from rayml.config import Settings, load_settings


class GlobalOptions:
    """``--config`` and ``--log-level``, set once by the app's callback before any command."""

    config: Path | None = None
    log_level: str | None = None


state = GlobalOptions()

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file.")]
BootstrapOpt = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        help="Kafka bootstrap servers (overrides RAYML_KAFKA__BOOTSTRAP_SERVERS).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def command_settings(bootstrap_servers: str | None = None, **overrides: Any) -> Settings:
    """The settings of this command line: ``--config``, ``RAYML_*``, then the command's flags."""
    if state.log_level is not None:
        # --log-level reaches the actors too (they configure logging from the settings).
        overrides.setdefault("log_level", state.log_level)
    settings = load_settings(state.config)
    if bootstrap_servers:
        settings = load_settings(
            state.config,
            kafka={**settings.kafka.model_dump(), "bootstrap_servers": bootstrap_servers},
            **overrides,
        )
    elif overrides:
        settings = load_settings(state.config, **overrides)
    return settings


def parse_params(params: str) -> dict[str, Any]:
    """``--params``: a JSON object, or a usage error that says what is wrong."""
    try:
        parsed = json.loads(params)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--params is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise typer.BadParameter("--params must be a JSON object")
    return parsed
