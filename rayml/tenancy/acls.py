"""Kafka ACLs for the tenants and the executor, from the settings (``rayml tenants apply``).

A tenant is trusted with what Kafka lets its principal do; this module decides those rights
(:func:`plan`, pure) and applies them (:func:`apply`: the topics, then the missing ACL bindings,
idempotently). What each principal gets (docs/security.md, "Tenants and ACLs"):

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
ACLs are made, and its reply prefix is the Python client's default, ``<topics.input>.reply.``.
A tenant without a ``principal`` gets its topics but no ACLs (``apply`` says so).

:func:`check_executor_access` is what ``rayml serve`` asks before it starts anything: it
authenticates (failing at once, naming the user, on a refused password), creates missing topics
if asked, checks that its principal may do what the table gives the executor on every literal
topic and group, and warns of topics with one replica on a cluster of several brokers.

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

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from rayml.config import Settings, TenantSettings
from rayml.errors import KafkaAdminError
from rayml.kafka.auth_errors import (
    AuthorizationFailedError,
    ErrorLog,
    connect,
    principal_of,
    refusal,
)
from rayml.kafka.clients import admin_client
from rayml.kafka.topics import create_topics, topic_specs, warn_single_replicas
from rayml.tenancy.rules import DEFAULT_TENANT, tenants_of

__all__ = [
    "CLIENT_GROUP_PREFIX",
    "EXECUTOR",
    "VERSIONS_GROUP_PREFIX",
    "ApplyReport",
    "Grant",
    "PrincipalStatus",
    "apply",
    "check_executor_access",
    "executor_grants",
    "missing_grants",
    "plan",
    "present_grants",
    "reply_prefix_of",
    "status",
    "tenant_grants",
]

logger = logging.getLogger(__name__)

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
_RESOURCES: dict[Resource, ResourceType] = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactional_id": ResourceType.TRANSACTIONAL_ID,
    "cluster": ResourceType.BROKER,  # confluent-kafka's name for the cluster resource
}
_PATTERNS: dict[Pattern, ResourcePatternType] = {
    "literal": ResourcePatternType.LITERAL,
    "prefixed": ResourcePatternType.PREFIXED,
}
_OPERATIONS: dict[Operation, AclOperation] = {
    "Read": AclOperation.READ,
    "Write": AclOperation.WRITE,
    "Describe": AclOperation.DESCRIBE,
    "Create": AclOperation.CREATE,
    "Delete": AclOperation.DELETE,
    "IdempotentWrite": AclOperation.IDEMPOTENT_WRITE,
}

# Kafka: Read, Write, Delete and Alter each imply Describe.
_IMPLY_DESCRIBE = {AclOperation.READ, AclOperation.WRITE, AclOperation.DELETE, AclOperation.ALTER}

_APPLY_HINT = "apply tenants as an admin: a super user, or a principal with Alter on the cluster"


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL binding, from any host: ``principal`` may ``operation`` on a resource."""

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation

    def __str__(self) -> str:
        what = "the cluster" if self.resource == "cluster" else f"{self.resource} {self.name!r}"
        prefixed = " (prefix)" if self.pattern == "prefixed" else ""
        return f"{self.principal} may {self.operation} {what}{prefixed}"

    def binding(self) -> AclBinding:
        """This grant as confluent-kafka's ``AclBinding``."""
        return AclBinding(
            _RESOURCES[self.resource],
            self.name,
            _PATTERNS[self.pattern],
            self.principal,
            "*",
            _OPERATIONS[self.operation],
            AclPermissionType.ALLOW,
        )

    @classmethod
    def of_binding(cls, binding: AclBinding) -> Grant | None:
        """The grant an ``AclBinding`` read from the broker is (``None``: not one rayml makes,
        e.g. a DENY, a host other than ``*``, an operation rayml never grants)."""
        if binding.permission_type != AclPermissionType.ALLOW or binding.host != "*":
            return None
        resource = _key_of(_RESOURCES, binding.restype)
        pattern = _key_of(_PATTERNS, binding.resource_pattern_type)
        operation = _key_of(_OPERATIONS, binding.operation)
        if resource is None or pattern is None or operation is None:
            return None
        return cls(binding.principal, resource, binding.name, pattern, operation)


def _key_of(table: dict[Any, Any], value: Any) -> Any:
    return next((k for k, v in table.items() if v == value), None)


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


#: A group coordinator that is loading or moving: asked again until the timeout.
_COORDINATOR_BUSY = frozenset(
    {
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
    }
)

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


# --- against the broker ------------------------------------------------------------------------


@dataclass
class ApplyReport:
    """What :func:`apply` did: topics and ACLs created or found, tenants left without ACLs."""

    topics: dict[str, str] = field(default_factory=dict)
    acls: list[tuple[Grant, str]] = field(default_factory=list)
    without_principal: list[str] = field(default_factory=list)


