"""A real Apache Kafka broker on 127.0.0.1, for development, tests and demos.

This subpackage launches a local Apache Kafka broker (one KRaft node, broker + controller) from
jars resolved from Maven Central with Maven (``pom.xml`` beside this file; ``~/.m2`` caches
them). It is rayml's own launcher, not a client: rayml's Kafka clients live in
:mod:`rayml.kafka`.

Modules:

- :mod:`rayml.localkafka.broker`: :class:`LocalBroker` (format KRaft storage, start the node in
  its own session, wait until it serves clients, stop the recorded pid), :class:`BrokerInfo`
  and :class:`BrokerStatus`.
- :mod:`rayml.localkafka.jars`: Java 17+ and the Kafka jars (:func:`resolve_jars`,
  :data:`KAFKA_VERSION`, the JVM options).
- :mod:`rayml.localkafka.ports`: free ports on 127.0.0.1 and who holds a taken one.
- :mod:`rayml.localkafka.secure`: :class:`SecureListener`, a ``SASL_SSL`` client listener with
  SCRAM users, optionally with Kafka's ACLs in force (``authorizer=True``); see
  ``docs/security.md``.
- :mod:`rayml.localkafka.tls`: a throwaway CA and the broker's server certificate.

This module only re-exports; the modules above import from each other, never from here.

Example:
    >>> from rayml.localkafka import LocalBroker
    >>> with LocalBroker.ephemeral() as broker:          # doctest: +SKIP
    ...     print(broker.bootstrap_servers)
    127.0.0.1:40123
"""

from __future__ import annotations

from rayml.localkafka.broker import BrokerInfo, BrokerStatus, LocalBroker
from rayml.localkafka.jars import JVM_OPTS, KAFKA_VERSION, java_executable, resolve_jars
from rayml.localkafka.ports import ensure_port_free, free_port
from rayml.localkafka.secure import LISTENER as SECURE_LISTENER
from rayml.localkafka.secure import SecureListener
from rayml.localkafka.tls import write_private

__all__ = [
    "JVM_OPTS",
    "KAFKA_VERSION",
    "SECURE_LISTENER",
    "BrokerInfo",
    "BrokerStatus",
    "LocalBroker",
    "SecureListener",
    "ensure_port_free",
    "free_port",
    "java_executable",
    "resolve_jars",
    "write_private",
]
