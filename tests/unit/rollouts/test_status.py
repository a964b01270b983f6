"""The monitor's figures with drift: per version, against the reference its version stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rayml.cli.rollout import _text
from rayml.config import Settings
from rayml.models.promotion import ServingRecord
from rayml.models.store import ModelStore
from rayml.protocol.rollouts import Rollout, VersionAnswer
from rayml.rollouts.drift import REFERENCE_KEY, SIGNIFICANT, DriftReference, reference_from_rows
from rayml.rollouts.quality import QualityWindow
from rayml.rollouts.status import DriftReferences, drift_window, figures

MODEL = "m"
RNG = np.random.default_rng(7)
TRAIN = RNG.normal(size=(2_000, 3))
REFERENCE = reference_from_rows(TRAIN, outputs=[int(r[0] > 0) for r in TRAIN])


def answer(rid: str, version: str, role: str, row: np.ndarray, at: int) -> VersionAnswer:
    return VersionAnswer(
        id=rid,
        model=MODEL,
        version=version,
        role=role,  # type: ignore[arg-type]
        pipeline="m.predict",
        status="ok",
        output={"label": int(row[0] > 0)},
        compute_ms=1.0,
        at_ms=at,
        inputs=None if role == "shadow" else row.tolist(),
    )


def shadow_traffic(settings: Settings, rows: np.ndarray) -> tuple[QualityWindow, Any]:
    window = QualityWindow(3600, 100_000)
    drift = drift_window(settings)
    for i, row in enumerate(rows):
        for a in (
            answer(f"r{i}", "000001", "serving", row, 1_000 + i),
            answer(f"r{i}", "000002", "shadow", row, 1_000 + i),
        ):
            window.add_answer(a)
            drift.add_answer(a)
    return window, drift


def record(mode: str = "shadow") -> ServingRecord:
    return ServingRecord(
        name=MODEL,
        version="000001",
        rollout=Rollout(candidate="000002", mode=mode, fraction=0.5, started_at_ms=0),  # type: ignore[arg-type]
        action="rollout_started",
    )


def test_figures_show_each_versions_drift_against_its_own_reference() -> None:
    settings = Settings()
    shifted = RNG.normal(size=(1_000, 3))
    shifted[:, 2] += 3.0
    window, drift = shadow_traffic(settings, shifted)
    refs = {"000001": REFERENCE, "000002": None}
    fig = figures(window, record(), settings, 5_000, drift, lambda m, v: refs[v])
    served = fig["drift"]["000001"]
    assert served["rows"] == 1_000
    assert served["max_feature"] == 2
    assert served["max_psi"] > SIGNIFICANT
    assert served["output_psi"] < 0.1  # the label depends on feature 0 only
    assert served["level"] == "significant"
    assert fig["drift"]["000002"] is None  # no reference stored with it
    json.dumps(fig)  # JSON values only

    # A shadow's inputs are the served version's (its own answers carry none).
    refs["000002"] = REFERENCE
    fig = figures(window, record(), settings, 5_000, drift, lambda m, v: refs[v])
    assert fig["drift"]["000002"]["rows"] == 1_000
    assert fig["drift"]["000002"]["max_psi"] == served["max_psi"]
    # ...but not a canary's: it answers requests of its own.
    fig = figures(window, record("canary"), settings, 5_000, drift, lambda m, v: refs[v])
    assert fig["drift"]["000002"]["rows"] == 0


def test_the_status_text_has_a_drift_line_per_version() -> None:
    settings = Settings()
    window, drift = shadow_traffic(settings, TRAIN[:1_000])
    fig = figures(
        window, record(), settings, 5_000, drift, lambda m, v: REFERENCE if v == "000001" else None
    )
    lines = _text(fig).splitlines()
    (served,) = [line for line in lines if line.startswith("  000001 drift: ")]
    d = fig["drift"]["000001"]
    assert served == (
        f"  000001 drift: max feature PSI {d['max_psi']:.3f} (feature {d['max_feature']}) "
        f"over 1000 rows; output PSI {d['output_psi']:.3f} over 1000 answers [stable]"
    )
    assert "  000002 drift: no reference stored with this version" in lines


def test_without_a_drift_window_the_figures_have_no_drift_key() -> None:
    settings = Settings()
    window, _ = shadow_traffic(settings, TRAIN[:10])
    assert "drift" not in figures(window, record(), settings, 5_000)


def test_references_come_from_the_version_metadata_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.linear_model import LogisticRegression

    settings = Settings(models={"root": str(tmp_path)})
    store = ModelStore(str(tmp_path))
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    with_ref = store.save(
        MODEL,
        model,
        pipeline="p",
        params={},
        metrics={},
        extra={REFERENCE_KEY: REFERENCE.model_dump(mode="json")},
    )
    without = store.save(MODEL, model, pipeline="p", params={}, metrics={})
    broken = store.save(
        MODEL, model, pipeline="p", params={}, metrics={}, extra={REFERENCE_KEY: {"rows": 0}}
    )
    refs = DriftReferences(settings)
    assert refs(MODEL, with_ref.version) == REFERENCE
    assert refs(MODEL, without.version) is None
    assert refs(MODEL, broken.version) is None
    assert refs(MODEL, "999") is None
    assert refs("../etc", "1") is None  # not a model name: no such version

    reads: list[Any] = []
    monkeypatch.setattr(ModelStore, "describe", lambda *a: reads.append(a))
    assert refs(MODEL, with_ref.version) == REFERENCE  # cached: no second read
    assert reads == []
    assert isinstance(refs(MODEL, with_ref.version), DriftReference)
