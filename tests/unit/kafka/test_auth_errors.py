"""Naming Kafka's refusals (no broker): who, what, on what; and failing fast on a refused
handshake with a fake admin client."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException
from pydantic import SecretStr

from rayml.config import KafkaSettings
from rayml.errors import KafkaAdminError
from rayml.kafka.auth_errors import (
    AuthenticationFailedError,
    AuthorizationFailedError,
    ErrorLog,
    connect,
    kind_of,
    principal_of,
    refusal,
)

SCRAM = KafkaSettings(
    bootstrap_servers="b1:9093",
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="team-a",
    sasl_password=SecretStr("s3cret-password-value"),
)


def test_the_principal_is_named_as_kafka_names_it() -> None:
    assert principal_of(SCRAM) == "User:team-a"
    assert principal_of(KafkaSettings()) == "User:ANONYMOUS"
    oauth = SCRAM.model_copy(update={"sasl_mechanism": "OAUTHBEARER"})
    assert principal_of(oauth) == "the OAUTHBEARER token's principal"
    no_user = SCRAM.model_copy(update={"sasl_username": None})
    assert "none configured" in principal_of(no_user)
    tls = KafkaSettings(security_protocol="SSL", ssl_certificate_location="/c/me.pem")
    assert principal_of(tls) == "the principal of the certificate /c/me.pem"


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (KafkaError._AUTHENTICATION, "authentication"),
        (KafkaError.SASL_AUTHENTICATION_FAILED, "authentication"),
        (KafkaError._SSL, "authentication"),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, "authorization"),
        (KafkaError.GROUP_AUTHORIZATION_FAILED, "authorization"),
        (KafkaError.CLUSTER_AUTHORIZATION_FAILED, "authorization"),
        (KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "authorization"),
        (KafkaError._TRANSPORT, None),
        (KafkaError._MSG_TIMED_OUT, None),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, None),
    ],
)
def test_kind_of(code: int, kind: str | None) -> None:
    assert kind_of(KafkaError(code)) == kind


def test_an_acl_refusal_names_principal_operation_and_resource() -> None:
    exc = KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    refused = refusal(exc, SCRAM, "Write", "topic 'b.in'", hint="ask an admin")
    assert isinstance(refused, AuthorizationFailedError)
    assert (refused.principal, refused.operation, refused.resource) == (
        "User:team-a",
        "Write",
        "topic 'b.in'",
    )
    assert str(refused) == (
        "Kafka refused User:team-a Write on topic 'b.in': no ACL allows it "
        "(TOPIC_AUTHORIZATION_FAILED); ask an admin"
    )


def test_an_authentication_failure_names_the_user_and_the_servers_never_the_password() -> None:
    err = KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: invalid credentials")
    refused = refusal(err, SCRAM, "Create", "topic 'x'")
    assert isinstance(refused, AuthenticationFailedError)
    text = str(refused)
    assert text.startswith("authentication failed for User:team-a at b1:9093: SASL auth")
    assert "s3cret" not in text


def test_other_errors_are_not_refusals() -> None:
    assert refusal(KafkaError(KafkaError._TRANSPORT), SCRAM, "Write", "topic 'x'") is None
    assert refusal(ValueError("x"), SCRAM, "Write", "topic 'x'") is None


class FakeAdmin:
    """list_topics fails like librdkafka's while ``error_cb`` hears of a refused handshake."""

    def __init__(self, errors: ErrorLog, refuse_after: int | None, answer_after: int | None):
        self.errors, self.calls = errors, 0
        self.refuse_after, self.answer_after = refuse_after, answer_after

    def list_topics(self, timeout: float) -> str:
        self.calls += 1
        if self.answer_after is not None and self.calls > self.answer_after:
            return "metadata"
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))

    def poll(self, _timeout: float) -> int:
        if self.refuse_after is not None and self.calls >= self.refuse_after:
            self.errors(KafkaError(KafkaError._AUTHENTICATION, "invalid credentials"))
        return 0


def test_connect_fails_at_the_first_refused_handshake_not_at_the_timeout() -> None:
    errors = ErrorLog()
    admin = FakeAdmin(errors, refuse_after=2, answer_after=None)
    with pytest.raises(AuthenticationFailedError) as refused:
        connect(admin, SCRAM, errors, timeout_s=3600, step_s=0.01)
    assert admin.calls == 2
    assert refused.value.principal == "User:team-a"
    assert "invalid credentials" in str(refused.value)


def test_connect_returns_the_metadata_once_a_broker_answers() -> None:
    errors = ErrorLog()
    admin = FakeAdmin(errors, refuse_after=None, answer_after=3)
    assert connect(admin, SCRAM, errors, timeout_s=3600, step_s=0.01) == "metadata"
    assert admin.calls == 4


def test_connect_gives_up_after_the_timeout_when_nothing_answers() -> None:
    errors = ErrorLog()
    admin = FakeAdmin(errors, refuse_after=None, answer_after=None)
    with pytest.raises(KafkaAdminError) as away:
        connect(admin, SCRAM, errors, timeout_s=0.05, step_s=0.01)
    assert not isinstance(away.value, AuthenticationFailedError)
    assert "no Kafka broker at b1:9093 answered within 0.05s" in str(away.value)


def test_an_error_log_can_keep_its_errors_in_a_callers_list() -> None:
    seen: list[KafkaError] = []
    log = ErrorLog(seen)
    seen.append(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert log.authentication() is None
    log(KafkaError(KafkaError._SSL, "certificate verify failed"))
    found = log.authentication()
    assert found is not None
    assert found.code() == KafkaError._SSL
    assert len(seen) == 2
