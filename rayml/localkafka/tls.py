"""A throwaway certificate authority and a server certificate for the local broker.

For development and tests only: the CA's key is written next to its certificate, the
certificates last ``days`` (a year by default) and name the loopback host only. A real
cluster's certificates come from the organisation's CA, not from here.

What is written (all PEM):

- ``ca.pem``: the CA certificate. Python clients set ``ssl_ca_location`` to it, Java clients
  ``ssl.truststore.type=PEM`` + ``ssl.truststore.location``; the broker trusts it for its own
  inter-broker connections.
- ``ca.key``: the CA's private key (0600), kept so more certificates can be signed later.
- ``server.pem``: the broker's keystore, its private key (PKCS#8, unencrypted, 0600) followed
  by its certificate chain (server certificate, then the CA), as Kafka's
  ``ssl.keystore.type=PEM`` expects in one file.

The server certificate's subject alternative names are ``IP:127.0.0.1`` and
``DNS:localhost``, so hostname verification (librdkafka's
``ssl.endpoint.identification.algorithm=https``, Java's default) passes for clients that
connect to ``127.0.0.1``.

Example:
    >>> from rayml.localkafka.tls import write_broker_tls
    >>> files = write_broker_tls(tmp_path / "tls")                 # doctest: +SKIP
    >>> files.ca_cert.name, files.keystore.name                     # doctest: +SKIP
    ('ca.pem', 'server.pem')
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["BrokerTlsFiles", "certificate_principal", "write_broker_tls", "write_private"]

DEFAULT_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class BrokerTlsFiles:
    """Where :func:`write_broker_tls` put the CA certificate and the broker's keystore."""

    ca_cert: Path
    ca_key: Path
    keystore: Path

    @classmethod
    def in_dir(cls, directory: Path) -> BrokerTlsFiles:
        return cls(directory / "ca.pem", directory / "ca.key", directory / "server.pem")

    def exist(self) -> bool:
        return all(p.is_file() for p in (self.ca_cert, self.ca_key, self.keystore))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, data: bytes | str) -> None:
    """Write ``data`` readable by the owner only, from the first byte on (no chmod race)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def write_broker_tls(
    directory: Path | str,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    *,
    days: int = 365,
    common_name: str = "rayml local test CA",
) -> BrokerTlsFiles:
    """Generate a new CA and a server certificate for ``hosts``, signed by it, into ``directory``.

    Keys are ECDSA P-256 (fast to generate; TLS 1.3 and 1.2 in both librdkafka and Java).
    Existing files of the same names are replaced.

    Args:
        directory: Created if missing (0700).
        hosts: The subject alternative names of the server certificate; IP addresses become
            ``IP:`` entries, anything else ``DNS:``.
        days: Validity of both certificates, from one hour ago (clock skew) on.
        common_name: The CA's subject CN.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = BrokerTlsFiles.in_dir(directory)
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # clientAuth too: the broker presents this certificate when it connects to its own
        # controller listener, which requires a client certificate.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(_san(hosts), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    files.ca_cert.write_bytes(ca_pem)
    write_private(files.ca_key, _key_pem(ca_key))
    write_private(
        files.keystore,
        _key_pem(server_key) + server_cert.public_bytes(serialization.Encoding.PEM) + ca_pem,
    )
    return files


def certificate_principal(pem: Path) -> str:
    """The Kafka principal of the first certificate in ``pem``, as Kafka's default principal
    builder names a TLS client: ``User:`` and the subject's distinguished name (RFC 2253)."""
    cert = x509.load_pem_x509_certificates(pem.read_bytes())[0]
    return f"User:{cert.subject.rfc4514_string()}"
