"""Grants as confluent-kafka's ACL bindings and back (no broker)."""

from __future__ import annotations

from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType

from rayml.tenancy.acls import binding_of, grant_of
from rayml.tenancy.grants import Grant


def test_a_grant_is_one_allow_binding_from_any_host_and_back() -> None:
    grant = Grant("User:team-a", "topic", "a.replies.", "prefixed", "Create")
    binding = binding_of(grant)
    assert isinstance(binding, AclBinding)
    assert (binding.host, binding.permission_type) == ("*", AclPermissionType.ALLOW)
    assert binding.operation == AclOperation.CREATE
    assert grant_of(binding) == grant
    cluster = Grant("User:rayml", "cluster", "kafka-cluster", "literal", "IdempotentWrite")
    assert grant_of(binding_of(cluster)) == cluster
    deny = AclBinding(
        binding.restype,
        binding.name,
        binding.resource_pattern_type,
        binding.principal,
        "*",
        binding.operation,
        AclPermissionType.DENY,
    )
    assert grant_of(deny) is None
