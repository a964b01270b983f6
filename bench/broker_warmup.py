"""Warm the broker's JVM before anything is measured on it.

A fresh broker spends its first minutes compiling its hot paths (the JVM's C1 and C2 compiler
threads): on this 2-core machine that took more CPU than the broker's request handling itself,
and whichever contender ran first paid for it, in broker CPU per request and in the cores the
compiler took from it. So ``python -m bench`` first runs throwaway traffic through the broker,
shaped like the contenders' (an uncompressed producer of requests, an lz4 transactional producer
of results, a read_committed consumer group member of each that commits its offsets), round
after round until, after :data:`MIN_ROUNDS` rounds at least, a round costs the compiler threads
less than :data:`SETTLED_S` of CPU: a condition, not a fixed time, bounded by ``max_s``. (A
first version stopped after two short rounds; the JIT then still took a third of the broker's
CPU during the first contender's burst.)
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.memory import thread_times

ROUND = 50_000  # records per producer per round
TRICKLE = 5_000  # records of steady traffic per round
SETTLED_S = 0.1  # compiler CPU in one round under which the JIT is taken as settled
MIN_ROUNDS = 4
_VALUE = b'{"id":"warm","pipeline":"breast_cancer.predict","params":{"features":' + b"[1.0]" * 30


def compiler_seconds(pid: int) -> float:
    """CPU seconds the JVM ``pid``'s JIT compiler threads have used (``C1/C2 CompilerThre``)."""
    return sum(on_cpu for comm, on_cpu in thread_times(pid) if "CompilerThre" in comm)


def _trickle(producer: Producer, topic: str, consumer: Consumer) -> None:
    """A second of steady traffic (5,000 records, 5 at a time, read as they come): the many
    small produce and fetch requests of a contender's latency run, which bursts do not make."""
    for i in range(0, TRICKLE, 5):
        for j in range(i, i + 5):
            producer.produce(topic, value=_VALUE, key=str(j).encode())
        producer.poll(0)
        consumer.consume(1_000, 0)
        time.sleep(0.001)
    producer.flush(30)


def warm_broker(bootstrap: str, broker_pid: int, max_s: float = 120.0) -> dict[str, Any]:
    """Run rounds of traffic until the broker's JIT settles (or ``max_s``); what it took."""
    topics = [f"bench-warmup-{uuid.uuid4().hex[:8]}.{n}" for n in ("in", "out")]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, 4, 1) for t in topics]).values():
        future.result(30)
    producers = [
        Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "enable.idempotence": True}),
        Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 2,
                "enable.idempotence": True,
                "compression.type": "lz4",
                "transactional.id": f"bench-warmup-{uuid.uuid4().hex[:8]}",
            }
        ),
    ]
    producers[1].init_transactions(30)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-warmup-{uuid.uuid4().hex[:8]}",
            "group.protocol": "consumer",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 5,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe(topics)
    started = time.monotonic()
    rounds = 0
    spent = compiler_seconds(broker_pid)
    last = float("inf")
    try:
        while (rounds < MIN_ROUNDS or last >= SETTLED_S) and time.monotonic() - started < max_s:
            before = compiler_seconds(broker_pid)
            producers[1].begin_transaction()
            for topic, producer in zip(topics, producers, strict=True):
                for i in range(ROUND):
                    while True:
                        try:
                            producer.produce(topic, value=_VALUE, key=str(i).encode())
                            break
                        except BufferError:
                            producer.poll(0.01)
                producer.flush(60)
            producers[1].commit_transaction(30)
            read, deadline = 0, time.monotonic() + 60
            while read < 2 * ROUND and time.monotonic() < deadline:
                got = sum(1 for m in consumer.consume(10_000, 0.1) if m.error() is None)
                if got:
                    read += got
                    consumer.commit(asynchronous=True)
            _trickle(producers[0], topics[0], consumer)
            rounds += 1
            last = compiler_seconds(broker_pid) - before
    finally:
        consumer.close()
        for future in admin.delete_topics(topics).values():
            future.result(30)
    return {
        "rounds": rounds,
        "seconds": time.monotonic() - started,
        "compiler_s": compiler_seconds(broker_pid) - spent,
        "last_round_compiler_s": last,
    }
