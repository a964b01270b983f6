"""The local broker's secure client listener: TLS with a server certificate, SASL/SCRAM users.

A :class:`SecureListener` given to :class:`~rayml.localkafka.LocalBroker` makes its one client
listener ``SASL_SSL`` (there is no PLAINTEXT client listener then). SCRAM credentials are
written into the KRaft metadata when the data directory is formatted (KIP-900,
``StorageTool format --add-scram``), for both SCRAM-SHA-256 and SCRAM-SHA-512; the broker's own
inter-broker connections authenticate as the first user, over the same listener.

With ``authorizer=True`` the broker also checks Kafka ACLs: Kafka's KRaft
``StandardAuthorizer`` (ACLs live in the cluster metadata), ``allow.everyone.if.no.acl.found``
off, so a principal may do only what an ACL grants it. The super users, who bypass ACLs, are the
broker itself (the first SCRAM user on the client listener, its certificate's principal on the
mutual-TLS controller listener) and the users named in ``super_users``: an admin who creates
topics and ACLs (``rayml tenants apply``); see ``docs/security.md``, "Tenants and ACLs".

Passwords are :class:`~pydantic.SecretStr` here and reach only files readable by their owner:
the broker's ``server.properties`` (its JAAS line), a Java argument file deleted once the
format step is done (so they never show in a process list), and, for ``rayml kafka start
--secure``, ``<data-dir>/tls/credentials.json``.

Example:
    >>> from rayml.localkafka import LocalBroker, SecureListener
    >>> listener = SecureListener.generate(tmp_path / "tls")        # doctest: +SKIP
    >>> with LocalBroker.ephemeral(security=listener) as broker:    # doctest: +SKIP
    ...     settings = broker.kafka_settings()  # SASL_SSL, the CA, the first user
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from rayml.config import KafkaSettings
from rayml.errors import BrokerError
from rayml.localkafka.tls import (
    BrokerTlsFiles,
    certificate_principal,
    write_broker_tls,
    write_private,
)

__all__ = ["ScramMechanism", "SecureListener"]

ScramMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256"]
MECHANISMS: tuple[ScramMechanism, ...] = ("SCRAM-SHA-512", "SCRAM-SHA-256")

# The listener's name in the broker's properties (also its security protocol).
LISTENER = "SASL_SSL"

# KRaft's authorizer: ACLs stored in the cluster metadata (KIP-801).
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"

# Names and passwords go unquoted into `--add-scram 'SCRAM-SHA-512=[name=...,password=...]'`
# (whose parser splits on ',' '=' and ']') and quoted into a JAAS line: keep to characters
# that need no escaping in either. `secrets.token_urlsafe` passwords fit.
_USER = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_PASSWORD = re.compile(r"^[A-Za-z0-9._~-]{12,256}$")

_CREDENTIALS_FILE = "credentials.json"


def _jaas(username: str, password: SecretStr) -> str:
    return (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{username}" password="{password.get_secret_value()}";'
    )


@dataclass(frozen=True)
class SecureListener:
    """TLS files and SCRAM users for a ``SASL_SSL`` client listener.

    Args:
        tls: The CA certificate and the broker's PEM keystore (see
            :func:`rayml.localkafka.tls.write_broker_tls`).
        users: ``(name, password)`` pairs created at format time; the first is the broker's
            own inter-broker identity and the default for :meth:`kafka_settings`.
        mechanism: The SCRAM mechanism the broker uses between brokers and clients get from
            :meth:`kafka_settings`; clients may use either (both are enabled).
        authorizer: Check Kafka ACLs (``StandardAuthorizer``, nothing allowed without an ACL).
        super_users: Names of SCRAM users (besides the first) who bypass ACLs, with
            ``authorizer``: an admin who creates topics and ACLs.
    """

    tls: BrokerTlsFiles
    users: tuple[tuple[str, SecretStr], ...]
    mechanism: ScramMechanism = "SCRAM-SHA-512"
    authorizer: bool = False
    super_users: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.users:
            raise ValueError("a secure listener needs at least one SCRAM user")
        for name, password in self.users:
            if not _USER.match(name):
                raise ValueError(f"SCRAM user name {name!r}: use 1-64 of [A-Za-z0-9._-]")
            if not _PASSWORD.match(password.get_secret_value()):
                # The password itself is not repeated in the message.
                raise ValueError(f"password of SCRAM user {name!r}: use 12-256 of [A-Za-z0-9._~-]")
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"mechanism {self.mechanism!r}: one of {', '.join(MECHANISMS)}")
        unknown = set(self.super_users) - {name for name, _ in self.users}
        if unknown:
            raise ValueError(f"super users {sorted(unknown)} are not SCRAM users of the listener")
        if self.super_users and not self.authorizer:
            raise ValueError("super users mean something only with authorizer=True")

    @classmethod
    def generate(
        cls,
        directory: Path | str,
        users: tuple[str, ...] = ("rayml",),
        mechanism: ScramMechanism = "SCRAM-SHA-512",
        *,
        authorizer: bool = False,
        super_users: tuple[str, ...] = (),
    ) -> SecureListener:
        """A new CA, server certificate (127.0.0.1, localhost) and random passwords."""
        tls = write_broker_tls(directory)
        return cls(
            tls,
            tuple((u, SecretStr(secrets.token_urlsafe(24))) for u in users),
            mechanism,
            authorizer=authorizer,
            super_users=super_users,
        )

    @classmethod
    def load_or_generate(cls, directory: Path | str) -> SecureListener:
        """The listener kept in ``directory``, generated and kept there on first use.

        ``rayml kafka start --secure`` uses this, so a restarted broker keeps its certificate
        and users (the users live in the formatted metadata and must match).
        """
        directory = Path(directory)
        tls = BrokerTlsFiles.in_dir(directory)
        stored = directory / _CREDENTIALS_FILE
        if tls.exist() and stored.is_file():
            try:
                data = json.loads(stored.read_text())
                users = tuple((str(u), SecretStr(str(p))) for u, p in data["users"])
                return cls(tls, users, data["mechanism"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # Deliberately without the file's content: it holds passwords.
                raise BrokerError(
                    f"cannot read the SCRAM users in {stored}: {exc!r}"[:300]
                ) from exc
        listener = cls.generate(directory)
        body = json.dumps(
            {
                "mechanism": listener.mechanism,
                "users": [[u, p.get_secret_value()] for u, p in listener.users],
            }
        )
        write_private(stored, body)
        return listener

    # --- the broker's side ------------------------------------------------------------------

    def scram_arguments(self) -> list[str]:
        """``--add-scram`` arguments of ``StorageTool format``: every user, both mechanisms."""
        args: list[str] = []
        for name, password in self.users:
            for mech in MECHANISMS:
                args += [
                    "--add-scram",
                    f"{mech}=[name={name},password={password.get_secret_value()}]",
                ]
        return args

    def server_properties(self) -> dict[str, str]:
        """Broker properties of the listener (besides ``listeners`` and the protocol map)."""
        name, password = self.users[0]
        prefix = f"listener.name.{LISTENER.lower()}"
        props = {
            "inter.broker.listener.name": LISTENER,
            "sasl.enabled.mechanisms": ",".join(MECHANISMS),
            "sasl.mechanism.inter.broker.protocol": self.mechanism,
            # PEM files straight from write_broker_tls (KIP-651): no JKS, no store passwords.
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.tls.keystore),
            # The broker trusts the CA for its own inter-broker connections.
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.tls.ca_cert),
            "ssl.endpoint.identification.algorithm": "https",
            "ssl.client.auth": "none",
        }
        for mech in MECHANISMS:
            props[f"{prefix}.{mech.lower()}.sasl.jaas.config"] = _jaas(name, password)
        if self.authorizer:
            props.update(self.authorizer_properties())
        return props

    def authorizer_properties(self) -> dict[str, str]:
        """The ACL check (KIP-801): who bypasses it, and no access without an ACL.

        The broker's own requests must pass it too: its inter-broker connections on the client
        listener authenticate as the first SCRAM user, and its connections to its own
        controller (registration, heartbeats, forwarded admin requests) as its certificate.
        """
        supers = [
            f"User:{self.users[0][0]}",
            certificate_principal(self.tls.keystore),
            *(f"User:{name}" for name in self.super_users),
        ]
        return {
            "authorizer.class.name": AUTHORIZER,
            "allow.everyone.if.no.acl.found": "false",
            "super.users": ";".join(dict.fromkeys(supers)),
        }

    # --- the clients' side ------------------------------------------------------------------

    def credentials(self, user: str | None = None) -> tuple[str, SecretStr]:
        """``(name, password)`` of ``user``, the first user by default."""
        if user is None:
            return self.users[0]
        for name, password in self.users:
            if name == user:
                return name, password
        raise KeyError(f"no SCRAM user {user!r} on this listener")

    def kafka_settings(self, bootstrap_servers: str, user: str | None = None) -> KafkaSettings:
        """rayml's Kafka settings for a client of this listener (librdkafka names underneath)."""
        name, password = self.credentials(user)
        return KafkaSettings(
            bootstrap_servers=bootstrap_servers,
            security_protocol="SASL_SSL",
            sasl_mechanism=self.mechanism,
            sasl_username=name,
            sasl_password=password,
            ssl_ca_location=str(self.tls.ca_cert),
            ssl_endpoint_identification_algorithm="https",
        )

    def java_properties(self, user: str | None = None) -> str:
        """A Java client's properties (``--kafka-config`` of the Java client), CA as PEM."""
        name, password = self.credentials(user)
        return "".join(
            f"{k}={v}\n"
            for k, v in {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": self.mechanism,
                "sasl.jaas.config": _jaas(name, password),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.tls.ca_cert),
            }.items()
        )

    def write_client_files(self, directory: Path | str, bootstrap_servers: str) -> list[Path]:
        """Write ``client.env`` (``RAYML_KAFKA__*`` for rayml and the Python client) and
        ``client.properties`` (the Java client's ``--kafka-config``), both owner-only.

        ``rayml kafka start --secure`` writes them so that no password is ever printed.
        """
        directory = Path(directory)
        kafka = self.kafka_settings(bootstrap_servers)
        env = {
            "RAYML_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "RAYML_KAFKA__SECURITY_PROTOCOL": kafka.security_protocol,
            "RAYML_KAFKA__SASL_MECHANISM": str(kafka.sasl_mechanism),
            "RAYML_KAFKA__SASL_USERNAME": str(kafka.sasl_username),
            "RAYML_KAFKA__SASL_PASSWORD": self.credentials()[1].get_secret_value(),
            "RAYML_KAFKA__SSL_CA_LOCATION": str(kafka.ssl_ca_location),
        }
        env_file, props_file = directory / "client.env", directory / "client.properties"
        write_private(env_file, "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
        write_private(
            props_file, f"bootstrap.servers={bootstrap_servers}\n" + self.java_properties()
        )
        return [env_file, props_file]
