"""The promotion gate, pins and retention end to end: the real broker, a real local Ray, the
``rayml models`` command line as a separate process.

One scenario, in order: a good version is trained and served; a worse one is stored, not served,
and its result says why; an unpromoted pin is refused and an unknown one answered
``version_not_found`` from the workers' cache; ``promote`` serves the worse one; ``rollback``
serves the good one again within a bound; ``gc`` keeps the promoted versions and the newest N.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rayml.cli.training import follow_job
from rayml.config import Settings
from rayml.executor.service import Executor
from rayml.kafka.topics import create_topics
from rayml.models.store import ModelStore
from rayml.protocol.envelopes import Request, Result
from tests.support.executor_process import REPO, settings_env
from tests.support.kafka_io import ResultCollector, send_requests
from tests.support.promotion_pipelines import MODEL
from tests.support.waiting import Budget

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

ROW = [5.1, 3.5, 1.4, 0.2]
#: The bound on a rollback reaching every batch the executor dispatches (docs/training.md).
ROLLBACK_BOUND_S = 5.0


@pytest.fixture
def running(settings: Settings, ray_runtime: str) -> Iterator[tuple[Executor, Settings]]:
    tag = settings.topics.input.rsplit(".", 1)[0]
    topics = settings.topics.model_copy(
        update={"events": f"{tag}.events", "input_partitions": 1, "jobs_partitions": 1}
    )
    executor = settings.executor.model_copy(
        update={
            "worker_num_cpus": 0.5,
            "num_workers": 2,
            "drain_timeout_s": 10.0,
            "max_batch_wait_ms": 1.0,
            "pipeline_modules": ["tests.support.promotion_pipelines"],
        }
    )
    settings = settings.model_copy(update={"topics": topics, "executor": executor})
    create_topics(settings.kafka, settings.topics)
    ex = Executor(settings)
    ex.start()
    try:
        yield ex, settings
    finally:
        ex.drain(10)


def rayml(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``rayml ARGS`` in a process of its own, with the test's settings as RAYML_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYML_")}
    env.update({"PYTHONPATH": str(REPO), **settings_env(settings)})
    done = subprocess.run(
        [sys.executable, "-m", "rayml.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done


def train(settings: Settings, **params: Any) -> Result:
    request = Request(
        id=f"train-{uuid.uuid4().hex[:8]}", pipeline="testing.train_promo", params=params
    )
    result = follow_job(settings, request, timeout_s=90)
    assert result.status == "ok", result.error
    return result


class Predictor:
    """Sends prediction requests in waves and reads their results."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.results = ResultCollector(settings)

    def wave(self, n: int = 1, **extra: Any) -> list[Result]:
        ids = [f"p-{uuid.uuid4().hex[:10]}" for _ in range(n)]
        send_requests(
            self.settings,
            [
                {"id": i, "pipeline": "testing.predict_promo", "params": {"features": ROW}, **extra}
                for i in ids
            ],
        )
        got = self.results.wait_for(ids, 60)
        return [got[i][0] for i in ids]

    def version(self) -> str:
        (result,) = self.wave()
        assert result.status == "ok", result.error
        assert result.model is not None
        return result.model.version

    def close(self) -> None:
        self.results.close()


def worker_totals(executor: Executor) -> dict[str, int]:
    workers = [w for ingest in executor.status() for w in ingest["workers"]]
    assert len(workers) == 2
    keys = ("batches", "version_checks", "versions_refused")
    return {k: sum(w[k] for w in workers) for k in keys}