def present_grants(
    admin: Any, settings: Settings, principals: Iterable[str], timeout_s: float
) -> set[Grant]:
    """The grants the broker holds for ``principals`` (DescribeAcls: Describe on the cluster).

    Raises:
        AuthorizationFailedError: The asking principal may not describe ACLs.
    """
    found: set[Grant] = set()
    for principal in dict.fromkeys(principals):
        # None matches any resource name and any host (confluent-kafka's stubs say str).
        query = AclBindingFilter(
            ResourceType.ANY,
            None,  # type: ignore[arg-type]
            ResourcePatternType.ANY,
            principal,
            None,  # type: ignore[arg-type]
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        try:
            bindings = admin.describe_acls(query, request_timeout=timeout_s).result(timeout_s)
        except KafkaException as exc:
            refused = refusal(exc, settings.kafka, "Describe", "the cluster's ACLs", _APPLY_HINT)
            if refused is not None:
                raise refused from exc
            raise KafkaAdminError(f"cannot describe the ACLs of {principal}: {exc}") from exc
        for binding in bindings:
            grant = Grant.of_binding(binding)
            if grant is not None:
                found.add(grant)
    return found


def apply(
    settings: Settings,
    executor_principal: str | None,
    timeout_s: float = 30.0,
) -> ApplyReport:
    """Create rayml's and the tenants' topics and every missing ACL of :func:`plan`.

    Runs as ``settings.kafka``'s principal, which must be an admin. Idempotent: what exists is
    reported as ``"exists"`` and left alone. Returns once the broker shows every grant.

    Raises:
        AuthenticationFailedError: The broker refused the admin's credentials (at once).
        AuthorizationFailedError: The principal may not create the topics or the ACLs.
        KafkaAdminError: The broker is unreachable or refused for another reason.
    """
    report = ApplyReport()
    tenants = tenants_of(settings)
    report.without_principal = [t.name for t in tenants if t.principal is None]
    report.topics = create_topics(settings.kafka, settings.topics, timeout_s, tenants=tenants)
    wanted = plan(settings, executor_principal)
    principals = [g.principal for g in wanted]
    errors = ErrorLog()
    admin = admin_client(settings.kafka, error_cb=errors)
    connect(admin, settings.kafka, errors, timeout_s)
    present = present_grants(admin, settings, principals, timeout_s)
    missing = missing_grants(wanted, present)
    if missing:
        futures = admin.create_acls([g.binding() for g in missing], request_timeout=timeout_s)
        for grant, future in zip(missing, futures.values(), strict=True):
            try:
                future.result(timeout_s)
            except KafkaException as exc:
                refused = refusal(exc, settings.kafka, "Alter", "the cluster's ACLs", _APPLY_HINT)
                if refused is not None:
                    raise refused from exc
                raise KafkaAdminError(f"cannot create the ACL '{grant}': {exc}") from exc
        _wait_present(admin, settings, wanted, principals, timeout_s)
    created = set(missing)
    report.acls = [(g, "created" if g in created else "exists") for g in wanted]
    for grant, what in report.acls:
        logger.info("acl=%r %s", str(grant), what)
    return report


@dataclass(frozen=True)
class PrincipalStatus:
    """One principal's side of the settings on the broker (``rayml tenants list``)."""

    tenant: str  # a tenant's name, or "(executor)"
    principal: str | None
    topics: dict[str, bool]  # a tenant's request and result topics, or rayml's: exists?
    present: list[Grant]
    missing: list[Grant]


EXECUTOR = "(executor)"


def status(
    settings: Settings, executor_principal: str | None, timeout_s: float = 30.0
) -> list[PrincipalStatus]:
    """Each tenant (and the executor, if named): its topics, and which of its ACLs the broker
    holds. Needs Describe on the cluster (an admin) to read ACLs.

    Raises:
        AuthenticationFailedError, AuthorizationFailedError, KafkaAdminError: as :func:`apply`.
    """
    errors = ErrorLog()
    admin = admin_client(settings.kafka, error_cb=errors)
    metadata = connect(admin, settings.kafka, errors, timeout_s)
    wanted = plan(settings, executor_principal)
    present = present_grants(admin, settings, [g.principal for g in wanted], timeout_s)
    rows: list[tuple[str, str | None, list[str], list[Grant]]] = []
    for t in tenants_of(settings):
        own = [
            t.input_topic,
            t.bulk_topic,
            *([t.training_topic] if t.training_topic else []),
            t.result_topic,
        ]
        rows.append((t.name, t.principal, own, tenant_grants(settings, t)))
    if executor_principal is not None:
        own = [spec.name for spec in topic_specs(settings.topics)]
        rows.append(
            (EXECUTOR, executor_principal, own, executor_grants(settings, executor_principal))
        )
    found: list[PrincipalStatus] = []
    for name, principal, own, grants in rows:
        found.append(
            PrincipalStatus(
                tenant=name,
                principal=principal,
                topics={topic: topic in metadata.topics for topic in own},
                present=[g for g in grants if g in present],
                missing=missing_grants(grants, present),
            )
        )
    return found


def _wait_present(
    admin: Any, settings: Settings, wanted: list[Grant], principals: list[str], timeout_s: float
) -> None:
    # The controller accepted them; the broker's authorizer applies them once it has read the
    # metadata log that far. Returning then means "apply, then use" works without a retry.
    deadline = time.monotonic() + timeout_s
    while missing_grants(wanted, present_grants(admin, settings, principals, timeout_s)):
        if time.monotonic() > deadline:
            raise KafkaAdminError(f"the ACLs were created but not in force after {timeout_s:g}s")
        time.sleep(0.1)


def check_executor_access(
    settings: Settings, *, create_missing: bool, timeout_s: float = 30.0
) -> list[str]:
    """What ``rayml serve`` checks before it starts anything: its principal gets in, its
    topics exist (created if ``create_missing``), and it may do what :func:`executor_grants`
    gives it on each literal topic and group. Returns the topics with one replica on a cluster
    of several brokers (each logged as a warning).

    A reply prefix and the transactional ids cannot be checked without writing: a refusal
    there is logged by the writer when it happens (the failing topic, its error).

    Raises:
        AuthenticationFailedError: The broker refused the credentials (at once, naming the user).
        AuthorizationFailedError: The first operation the principal may not do, and on what.
        KafkaAdminError: The broker is unreachable.
    """
    kafka = settings.kafka
    if create_missing:
        create_topics(kafka, settings.topics, timeout_s, tenants=tenants_of(settings))
    errors = ErrorLog()
    admin = admin_client(kafka, error_cb=errors)
    metadata = connect(admin, kafka, errors, timeout_s)
    principal = principal_of(kafka)
    grants = [g for g in executor_grants(settings, principal) if g.pattern == "literal"]
    topics = _needed(grants, "topic")
    described = admin.describe_topics(
        TopicCollection(list(topics)),
        include_authorized_operations=True,
        request_timeout=timeout_s,
    )
    for name, future in described.items():
        try:
            allowed = future.result(timeout_s).authorized_operations
        except KafkaException as exc:
            refused = refusal(exc, kafka, "Describe", f"topic {name!r}", _grant_hint(settings))
            if refused is not None:
                raise refused from exc
            logger.warning("topic=%s cannot be described (%s): is it created?", name, exc)
            continue
        _check_allowed(kafka, settings, allowed, topics[name], f"topic {name!r}")
    groups = _needed(grants, "group")
    for name in groups:
        deadline = time.monotonic() + timeout_s
        while True:
            [future] = admin.describe_consumer_groups(
                [name], include_authorized_operations=True, request_timeout=timeout_s
            ).values()
            try:
                allowed = future.result(timeout_s).authorized_operations
                break
            except KafkaException as exc:
                refused = refusal(exc, kafka, "Describe", f"group {name!r}", _grant_hint(settings))
                if refused is not None:
                    raise refused from exc
                err = exc.args[0] if exc.args else None
                busy = err is not None and err.code() in _COORDINATOR_BUSY
                if busy and time.monotonic() < deadline:  # a starting broker's coordinator
                    time.sleep(0.2)
                    continue
                raise KafkaAdminError(f"cannot describe group {name!r}: {exc}") from exc
        _check_allowed(kafka, settings, allowed, groups[name], f"group {name!r}")
    logger.info("%s may read, write and describe what the executor needs", principal)
    return warn_single_replicas(metadata, list(topics))


def _needed(grants: list[Grant], resource: Resource) -> dict[str, list[Operation]]:
    needed: dict[str, list[Operation]] = {}
    for g in grants:
        if g.resource == resource:
            needed.setdefault(g.name, []).append(g.operation)
    return needed


def _grant_hint(settings: Settings) -> str:
    return (
        f"the executor's rights are granted by an admin's `rayml tenants apply "
        f"--executor-principal {principal_of(settings.kafka)}`"
    )


def _check_allowed(
    kafka: Any,
    settings: Settings,
    allowed: list[AclOperation] | None,
    needed: list[Operation],
    resource: str,
) -> None:
    if allowed is None:
        return  # the broker did not say (too old for KIP-430): the writes will tell
    have = set(allowed)
    if AclOperation.ALL in have:
        return
    if have & _IMPLY_DESCRIBE:
        have.add(AclOperation.DESCRIBE)
    for op in needed:
        if _OPERATIONS[op] not in have:
            raise AuthorizationFailedError(
                principal_of(kafka),
                op,
                resource,
                "no ACL allows it",
                _grant_hint(settings),
            )
