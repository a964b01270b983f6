"""Kafka's refusals of rayml's principal, named: authentication or an ACL, who, what, on what.

librdkafka reports a failed SASL or TLS handshake only to the client's ``error_cb``
(``_AUTHENTICATION``, ``_SSL``); the call that needed the connection just times out as a
"transport failure". An ACL's refusal comes back on the one request (``TOPIC_AUTHORIZATION_FAILED``,
``GROUP_...``, ``CLUSTER_...``, ``TRANSACTIONAL_ID_AUTHORIZATION_FAILED``) and never says who was
refused. This module turns both into a :class:`KafkaAccessError` that names the principal (the
configured SASL user, or the TLS certificate), the operation and the resource:

* :func:`principal_of`: how the broker will name rayml's client (``User:rayml``).
* :func:`kind_of`: ``"authentication"``, ``"authorization"`` or ``None`` for a ``KafkaError``.
* :func:`refusal`: the named error for a refused operation (``None`` if the error is another).
* :class:`ErrorLog`: an ``error_cb`` that keeps what librdkafka reported.
* :func:`connect`: ask the cluster for its metadata, failing as soon as the handshake is refused,
  not after the timeout.

Example:
    >>> from confluent_kafka import KafkaError
    >>> from rayml.config import KafkaSettings
    >>> kafka = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
    ...                       sasl_username="team-a")
    >>> err = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    >>> print(refusal(err, kafka, "Write", "topic 'b.in'"))
    Kafka refused User:team-a Write on topic 'b.in': no ACL allows it (TOPIC_AUTHORIZATION_FAILED)
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException

from rayml.config import KafkaSettings
from rayml.errors import KafkaAdminError

__all__ = [
    "AUTHENTICATION_CODES",
    "AUTHORIZATION_CODES",
    "AuthenticationFailedError",
    "AuthorizationFailedError",
    "ErrorLog",
    "KafkaAccessError",
    "connect",
    "kind_of",
    "principal_of",
    "refusal",
]

logger = logging.getLogger(__name__)

# The handshake failed: wrong password, unknown user, a certificate the other side refuses.
AUTHENTICATION_CODES = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL}
)
# The principal is known, an ACL does not allow the operation.
AUTHORIZATION_CODES = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.DELEGATION_TOKEN_AUTHORIZATION_FAILED,
    }
)

Kind = Literal["authentication", "authorization"]


class KafkaAccessError(KafkaAdminError):
    """Raised when Kafka refuses rayml's principal: its credentials, or an operation by ACL."""

    def __init__(
        self, principal: str, operation: str, resource: str, reason: str, hint: str = ""
    ) -> None:
        self.principal = principal
        self.operation = operation
        self.resource = resource
        self.reason = reason
        self.hint = hint
        message = self._message()
        super().__init__(f"{message}; {hint}" if hint else message)

    def _message(self) -> str:
        return f"Kafka refused {self.principal} {self.operation} on {self.resource}: {self.reason}"


class AuthenticationFailedError(KafkaAccessError):
    """Raised when the broker refuses the client's credentials or certificate (SASL, TLS)."""

    def _message(self) -> str:
        return (
            f"authentication failed for {self.principal} at {self.resource}: {self.reason} "
            "(check kafka.sasl_username and kafka.sasl_password, RAYML_KAFKA__SASL_*, or the "
            "TLS files)"
        )


class AuthorizationFailedError(KafkaAccessError):
    """Raised when no ACL allows the principal an operation on a topic, group, transactional
    id or the cluster."""


def principal_of(kafka: KafkaSettings) -> str:
    """How the broker names a client with these settings, as far as the settings tell.

    SASL PLAIN and SCRAM: ``User:<sasl_username>`` (Kafka's default principal builder). TLS
    client certificates and OAUTHBEARER are named by the broker from what the client presents,
    so the message says where that comes from rather than guess.
    """
    protocol = kafka.security_protocol
    if protocol.startswith("SASL"):
        if kafka.sasl_mechanism == "OAUTHBEARER":
            return "the OAUTHBEARER token's principal"
        if kafka.sasl_username:
            return f"User:{kafka.sasl_username}"
        return "the SASL user (none configured: set kafka.sasl_username)"
    if protocol == "SSL" and kafka.ssl_certificate_location:
        return f"the principal of the certificate {kafka.ssl_certificate_location}"
    return "User:ANONYMOUS"


