"""Trust boundaries on a plain broker (no ACLs; the secure-broker versions are in
test_secure_kafka.py): two configured tenants, and the single-tenant default.

One executor serves two tenants with topics of their own (created here):

* team-a: inference ``a.in``, training ``a.train``, results ``a.out``, replies under
  ``a.replies.``, every pipeline;
* team-b: inference ``b.in``, no training topic, results ``b.out``, replies under ``b.replies.``,
  only the ``breast_cancer.*`` pipelines.

What each test holds (docs/security.md's threat table points here): a tenant's results land on
its own result topic, echoing its name; a ``reply_to`` naming another tenant's reply topic or
any of rayml's own topics is answered ``reply_to_refused`` on the tenant's result topic and the
named topic gets *no record* (its end offsets are counted before and after); a ``tenant`` field
that disagrees with the topic is refused; training on an inference topic is refused naming the
training topic; a tenant without a training topic cannot train; a pipeline outside a tenant's
patterns is refused without naming the others; the error result of a worker death carries no
address, pid or Ray id.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from rayml.config import Settings, load_settings
from rayml.executor.service import Executor
from rayml.kafka.topics import create_topics
from rayml.protocol.envelopes import Result
from tests.support.kafka_io import ResultCollector, predict_request, send_requests
from tests.support.models import breast_cancer_rows, store_breast_cancer

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

OWN_ROLES = ("registry", "models", "dlq", "jobs", "input", "output", "events")


def _tenant_settings(bootstrap: str, root: Path, tag: str) -> Settings:
    def t(name: str) -> str:
        return f"{tag}.{name}"

    return load_settings(
        state_dir=root / "state",
        kafka={"bootstrap_servers": bootstrap},
        topics={
            **{role: t(f"rayml.{role}") for role in OWN_ROLES},
            "input_partitions": 1,
            "output_partitions": 1,
            "jobs_partitions": 1,
        },
        executor={
            "group_id": f"g-{tag}",
            "jobs_group_id": f"j-{tag}",
            "worker_num_cpus": 0.5,
            "num_workers": 1,
            "max_attempts": 2,
            "max_batch_wait_ms": 20.0,
            "drain_timeout_s": 10.0,
            "pipeline_modules": ["tests.support.executor_pipelines"],
        },
        training={"progress_interval_s": 0.5},
        models={"root": str(root / "models")},
        tenants=[
            {
                "name": "team-a",
                "input_topic": t("a.in"),
                "training_topic": t("a.train"),
                "result_topic": t("a.out"),
                "reply_prefix": t("a.replies."),
            },
            {
                "name": "team-b",
                "input_topic": t("b.in"),
                "result_topic": t("b.out"),
                "reply_prefix": t("b.replies."),
                "pipelines": ["breast_cancer.*"],
            },
        ],
    )


def _create(settings: Settings, names: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for future in admin.create_topics([NewTopic(n, 1, 1) for n in names]).values():
        future.result(30)


@pytest.fixture(scope="module")
def served(
    bootstrap_servers: str, ray_runtime: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, dict[str, str]]]:
    """One executor for both tenants; yields the settings and the tenants' topic names."""
    tag = f"tn-{uuid.uuid4().hex[:8]}"
    settings = _tenant_settings(bootstrap_servers, tmp_path_factory.mktemp("tenants"), tag)
    names = {
        n: f"{tag}.{n}"
        for n in ("a.in", "a.train", "a.out", "b.in", "b.out", "a.replies.svc", "b.replies.svc")
    }
    create_topics(settings.kafka, settings.topics)
    _create(settings, list(names.values()))
    store_breast_cancer(settings.models.root, n_estimators=5)
    executor = Executor(settings)
    executor.start()
    try:
        yield settings, names
    finally:
        executor.drain(10)


def _ends(settings: Settings, topics: list[str]) -> dict[str, int]:
    """Records ever written to each topic (the sum of its partitions' end offsets)."""
    probe = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "ends-probe"}
    )
    try:
        ends = {}
        for topic in topics:
            meta = probe.list_topics(topic, timeout=10).topics[topic]
            ends[topic] = sum(
                probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in meta.partitions
            )
        return ends
    finally:
        probe.close()


def _one(results: dict[str, list[Result]], rid: str) -> Result:
    (result,) = results[rid]
    return result


def _error_type(result: Result) -> str | None:
    return result.error.type if result.error else None


