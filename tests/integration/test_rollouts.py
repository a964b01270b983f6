"""Rollouts on the real broker and Ray (docs/rollouts.md): a shadow leaves callers' results
exactly as they were and puts one output per request on the shadow topic; a canary answers its
share of requests, chosen by request id, the same side every time; with ground truth fed in, the
monitor promotes a better candidate and aborts a worse one by itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer

from rayml.client.promotion import promote, serving_records
from rayml.client.rollouts import start_rollout
from rayml.config import Settings
from rayml.executor.service import Executor
from rayml.kafka.topics import create_topics
from rayml.protocol.rollouts import goes_to_canary
from tests.support.kafka_io import CLIENT_LOG, ResultCollector, predict_request, send_requests
from tests.support.models import store_breast_cancer
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

MODEL = "breast_cancer"


def rows_and_labels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(seed).integers(0, len(x), size=n)
    return x[idx], y[idx]


@pytest.fixture
def two_versions(settings: Settings) -> tuple[Any, Any]:
    """Version 000001 (20 trees) served; version 000002 (1 tree) stored beside it."""
    _, served = store_breast_cancer(settings.models.root, n_estimators=20)
    _, candidate = store_breast_cancer(settings.models.root, n_estimators=1)
    create_topics(settings.kafka, settings.topics)
    promote(settings, MODEL, "000001")
    return served, candidate


@pytest.fixture
def executor(settings: Settings, ray_runtime: str, two_versions: Any) -> Iterator[Executor]:
    ex = Executor(settings)
    ex.start()
    try:
        yield ex
    finally:
        ex.drain(10)


def wait_for_rollout(executor: Executor, mode: str | None) -> None:
    def seen() -> bool:
        rollouts = [s.get("rollout", {}).get("under_rollout", {}) for s in executor.status()]
        if mode is None:
            return all(MODEL not in r for r in rollouts)
        return all(r.get(MODEL, {}).get("mode") == mode for r in rollouts)

    wait_until(seen, f"every ingest sees the {mode} rollout of {MODEL}", 30)


def read_shadow_topic(settings: Settings, want: int) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "logger": CLIENT_LOG,
            "group.id": f"shadow-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topics.shadow])
    got: list[dict[str, Any]] = []

    def enough() -> bool:
        got.extend(
            json.loads(m.value()) for m in consumer.consume(500, timeout=0.5) if not m.error()
        )
        return len(got) >= want

    try:
        wait_until(enough, f"{want} records are on the shadow topic", 90)
        # Nothing more comes (each request's answers are written once).
        got.extend(
            json.loads(m.value()) for m in consumer.consume(500, timeout=2.0) if not m.error()
        )
    finally:
        consumer.close()
    return got


def test_a_shadow_leaves_callers_results_as_they_were_and_records_one_output_per_request(
    settings: Settings, executor: Executor, two_versions: tuple[Any, Any]
) -> None:
    served, candidate = two_versions
    start_rollout(settings, MODEL, "000002", "shadow")
    wait_for_rollout(executor, "shadow")
    n = 120
    rows, _ = rows_and_labels(n, seed=3)
    ids = [f"s{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
    send_requests(
        settings, [predict_request(i, r.tolist()) for i, r in zip(ids, rows, strict=True)]
    )
    collector = ResultCollector(settings)
    try:
        results = collector.wait_for(ids, 120)
    finally:
        collector.close()

    # Callers get exactly what the served version says, as if there were no shadow.
    want = served.predict_proba(rows)
    for i, rid in enumerate(ids):
        (result,) = results[rid]
        got = result.model_dump(mode="json", exclude={"timings"})
        assert got == {
            "v": 1,
            "id": rid,
            "pipeline": "breast_cancer.predict",
            "status": "ok",
            "result": {"label": int(want[i].argmax()), "probability": result.result["probability"]},
            "error": None,
            "model": {"name": MODEL, "version": "000001"},
            "attempts": 1,
            "tenant": "default",
        }, rid
        assert result.result["probability"] == pytest.approx(float(want[i].max()), abs=1e-6)

    # The shadow topic: per request, one shadow output (the candidate's own prediction) and
    # the serving version's answer beside it.
    records = read_shadow_topic(settings, 2 * n)
    shadow = [r for r in records if r["role"] == "shadow"]
    serving = [r for r in records if r["role"] == "serving"]
    assert sorted(r["id"] for r in shadow) == sorted(ids)
    assert sorted(r["id"] for r in serving) == sorted(ids)
    assert len(records) == 2 * n
    expected = candidate.predict_proba(rows).argmax(axis=1)
    by_id = {r["id"]: r for r in shadow}
    for i, rid in enumerate(ids):
        assert by_id[rid]["version"] == "000002"
        assert by_id[rid]["status"] == "ok"
        assert by_id[rid]["output"]["label"] == int(expected[i]), rid
    assert {r["version"] for r in serving} == {"000001"}
    (status,) = executor.status()
    assert status["rollout"]["shadow_sent"] == n
    assert status["rollout"]["shadow_skipped"] == 0


def test_a_canary_answers_its_share_by_request_id_the_same_side_every_time(
    settings: Settings, executor: Executor
) -> None:
    start_rollout(settings, MODEL, "000002", "canary", fraction=0.2)
    wait_for_rollout(executor, "canary")
    n = 500
    rows, _ = rows_and_labels(n, seed=4)
    ids = [uuid.uuid4().hex for _ in range(n)]
    requests = [predict_request(i, r.tolist()) for i, r in zip(ids, rows, strict=True)]
    send_requests(settings, requests)
    collector = ResultCollector(settings)
    try:
        first = collector.wait_for(ids, 120)
        # Sent again (a retry has the same id): each lands on the same side.
        send_requests(settings, requests)
        wait_until(
            lambda: collector.poll() >= 0 and all(len(collector.results[i]) == 2 for i in ids),
            "every request is answered twice",
            120,
        )
    finally:
        collector.close()
    side = {rid: {r.model.version for r in first[rid]} for rid in ids}  # type: ignore[union-attr]
    assert all(len(v) == 1 for v in side.values()), "one version per request id, every time"
    canary = {rid for rid, v in side.items() if v == {"000002"}}
    # Which requests: exactly those the stable hash of the id sends to the canary...
    assert canary == {rid for rid in ids if goes_to_canary(rid, 0.2)}
    # ...about a fifth of them (binomial(500, 0.2): mean 100, sd ~8.9; 4 sd either way).
    assert 64 <= len(canary) <= 136, len(canary)
    assert all(r.status == "ok" for rs in first.values() for r in rs)

    records = serving_records(settings)
    assert records[MODEL].version == "000001"
    assert records[MODEL].rollout is not None
    assert records[MODEL].rollout.fraction == 0.2


def send_labels(settings: Settings, labels: dict[str, int]) -> None:
    producer = Producer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "logger": CLIENT_LOG}
    )
    for rid, label in labels.items():
        producer.produce(
            settings.topics.feedback,
            key=rid.encode(),
            value=json.dumps({"id": rid, "label": label}).encode(),
        )
    assert producer.flush(30) == 0


def store_flipped(settings: Settings) -> str:
    """A version that predicts the opposite class: far worse than any honest model."""
    from sklearn.datasets import load_breast_cancer
    from xgboost import XGBClassifier

    from rayml.models.store import ModelStore

    x, y = load_breast_cancer(return_X_y=True)
    model = XGBClassifier(n_estimators=5, max_depth=2, nthread=1).fit(x, 1 - y)
    return (
        ModelStore(settings.models.root)
        .save(MODEL, model, pipeline="breast_cancer.train", params={"flipped": True}, metrics={})
        .version
    )


@pytest.fixture
def deciding(settings: Settings, ray_runtime: str) -> Iterator[tuple[Settings, Executor]]:
    """An executor whose monitor decides after 40 labels per version (compute times not
    compared: this 2-core machine's timings would make the test about noise)."""
    s = settings.model_copy(
        update={
            "rollout": settings.rollout.model_copy(
                update={
                    "min_labels": 40,
                    "tolerance": 0.03,
                    "max_p99_ratio": 1000.0,
                    "interval_s": 0.5,
                }
            )
        }
    )
    store_breast_cancer(s.models.root, n_estimators=20)
    create_topics(s.kafka, s.topics)
    promote(s, MODEL, "000001")
    ex = Executor(s)
    ex.start()
    try:
        yield s, ex
    finally:
        ex.drain(10)


def answered_and_labelled(settings: Settings, n: int, seed: int) -> None:
    rows, labels = rows_and_labels(n, seed)
    ids = [f"l{seed}-{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
    send_requests(
        settings, [predict_request(i, r.tolist()) for i, r in zip(ids, rows, strict=True)]
    )
    collector = ResultCollector(settings)
    try:
        collector.wait_for(ids, 120)
    finally:
        collector.close()
    # Ground truth comes later, from another producer, in another order.
    send_labels(
        settings, {rid: int(label) for rid, label in reversed(list(zip(ids, labels, strict=True)))}
    )


def test_with_labels_a_worse_candidate_is_aborted_and_a_better_one_promoted_by_the_policy(
    deciding: tuple[Settings, Executor],
) -> None:
    settings, executor = deciding
    from typer.testing import CliRunner

    from rayml.cli.main import app

    # A shadow of a version that gets every label wrong: aborted.
    flipped = store_flipped(settings)
    start_rollout(settings, MODEL, flipped, "shadow")
    wait_for_rollout(executor, "shadow")
    answered_and_labelled(settings, 60, seed=5)
    aborted = wait_until(
        lambda: (r := serving_records(settings)[MODEL]).action == "rollout_aborted" and r,
        "the monitor aborts the worse candidate",
        60,
    )
    assert aborted.version == "000001"
    assert aborted.rollout is None
    assert aborted.reason is not None
    assert aborted.reason.startswith(f"shadow rollout of {flipped}: accuracy 0")
    assert " < " in aborted.reason.split(";")[0]
    wait_for_rollout(executor, None)

    # A canary of an honest version as good as the served one (within the tolerance): promoted.
    better, _ = store_breast_cancer(settings.models.root, n_estimators=40)
    start_rollout(settings, MODEL, better.version, "canary", fraction=0.5)
    wait_for_rollout(executor, "canary")
    answered_and_labelled(settings, 240, seed=6)
    promoted = wait_until(
        lambda: (r := serving_records(settings)[MODEL]).action == "promoted" and r,
        "the monitor promotes the better candidate",
        60,
    )
    assert promoted.version == better.version
    assert promoted.previous[-1] == "000001"
    assert promoted.rollout is None
    assert promoted.reason is not None
    assert promoted.reason.startswith(f"canary rollout of {better.version}: accuracy ")

    # The decision is in `rayml rollout status`, with the figures it was taken on.
    run = CliRunner().invoke(
        app,
        [
            "rollout",
            "status",
            MODEL,
            "--json",
            "--bootstrap-servers",
            settings.kafka.bootstrap_servers,
        ],
        env={
            "RAYML_TOPICS__MODELS": settings.topics.models,
            "RAYML_TOPICS__SHADOW": settings.topics.shadow,
            "RAYML_TOPICS__FEEDBACK": settings.topics.feedback,
        },
    )
    assert run.exit_code == 0, run.output
    (shown,) = json.loads(run.output)
    assert shown["served"] == better.version
    assert shown["last_action"]["action"] == "promoted"
    assert shown["last_action"]["reason"] == promoted.reason
    canary_figures = shown["versions"][better.version]
    assert canary_figures["labelled"] >= 40
    assert canary_figures["accuracy"] >= 0.9
