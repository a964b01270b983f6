"""Settings shared by the fault, exactly-once, cluster and operations scenarios, and how many
duplicates at-least-once allows when their ingest actors die."""

from __future__ import annotations

import math
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from rayml.config import Settings
from rayml.kafka.topics import create_topics
from tests.support.models import store_breast_cancer


def slow_pipeline_settings(
    settings: Settings, topics: dict[str, Any] | None = None, **executor: Any
) -> Settings:
    """``settings`` for a scenario on the ``testing.slow`` pipeline; topics created, model stored.

    Small batches of a pipeline that takes 100 ms a batch: a burst of thousands of requests
    lasts several seconds, so a kill lands mid-burst with commits before it and work after it;
    a small in-flight window leaves most of the burst in Kafka. ``executor`` and ``topics``
    override single fields.
    """
    ex = settings.executor.model_copy(
        update={
            "worker_num_cpus": 0.5,
            "num_workers": 2,
            "drain_timeout_s": 15.0,
            "commit_interval_s": 0.25,
            "pipeline_modules": ["tests.support.executor_pipelines"],
            "max_batch_size": 100,
            "max_in_flight": 1_000,
            **executor,
        }
    )
    settings = settings.model_copy(
        update={"executor": ex, "topics": settings.topics.model_copy(update=topics or {})}
    )
    create_topics(settings.kafka, settings.topics)
    store_breast_cancer(settings.models.root, n_estimators=10)
    return settings


SLOW_BATCH_S = 0.1  # testing.slow's time per batch when SLOW_PIPELINE_S is not set


def redo_bound(settings: Settings, ingests: int = 1) -> int:
    """The most results at-least-once may write twice when ``ingests`` ingest actors die at once
    on the ``testing.slow`` pipeline (SIGKILL, a lost node).

    Per ingest: its in-flight window (results written whose offsets an earlier record, still
    running, held back) and one commit interval's worth of results written since its last
    commit, at its pool's peak rate (each worker runs one batch of ``max_batch_size`` per
    ``SLOW_BATCH_S``).
    """
    ex = settings.executor
    peak_rate = ex.num_workers * ex.max_batch_size / SLOW_BATCH_S
    return ingests * (ex.max_in_flight + math.ceil(peak_rate * ex.commit_interval_s))


def starved_topic(settings: Settings) -> str:
    """A topic that exists but fails every write, as one whose partition is offline or short
    of in-sync replicas does (which one local broker cannot be: it takes ``acks=all`` writes
    whatever ``min.insync.replicas`` says). ``message.timestamp.before.max.ms=0`` refuses every
    record older than the broker's clock (``INVALID_TIMESTAMP``), i.e. each one: librdkafka
    sends a record ``linger.ms`` (2 ms) after its timestamp at the earliest. Like a timeout,
    that error does not blame the topic, and the broker's metadata says it exists. The broker
    refuses transaction markers there too: a transaction that wrote it never ends."""
    return topic_with_config(settings, "starved", {"message.timestamp.before.max.ms": "0"})


def topic_with_config(settings: Settings, suffix: str, config: dict[str, str]) -> str:
    """Create ``<output topic>.<suffix>`` (one partition) with ``config``; returns its name."""
    name = f"{settings.topics.output}.{suffix}"
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    [future] = admin.create_topics([NewTopic(name, 1, 1, config=config)]).values()
    future.result(30)
    return name
