"""``rayml models`` on a store written through the store's API (no Kafka, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from rayml.cli.training import models, train
from rayml.models.store import ModelStore


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("RAYML_MODELS__ROOT", str(tmp_path))
    app = typer.Typer()
    app.command("train")(train)
    app.command("models")(models)
    return app


def _store(root: Path) -> None:
    store = ModelStore(str(root))
    est = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    store.save("m", est, pipeline="p.train", params={}, metrics={"acc": 0.5})
    for trial, acc in enumerate((0.7, 0.9)):
        extra = {"job_id": "s1", "role": "trial", "trial": trial}
        store.save("m", est, pipeline="p.train", params={}, metrics={"acc": acc}, extra=extra)
    extra = {"job_id": "s1", "role": "model", "promoted_from": "000003"}
    store.save("m", est, pipeline="p.train", params={}, metrics={"acc": 0.9}, extra=extra)
    # A later sweep's trial: stored, but not the newest servable version.
    extra = {"job_id": "s2", "role": "trial", "trial": 0}
    store.save("m", est, pipeline="p.train", params={}, metrics={"acc": 0.1}, extra=extra)


def test_models_lists_versions_metrics_and_the_newest(app: typer.Typer, tmp_path: Path) -> None:
    _store(tmp_path)
    runner = CliRunner()
    out = runner.invoke(app, ["models", "m", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert [r["version"] for r in rows] == ["000001", "000002", "000003", "000004", "000005"]
    assert [r["role"] for r in rows] == ["model", "trial", "trial", "promoted", "trial"]
    assert [r["version"] for r in rows if r["newest"]] == ["000004"]
    assert rows[3]["promoted_from"] == "000003"
    assert rows[3]["metrics"] == {"acc": 0.9}

    text = runner.invoke(app, ["models", "m"]).output
    assert "* 000004" in text
    assert "acc=0.9" in text

    summary = json.loads(runner.invoke(app, ["models", "--json"]).output)
    assert summary == [
        {
            "name": "m",
            "versions": 5,
            "newest": "000004",
            "metrics": {"acc": 0.9},
            "created_at": summary[0]["created_at"],
        }
    ]


def test_models_of_an_unknown_name_exits_1(app: typer.Typer) -> None:
    out = CliRunner().invoke(app, ["models", "nothing"])
    assert out.exit_code == 1
    assert "no versions" in out.output


def test_train_refuses_params_that_are_not_a_json_object(app: typer.Typer) -> None:
    out = CliRunner().invoke(app, ["train", "iris.train", "--params", "[1]"])
    assert out.exit_code != 0
    assert "JSON object" in out.output
