"""The tenants' and the executor's Kafka ACLs on the broker (``rayml tenants apply``, ``list``).

:mod:`rayml.tenancy.grants` plans the rights (:class:`~rayml.tenancy.grants.Grant`); this module
talks to the broker about them: :func:`apply` creates the topics, then the missing ACL bindings,
idempotently; :func:`status` says which of them the broker holds; :func:`binding_of` and
:func:`grant_of` turn a grant into confluent-kafka's ``AclBinding`` and back. A tenant without a
``principal`` gets its topics but no ACLs (``apply`` says so).

Example:
    >>> from rayml.tenancy.grants import Grant
    >>> grant = Grant("User:team-a", "topic", "a.in", "literal", "Write")
    >>> grant_of(binding_of(grant)) == grant
    True
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from rayml.config import Settings
from rayml.errors import KafkaAdminError
from rayml.kafka.auth_errors import ErrorLog, connect, refusal
from rayml.kafka.clients import admin_client
from rayml.kafka.topics import create_topics, topic_specs
from rayml.tenancy.grants import (
    Grant,
    Operation,
    Pattern,
    Resource,
    executor_grants,
    missing_grants,
    plan,
    tenant_grants,
)
from rayml.tenancy.rules import tenants_of

__all__ = [
    "EXECUTOR",
    "ApplyReport",
    "PrincipalStatus",
    "acl_operation",
    "apply",
    "binding_of",
    "grant_of",
    "present_grants",
    "status",
]

logger = logging.getLogger(__name__)

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

_APPLY_HINT = "apply tenants as an admin: a super user, or a principal with Alter on the cluster"


def acl_operation(operation: Operation) -> AclOperation:
    """confluent-kafka's ``AclOperation`` for a grant's ``operation``."""
    return _OPERATIONS[operation]


def binding_of(grant: Grant) -> AclBinding:
    """``grant`` as confluent-kafka's ``AclBinding``."""
    return AclBinding(
        _RESOURCES[grant.resource],
        grant.name,
        _PATTERNS[grant.pattern],
        grant.principal,
        "*",
        _OPERATIONS[grant.operation],
        AclPermissionType.ALLOW,
    )


def grant_of(binding: AclBinding) -> Grant | None:
    """The grant an ``AclBinding`` read from the broker is (``None``: not one rayml makes,
    e.g. a DENY, a host other than ``*``, an operation rayml never grants)."""
    if binding.permission_type != AclPermissionType.ALLOW or binding.host != "*":
        return None
    resource = _key_of(_RESOURCES, binding.restype)
    pattern = _key_of(_PATTERNS, binding.resource_pattern_type)
    operation = _key_of(_OPERATIONS, binding.operation)
    if resource is None or pattern is None or operation is None:
        return None
    return Grant(binding.principal, resource, binding.name, pattern, operation)


def _key_of(table: dict[Any, Any], value: Any) -> Any:
    return next((k for k, v in table.items() if v == value), None)


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
            grant = grant_of(binding)
            if grant is not None:
                found.add(grant)
    return found


def apply(
    settings: Settings,
    executor_principal: str | None,
    timeout_s: float = 30.0,
) -> ApplyReport:
    """Create rayml's and the tenants' topics and every missing ACL of
    :func:`~rayml.tenancy.grants.plan`.

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
        futures = admin.create_acls([binding_of(g) for g in missing], request_timeout=timeout_s)
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