def kind_of(err: KafkaError) -> Kind | None:
    """Whether ``err`` is an authentication or an authorisation failure (``None``: neither)."""
    code = err.code()
    if code in AUTHENTICATION_CODES:
        return "authentication"
    if code in AUTHORIZATION_CODES:
        return "authorization"
    return None


def _error_of(err: KafkaError | BaseException) -> KafkaError | None:
    if isinstance(err, KafkaError):
        return err
    if isinstance(err, KafkaException) and err.args and isinstance(err.args[0], KafkaError):
        return err.args[0]
    return None


def refusal(
    err: KafkaError | BaseException,
    kafka: KafkaSettings,
    operation: str,
    resource: str,
    hint: str = "",
) -> KafkaAccessError | None:
    """The named error for ``operation`` on ``resource`` refused with ``err``; ``None`` when
    ``err`` (a ``KafkaError`` or a ``KafkaException`` holding one) is not a refusal.

    Args:
        operation: What was asked, as Kafka's ACLs name it (``Write``, ``Read``, ``Create``...).
        resource: What it was asked on (``topic 'x'``, ``group 'g'``, ``the cluster``).
        hint: What to do about an authorisation failure, appended to its message.
    """
    error = _error_of(err)
    if error is None:
        return None
    kind = kind_of(error)
    principal = principal_of(kafka)
    if kind == "authentication":
        return AuthenticationFailedError(principal, operation, kafka.bootstrap_servers, error.str())
    if kind == "authorization":
        return AuthorizationFailedError(
            principal, operation, resource, f"no ACL allows it ({error.name()})", hint
        )
    return None


class ErrorLog:
    """An ``error_cb`` for a librdkafka client that keeps what it reported.

    Args:
        errors: Keep them in this list (one another ``error_cb`` appends to); a new one by
            default.

    Example:
        >>> errors = ErrorLog()
        >>> admin = admin_client(kafka, error_cb=errors)         # doctest: +SKIP
    """

    def __init__(self, errors: list[KafkaError] | None = None) -> None:
        self.errors = errors if errors is not None else []

    def __call__(self, err: KafkaError) -> None:
        self.errors.append(err)  # one atomic step: callbacks and readers may be on two threads

    def authentication(self) -> KafkaError | None:
        """The last authentication or TLS failure reported, if any."""
        found = [e for e in list(self.errors) if kind_of(e) == "authentication"]
        return found[-1] if found else None


def connect(
    client: Any, kafka: KafkaSettings, errors: ErrorLog, timeout_s: float, step_s: float = 0.25
) -> Any:
    """The cluster's metadata through ``client`` (an AdminClient built with ``errors`` as its
    ``error_cb``), failing as soon as the broker refuses the handshake.

    A refused handshake is known to ``error_cb`` within one round trip, while ``list_topics``
    would wait out its whole timeout: the metadata is asked in short steps, serving the
    callbacks between them.

    Raises:
        AuthenticationFailedError: The broker refused the credentials or the certificate.
        KafkaAdminError: No broker answered within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        step = max(0.01, min(step_s, deadline - time.monotonic()))
        try:
            return client.list_topics(timeout=step)
        except KafkaException as exc:
            last = exc
        client.poll(0)  # serves error_cb
        refused = errors.authentication()
        if refused is not None:
            raise AuthenticationFailedError(
                principal_of(kafka), "Connect", kafka.bootstrap_servers, refused.str()
            ) from last
        if time.monotonic() >= deadline:
            raise KafkaAdminError(
                f"no Kafka broker at {kafka.bootstrap_servers} answered within {timeout_s:g}s "
                f"({last}); is it running?"
            ) from last
