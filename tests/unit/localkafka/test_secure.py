"""The secure listener's broker properties with Kafka's authorizer (no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayml.localkafka import SecureListener
from rayml.localkafka.secure import AUTHORIZER


def test_without_the_authorizer_there_is_no_acl_check(tmp_path: Path) -> None:
    props = SecureListener.generate(tmp_path, users=("rayml",)).server_properties()
    assert "authorizer.class.name" not in props
    assert "super.users" not in props


def test_the_authorizer_allows_nothing_without_an_acl_but_to_the_broker_and_its_admins(
    tmp_path: Path,
) -> None:
    listener = SecureListener.generate(
        tmp_path, users=("admin", "rayml", "team-a"), authorizer=True, super_users=("admin",)
    )
    props = listener.server_properties()
    assert props["authorizer.class.name"] == AUTHORIZER
    assert AUTHORIZER == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    # The broker's own identity on the client listener (the first user, also the admin here)
    # and its certificate on the mutual-TLS controller listener; no one else.
    assert props["super.users"] == "User:admin;User:CN=127.0.0.1"


def test_super_users_must_be_users_of_the_listener_with_the_authorizer_on(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="are not SCRAM users"):
        SecureListener.generate(tmp_path, users=("a",), authorizer=True, super_users=("b",))
    with pytest.raises(ValueError, match="only with authorizer=True"):
        SecureListener.generate(tmp_path, users=("a", "b"), super_users=("b",))
    listener = SecureListener.generate(
        tmp_path, users=("broker", "admin"), authorizer=True, super_users=("admin",)
    )
    assert listener.server_properties()["super.users"] == (
        "User:broker;User:CN=127.0.0.1;User:admin"
    )
