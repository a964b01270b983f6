"""``rayml models`` (list, promote, rollback, gc) on a store written through the store's API,
with the models topic replaced by a dict (no Kafka, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from rayml.cli.training import models
from rayml.client import promotion
from rayml.config import Settings
from rayml.models.promotion import ServingRecord
from rayml.models.store import ModelStore

#: The models topic: model name -> its serving record (what the CLI reads and writes).
Topic = dict[str, ServingRecord]


@pytest.fixture
def topic(monkeypatch: pytest.MonkeyPatch) -> Topic:
    records: Topic = {}

    def read(settings: Settings, timeout_s: float = 30.0) -> Topic:
        return dict(records)

    def write(settings: Settings, record: ServingRecord, timeout_s: float) -> None:
        records[record.name] = record

    monkeypatch.setattr(promotion, "serving_records", read)
    monkeypatch.setattr(promotion, "write_serving_record", write)
    return records


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits of ``promote`` (for workers' cached refusals to expire), not slept here."""
    slept: list[float] = []
    monkeypatch.setattr(promotion.time, "sleep", slept.append)
    return slept


@pytest.fixture
def app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, topic: Topic, waits: list[float]
) -> typer.Typer:
    monkeypatch.setenv("RAYML_MODELS__ROOT", str(tmp_path))
    monkeypatch.setenv("RAYML_MODELS__VERSION_CHECK_TTL_S", "1.5")
    app = typer.Typer()
    app.callback()(lambda: None)
    app.add_typer(models, name="models")
    return app


def _store(root: Path) -> ModelStore:
    """000001 by hand; 000002-3 a sweep's trials; 000004 its copy of the best; 000005 a later
    sweep's trial: only 000001 is served by the store alone (no job version was promoted)."""
    store = ModelStore(str(root))
    est = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    store.save("m", est, pipeline="p.train", params={}, metrics={"acc": 0.5})
    for trial, acc in enumerate((0.7, 0.9)):
        extra = {"job_id": "s1", "role": "trial", "trial": trial}
        store.save("m", est, pipeline="p.train", params={}, metrics={"acc": acc}, extra=extra)
    extra = {"job_id": "s1", "role": "model", "promoted_from": "000003"}
    store.save("m", est, pipeline="p.train", params={}, metrics={"acc": 0.9}, extra=extra)
    extra = {"job_id": "s2", "role": "trial", "trial": 0}
    store.save("m", est, pipeline="p.train", params={}, metrics={"acc": 0.1}, extra=extra)
    return store


def run(app: typer.Typer, *args: str) -> str:
    out = CliRunner().invoke(app, list(args))
    assert out.exit_code == 0, out.output
    return out.output


def test_list_marks_the_served_and_promoted_versions(app: typer.Typer, tmp_path: Path) -> None:
    _store(tmp_path)
    rows = json.loads(run(app, "models", "m", "--json"))  # `rayml models NAME` still lists
    assert [r["version"] for r in rows] == ["000001", "000002", "000003", "000004", "000005"]
    assert [r["role"] for r in rows] == ["model", "trial", "trial", "best", "trial"]
    assert [r["version"] for r in rows if r["served"]] == ["000001"]
    assert [r["promoted"] for r in rows] == [False] * 5
    assert [r["gated"] for r in rows] == [False, True, True, True, True]
    assert rows[3]["promoted_from"] == "000003"
    assert rows[3]["metrics"] == {"acc": 0.9}
    assert json.loads(run(app, "models", "list", "m", "--json")) == rows

    summary = json.loads(run(app, "models", "--json"))
    assert summary == [
        {
            "name": "m",
            "versions": 5,
            "served": "000001",
            "metrics": {"acc": 0.5},
            "created_at": summary[0]["created_at"],
        }
    ]
    assert "served 000001" in run(app, "models")


def test_promote_serves_a_version_and_rollback_serves_the_one_before(
    app: typer.Typer, tmp_path: Path, topic: Topic, waits: list[float]
) -> None:
    store = _store(tmp_path)
    assert "serving 000004 (before: 000001)" in run(app, "models", "promote", "m", "4")
    assert waits == [1.5]  # marked, then the workers' refusals of it expire, then served
    record = topic["m"]
    assert (record.version, record.previous, record.action) == ("000004", ["000001"], "promoted")
    assert record.metrics == {"acc": 0.9}
    assert record.promoted_from == "000003"
    assert store.promotion("m", "000004") is not None  # marked before the record was written
    text = run(app, "models", "m")
    assert "* 000004" in text
    assert "  000001" in text  # no longer served; saved by hand, so not marked either

    run(app, "models", "promote", "m", "000003", "--reason", "the trial itself")
    assert (topic["m"].version, topic["m"].previous) == ("000003", ["000001", "000004"])
    assert topic["m"].reason == "the trial itself"

    assert "serving 000004 (rolled back from 000003)" in run(app, "models", "rollback", "m")
    assert (topic["m"].version, topic["m"].previous) == ("000004", ["000001"])
    run(app, "models", "promote", "m", "000003")  # marked before: served without a wait
    assert waits == [1.5, 1.5]
    run(app, "models", "rollback", "m")
    # A version served before but deleted since is passed over.
    store.delete("m", "000001")
    out = CliRunner().invoke(app, ["models", "rollback", "m"])
    assert out.exit_code != 0
    assert "no version served before 000004 is left in the store" in str(out.exception)


def test_promote_of_a_version_not_stored_fails(app: typer.Typer, tmp_path: Path) -> None:
    _store(tmp_path)
    out = CliRunner().invoke(app, ["models", "promote", "m", "42"])
    assert out.exit_code != 0
    assert getattr(out.exception, "type", None) == "version_not_found"


def test_rollback_without_a_record_fails(app: typer.Typer, tmp_path: Path) -> None:
    _store(tmp_path)
    out = CliRunner().invoke(app, ["models", "rollback", "m"])
    assert out.exit_code != 0
    assert "has no serving record" in str(out.exception)


def test_gc_keeps_the_newest_the_promoted_and_the_served(
    app: typer.Typer, tmp_path: Path, topic: Topic
) -> None:
    store = _store(tmp_path)
    run(app, "models", "promote", "m", "000002")  # served; 000001 served before it
    est = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    for n in range(3):  # three more job versions, never promoted: 000006-8
        extra = {"job_id": f"j{n}", "role": "model"}
        store.save("m", est, pipeline="p.train", params={}, metrics={}, extra=extra)

    dry = json.loads(run(app, "models", "gc", "--dry-run", "--keep", "2", "--json"))
    assert dry == {"dry_run": True, "deleted": {"m": ["000003", "000004", "000005", "000006"]}}
    assert len(store.versions("m")) == 8  # nothing deleted

    text = run(app, "models", "gc", "--keep", "2")
    assert "m: deleted 4: 000003 000004 000005 000006" in text
    assert [v.version for v in store.versions("m")] == ["000001", "000002", "000007", "000008"]
    # The served version still loads; deleted numbers are never reused.
    assert store.load("m", "000002").version == "000002"
    assert store.save("m", est, pipeline="p", params={}, metrics={}).version == "000009"