def test_each_tenants_results_land_on_its_own_result_topic(
    served: tuple[Settings, dict[str, str]],
) -> None:
    settings, t = served
    rows = [r.tolist() for r in breast_cancer_rows(10)]
    a_ids = [f"a-{i}" for i in range(10)]
    b_ids = [f"b-{i}" for i in range(10)]
    a_reply = f"a-r-{uuid.uuid4().hex[:6]}"
    a_out, b_out = ResultCollector(settings, t["a.out"]), ResultCollector(settings, t["b.out"])
    a_replies = ResultCollector(settings, t["a.replies.svc"])
    try:
        send_requests(
            settings, [predict_request(i, r) for i, r in zip(a_ids, rows, strict=True)], t["a.in"]
        )
        send_requests(
            settings, [predict_request(i, r) for i, r in zip(b_ids, rows, strict=True)], t["b.in"]
        )
        send_requests(
            settings,
            [predict_request(a_reply, rows[0], reply_to=t["a.replies.svc"], tenant="team-a")],
            t["a.in"],
        )
        got_a = a_out.wait_for(a_ids, 120)
        got_b = b_out.wait_for(b_ids, 120)
        got_reply = a_replies.wait_for([a_reply], 60)
        a_out.poll_until_quiet(1.0)
        b_out.poll_until_quiet(1.0)
        assert all(_one(got_a, i).status == "ok" for i in a_ids)
        assert {_one(got_a, i).tenant for i in a_ids} == {"team-a"}
        assert {_one(got_b, i).tenant for i in b_ids} == {"team-b"}
        assert _one(got_reply, a_reply).tenant == "team-a"
        assert set(b_ids).isdisjoint(a_out.results), "B's results never reach A's topic"
        assert set(a_ids).isdisjoint(b_out.results), "A's results never reach B's topic"
        assert a_reply not in a_out.results, "an authorised reply_to gets the result"
    finally:
        for c in (a_out, b_out, a_replies):
            c.close()


def test_a_reply_to_naming_another_tenant_or_raymls_own_topics_is_refused_and_gets_nothing(
    served: tuple[Settings, dict[str, str]],
) -> None:
    settings, t = served
    targets = {
        "b-replies": t["b.replies.svc"],
        "b-out": t["b.out"],
        "b-in": t["b.in"],
        "a-train": t["a.train"],
        **{role: getattr(settings.topics, role) for role in OWN_ROLES},
    }
    before = _ends(settings, list(targets.values()))
    row = breast_cancer_rows(1)[0].tolist()
    a_out = ResultCollector(settings, t["a.out"])
    try:
        # "id": "iris.predict" on the registry topic would shadow a pipeline's description.
        requests = [
            predict_request(
                f"rr-{name}" if name != "registry" else "iris.predict", row, reply_to=topic
            )
            for name, topic in targets.items()
        ]
        send_requests(settings, requests, t["a.in"])
        got = a_out.wait_for([r["id"] for r in requests], 120)
        after = _ends(settings, list(targets.values()))
    finally:
        a_out.close()
    for request in requests:
        result = _one(got, request["id"])
        assert _error_type(result) == "reply_to_refused", (request["reply_to"], result.error)
        assert result.error is not None
        assert result.error.details["rule"] == "reply_to"
        assert result.tenant == "team-a"
    refused_b = _one(got, "rr-b-replies").error
    assert refused_b is not None
    assert "reply prefix" in refused_b.message
    assert after == before, "nothing was written to any refused reply_to"


def test_a_tenant_field_that_disagrees_with_the_topic_is_refused(
    served: tuple[Settings, dict[str, str]],
) -> None:
    settings, t = served
    row = breast_cancer_rows(1)[0].tolist()
    b_out = ResultCollector(settings, t["b.out"])
    try:
        send_requests(settings, [predict_request("claims-a", row, tenant="team-a")], t["b.in"])
        result = _one(b_out.wait_for(["claims-a"], 60), "claims-a")
    finally:
        b_out.close()
    assert _error_type(result) == "tenant_mismatch"
    assert result.tenant == "team-b", "the tenant is the topic's, whatever the field says"


def test_training_belongs_on_the_training_topic_and_is_a_right_of_its_own(
    served: tuple[Settings, dict[str, str]],
) -> None:
    settings, t = served
    train = {"pipeline": "breast_cancer.train", "params": {"n_estimators": 3}}
    jobs_before = _ends(settings, [t["a.train"], settings.topics.jobs])
    a_out, b_out = ResultCollector(settings, t["a.out"]), ResultCollector(settings, t["b.out"])
    try:
        send_requests(settings, [{"id": "a-train-here", **train}], t["a.in"])
        send_requests(settings, [{"id": "b-train", **train}], t["b.in"])
        wrong = _one(a_out.wait_for(["a-train-here"], 60), "a-train-here")
        cannot = _one(b_out.wait_for(["b-train"], 60), "b-train")
        assert _ends(settings, [t["a.train"], settings.topics.jobs]) == jobs_before, (
            "the ingest hands nothing off"
        )
        # On its own training topic, the job runner takes it (and checks it the same way).
        send_requests(
            settings,
            [
                {"id": "a-train", **train},
                {"id": "a-train-bad-reply", **train, "reply_to": settings.topics.models},
                predict_request("a-predict-on-train", breast_cancer_rows(1)[0].tolist()),
            ],
            t["a.train"],
        )
        trained = a_out.wait_for(["a-train", "a-train-bad-reply", "a-predict-on-train"], 180)
    finally:
        a_out.close()
        b_out.close()
    assert _error_type(wrong) == "wrong_topic"
    assert wrong.error is not None
    assert wrong.error.details["use"] == t["a.train"]
    assert repr(t["a.train"]) in wrong.error.message
    assert _error_type(cannot) == "training_refused"
    assert cannot.error is not None
    assert "tenant 'team-b' may not train" in cannot.error.message
    ok = _one(trained, "a-train")
    assert ok.status == "ok", ok.error
    assert ok.tenant == "team-a"
    assert _error_type(_one(trained, "a-train-bad-reply")) == "reply_to_refused"
    back = _one(trained, "a-predict-on-train")
    assert _error_type(back) == "wrong_topic"
    assert back.error is not None
    assert back.error.details["use"] == t["a.in"]


