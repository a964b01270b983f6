"""``rayml replay``'s own checks of its options, before any broker is asked (no Kafka)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rayml.cli.main import app

RANGE = ["replay", "range", "--from", "-1h", "--to", "now", "--to-topic", "side"]


@pytest.mark.parametrize(
    ("args", "option", "why"),
    [
        (["replay", "dlq", "--since", "yesterday"], "--since", "is not a time"),
        (["replay", "dlq", "--until", "15m"], "--until", "is not a time"),
        (["replay", "dlq", "--limit", "0"], "--limit", "greater than or equal to 1"),
        # A filter commits past what it leaves out: never in the default group.
        (["replay", "dlq", "--error-type", "x"], "--group", "name a group of its own"),
        (["replay", "dlq", "--since", "-1h"], "--group", "name a group of its own"),
        ([*RANGE, "--pin", "iris"], "--pin", "is not MODEL@VERSION"),
        ([*RANGE, "--pin", "iris@v2"], "--pin", "is not valid"),
        (["replay", "range", "--from", "x", "--to", "now", "--pin", "i@1", "--to-topic", "s"],
         "--from", "is not a time"),
    ],
)  # fmt: skip
def test_a_bad_option_is_a_usage_error_naming_it(args: list[str], option: str, why: str) -> None:
    out = CliRunner().invoke(app, args, env={"RAYML_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert out.exit_code == 2, out.output
    assert option in out.output
    assert why in " ".join(out.output.split())
