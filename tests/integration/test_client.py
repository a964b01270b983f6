"""The Python client against the real broker and an in-process executor on a real local Ray.

One executor serves the whole module (its topics are the module's own); every test makes its own
clients, so each has its own reply topic, as clients in the field do.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from rayml import AsyncClient, Client
from rayml.client.errors import BrokerUnreachableError, ClientClosedError, ResultTimeoutError
from rayml.config import Settings
from rayml.errors import InvalidParamsError, InvalidRequestError, UnknownPipelineError
from rayml.kafka.topics import create_topics
from rayml.localkafka import free_port
from tests.support.models import breast_cancer_rows
from tests.support.served import module_settings, serving

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

PREDICT = "breast_cancer.predict"


@pytest.fixture(scope="module")
def served(
    bootstrap_servers: str, ray_runtime: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Any]]:
    """An executor serving the module's topics, with the example model stored."""
    settings = module_settings(
        {"bootstrap_servers": bootstrap_servers},
        tmp_path_factory.mktemp("client"),
        "c",
        training={"progress_interval_s": 0.2},
    )
    with serving(settings) as model:
        yield settings, model


def expected(model: Any, rows: np.ndarray) -> list[tuple[int, float]]:
    proba = model.predict_proba(rows)
    return [(int(p.argmax()), float(p.max())) for p in proba]


def input_end(settings: Settings) -> int:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    meta = admin.list_topics(settings.topics.input, timeout=10).topics[settings.topics.input]
    from confluent_kafka import Consumer

    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "probe"}
    )
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(settings.topics.input, p), timeout=10)[1]
            for p in meta.partitions
        )
    finally:
        consumer.close()


def topic_exists(settings: Settings, topic: str) -> bool:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    return topic in admin.list_topics(timeout=10).topics


def test_submit_round_trip_on_own_reply_topic(served: tuple[Settings, Any]) -> None:
    settings, model = served
    rows = breast_cancer_rows(3, seed=1)
    with Client(settings=settings) as client:
        futures = [client.submit(PREDICT, features=row) for row in rows]  # numpy rows are fine
        results = [f.result(timeout=60) for f in futures]
        reply_topic = client.reply_topic
        assert topic_exists(settings, reply_topic)
        stats = client.stats()
    for future, result, (label, proba) in zip(futures, results, expected(model, rows), strict=True):
        assert result.id == future.request_id
        assert result.status == "ok", result.error
        assert result.result["label"] == label
        assert result.result["probability"] == pytest.approx(proba, abs=1e-6)
        assert future.latency_s is not None
        assert future.latency_s > 0
    assert stats["completed"] == 3
    assert stats["foreign"] == 0
    assert reply_topic.startswith(f"{settings.topics.input}.reply.")
    assert not topic_exists(settings, reply_topic), "own reply topic is deleted on close"


def test_a_client_dropped_without_close_still_deletes_its_reply_topic(
    served: tuple[Settings, Any],
) -> None:
    settings, _model = served
    client = Client(settings=settings)
    client.start_replies()
    topic = client.reply_topic
    assert topic_exists(settings, topic)
    del client  # a notebook cell run twice, a script that forgot close()
    gc.collect()
    assert not topic_exists(settings, topic)


def test_invalid_params_are_rejected_before_sending(served: tuple[Settings, Any]) -> None:
    settings, _model = served
    with Client(settings=settings) as client:
        client.pipelines()
        before = input_end(settings)
        with pytest.raises(InvalidParamsError) as excinfo:
            client.submit(PREDICT, features=[1.0, 2.0])
        assert "params.features" in str(excinfo.value)
        assert "expected at least 30 items, got 2" in str(excinfo.value)
        assert excinfo.value.details["errors"][0]["field"] == "params.features"
        with pytest.raises(InvalidParamsError, match=r"params\.feature: unexpected field"):
            client.submit(PREDICT, feature=[1.0] * 30)
        with pytest.raises(InvalidParamsError, match="NaN"):
            client.submit(PREDICT, features=[float("nan")] * 30)
        with pytest.raises(UnknownPipelineError, match=r"no_such\.pipeline"):
            client.submit("no_such.pipeline", x=1)
        with pytest.raises(InvalidRequestError, match="inference pipeline"):
            client.train(PREDICT, features=[1.0] * 30)
        assert input_end(settings) == before, "nothing was sent"
        # The executor validates too: skipping the client's check gets an error *result*.
        result = client.request(PREDICT, {"features": [1.0]}, validate=False).result(60)
        assert result.status == "error"
        assert result.error is not None
        assert result.error.type == "invalid_params"


def test_unreachable_broker_fails_fast_naming_the_servers() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerUnreachableError) as excinfo:
        Client(address, connect_timeout_s=1.5)
    assert time.monotonic() - started < 10
    assert address in str(excinfo.value)
    assert excinfo.value.bootstrap_servers == address


def test_result_timeout_is_a_clear_error(settings: Settings) -> None:
    # This test's own topics, which no executor serves: delivered, never answered.
    create_topics(settings.kafka, settings.topics)
    with Client(settings=settings, validate=False) as client:
        future = client.submit(PREDICT, features=[1.0] * 30)
        with pytest.raises(ResultTimeoutError) as excinfo:
            future.result(timeout=0.5)
        assert isinstance(excinfo.value, TimeoutError)
        assert future.request_id in str(excinfo.value)
        with pytest.raises(ResultTimeoutError, match="2 request"):
            client.submit_many(PREDICT, [{"features": [1.0] * 30}] * 2, timeout_s=0.5)
    with pytest.raises(ClientClosedError):
        future.result(timeout=1)
    with pytest.raises(ClientClosedError):
        client.submit(PREDICT, features=[1.0] * 30)