def test_a_pipeline_outside_a_tenants_patterns_is_refused_without_listing_pipelines(
    served: tuple[Settings, dict[str, str]],
) -> None:
    settings, t = served
    row = breast_cancer_rows(1)[0].tolist()
    b_out = ResultCollector(settings, t["b.out"])
    try:
        send_requests(
            settings,
            [
                predict_request("b-killer", row, pipeline="testing.killer"),
                predict_request("b-nope", row, pipeline="no.such.pipeline"),
            ],
            t["b.in"],
        )
        got = b_out.wait_for(["b-killer", "b-nope"], 60)
    finally:
        b_out.close()
    served_names = {"breast_cancer.predict", "iris.predict", "testing.slow", "testing.poison"}
    for rid, pipeline in (("b-killer", "testing.killer"), ("b-nope", "no.such.pipeline")):
        result = _one(got, rid)
        assert _error_type(result) == "pipeline_refused"
        assert result.error is not None
        assert result.error.details == {
            "tenant": "team-b",
            "rule": "pipelines",
            "pipeline": pipeline,
        }
        said = result.error.model_dump_json()
        assert not any(name in said for name in served_names), said


def test_the_error_of_a_worker_death_carries_no_address_pid_or_ray_id(
    served: tuple[Settings, dict[str, str]],
) -> None:
    settings, t = served
    a_out = ResultCollector(settings, t["a.out"])
    try:
        send_requests(
            settings, [predict_request("dies", [-1.0] * 30, pipeline="testing.killer")], t["a.in"]
        )
        result = _one(a_out.wait_for(["dies"], 180), "dies")
    finally:
        a_out.close()
    assert _error_type(result) == "retries_exhausted"
    assert result.error is not None
    said = result.error.model_dump_json()
    assert "the worker running it died" in result.error.message
    assert not re.search(r"\d{1,3}(\.\d{1,3}){3}", said), said
    assert not re.search(r"pid", said, re.IGNORECASE), said
    assert not re.search(r"[0-9a-f]{24,}", said), said
    assert "Traceback" not in said
    assert "/" not in said.replace("\\/", ""), said


# --- the single-tenant default ------------------------------------------------------------------


@pytest.fixture
def default_served(settings: Settings, ray_runtime: str) -> Iterator[Settings]:
    ex = settings.executor.model_copy(
        update={"worker_num_cpus": 0.5, "num_workers": 1, "drain_timeout_s": 10.0}
    )
    settings = settings.model_copy(update={"executor": ex})
    create_topics(settings.kafka, settings.topics)
    store_breast_cancer(settings.models.root, n_estimators=5)
    executor = Executor(settings)
    executor.start()
    try:
        yield settings
    finally:
        executor.drain(10)


def test_the_default_tenant_refuses_raymls_own_topics_and_training_on_the_input_topic(
    default_served: Settings,
) -> None:
    settings = default_served
    row = breast_cancer_rows(1)[0].tolist()
    own = {role: getattr(settings.topics, role) for role in OWN_ROLES if role != "events"}
    # The answers go to the output topic: every other own topic is counted.
    counted = [topic for role, topic in own.items() if role != "output"]
    before = _ends(settings, counted)
    collector = ResultCollector(settings)
    try:
        requests: list[dict[str, Any]] = [
            predict_request(f"own-{role}", row, reply_to=topic) for role, topic in own.items()
        ]
        requests.append(
            {"id": "train-here", "pipeline": "breast_cancer.train", "params": {"n_estimators": 3}}
        )
        requests.append(predict_request("fine", row, reply_to=f"{settings.topics.output}.mine"))
        send_requests(settings, requests)
        got = collector.wait_for([r["id"] for r in requests], 120)
        after = _ends(settings, counted)
    finally:
        collector.close()
    for role in own:
        result = _one(got, f"own-{role}")
        assert _error_type(result) == "reply_to_refused", (role, result.error)
        assert result.tenant == "default"
    # The input topic holds the requests sent, and nothing else.
    assert after == {**before, settings.topics.input: before[settings.topics.input] + len(requests)}
    wrong = _one(got, "train-here")
    assert _error_type(wrong) == "wrong_topic"
    assert wrong.error is not None
    assert wrong.error.details["use"] == settings.topics.jobs
    # A reply_to that is not rayml's own is allowed (it does not exist: the result topic has it).
    assert _one(got, "fine").status == "ok"
