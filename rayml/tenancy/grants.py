"""The ACL plan: which Kafka rights each tenant's principal and the executor's need.

A tenant is trusted with what Kafka lets its principal do; this module decides those rights in
rayml's own terms (:class:`Grant`, :func:`plan`; no broker): :mod:`rayml.tenancy.acls` applies
them (``rayml tenants apply``) and :mod:`rayml.tenancy.access_check` checks the executor's at
start. What each principal gets (docs/security.md, "Tenants and ACLs"):

===========================  =====================================================  ===========
principal                    resource                                               operations
===========================  =====================================================  ===========
tenant (``principal``)       its input topic and its bulk lane (``batch_topic``);   Write,
                             its training topic, if it may train                    Describe
tenant                       its result topic; topics prefixed with its reply       Read,
                             prefix (its reply topics)                              Describe
tenant                       topics prefixed with its reply prefix (its clients     Create,
                             create and delete their reply topics)                  Delete
tenant                       rayml's registry and models topics (the client checks  Read,
                             params against the published pipelines); the events    Describe
                             topic, if it may train (job progress)
tenant                       groups prefixed ``<tenant name>.`` (its own groups)     Read
tenant                       groups prefixed ``rayml-client-`` (the Python client's  Describe
                             readers: assigned partitions, no membership, no
                             offsets; librdkafka still looks up their coordinator)
executor                     every tenant's input topic, bulk lane and training     Read,
                             topic                                                  Describe
executor                     every tenant's result topic; topics prefixed with its  Write,
                             reply prefix                                           Describe
executor                     rayml's own topics (input and its bulk lane, output,   Read,
                             jobs, dlq, models, registry, events)                   Write,
                                                                                    Describe
executor                     groups ``executor.group_id``, ``jobs_group_id``        Read
executor                     groups prefixed ``rayml-versions-`` (model versions)   Describe
executor                     groups prefixed ``rayml-rollouts-`` (rollout monitor)  Describe
executor                     transactional ids prefixed ``<group_id>.`` and         Write,
                             ``<jobs_group_id>.`` (exactly-once)                    Describe
executor                     the cluster                                            Idempotent
                                                                                    Write
===========================  =====================================================  ===========

Without tenants in the settings the one default tenant has no principal: only the executor's
ACLs are planned, and its reply prefix is the Python client's default, ``<topics.input>.reply.``.
A tenant without a ``principal`` gets its topics but no ACLs.

This module imports no Kafka client itself, but the names of rayml's own topics come from
:func:`rayml.kafka.topics.topic_specs`, whose module does: importing it loads confluent-kafka.

Example:
    >>> from rayml.config import load_settings
    >>> settings = load_settings(tenants=[{"name": "team-a", "principal": "User:team-a",
    ...     "input_topic": "a.in", "result_topic": "a.out", "reply_prefix": "a.replies."}])
    >>> for grant in plan(settings, "User:rayml")[:2]:
    ...     print(grant)
    User:team-a may Write topic 'a.in'
    User:team-a may Describe topic 'a.in'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from rayml.config import Settings, TenantSettings
from rayml.kafka.topics import topic_specs
from rayml.tenancy.rules import DEFAULT_TENANT, tenants_of

__all__ = [
    "CLIENT_GROUP_PREFIX",
    "ROLLOUTS_GROUP_PREFIX",
    "VERSIONS_GROUP_PREFIX",
    "Grant",
    "Operation",
    "Pattern",
    "Resource",
    "executor_grants",
    "missing_grants",
    "plan",
    "reply_prefix_of",
    "tenant_grants",
]

Resource = Literal["topic", "group", "transactional_id", "cluster"]
Pattern = Literal["literal", "prefixed"]
Operation = Literal["Read", "Write", "Describe", "Create", "Delete", "IdempotentWrite"]

# Group ids of readers that assign partitions and never join or commit; librdkafka still asks
# for their coordinator, which takes Describe on the group. rayml.client (reply topics, the
# registry and models topics, job events) and rayml.executor.version_follower name them so.
CLIENT_GROUP_PREFIX = "rayml-client-"
VERSIONS_GROUP_PREFIX = "rayml-versions-"
ROLLOUTS_GROUP_PREFIX = "rayml-rollouts-"  # rayml.rollouts.reading's reader

# What Kafka calls the cluster resource in ACLs.
_CLUSTER = "kafka-cluster"


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL binding, from any host: ``principal`` may ``operation`` on a resource.

    :func:`rayml.tenancy.acls.binding_of` and :func:`rayml.tenancy.acls.grant_of` turn it into
    confluent-kafka's ``AclBinding`` and back.
    """

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation

    def __str__(self) -> str:
        what = "the cluster" if self.resource == "cluster" else f"{self.resource} {self.name!r}"
        prefixed = " (prefix)" if self.pattern == "prefixed" else ""
        return f"{self.principal} may {self.operation} {what}{prefixed}"


