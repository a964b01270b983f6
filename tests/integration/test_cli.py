"""The command line against a running executor: submit --wait, pipelines, status, models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayml.config import Settings
from rayml.executor.service import Executor
from rayml.kafka.topics import create_topics
from tests.support.executor_process import REPO, settings_env
from tests.support.models import breast_cancer_rows, store_breast_cancer

pytestmark = [pytest.mark.kafka, pytest.mark.ray]


@pytest.fixture
def running(settings: Settings, ray_runtime: str) -> Iterator[Settings]:
    ex = settings.executor.model_copy(update={"worker_num_cpus": 0.5, "num_workers": 1})
    settings = settings.model_copy(update={"executor": ex})
    create_topics(settings.kafka, settings.topics)
    store_breast_cancer(settings.models.root, n_estimators=5)
    executor = Executor(settings)
    executor.start()
    try:
        yield settings
    finally:
        executor.drain(10)


def rayml(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # The caller's environment (Ray's auth token mode, HOME...) without its RAYML_* settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYML_")}
    env.update({"PYTHONPATH": str(REPO), **settings_env(settings)})
    return subprocess.run(
        [sys.executable, "-m", "rayml.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        check=False,
    )


def test_submit_wait_prints_the_result(running: Settings) -> None:
    row = breast_cancer_rows(1)[0].tolist()
    done = rayml(
        running,
        "submit",
        "breast_cancer.predict",
        "--params",
        json.dumps({"features": row}),
        "--wait",
        "--id",
        "cli-1",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["id"] == "cli-1"
    assert result["status"] == "ok"
    assert result["result"]["label"] in (0, 1)


def test_submit_bad_params_exits_nonzero_naming_the_field(running: Settings) -> None:
    done = rayml(
        running, "submit", "breast_cancer.predict", "--params", '{"features": [1]}', "--wait"
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["type"] == "invalid_params"
    bad_json = rayml(running, "submit", "breast_cancer.predict", "--params", "{nope")
    assert bad_json.returncode == 2
    assert "not JSON" in bad_json.stderr


def test_pipelines_and_status(running: Settings, ray_runtime: str) -> None:
    listed = rayml(running, "pipelines", "--json")
    assert listed.returncode == 0, listed.stderr
    names = {p["name"] for p in json.loads(listed.stdout)}
    assert {"breast_cancer.predict", "iris.predict", "breast_cancer.train"} <= names

    status = rayml(running, "status", "--json", "--ray-address", ray_runtime)
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    # Both lanes of the input: the interactive topic and the bulk one beside it.
    assert len(summary["lag"]["partitions"]) == 2 * running.topics.input_partitions
    assert {p["topic"] for p in summary["lag"]["partitions"]} == {
        running.topics.input,
        running.topics.input_batch,
    }
    assert summary["executors"]["ingest_actors"] == 1, status.stderr[-3000:]
    assert summary["executors"]["pool_size"] == 1
    assert summary["executors"]["workers_starting"] == 0
    assert summary["executors"]["out_of_group"] == 0


def test_bad_setting_fails_naming_the_field(running: Settings, tmp_path: Path) -> None:
    bad = running.model_copy(
        update={"executor": running.executor.model_copy(update={"max_batch_size": 0})}
    )
    done = rayml(bad, "topics", "create")
    assert done.returncode == 2
    assert "executor.max_batch_size" in done.stderr
