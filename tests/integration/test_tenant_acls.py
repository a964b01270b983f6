"""Tenants the Kafka way: ``rayml tenants apply`` on a broker whose ACLs are in force.

The module's broker (tests/support/secure_tenants.py) has Kafka's ``StandardAuthorizer`` on
with ``allow.everyone.if.no.acl.found=false``, SCRAM users for an admin, the executor
(``User:rayml``) and two tenants; ``rayml tenants apply`` made the topics and ACLs as the admin.
Then:

- apply is idempotent, ``tenants list`` finds every ACL, ``--dry-run`` touches nothing;
- tenant A writes its request topics and reads its result topic;
- Kafka refuses A (``TOPIC_AUTHORIZATION_FAILED``) B's result and reply topics, B's input
  topic, B's reply prefix, rayml's own topics and A's own result topic (only the executor writes
  results);
- the executor's principal may do all it needs, exactly-once transactions included, and passes
  ``rayml serve``'s start check, while a tenant's principal is refused by it, named;
- refusals say why, fast: a wrong password fails ``rayml topics create``, ``rayml serve``,
  ``create_topics`` and the Python client within seconds, naming authentication and the user;
  the client's refused write names the principal and the topic;
- end to end: an executor of ``User:rayml`` answers team A's Python client and refuses team B
  a pipeline, and the broker denied nothing to anyone meanwhile.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import ConfigResource, NewTopic
from pydantic import SecretStr

from rayml import Client
from rayml.client.errors import BrokerUnreachableError, DeliveryFailedError
from rayml.client.kafka import create_reply_topic, partitions_of
from rayml.config import KafkaSettings, load_settings
from rayml.kafka import clients as kafka_clients
from rayml.kafka.auth_errors import (
    AuthenticationFailedError,
    AuthorizationFailedError,
)
from rayml.kafka.topics import create_topics
from rayml.tenancy.access_check import check_executor_access
from rayml.tenancy.grants import plan
from tests.support.secure_tenants import (
    ADMIN,
    EXECUTOR,
    EXECUTOR_PRINCIPAL,
    TEAM_A,
    TEAM_B,
    SecureTenants,
    secure_tenants,
    write_toml,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# A refused handshake is known within one round trip; "fast" leaves room for a loaded machine.
FAST_S = 5.0


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureTenants]:
    started = time.monotonic()
    with secure_tenants(tmp_path_factory.mktemp("tenants")) as found:
        print(f"\nsecure broker with ACLs, tenants applied in {time.monotonic() - started:.1f}s")
        yield found


def wrong_password(kafka: KafkaSettings) -> KafkaSettings:
    return kafka.model_copy(update={"sasl_password": SecretStr("not-the-password-123")})


# Records written only to show a principal may write. On the compacted registry and models
# topics a tombstone: a key their readers drop, never a record they must parse.
CHECK_KEY = b"rayml-acl-check"
COMPACTED = ("ml.models", "ml.pipeline.registry")


def check_value(topic: str) -> bytes | None:
    return None if topic in COMPACTED else b"not a request: written by an ACL test"


def write(kafka: KafkaSettings, topic: str, timeout_s: float = 15.0) -> KafkaError | None:
    """Produce one record to ``topic``; the delivery error (``None``: written)."""
    producer = kafka_clients.producer(kafka)
    reports: list[KafkaError | None] = []
    producer.produce(
        topic,
        key=CHECK_KEY,
        value=check_value(topic),
        on_delivery=lambda err, _msg: reports.append(err),
    )
    producer.flush(timeout_s)
    assert len(reports) == 1, f"no delivery report for {topic} within {timeout_s}s"
    return reports[0]


def code_of(err: KafkaError | None) -> int | None:
    return None if err is None else err.code()


def read_one(kafka: KafkaSettings, group: str, topic: str, timeout_s: float = 20.0) -> bytes:
    """Subscribe as ``group`` and return the first record's value; fail on a consumer error."""
    consumer = kafka_clients.consumer(kafka, group)
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            return msg.value() or b""
        raise AssertionError(f"nothing read from {topic} within {timeout_s}s")
    finally:
        consumer.close()