def _topic(principal: str, name: str, *ops: Operation, prefixed: bool = False) -> list[Grant]:
    pattern: Pattern = "prefixed" if prefixed else "literal"
    return [Grant(principal, "topic", name, pattern, op) for op in ops]


def reply_prefix_of(settings: Settings, tenant: TenantSettings) -> str:
    """The prefix of ``tenant``'s reply topics as its ACLs name it: the tenant's, or for the
    default tenant (which may name any topic) the Python client's default reply topics."""
    if not settings.tenants and tenant.name == DEFAULT_TENANT:
        return f"{settings.topics.input}.reply."
    return tenant.reply_prefix


def tenant_grants(settings: Settings, tenant: TenantSettings) -> list[Grant]:
    """What ``tenant``'s principal may do (nothing without a ``principal``)."""
    p = tenant.principal
    if p is None:
        return []
    t = settings.topics
    grants = _topic(p, tenant.input_topic, "Write", "Describe")
    grants += _topic(p, tenant.bulk_topic, "Write", "Describe")
    if tenant.training_topic:
        grants += _topic(p, tenant.training_topic, "Write", "Describe")
    grants += _topic(p, tenant.result_topic, "Read", "Describe")
    prefix = reply_prefix_of(settings, tenant)
    grants += _topic(p, prefix, "Read", "Describe", "Create", "Delete", prefixed=True)
    grants += _topic(p, t.registry, "Read", "Describe")
    grants += _topic(p, t.models, "Read", "Describe")
    if tenant.training_topic:
        grants += _topic(p, t.events, "Read", "Describe")
    grants += [
        Grant(p, "group", f"{tenant.name}.", "prefixed", "Read"),
        Grant(p, "group", CLIENT_GROUP_PREFIX, "prefixed", "Describe"),
    ]
    return grants


#: What the executor does on each of rayml's own topics (least privilege): it reads requests and
#: never writes them; it writes results, dead letters and events and never reads them; it reads
#: and writes the compacted state topics (models: serving records; registry: pipelines).
_EXECUTOR_OPS: dict[str, tuple[Operation, ...]] = {
    "input": ("Read",),
    "input_batch": ("Read",),
    "jobs": ("Read",),
    "output": ("Write",),
    "dlq": ("Write",),
    "events": ("Write",),
    "models": ("Read", "Write"),
    "registry": ("Read", "Write"),
    # Rollouts: it writes what each version answered and reads it back (after a restart);
    # it reads ground truth, which others write.
    "shadow": ("Read", "Write"),
    "feedback": ("Read",),
}


def executor_grants(settings: Settings, principal: str) -> list[Grant]:
    """What the executor's principal may do: read requests, write results and its own topics."""
    e = principal
    grants: list[Grant] = []
    for tenant in tenants_of(settings):
        grants += _topic(e, tenant.input_topic, "Read", "Describe")
        grants += _topic(e, tenant.bulk_topic, "Read", "Describe")
        if tenant.training_topic:
            grants += _topic(e, tenant.training_topic, "Read", "Describe")
        grants += _topic(e, tenant.result_topic, "Write", "Describe")
        grants += _topic(e, reply_prefix_of(settings, tenant), "Write", "Describe", prefixed=True)
    for spec in topic_specs(settings.topics):
        grants += _topic(e, spec.name, *_EXECUTOR_OPS.get(spec.role, ("Read", "Write")), "Describe")
    ex = settings.executor
    grants += [
        Grant(e, "group", ex.group_id, "literal", "Read"),
        Grant(e, "group", ex.jobs_group_id, "literal", "Read"),
        Grant(e, "group", VERSIONS_GROUP_PREFIX, "prefixed", "Describe"),
        # The rollout monitor's reader (assign-only, as above).
        Grant(e, "group", ROLLOUTS_GROUP_PREFIX, "prefixed", "Describe"),
    ]
    txn_ops: tuple[Operation, ...] = ("Write", "Describe")
    for group in (ex.group_id, ex.jobs_group_id):
        # Exactly-once: "{group_id}.{ingest_id}", "{jobs_group_id}.{runner_id}".
        grants += [Grant(e, "transactional_id", f"{group}.", "prefixed", op) for op in txn_ops]
    grants.append(Grant(e, "cluster", _CLUSTER, "literal", "IdempotentWrite"))
    return grants


def plan(settings: Settings, executor_principal: str | None) -> list[Grant]:
    """Every grant of the settings: each tenant's, then the executor's (if named); no repeats."""
    grants: list[Grant] = []
    for tenant in tenants_of(settings):
        grants += tenant_grants(settings, tenant)
    if executor_principal is not None:
        grants += executor_grants(settings, executor_principal)
    return list(dict.fromkeys(grants))


def missing_grants(wanted: Iterable[Grant], present: set[Grant]) -> list[Grant]:
    """``wanted`` grants not in ``present``, in order (pure)."""
    return [g for g in wanted if g not in present]
