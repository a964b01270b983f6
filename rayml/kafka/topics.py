"""The topics rayml uses, with settings chosen per role, and an idempotent ``create``.

==========  =====================  ===========================================================
role        default name           settings and why
==========  =====================  ===========================================================
input       ml.pipeline.input      N partitions (the unit of ingest parallelism), 7 days
output      ml.pipeline.output     N partitions keyed by request id, 7 days
jobs        ml.pipeline.jobs       training hand-off; 14 days so a long outage loses no job
dlq         ml.pipeline.dlq        original bytes of unanswerable messages, 30 days
models      ml.models              compacted: the newest announcement per model survives
registry    ml.pipeline.registry   compacted: the newest description per pipeline survives
events      ml.pipeline.events     job status events keyed by job id (as many partitions as
                                   jobs), 7 days: progress is worth little after a week
==========  =====================  ===========================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from rayml.config import KafkaSettings, TopicSettings
from rayml.errors import KafkaAdminError
from rayml.kafka.clients import admin_client

logger = logging.getLogger(__name__)

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic to create: its role, name, partitions and topic-level configs."""

    role: str
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(topics: TopicSettings) -> list[TopicSpec]:
    """The specs of every rayml topic for the given names (pure; no I/O)."""
    compacted = {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": "0",
        "segment.ms": str(3600 * 1000),
    }
    return [
        TopicSpec(
            "input", topics.input, topics.input_partitions, {"retention.ms": str(7 * _DAY_MS)}
        ),
        TopicSpec(
            "output", topics.output, topics.output_partitions, {"retention.ms": str(7 * _DAY_MS)}
        ),
        TopicSpec("jobs", topics.jobs, topics.jobs_partitions, {"retention.ms": str(14 * _DAY_MS)}),
        TopicSpec("dlq", topics.dlq, 1, {"retention.ms": str(30 * _DAY_MS)}),
        TopicSpec("models", topics.models, 1, compacted),
        TopicSpec("registry", topics.registry, 1, compacted),
        TopicSpec(
            "events", topics.events, topics.jobs_partitions, {"retention.ms": str(7 * _DAY_MS)}
        ),
    ]


def create_topics(
    kafka: KafkaSettings, topics: TopicSettings, timeout_s: float = 30.0
) -> dict[str, str]:
    """Create every rayml topic that does not exist yet.

    Returns ``{topic name: "created" | "exists"}``. Safe to run any number of times.

    Raises:
        KafkaAdminError: if the broker is unreachable or refuses a topic.
    """
    admin = admin_client(kafka)
    specs = topic_specs(topics)
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=topics.replication_factor,
            config=s.config,
        )
        for s in specs
    ]
    outcome: dict[str, str] = {}
    try:
        futures = admin.create_topics(new, request_timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaAdminError(f"cannot create topics on {kafka.bootstrap_servers}: {exc}") from exc
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            outcome[name] = "created"
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                outcome[name] = "exists"
            else:
                raise KafkaAdminError(
                    f"cannot create topic {name!r} on {kafka.bootstrap_servers}: {exc}"
                ) from exc
        except Exception as exc:  # timeouts from concurrent.futures
            raise KafkaAdminError(
                f"cannot create topic {name!r} on {kafka.bootstrap_servers}: {exc!r}"
            ) from exc
    for name, what in outcome.items():
        logger.info("topic=%s %s", name, what)
    return outcome