def subscribe_error(kafka: KafkaSettings, group: str, topic: str, timeout_s: float = 10.0) -> int:
    """Subscribe as ``group``; the code of the first error the consumer gets (none: fail)."""
    consumer = kafka_clients.consumer(kafka, group)
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            assert err is not None, f"read {topic}: {msg.value()!r}"
            return int(err.code())
        raise AssertionError(f"no error from subscribing to {topic} within {timeout_s}s")
    finally:
        consumer.close()


def topic_error(kafka: KafkaSettings, topic: str) -> int | None:
    """The error the broker's metadata gives ``kafka``'s principal for ``topic``."""
    admin = kafka_clients.admin_client(kafka)
    meta = admin.list_topics(topic, timeout=10)
    err = meta.topics[topic].error
    return None if err is None else int(err.code())


# --- apply, list, dry run -------------------------------------------------------------------------


def test_apply_made_every_topic_and_acl_and_a_second_apply_finds_them(
    tenants: SecureTenants,
) -> None:
    settings = tenants.settings(ADMIN)
    wanted = plan(settings, EXECUTOR_PRINCIPAL)
    first = tenants.apply_output.splitlines()
    assert [line for line in first if line.startswith("acl ")] == [
        f"acl {g}: created" for g in wanted
    ]
    for topic in (
        "team-a.requests",
        "team-a.requests.batch",  # its bulk lane
        "team-a.training",
        "team-a.results",
        "team-b.results",
    ):
        assert f"topic {topic}: created" in first

    again = tenants.rayml(
        ADMIN, "tenants", "apply", "--executor-principal", EXECUTOR_PRINCIPAL, "--json"
    )
    assert again.returncode == 0, again.stderr
    body = json.loads(again.stdout)
    assert set(body["topics"].values()) == {"exists"}
    # rayml's (with the default bulk lane), team A's four (both lanes, training, results),
    # team B's three.
    assert len(body["topics"]) == 10 + 4 + 3
    assert [a["outcome"] for a in body["acls"]] == ["exists"] * len(wanted)

    listed = tenants.rayml(ADMIN, "tenants", "list", "--executor-principal", EXECUTOR_PRINCIPAL)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "team-a (User:team-a): ACLs 20/20" in listed.stdout
    assert "team-b (User:team-b): ACLs 16/16" in listed.stdout
    assert "missing" not in listed.stdout


def test_topics_get_the_broker_default_replication_and_min_insync(
    tenants: SecureTenants,
) -> None:
    """One broker: replication factor -1 gives its default (1), min.insync.replicas = min(2, 1)."""
    admin = kafka_clients.admin_client(tenants.kafka(ADMIN))
    meta = admin.list_topics(timeout=10)
    names = ["team-a.requests", "ml.pipeline.registry"]
    for name in names:
        assert [len(p.replicas) for p in meta.topics[name].partitions.values()]
        assert all(len(p.replicas) == 1 for p in meta.topics[name].partitions.values())
    resources = [ConfigResource("topic", n) for n in names]
    for resource, future in admin.describe_configs(resources).items():
        assert future.result(10)["min.insync.replicas"].value == "1", resource.name