def test_a_worse_version_is_stored_not_served_until_promoted_and_rollback_is_quick(
    running: tuple[Executor, Settings],
) -> None:
    executor, settings = running
    budget = Budget(280)
    store = ModelStore(settings.models.root)
    predict = Predictor(settings)
    try:
        good = train(settings)
        assert good.result["promoted"] is True
        assert good.result["promotion"] == "the first version of the model: nothing to compare"
        g = good.result["version"]
        assert predict.version() == g

        worse = train(settings, degrade=True)
        b = worse.result["version"]
        assert worse.model is not None
        assert worse.model.version == b == "000002"
        assert worse.result["promoted"] is False
        assert re.fullmatch(
            r"metric accuracy 0\.\d+ < 0\.98\d* of served version 000001: stored, not served",
            worse.result["promotion"],
        ), worse.result["promotion"]
        assert worse.result["metrics"]["accuracy"] < good.result["metrics"]["accuracy"]
        assert [v.version for v in store.versions(MODEL)] == [g, b]
        assert store.promoted_versions(MODEL) == {g}
        # Right after its result, inference is still answered by the good version.
        assert {r.model.version for r in predict.wave(20) if r.model} == {g}

        # A pin of the unpromoted version is refused, naming it.
        (refused,) = predict.wave(1, model_version=b)
        assert refused.status == "error"
        assert refused.error is not None
        assert refused.error.type == "version_not_allowed"
        assert refused.error.details == {"model": MODEL, "version": b}

        # A pin of a version that does not exist: version_not_found, from the workers' cache,
        # at most one store read per worker and version_check_ttl_s, not one per batch.
        ttl = settings.models.version_check_ttl_s
        before = worker_totals(executor)
        started = time.monotonic()
        for _ in range(25):
            for result in predict.wave(2, model_version="999999"):
                assert result.error is not None
                assert result.error.type == "version_not_found"
                assert result.error.details == {"model": MODEL, "version": "999999"}
        elapsed = time.monotonic() - started
        after = worker_totals(executor)
        batches = after["batches"] - before["batches"]
        reads = after["version_checks"] - before["version_checks"]
        assert batches >= 25  # a wave is answered before the next is sent: a batch or more each
        assert after["versions_refused"] - before["versions_refused"] == batches
        assert 1 <= reads <= 2 * (int(elapsed / ttl) + 1), (reads, batches, elapsed)
        print(f"\n50 unknown pins: {batches} batches, {reads} store reads in {elapsed:.1f}s")

        # promote: the worse one is served; and may be pinned now.
        rayml(settings, "models", "promote", MODEL, b)
        deadline = time.monotonic() + budget.left(10)
        while predict.version() != b:
            assert time.monotonic() < deadline, "promote did not take effect within 10s"
        assert {r.status for r in predict.wave(20)} == {"ok"}  # no worker refuses it
        assert {r.model.version for r in predict.wave(2, model_version=b) if r.model} == {b}

        # rollback: every batch is on the good version again within the bound.
        out = rayml(settings, "models", "rollback", MODEL).stdout
        assert f"serving {g} (rolled back from {b})" in out
        rolled = time.monotonic()
        while {r.model.version for r in predict.wave(4) if r.model} != {g}:
            assert time.monotonic() - rolled < ROLLBACK_BOUND_S, "rollback too slow"
        switch_s = time.monotonic() - rolled
        assert {r.model.version for r in predict.wave(40) if r.model} == {g}
        print(f"rollback: every batch on {g} {switch_s:.2f}s after `rayml models rollback`")

        # gc: the promoted ones and the newest N stay; unpromoted old versions go.
        from sklearn.linear_model import LogisticRegression

        est = LogisticRegression().fit([[0.0] * 4, [1.0] * 4], [0, 1])
        for n in range(3):  # versions jobs stored that the gate held back: 000003-5
            store.save(MODEL, est, pipeline="p", params={}, metrics={}, extra={"job_id": f"x{n}"})
        dry = json.loads(
            rayml(settings, "models", "gc", "--dry-run", "--keep", "1", "--json").stdout
        )
        assert dry == {"dry_run": True, "deleted": {MODEL: ["000003", "000004"]}}
        rayml(settings, "models", "gc", "--keep", "1")
        assert [v.version for v in store.versions(MODEL)] == [g, b, "000005"]
        assert predict.version() == g
        listed = json.loads(rayml(settings, "models", MODEL, "--json").stdout)
        assert [(r["version"], r["served"], r["promoted"]) for r in listed] == [
            (g, True, True),
            (b, False, True),
            ("000005", False, False),
        ]
    finally:
        predict.close()
