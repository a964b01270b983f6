"""``rayml train``'s own checks (no Kafka, no Ray); ``rayml models``: test_models.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from rayml.cli.training import train


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("RAYML_MODELS__ROOT", str(tmp_path))
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, as in rayml.cli.main, even with one command
    app.command("train")(train)
    return app


def test_train_refuses_params_that_are_not_a_json_object(app: typer.Typer) -> None:
    out = CliRunner().invoke(app, ["train", "iris.train", "--params", "[1]"])
    assert out.exit_code != 0
    assert "JSON object" in out.output
