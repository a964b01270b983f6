"""The executor's start check of its own Kafka rights (what ``rayml serve`` asks first).

:func:`check_executor_access` authenticates (failing at once, naming the user, on a refused
password), creates missing topics if asked, checks that its principal may do what
:func:`rayml.tenancy.grants.executor_grants` gives the executor on every literal topic and group
(the broker's authorized operations, KIP-430), and warns of topics with one replica on a cluster
of several brokers. It writes no record: the rights on a reply prefix and on the transactional
ids are left to the writers, which log a refusal when it happens.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AclOperation  # type: ignore[attr-defined]

from rayml.config import Settings
from rayml.errors import KafkaAdminError
from rayml.kafka.auth_errors import (
    AuthorizationFailedError,
    ErrorLog,
    connect,
    principal_of,
    refusal,
)
from rayml.kafka.clients import admin_client
from rayml.kafka.topics import create_topics, warn_single_replicas
from rayml.tenancy.acls import acl_operation
from rayml.tenancy.grants import Grant, Operation, Resource, executor_grants
from rayml.tenancy.rules import tenants_of

__all__ = ["check_executor_access"]

logger = logging.getLogger(__name__)

#: A group coordinator that is loading or moving: asked again until the timeout.
_COORDINATOR_BUSY = frozenset(
    {
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
    }
)

# Kafka: Read, Write, Delete and Alter each imply Describe.
_IMPLY_DESCRIBE = {AclOperation.READ, AclOperation.WRITE, AclOperation.DELETE, AclOperation.ALTER}


def check_executor_access(
    settings: Settings, *, create_missing: bool, timeout_s: float = 30.0
) -> list[str]:
    """What ``rayml serve`` checks before it starts anything: its principal gets in, its
    topics exist (created if ``create_missing``), and it may do what
    :func:`~rayml.tenancy.grants.executor_grants` gives it on each literal topic and group.
    Returns the topics with one replica on a cluster of several brokers (each logged as a
    warning).

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
        if acl_operation(op) not in have:
            raise AuthorizationFailedError(
                principal_of(kafka),
                op,
                resource,
                "no ACL allows it",
                _grant_hint(settings),
            )