def test_pipelines_lists_the_examples_with_schemas(served: tuple[Settings, Any]) -> None:
    settings, _model = served
    with Client(settings=settings) as client:
        pipelines = {p.name: p for p in client.pipelines()}
    assert {"breast_cancer.predict", "breast_cancer.train", "iris.predict", "iris.train"} <= set(
        pipelines
    )
    predict = pipelines[PREDICT]
    assert predict.kind == "inference"
    assert predict.model == "breast_cancer"
    assert predict.required == ["features"]
    assert predict.fields["features"]["minItems"] == 30
    assert pipelines["iris.predict"].fields["features"]["maxItems"] == 4
    train = pipelines["breast_cancer.train"]
    assert train.kind == "training"
    assert train.metric == "accuracy"
    assert "n_estimators" in train.fields


def test_ten_concurrent_clients_each_get_exactly_their_own_results(
    served: tuple[Settings, Any],
) -> None:
    settings, model = served
    per_client = 60
    rows = breast_cancer_rows(10 * per_client, seed=2)
    want = expected(model, rows)
    outcome: dict[int, Any] = {}

    def run(n: int) -> None:
        try:
            mine = rows[n * per_client : (n + 1) * per_client]
            with Client(settings=settings) as client:
                results = client.submit_many(
                    PREDICT,
                    [{"features": row} for row in mine],
                    max_in_flight=16,
                    progress=False,
                    timeout_s=90,
                )
                outcome[n] = (results, client.stats())
        except BaseException as exc:  # reported by the main thread
            outcome[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    seen_ids: set[str] = set()
    for n in range(10):
        got = outcome[n]
        assert not isinstance(got, BaseException), got
        results, stats = got
        assert len(results) == per_client
        assert stats["completed"] == per_client
        assert stats["in_flight"] == 0
        assert stats["foreign"] == 0, "a client read only its own reply topic"
        for i, result in enumerate(results):
            assert result.status == "ok", result.error
            label, proba = want[n * per_client + i]
            assert (result.result["label"], result.result["probability"]) == (
                label,
                pytest.approx(proba, abs=1e-6),
            ), "each result belongs to the request in its place"
            assert result.id not in seen_ids
            seen_ids.add(result.id)
    assert len(seen_ids) == 10 * per_client


def test_clients_sharing_a_reply_topic_get_only_their_own(served: tuple[Settings, Any]) -> None:
    settings, _model = served
    shared = f"{settings.topics.input}.shared-replies"
    rows = [{"features": row} for row in breast_cancer_rows(20, seed=3)]
    with (
        Client(settings=settings, reply_topic=shared) as a,
        Client(settings=settings, reply_topic=shared) as b,
    ):
        a.start_replies()
        b.start_replies()  # both read the topic from here on
        futures_a = [a.request(PREDICT, r) for r in rows]
        futures_b = [b.request(PREDICT, r) for r in rows]
        ids_a = {f.result(60).id for f in futures_a}
        ids_b = {f.result(60).id for f in futures_b}
        assert ids_a == {f.request_id for f in futures_a}
        assert ids_b == {f.request_id for f in futures_b}
        deadline = time.monotonic() + 5
        while a.stats()["foreign"] + b.stats()["foreign"] < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert a.stats()["foreign"] == 20
        assert b.stats()["foreign"] == 20
    assert topic_exists(settings, shared), "a given reply topic is never deleted"


def test_async_client(served: tuple[Settings, Any]) -> None:
    settings, model = served
    rows = breast_cancer_rows(20, seed=4)

    async def main() -> tuple[list[Any], list[str], Any]:
        async with AsyncClient(settings=settings) as client:
            results = await asyncio.gather(
                *(client.submit(PREDICT, features=row.tolist(), timeout_s=60) for row in rows)
            )
            names = [p.name for p in await client.pipelines()]
            batch = await client.submit_many(
                PREDICT, [{"features": r} for r in rows[:5]], progress=False
            )
            return list(results), names, batch

    results, names, batch = asyncio.run(main())
    assert PREDICT in names
    for result, (label, _proba) in zip(results, expected(model, rows), strict=True):
        assert result.status == "ok"
        assert result.result["label"] == label
    assert [r.result["label"] for r in batch] == [label for label, _ in expected(model, rows[:5])]


@pytest.mark.slow
def test_train_follows_progress_then_models_lists_the_version(
    served: tuple[Settings, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    settings, _model = served
    with Client(settings=settings) as client:
        result = client.train("breast_cancer.train", n_estimators=20, timeout_s=120)
        assert result.status == "ok", result.error
        version = result.result["version"]
        assert result.result["metrics"]["accuracy"] > 0.85
        job = client.train("breast_cancer.train", n_estimators=10, wait=False)
        second = job.wait(timeout_s=120, progress=False)
        assert second.status == "ok"
        assert job.done()
        models = {m.name: m for m in client.models()}
    assert "breast_cancer" in models
    assert models["breast_cancer"].version == second.result["version"] > version
    err = capsys.readouterr().err
    assert "breast_cancer.train" in err, "the progress bar was drawn"
    assert "100%" in err