def test_dry_run_prints_the_bindings_and_touches_nothing(
    tenants: SecureTenants, tmp_path: Path
) -> None:
    config = write_toml(
        tmp_path / "c.toml",
        {},
        [
            {
                "name": "team-c",
                "principal": "User:team-c",
                "input_topic": "team-c.requests",
                "result_topic": "team-c.results",
                "reply_prefix": "team-c.replies.",
            }
        ],
    )
    env = tenants.cli_env(ADMIN)
    env["RAYML_CONFIG"] = str(config)
    run = subprocess.run(
        [sys.executable, "-m", "rayml.cli.main", "tenants", "apply", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    settings_c = load_settings(config)
    assert run.stdout.splitlines() == [f"acl: {g}" for g in plan(settings_c, None)]
    assert "acl: User:team-c may Write topic 'team-c.requests'" in run.stdout
    # Nothing of team C's reached the broker.
    assert topic_error(tenants.kafka(ADMIN), "team-c.requests") == (
        KafkaError.UNKNOWN_TOPIC_OR_PART
    )
    listed = tenants.rayml(ADMIN, "tenants", "list", "--json")
    assert listed.returncode == 0
    assert "team-c" not in listed.stdout


# --- what a tenant may do -------------------------------------------------------------------------


def test_tenant_a_writes_its_request_topics_and_reads_its_result_topic(
    tenants: SecureTenants,
) -> None:
    team_a = tenants.kafka(TEAM_A)
    assert write(team_a, "team-a.requests") is None
    assert write(team_a, "team-a.training") is None
    marker = uuid.uuid4().hex.encode()
    # Only the executor writes results.
    producer = kafka_clients.producer(tenants.kafka(EXECUTOR))
    producer.produce("team-a.results", key=b"r", value=marker)
    assert producer.flush(15) == 0
    assert read_one(team_a, f"{TEAM_A}.reader-{uuid.uuid4().hex[:6]}", "team-a.results") == marker


def test_tenant_a_cannot_read_tenant_b_results_or_replies(tenants: SecureTenants) -> None:
    team_a, team_b = tenants.kafka(TEAM_A), tenants.kafka(TEAM_B)
    # B's client makes its reply topic under its prefix; the executor answers there.
    reply = f"team-b.replies.{uuid.uuid4().hex[:8]}"
    b_admin = kafka_clients.admin_client(team_b)
    assert create_reply_topic(
        b_admin, reply, retention_ms=60_000, replication_factor=None, timeout_s=15, kafka=team_b
    )
    assert write(tenants.kafka(EXECUTOR), reply) is None
    assert write(tenants.kafka(EXECUTOR), "team-b.results") is None

    group = f"{TEAM_A}.spy-{uuid.uuid4().hex[:6]}"  # a group A may use: the topic is refused
    for topic in ("team-b.results", reply):
        assert subscribe_error(team_a, group, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
        assert topic_error(team_a, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # What the client's reply reader asks first: refused, named, not read as an empty topic.
    consumer = kafka_clients.consumer(team_a, f"rayml-client-{uuid.uuid4().hex[:8]}")
    try:
        with pytest.raises(AuthorizationFailedError) as refused:
            partitions_of(consumer, reply, 10, team_a)
        assert (refused.value.principal, refused.value.operation) == ("User:team-a", "Describe")
        assert reply in refused.value.resource
        consumer.assign([TopicPartition(reply, 0, 0)])
        assert all(m.error() is not None for m in consumer.consume(10, 2.0))
    finally:
        consumer.close()
    # Nor may A make a topic under B's prefix.
    with pytest.raises(AuthorizationFailedError) as made:
        create_reply_topic(
            kafka_clients.admin_client(team_a),
            f"team-b.replies.{uuid.uuid4().hex[:8]}",
            retention_ms=60_000,
            replication_factor=None,
            timeout_s=15,
            kafka=team_a,
        )
    assert "Kafka refused User:team-a Create on reply topic 'team-b.replies." in str(made.value)


def test_tenant_a_cannot_write_tenant_b_input_nor_rayml_topics(tenants: SecureTenants) -> None:
    team_a = tenants.kafka(TEAM_A)
    refused = {
        topic: code_of(write(team_a, topic))
        for topic in (
            "team-b.requests",
            "team-a.results",  # its own results: only the executor writes them
            "ml.pipeline.registry",
            "ml.models",
            "ml.pipeline.input",
            "ml.pipeline.jobs",
            "ml.pipeline.dlq",
            "ml.pipeline.events",
        )
    }
    assert refused == dict.fromkeys(refused, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    # B may not train: it has no training topic, and A's is A's.
    assert code_of(write(tenants.kafka(TEAM_B), "team-a.training")) == (
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    )


def test_a_refused_client_request_names_the_principal_and_the_topic(
    tenants: SecureTenants,
) -> None:
    """The Python client as team A, pointed at team B's request topic."""
    settings = tenants.settings(TEAM_A)
    settings = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"input": "team-b.requests"})}
    )
    reply = f"team-a.replies.{uuid.uuid4().hex[:8]}"
    with Client(settings=settings, reply_topic=reply, validate=False) as client:
        future = client.request("iris.predict", {"features": [5.1, 3.5, 1.4, 0.2]})
        with pytest.raises(DeliveryFailedError) as refused:
            future.result(timeout=30)
    message = str(refused.value)
    assert "Kafka refused User:team-a Write on topic 'team-b.requests'" in message
    assert "TOPIC_AUTHORIZATION_FAILED" in message
    assert isinstance(refused.value.__cause__, AuthorizationFailedError)


# --- the executor's principal ---------------------------------------------------------------------


def test_the_executor_principal_may_do_what_it_needs(tenants: SecureTenants) -> None:
    settings = tenants.settings(EXECUTOR)
    executor = settings.kafka
    # rayml serve's start check: every literal topic and group of the executor's grants.
    assert check_executor_access(settings, create_missing=True) == []
    # Topics exist, so creating "the missing ones" asks the broker for nothing it would refuse.
    assert set(create_topics(executor, settings.topics, tenants=settings.tenants).values()) == {
        "exists"
    }

    # Requests of both tenants reach it in its group.
    marker = uuid.uuid4().hex.encode()
    producer = kafka_clients.producer(tenants.kafka(TEAM_B))
    producer.produce("team-b.requests", key=b"q", value=marker)
    assert producer.flush(15) == 0
    consumer = kafka_clients.consumer(executor, settings.executor.group_id)
    consumer.subscribe(["team-a.requests", "team-a.training", "team-b.requests"])
    seen: set[bytes] = set()
    deadline = time.monotonic() + 30
    try:
        while marker not in seen and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None, msg.error()
                seen.add(msg.value() or b"")
    finally:
        consumer.close()
    assert marker in seen

    # Exactly-once: a transaction with its transactional id, to results, replies, its topics.
    reply = f"team-a.replies.{uuid.uuid4().hex[:8]}"
    create_reply_topic(
        kafka_clients.admin_client(tenants.kafka(TEAM_A)),
        reply,
        retention_ms=60_000,
        replication_factor=None,
        timeout_s=15,
    )
    txn = kafka_clients.transactional_producer(
        executor, f"{settings.executor.group_id}.ingest-0", 30
    )
    txn.init_transactions(30)
    txn.begin_transaction()
    targets = [
        "team-a.results",
        "team-b.results",
        reply,
        # Not the request topics (input, jobs): the executor reads them and never writes.
        *(getattr(settings.topics, r) for r in ("output", "dlq", "models", "registry")),
        settings.topics.events,
    ]
    for topic in targets:
        txn.produce(topic, key=CHECK_KEY, value=check_value(topic))
    txn.commit_transaction(30)
    jobs_txn = kafka_clients.transactional_producer(
        executor, f"{settings.executor.jobs_group_id}.runner-0", 30
    )
    jobs_txn.init_transactions(30)
    # And the idempotent producer of at-least-once delivery.
    assert {t: write(executor, t) for t in targets} == dict.fromkeys(targets)


def test_serve_refuses_a_principal_without_the_executor_rights_naming_it(
    tenants: SecureTenants,
) -> None:
    with pytest.raises(AuthorizationFailedError) as refused:
        check_executor_access(tenants.settings(TEAM_A), create_missing=False)
    err = refused.value
    assert (err.principal, err.operation, err.resource) == (
        "User:team-a",
        "Read",
        "topic 'team-a.requests'",
    )
    # The command line: exit 2 with that line, before any Ray is started.
    started = time.monotonic()
    run = tenants.rayml(TEAM_A, "serve", "--no-create-topics")
    elapsed = time.monotonic() - started
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Kafka refused User:team-a Read on topic 'team-a.requests'" in run.stderr
    assert "READY" not in run.stderr
    print(f"\nrayml serve as a tenant refused in {elapsed:.1f}s (process start included)")


def test_tenants_apply_as_a_tenant_is_refused_naming_the_principal(tenants: SecureTenants) -> None:
    run = tenants.rayml(TEAM_A, "tenants", "apply", "--executor-principal", EXECUTOR_PRINCIPAL)
    assert run.returncode == 2
    assert "rayml: error: Kafka refused User:team-a Create on topic 'ml.pipeline.input'" in (
        run.stderr
    )


# --- a wrong password: named, fast ----------------------------------------------------------------


def test_a_wrong_password_fails_fast_naming_authentication_and_the_user(
    tenants: SecureTenants, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = wrong_password(tenants.kafka(TEAM_A))
    settings = tenants.settings(TEAM_A)

    started = time.monotonic()
    with pytest.raises(AuthenticationFailedError) as refused:
        create_topics(wrong, settings.topics, timeout_s=30)
    in_process = time.monotonic() - started
    assert in_process < FAST_S
    assert refused.value.principal == "User:team-a"
    assert "authentication failed for User:team-a" in str(refused.value)
    assert "invalid credentials" in str(refused.value)

    started = time.monotonic()
    with pytest.raises(BrokerUnreachableError) as client_refused:
        Client(settings=settings.model_copy(update={"kafka": wrong}), connect_timeout_s=30)
    client_s = time.monotonic() - started
    assert client_s < FAST_S
    assert "authentication failed for User:team-a" in str(client_refused.value)
    assert isinstance(client_refused.value.__cause__, AuthenticationFailedError)

    timings = {}
    for command in (["topics", "create"], ["serve", "--no-create-topics"]):
        started = time.monotonic()
        run = tenants.rayml(TEAM_A, *command, kafka=wrong)
        timings[command[0]] = time.monotonic() - started
        assert run.returncode == 2, run.stdout + run.stderr
        assert "rayml: error: authentication failed for User:team-a" in run.stderr
        assert "TimeoutError" not in run.stderr
        assert "not-the-password-123" not in run.stdout + run.stderr
        assert "READY" not in run.stderr

    # A client rayml polls itself (an executor's consumer or producer) logs it, named.
    caplog.set_level(logging.ERROR, logger="rayml.kafka.clients")
    producer = kafka_clients.producer(wrong)
    deadline = time.monotonic() + FAST_S
    while "authentication failed" not in caplog.text and time.monotonic() < deadline:
        producer.poll(0.1)
    assert "refused User:team-a: authentication failed" in caplog.text
    print(
        f"\nwrong password refused in {in_process:.2f}s (create_topics), {client_s:.2f}s "
        f"(Client), {timings['topics']:.1f}s (rayml topics create), {timings['serve']:.1f}s "
        "(rayml serve; both with the process start)"
    )


def test_the_admin_is_a_super_user_and_others_are_not(tenants: SecureTenants) -> None:
    """The authorizer is on: without an ACL the executor may not even create a topic."""
    name = f"x-{uuid.uuid4().hex[:8]}"
    executor = kafka_clients.admin_client(tenants.kafka(EXECUTOR))
    with pytest.raises(KafkaException) as refused:
        executor.create_topics([NewTopic(name, 1, -1)])[name].result(15)
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    admin = kafka_clients.admin_client(tenants.kafka(ADMIN))
    admin.create_topics([NewTopic(name, 1, -1)])[name].result(15)
    # The broker's log names each denial (what the end-to-end test below counts on).
    denial = f"Principal = {EXECUTOR_PRINCIPAL} is Denied operation = CREATE"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = tenants.broker.log_file.read_text().splitlines()
        if any(denial in line and name in line for line in lines):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"no {denial!r} for {name} in {tenants.broker.log_file}")
    props = (tenants.broker.data_dir / "server.properties").read_text()
    assert "allow.everyone.if.no.acl.found=false" in props
    assert "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" in props


# --- end to end: an executor of User:rayml serving both tenants -----------------------------------

PREDICT = "breast_cancer.predict"


@pytest.mark.ray
def test_an_executor_of_user_rayml_answers_tenant_a_and_refuses_tenant_b_a_pipeline(
    tenants: SecureTenants, ray_runtime: str
) -> None:
    from rayml.executor.service import Executor
    from tests.support.models import breast_cancer_rows, store_breast_cancer

    settings = tenants.settings(EXECUTOR)
    _version, model = store_breast_cancer(settings.models.root)
    rows = breast_cancer_rows(20, seed=3)
    proba = model.predict_proba(rows)
    log_start = tenants.broker.log_file.stat().st_size  # other tests are denied on purpose
    executor = Executor(settings)
    # As `rayml serve` would: its start check passes, the topics are found, not created.
    assert check_executor_access(settings, create_missing=True) == []
    executor.start()
    try:
        team_a = tenants.settings(TEAM_A)
        team_a = team_a.model_copy(
            update={"topics": team_a.topics.model_copy(update={"input": "team-a.requests"})}
        )
        reply_a = f"team-a.replies.{uuid.uuid4().hex[:8]}"
        with Client(settings=team_a, reply_topic=reply_a) as client:
            results = client.submit_many(
                PREDICT, [{"features": r.tolist()} for r in rows], progress=False, timeout_s=120
            )
        assert [r.status for r in results] == ["ok"] * len(rows)
        for i, r in enumerate(results):
            assert r.result is not None
            assert r.result["label"] == int(proba[i].argmax()), f"row {i}"

        # Team B may call iris.* only: one executor, the other tenant's rules.
        team_b = tenants.settings(TEAM_B)
        team_b = team_b.model_copy(
            update={"topics": team_b.topics.model_copy(update={"input": "team-b.requests"})}
        )
        reply_b = f"team-b.replies.{uuid.uuid4().hex[:8]}"
        with Client(settings=team_b, reply_topic=reply_b, validate=False) as client:
            refused = client.submit(PREDICT, features=rows[0].tolist()).result(timeout=60)
        assert refused.status == "error"
        assert refused.error is not None
        assert refused.error.type == "pipeline_refused"

        # Team A names team B's reply topic, then rayml's registry; team B, which has no
        # training topic, sends a training request on its input topic. Each is refused on the
        # sender's result topic, and nothing lands on the topics named.
        victim = f"team-b.replies.{uuid.uuid4().hex[:8]}"
        create_reply_topic(
            kafka_clients.admin_client(tenants.kafka(TEAM_B)),
            victim,
            retention_ms=60_000,
            replication_factor=None,
            timeout_s=15,
        )
        registry = settings.topics.registry
        registry_end = _end_offsets(tenants.kafka(EXECUTOR), registry, "rayml-versions-")
        sent = {
            f"to-b-{uuid.uuid4().hex[:6]}": ("team-a.requests", TEAM_A, victim),
            f"to-registry-{uuid.uuid4().hex[:6]}": ("team-a.requests", TEAM_A, registry),
        }
        for rid, (topic, user, reply_to) in sent.items():
            request = {"id": rid, "pipeline": PREDICT, "params": {"features": rows[0].tolist()}}
            _produce_as(tenants.kafka(user), topic, {**request, "reply_to": reply_to})
        train_id = f"train-b-{uuid.uuid4().hex[:6]}"
        _produce_as(
            tenants.kafka(TEAM_B),
            "team-b.requests",
            {"id": train_id, "pipeline": "iris.train", "params": {}},  # B may call iris.*
        )
        got_a = _read_results_as(tenants.kafka(TEAM_A), "team-a.results", "team-a", set(sent))
        got_b = _read_results_as(tenants.kafka(TEAM_B), "team-b.results", "team-b", {train_id})
        assert {rid: r["error"]["type"] for rid, r in got_a.items()} == dict.fromkeys(
            sent, "reply_to_refused"
        )
        assert got_b[train_id]["error"]["type"] in ("wrong_topic", "training_refused")
        assert _end_offsets(tenants.kafka(TEAM_B), victim) == {0: 0}, "nothing on B's replies"
        assert _end_offsets(tenants.kafka(EXECUTOR), registry, "rayml-versions-") == registry_end
    finally:
        executor.drain(10)
    # Everything the executor and both tenants' stock clients did, Kafka allowed: the broker
    # logs each denial with its principal, operation and resource.
    with tenants.broker.log_file.open() as log:
        log.seek(log_start)
        denied = [line for line in log if " is Denied operation" in line]
    assert denied == []


def _produce_as(kafka: KafkaSettings, topic: str, request: dict) -> None:
    producer = kafka_clients.producer(kafka)
    producer.produce(topic, key=request["id"].encode(), value=json.dumps(request).encode())
    assert producer.flush(15) == 0


def _end_offsets(kafka: KafkaSettings, topic: str, group: str = "rayml-client-") -> dict[int, int]:
    """End offsets, read with a group of a prefix the principal may describe."""
    consumer = kafka_clients.consumer(kafka, f"{group}{uuid.uuid4().hex[:8]}")
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts
        }
    finally:
        consumer.close()


