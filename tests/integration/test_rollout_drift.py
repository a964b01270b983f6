"""Drift per version on the real broker and Ray (docs/rollouts.md, "Drift"): versions trained
by real training jobs carry a reference of their training rows; during a shadow rollout,
``Client.rollout_status`` shows each version's PSI against its own reference: nothing on the
training rows themselves, a significant drift once the traffic is shifted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rayml import Client
from rayml.config import Settings
from rayml.executor.service import Executor
from rayml.kafka.topics import create_topics
from rayml.rollouts.drift import MODERATE, SIGNIFICANT
from tests.support.kafka_io import ResultCollector, predict_request, send_requests
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

MODEL = "breast_cancer"


def training_rows() -> np.ndarray:
    """The rows breast_cancer.train trains on (its fixed split)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from pipelines.breast_cancer import HELD_OUT, SPLIT_SEED

    x, y = load_breast_cancer(return_X_y=True)
    x_train, *_ = train_test_split(x, y, test_size=HELD_OUT, random_state=SPLIT_SEED, stratify=y)
    return np.asarray(x_train)


@pytest.fixture
def running(settings: Settings, ray_runtime: str) -> Iterator[tuple[Settings, Client]]:
    """An executor that serves a trained version only when told to (so the second one can be
    rolled out beside the first), half-CPU workers so a training task fits beside them."""
    s = settings.model_copy(
        update={
            "promotion": settings.promotion.model_copy(update={"promote": "manual"}),
            "executor": settings.executor.model_copy(
                update={"worker_num_cpus": 0.5, "num_workers": 2}
            ),
        }
    )
    create_topics(s.kafka, s.topics)
    executor = Executor(s)
    executor.start()
    client = Client(settings=s)
    try:
        yield s, client
    finally:
        client.close()
        executor.drain(10)


def answer(settings: Settings, rows: np.ndarray, tag: str) -> None:
    ids = [f"{tag}-{i}-{uuid.uuid4().hex[:6]}" for i in range(len(rows))]
    send_requests(
        settings, [predict_request(i, r.tolist()) for i, r in zip(ids, rows, strict=True)]
    )
    collector = ResultCollector(settings)
    try:
        results = collector.wait_for(ids, 120)
    finally:
        collector.close()
    assert all(r.status == "ok" for rs in results.values() for r in rs)


def drift_when(client: Client, rows: int) -> dict[str, Any]:
    """The model's figures once both versions' drift covers ``rows`` inputs and answers."""

    def covered() -> dict[str, Any] | None:
        (fig,) = client.rollout_status(MODEL)
        drift = fig.get("drift", {})
        done = len(drift) == 2 and all(
            d is not None and d["rows"] >= rows and d["outputs"] >= rows for d in drift.values()
        )
        return fig if done else None

    return wait_until(covered, f"both versions' drift covers {rows} requests", 90, every_s=0.5)


def test_drift_per_version_is_none_on_training_rows_and_significant_on_shifted_ones(
    running: tuple[Settings, Client],
) -> None:
    settings, client = running
    # Two versions stored by real training jobs; the first served by hand.
    first = client.train("breast_cancer.train", n_estimators=20, progress=False, timeout_s=180)
    second = client.train("breast_cancer.train", n_estimators=3, progress=False, timeout_s=180)
    assert first.status == second.status == "ok", (first.error, second.error)
    served, candidate = first.result["version"], second.result["version"]
    client.promote(MODEL, served)
    client.start_rollout(MODEL, candidate, "shadow")
    wait_until(
        lambda: client.rollout_status(MODEL)[0]["rollout"] is not None,
        "the rollout is on the models topic",
        30,
    )

    # The training rows themselves: each version's traffic is its training data exactly.
    x_train = training_rows()
    n = len(x_train)
    answer(settings, x_train, "train")
    fig = drift_when(client, n)
    assert fig["served"] == served
    assert fig["rollout"]["candidate"] == candidate
    for version in (served, candidate):
        d = fig["drift"][version]
        assert d["rows"] == n, version  # a shadow's inputs are the served version's
        assert d["outputs"] == n, version
        assert d["mismatched"] == 0
        assert len(d["features"]) == 30
        # Same rows as the reference, same predictions: no drift at all (the reference's
        # shares are rounded to 6 digits).
        assert d["max_psi"] < 1e-3, (version, d)
        assert d["output_psi"] < 1e-3, (version, d)
        assert d["level"] == "stable"

    # The same rows, every measurement three times larger: half the window is far off.
    answer(settings, x_train * 3.0, "shifted")
    fig = drift_when(client, 2 * n)
    for version in (served, candidate):
        d = fig["drift"][version]
        assert d["rows"] == 2 * n, version
        assert d["max_psi"] > SIGNIFICANT, (version, d)
        assert all(p > MODERATE for p in d["features"]), (version, d)
        # The shifted rows are all called malignant: the label shares moved too.
        assert d["output_psi"] > MODERATE, (version, d)
        assert d["level"] == "significant"
        print(
            f"\n{version}: max feature PSI {d['max_psi']:.3f} (feature {d['max_feature']}), "
            f"output PSI {d['output_psi']:.3f} over {d['rows']} rows"
        )

    # `rayml rollout status` says the same, a line per version.
    from typer.testing import CliRunner

    from rayml.cli.main import app

    run = CliRunner().invoke(
        app,
        ["rollout", "status", MODEL, "--bootstrap-servers", settings.kafka.bootstrap_servers],
        env={
            "RAYML_TOPICS__MODELS": settings.topics.models,
            "RAYML_TOPICS__SHADOW": settings.topics.shadow,
            "RAYML_TOPICS__FEEDBACK": settings.topics.feedback,
            "RAYML_MODELS__ROOT": settings.models.root,
        },
    )
    assert run.exit_code == 0, run.output
    for version in (served, candidate):
        d = fig["drift"][version]
        line = f"  {version} drift: max feature PSI {d['max_psi']:.3f} (feature {d['max_feature']})"
        assert line in run.output, run.output
    assert run.output.count("[significant]") == 2, run.output
