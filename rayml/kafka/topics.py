"""The topics rayml uses, with settings chosen per role, and an idempotent ``create``.

==========  =====================  ===========================================================
role        default name           settings and why
==========  =====================  ===========================================================
input       ml.pipeline.input      N partitions (the unit of ingest parallelism), 7 days
input_batch ml.pipeline.input      the bulk lane beside it (``priority="batch"``, replays):
            .batch                 the same partitions and settings as input
output      ml.pipeline.output     N partitions keyed by request id, 7 days
jobs        ml.pipeline.jobs       training hand-off; 14 days so a long outage loses no job
dlq         ml.pipeline.dlq        original bytes of unanswerable messages, 30 days
models      ml.models              compacted: the newest announcement per model survives
registry    ml.pipeline.registry   compacted: the newest description per pipeline survives
events      ml.pipeline.events     job status events keyed by job id (as many partitions as
                                   jobs), 7 days: progress is worth little after a week
shadow      ml.pipeline.shadow     what each version answered during a rollout, 7 days (one
                                   partition: the rollout monitor reads it whole)
feedback    ml.pipeline.feedback   ground truth by request id, 7 days (one partition: read
                                   whole by the rollout monitor)
==========  =====================  ===========================================================

A tenant's topics (:func:`tenant_topic_specs`, ``rayml tenants apply``) take the settings of
the role they play: its input topic and its bulk lane (``batch_topic``) as ``input``, its
training topic as ``jobs``, its result topic as ``output``.

Durability (docs/security.md): a topic gets ``topics.replication_factor`` replicas, or the
broker's ``default.replication.factor`` when that setting is left out (``None``), and
``min.insync.replicas`` = ``topics.min_insync_replicas``, else min(2, replicas), so an
``acks=all`` write is on two brokers whenever there are two copies to make. Existing topics are
left as they are; :func:`warn_single_replicas` (at ``rayml serve``'s start) names those with one
replica on a cluster of several brokers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    ConfigResource,
    NewTopic,
    ResourceType,
)

from rayml.config import KafkaSettings, TenantSettings, TopicSettings
from rayml.errors import KafkaAdminError
from rayml.kafka.auth_errors import ErrorLog, connect, refusal
from rayml.kafka.clients import admin_client

logger = logging.getLogger(__name__)

_DAY_MS = 24 * 3600 * 1000

# What to do when the principal may not create a missing topic.
CREATE_HINT = (
    "have an admin create the topics (`rayml tenants apply` or `rayml topics create`); a "
    "principal without Create needs only Describe on topics that exist"
)


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
            "input_batch",
            topics.input_batch,
            topics.input_partitions,
            {"retention.ms": str(7 * _DAY_MS)},
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
        TopicSpec("shadow", topics.shadow, 1, {"retention.ms": str(7 * _DAY_MS)}),
        TopicSpec("feedback", topics.feedback, 1, {"retention.ms": str(7 * _DAY_MS)}),
    ]


def tenant_topic_specs(topics: TopicSettings, tenants: Sequence[TenantSettings]) -> list[TopicSpec]:
    """The specs of the tenants' topics: input, its bulk lane, training (if any) and result
    (pure).

    A topic that is also one of rayml's own (the default tenant's are) is left to
    :func:`topic_specs`.
    """
    by_role = {s.role: s for s in topic_specs(topics)}
    own = {s.name for s in by_role.values()}
    specs: list[TopicSpec] = []
    for tenant in tenants:
        mine = [
            ("input", "input", tenant.input_topic),
            ("input_batch", "input", tenant.bulk_topic),
            ("output", "output", tenant.result_topic),
        ]
        if tenant.training_topic:
            mine.insert(2, ("jobs", "jobs", tenant.training_topic))
        for role, like_role, name in mine:
            if name in own:
                continue
            like = by_role[like_role]
            specs.append(TopicSpec(f"{tenant.name} {role}", name, like.partitions, like.config))
    return specs


def min_insync_replicas(replicas: int, setting: int | None = None) -> int:
    """``min.insync.replicas`` for a topic of ``replicas`` copies: the setting, else 2, never
    more than the copies there are (a topic could not take an ``acks=all`` write)."""
    return max(1, min(setting or 2, replicas))


def creation_request(
    spec: TopicSpec, topics: TopicSettings, broker_default: int | None
) -> tuple[int, dict[str, str]]:
    """The replication factor to ask for (-1: the broker's default) and the topic's configs.

    ``broker_default`` is the broker's ``default.replication.factor`` (``None``: not known,
    then ``min.insync.replicas`` is left to the broker's own default).
    """
    replicas = topics.replication_factor or broker_default
    config = dict(spec.config)
    if replicas is not None:
        config["min.insync.replicas"] = str(
            min_insync_replicas(replicas, topics.min_insync_replicas)
        )
    return topics.replication_factor or -1, config


def single_replica_topics(replicas: dict[str, int], brokers: int) -> list[str]:
    """The topics (of ``{topic: fewest replicas of any partition}``) with one copy on a cluster
    of several brokers: one broker's loss loses their records, whatever ``acks`` says."""
    if brokers < 2:
        return []
    return sorted(name for name, n in replicas.items() if n < 2)


def fewest_replicas(metadata: Any, names: Sequence[str]) -> dict[str, int]:
    """``{topic: fewest replicas of any of its partitions}`` for the ``names`` in ``metadata``
    (a ``ClusterMetadata``); topics missing from it are left out."""
    found: dict[str, int] = {}
    for name in names:
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None or not topic.partitions:
            continue
        found[name] = min(len(p.replicas) for p in topic.partitions.values())
    return found


def warn_single_replicas(metadata: Any, names: Sequence[str]) -> list[str]:
    """Log a warning for each of ``names`` with one replica on a multi-broker cluster."""
    brokers = len(metadata.brokers)
    single = single_replica_topics(fewest_replicas(metadata, names), brokers)
    for name in single:
        logger.warning(
            "topic=%s has one replica on a cluster of %d brokers: losing that broker loses its "
            "records (acks=all waits for one copy); raise its replication factor "
            "(kafka-reassign-partitions) and set min.insync.replicas=2",
            name,
            brokers,
        )
    return single


def broker_default_replication(admin: Any, metadata: Any, timeout_s: float) -> int | None:
    """The broker's ``default.replication.factor`` (``None`` if it cannot be read)."""
    if not metadata.brokers:
        return None
    broker = str(min(metadata.brokers))
    resource = ConfigResource(ResourceType.BROKER, broker)
    try:
        configs = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result(
            timeout=timeout_s
        )
        return int(configs["default.replication.factor"].value)
    except Exception as exc:  # refused (DescribeConfigs on the cluster), away, or absent
        logger.warning(
            "cannot read the broker's default.replication.factor (%s); new topics get it, but "
            "min.insync.replicas is left to the broker's default",
            exc,
        )
        return None


def create_topics(
    kafka: KafkaSettings,
    topics: TopicSettings,
    timeout_s: float = 30.0,
    *,
    tenants: Sequence[TenantSettings] = (),
) -> dict[str, str]:
    """Create every rayml topic (and each of ``tenants``' topics) that does not exist yet.

    Returns ``{topic name: "created" | "exists"}``. Safe to run any number of times. Only the
    missing topics are asked for, so a principal that may describe rayml's topics but not
    create them (an executor whose topics an admin made) passes when they all exist.

    Raises:
        AuthenticationFailedError: The broker refused the credentials (at once, not after
            ``timeout_s``).
        AuthorizationFailedError: No ACL lets the principal create a missing topic.
        KafkaAdminError: The broker is unreachable or refuses a topic for another reason.
    """
    errors = ErrorLog()
    admin = admin_client(kafka, error_cb=errors)
    metadata = connect(admin, kafka, errors, timeout_s)
    specs: dict[str, TopicSpec] = {}
    for spec in [*topic_specs(topics), *tenant_topic_specs(topics, tenants)]:
        specs.setdefault(spec.name, spec)
    outcome = {name: "exists" for name in specs if name in metadata.topics}
    missing = [s for name, s in specs.items() if name not in outcome]
    if missing:
        outcome.update(_create(admin, kafka, topics, missing, metadata, timeout_s))
    for name, what in outcome.items():
        logger.info("topic=%s %s", name, what)
    return {name: outcome[name] for name in specs}


def _create(
    admin: Any,
    kafka: KafkaSettings,
    topics: TopicSettings,
    specs: list[TopicSpec],
    metadata: Any,
    timeout_s: float,
) -> dict[str, str]:
    broker_default = None
    if topics.replication_factor is None:
        broker_default = broker_default_replication(admin, metadata, timeout_s)
    new = []
    for spec in specs:
        replication_factor, config = creation_request(spec, topics, broker_default)
        new.append(
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=replication_factor,
                config=config,
            )
        )
    try:
        futures = admin.create_topics(new, request_timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaAdminError(f"cannot create topics on {kafka.bootstrap_servers}: {exc}") from exc
    outcome: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            outcome[name] = "created"
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                outcome[name] = "exists"  # made meanwhile by someone else
                continue
            refused = refusal(exc, kafka, "Create", f"topic {name!r}", hint=CREATE_HINT)
            if refused is not None:
                raise refused from exc
            raise KafkaAdminError(
                f"cannot create topic {name!r} on {kafka.bootstrap_servers}: {exc}"
            ) from exc
        except Exception as exc:  # timeouts from concurrent.futures
            raise KafkaAdminError(
                f"cannot create topic {name!r} on {kafka.bootstrap_servers}: {exc!r}"
            ) from exc
    return outcome