def _read_results_as(
    kafka: KafkaSettings, topic: str, tenant: str, ids: set[str], timeout_s: float = 60.0
) -> dict[str, dict]:
    """The results of ``ids`` on ``topic``, read as the tenant (a group of its own prefix)."""
    consumer = kafka_clients.consumer(
        kafka, f"{tenant}.check-{uuid.uuid4().hex[:6]}", **{"auto.offset.reset": "earliest"}
    )
    got: dict[str, dict] = {}
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while not ids <= got.keys() and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.5):
                if msg.error() is not None:
                    continue
                try:  # other tests of this module write plain markers to result topics
                    result = json.loads(msg.value())
                except ValueError:
                    continue
                if isinstance(result, dict) and result.get("id") in ids:
                    got[result["id"]] = result
    finally:
        consumer.close()
    assert ids <= got.keys(), f"no result for {ids - got.keys()} on {topic}"
    return got


@pytest.mark.ray
@pytest.mark.slow
def test_on_the_secure_broker_a_worse_version_is_not_served_and_rollback_is_quick(
    tenants: SecureTenants, ray_runtime: str, tmp_path: Path
) -> None:
    """Team A trains on its training topic through an executor of User:rayml: a good version
    is served, a worse one is stored and not served; the operator (the admin, who may write
    ml.models) promotes the worse one, then rolls back: every batch is on the good version
    again within seconds. Kafka denies nothing to anyone meanwhile."""
    from rayml.executor.service import Executor
    from tests.support.promotion_pipelines import MODEL

    row = [5.1, 3.5, 1.4, 0.2]
    executor_settings = tenants.settings(EXECUTOR)
    executor_settings = executor_settings.model_copy(
        update={
            "models": executor_settings.models.model_copy(update={"root": str(tmp_path / "m")}),
            "executor": executor_settings.executor.model_copy(
                update={"pipeline_modules": ["tests.support.promotion_pipelines"]}
            ),
        }
    )
    admin = tenants.settings(ADMIN).model_copy(update={"models": executor_settings.models})
    log_start = tenants.broker.log_file.stat().st_size
    executor = Executor(executor_settings)
    executor.start()

    def ask(topic: str, pipeline: str, params: dict) -> dict:
        rid = f"{pipeline.split('.')[-1]}-{uuid.uuid4().hex[:8]}"
        _produce_as(
            tenants.kafka(TEAM_A), topic, {"id": rid, "pipeline": pipeline, "params": params}
        )
        got = _read_results_as(tenants.kafka(TEAM_A), "team-a.results", TEAM_A, {rid}, 120)
        return got[rid]

    def served() -> str:
        result = ask("team-a.requests", "testing.predict_promo", {"features": row})
        assert result["status"] == "ok", result
        return str(result["model"]["version"])

    try:
        good = ask("team-a.training", "testing.train_promo", {})
        assert good["status"] == "ok", good
        assert good["result"]["promoted"] is True
        g = good["result"]["version"]
        worse = ask("team-a.training", "testing.train_promo", {"degrade": True})
        assert worse["status"] == "ok", worse
        assert worse["result"]["promoted"] is False, worse["result"]["promotion"]
        b = worse["result"]["version"]
        assert served() == g, "the worse version is stored, not served"

        env = {**tenants.cli_env(ADMIN), "RAYML_MODELS__ROOT": admin.models.root}
        cli = [sys.executable, "-m", "rayml.cli", "models"]
        subprocess.run([*cli, "promote", MODEL, b], env=env, check=True, timeout=120)
        deadline = time.monotonic() + 30
        while served() != b:
            assert time.monotonic() < deadline, "promote did not take effect"
        subprocess.run([*cli, "rollback", MODEL], env=env, check=True, timeout=120)
        rolled = time.monotonic()
        while served() != g:
            assert time.monotonic() - rolled < 10, "rollback too slow"
        switch_s = time.monotonic() - rolled
        assert all(served() == g for _ in range(5))
        print(f"\nsecure broker: rollback served {g} again {switch_s:.2f}s after the command")
    finally:
        executor.drain(10)
    with tenants.broker.log_file.open() as log:
        log.seek(log_start)
        denied = [line for line in log if " is Denied operation" in line]
    assert denied == []
