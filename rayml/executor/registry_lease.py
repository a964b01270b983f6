"""The executor's liveness lease on the registry topic (:mod:`rayml.protocol.leases`).

A thread in the executor's driver writes the lease once its ingest actors are up, renews it every
third of ``executor.registry_lease_s`` (so two renewals may be lost before it lapses), and writes
a tombstone when the executor stops. A driver that dies without stopping (``kill -9``, a lost
node) stops renewing: its pipelines stop counting as live within ``registry_lease_s``. A failed
renewal is logged and tried again at the next turn; the ingest is never affected.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaError, Message

from rayml.config import Settings
from rayml.kafka import clients as kafka_clients
from rayml.protocol.leases import ServingLease, encode_lease, lease_key

logger = logging.getLogger(__name__)

__all__ = ["RegistryLease"]


class RegistryLease:
    """Keeps ``instance``'s lease on ``pipelines`` alive until :meth:`stop`."""

    def __init__(self, settings: Settings, instance: str, pipelines: list[str]) -> None:
        self.topic = settings.topics.registry
        self.instance = instance
        self.pipelines = sorted(pipelines)
        self.lease_s = settings.executor.registry_lease_s
        self._producer = kafka_clients.producer(
            settings.kafka, **{"client.id": f"rayml-lease-{instance}"}
        )
        self._stop = threading.Event()
        self.renewals = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="registry-lease", daemon=True)

    def start(self) -> None:
        self._write()  # at once: clients see the pipelines live as soon as start() returns
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop renewing and withdraw the lease (a tombstone), so clients learn at once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._producer.produce(self.topic, key=lease_key(self.instance), value=None)
        if self._producer.flush(timeout_s):
            logger.warning(
                "executor=%s lease not withdrawn from %s: it lapses within %gs",
                self.instance,
                self.topic,
                self.lease_s,
            )

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            self._write()

    def _write(self) -> None:
        now_ms = int(time.time() * 1000)
        lease = ServingLease(
            instance=self.instance,
            pipelines=self.pipelines,
            lease_until_ms=now_ms + int(self.lease_s * 1000),
            at_ms=now_ms,
        )
        failed: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message | None) -> None:
            if err is not None:
                failed.append(err)

        self._producer.produce(
            self.topic,
            key=lease_key(self.instance),
            value=encode_lease(lease),
            on_delivery=delivered,
        )
        if self._producer.flush(self.lease_s / 3) or failed:
            self.failures += 1
            logger.warning(
                "executor=%s lease on %s not renewed (%s): clients may see its pipelines "
                "as not served if this lasts %gs",
                self.instance,
                self.topic,
                failed[0].str() if failed else "timed out",
                self.lease_s,
            )
            return
        self.renewals += 1
