"""The local broker is a real Apache Kafka: clients, transactions, KIP-848 groups, durability."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from rayml.errors import PortInUseError
from rayml.localkafka import LocalBroker, free_port

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


def _topic(bootstrap: str, partitions: int = 1) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def _consume(
    bootstrap: str, topic: str, n: int, timeout_s: float = 30.0, **conf: object
) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            **conf,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < n and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=n, timeout=0.5):
                assert msg.error() is None, msg.error()
                values.append(msg.value())
    finally:
        consumer.close()
    return values


def test_produce_consume_round_trip(bootstrap_servers: str) -> None:
    topic = _topic(bootstrap_servers)
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    for i in range(10):
        producer.produce(topic, key=str(i), value=f"v{i}".encode())
    assert producer.flush(30) == 0
    assert _consume(bootstrap_servers, topic, 10) == [f"v{i}".encode() for i in range(10)]


def test_transaction_with_offsets_commits(bootstrap_servers: str) -> None:
    source, sink = _topic(bootstrap_servers), _topic(bootstrap_servers)
    plain = Producer({"bootstrap.servers": bootstrap_servers})
    for i in range(5):
        plain.produce(source, value=f"in{i}".encode())
    plain.flush(30)

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([source])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 5 and time.monotonic() < deadline:
        got += [m for m in consumer.consume(5, timeout=0.5) if m.error() is None]
    assert len(got) == 5

    txn = Producer(
        {"bootstrap.servers": bootstrap_servers, "transactional.id": f"txn-{uuid.uuid4().hex[:8]}"}
    )
    txn.init_transactions(30)
    txn.begin_transaction()
    for msg in got:
        txn.produce(sink, value=b"out-" + msg.value())
    txn.send_offsets_to_transaction(
        [TopicPartition(source, 0, got[-1].offset() + 1)], consumer.consumer_group_metadata(), 30
    )
    txn.commit_transaction(30)

    committed = consumer.committed([TopicPartition(source, 0)], timeout=10)
    consumer.close()
    assert committed[0].offset == 5
    assert sorted(
        _consume(bootstrap_servers, sink, 5, **{"isolation.level": "read_committed"})
    ) == sorted(b"out-" + m.value() for m in got)


def test_aborted_transaction_is_invisible_to_read_committed(bootstrap_servers: str) -> None:
    topic = _topic(bootstrap_servers)
    txn = Producer(
        {"bootstrap.servers": bootstrap_servers, "transactional.id": f"txn-{uuid.uuid4().hex[:8]}"}
    )
    txn.init_transactions(30)
    txn.begin_transaction()
    txn.produce(topic, value=b"aborted")
    txn.abort_transaction(30)
    txn.begin_transaction()
    txn.produce(topic, value=b"committed")
    txn.commit_transaction(30)
    assert _consume(
        bootstrap_servers, topic, 2, timeout_s=5, **{"isolation.level": "read_committed"}
    ) == [b"committed"]


def test_kip848_consumer_group_gets_assignment(bootstrap_servers: str) -> None:
    topic = _topic(bootstrap_servers, partitions=3)
    assigned: list[TopicPartition] = []
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"g-{uuid.uuid4().hex}",
            "group.protocol": "consumer",
        }
    )
    consumer.subscribe([topic], on_assign=lambda _c, parts: assigned.extend(parts))
    deadline = time.monotonic() + 30
    while len(assigned) < 3 and time.monotonic() < deadline:
        consumer.poll(0.2)
    consumer.close()
    assert sorted(tp.partition for tp in assigned) == [0, 1, 2]


@pytest.mark.slow
def test_data_survives_stop_and_start(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path / "kafka", port=free_port(), state_dir=REPO / ".rayml")
    broker.start()
    try:
        topic = _topic(broker.bootstrap_servers)
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
        for i in range(20):
            producer.produce(topic, value=f"m{i}".encode())
        assert producer.flush(30) == 0
        del producer
        first_pid = broker.status().info.pid  # type: ignore[union-attr]
        assert broker.stop()
        assert (
            not psutil.pid_exists(first_pid)
            or psutil.Process(first_pid).status() == psutil.STATUS_ZOMBIE
        )
        broker.start()
        assert _consume(broker.bootstrap_servers, topic, 20) == [
            f"m{i}".encode() for i in range(20)
        ]
    finally:
        broker.stop()


def test_port_in_use_is_a_clear_error(bootstrap_servers: str, tmp_path: Path) -> None:
    port = int(bootstrap_servers.rsplit(":", 1)[1])
    with pytest.raises(PortInUseError, match=f"port {port}.*already in use"):
        LocalBroker(tmp_path / "k", port=port, state_dir=REPO / ".rayml").start()


@pytest.mark.slow
def test_cli_start_status_stop(tmp_path: Path) -> None:
    port, data_dir = free_port(), tmp_path / "kafka-check"
    rayml = [sys.executable, "-m", "rayml.cli.main"]
    env_cwd = {"cwd": REPO}
    started = subprocess.run(
        [*rayml, "kafka", "start", "--port", str(port), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        **env_cwd,
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == f"127.0.0.1:{port}"
    pid = int((data_dir / "broker.pid").read_text())
    try:
        status = subprocess.run(
            [*rayml, "kafka", "status", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            **env_cwd,
        )
        assert status.returncode == 0
        assert f"pid {pid}" in status.stdout

        topic = _topic(f"127.0.0.1:{port}")
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{port}"})
        producer.produce(topic, value=b"hello")
        assert producer.flush(30) == 0
        assert _consume(f"127.0.0.1:{port}", topic, 1) == [b"hello"]
    finally:
        stopped = subprocess.run(
            [*rayml, "kafka", "stop", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            **env_cwd,
        )
    assert stopped.returncode == 0, stopped.stderr
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    status = subprocess.run(
        [*rayml, "kafka", "status", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        **env_cwd,
    )
    assert status.returncode == 1
    assert "not running" in status.stdout
