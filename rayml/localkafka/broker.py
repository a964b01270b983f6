"""The local broker itself: one KRaft node (broker + controller) on 127.0.0.1.

KRaft storage is formatted once per data directory, and the node is started in its own session
so that it outlives the command that started it. Its pid, ports and version are recorded in the
data directory (:class:`BrokerInfo`); ``stop`` ends that pid only (SIGTERM for a controlled
shutdown, SIGKILL after a bound).

With a :class:`~rayml.localkafka.secure.SecureListener` the client listener is ``SASL_SSL`` (TLS
with a certificate from a CA of the caller's, SCRAM users created at format time) and there is
no PLAINTEXT client listener; see :mod:`rayml.localkafka.secure` and ``docs/security.md``.

Example:
    >>> from rayml.localkafka import LocalBroker
    >>> with LocalBroker.ephemeral() as broker:          # doctest: +SKIP
    ...     print(broker.bootstrap_servers)
    127.0.0.1:40123
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psutil

from rayml.config import KafkaSettings
from rayml.errors import BrokerError
from rayml.localkafka.jars import JVM_OPTS, KAFKA_VERSION, java_executable, resolve_jars
from rayml.localkafka.ports import ensure_port_free, free_port
from rayml.localkafka.secure import LISTENER as SECURE_LISTENER
from rayml.localkafka.secure import SecureListener
from rayml.localkafka.tls import write_private

logger = logging.getLogger(__name__)

__all__ = ["BrokerInfo", "BrokerStatus", "LocalBroker"]


@dataclass(frozen=True)
class BrokerInfo:
    """What ``start`` records in ``<data-dir>/broker.json``."""

    pid: int
    port: int
    controller_port: int
    kafka_version: str
    data_dir: str
    started_at: float
    # PLAINTEXT, or SASL_SSL with a SecureListener (files written before it existed: PLAINTEXT).
    security_protocol: str = "PLAINTEXT"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class BrokerStatus:
    """The answer of :meth:`LocalBroker.status`."""

    running: bool
    data_dir: str
    info: BrokerInfo | None


def _new_cluster_id() -> str:
    # Kafka's own Uuid.randomUuid(): 16 random bytes, base64url without padding, never
    # starting with '-' (which would read as a command-line flag).
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _argfile_quote(arg: str) -> str:
    # Java argument files: a double-quoted argument, backslash escapes inside.
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _redact(text: str, security: SecureListener | None) -> str:
    """``text`` with the listener's passwords replaced, for error messages from the JVM."""
    if security is not None:
        for _user, password in security.users:
            text = text.replace(password.get_secret_value(), "**********")
    return text


class LocalBroker:
    """One KRaft node (broker + controller) listening on 127.0.0.1.

    Args:
        data_dir: Holds the KRaft metadata and the topic data, the broker's log and pid file.
            Data survives ``stop`` then ``start`` on the same folder.
        port: Client port. The controller gets a free port of its own on each start (the static
            quorum lets it change between runs).
        state_dir: Where the resolved jars are kept.
        security: Make the client listener ``SASL_SSL`` with these TLS files and SCRAM users
            (the users are created when the data dir is formatted, so a data dir first started
            without it cannot be started with it). ``None``: one PLAINTEXT listener.
    """

    def __init__(
        self,
        data_dir: Path | str,
        port: int = 9092,
        *,
        state_dir: Path | str = ".rayml",
        security: SecureListener | None = None,
    ):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.state_dir = Path(state_dir).resolve()
        self.security = security

    # paths
    @property
    def _info_file(self) -> Path:
        return self.data_dir / "broker.json"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def _logs_dir(self) -> Path:
        return self.data_dir / "kraft"

    @property
    def _scram_marker(self) -> Path:
        # Names (never passwords) of the SCRAM users written at format time.
        return self.data_dir / "scram-users"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kafka_settings(self, user: str | None = None) -> KafkaSettings:
        """rayml's Kafka settings for a client of this broker (``user``: a SCRAM user's name).

        Plain ``bootstrap_servers`` for a PLAINTEXT broker; ``SASL_SSL`` with the CA and the
        user's credentials (the first user by default) for a secure one.
        """
        if self.security is None:
            return KafkaSettings(bootstrap_servers=self.bootstrap_servers)
        return self.security.kafka_settings(self.bootstrap_servers, user)

    @classmethod
    @contextlib.contextmanager
    def ephemeral(
        cls, state_dir: Path | str = ".rayml", *, security: SecureListener | None = None
    ) -> Iterator[LocalBroker]:
        """Start a broker on free ports in a temporary data dir; stop and delete it on exit."""
        data_dir = Path(tempfile.mkdtemp(prefix="rayml-kafka-"))
        broker = cls(data_dir, port=free_port(), state_dir=state_dir, security=security)
        try:
            broker.start()
            yield broker
        finally:
            broker.stop()
            shutil.rmtree(data_dir, ignore_errors=True)

    def _listener_properties(self, controller_port: int) -> dict[str, str]:
        controller = f"CONTROLLER://127.0.0.1:{controller_port}"
        if self.security is None:
            return {
                "listeners": f"PLAINTEXT://127.0.0.1:{self.port},{controller}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
                "inter.broker.listener.name": "PLAINTEXT",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            }
        # One client listener, SASL_SSL; the broker's own connections use it too. The
        # controller listener (not advertised to clients) is mutual TLS: KRaft controllers
        # cannot check SCRAM (the credentials live in the metadata they serve), so it asks
        # for a client certificate from the CA instead, which only the broker's own keystore
        # holds. Without that, any local process could use it as an admin endpoint
        # (KIP-919, `--bootstrap-controller`).
        client = f"{SECURE_LISTENER}://127.0.0.1:{self.port}"
        return {
            "listeners": f"{client},{controller}",
            "advertised.listeners": client,
            "listener.security.protocol.map": f"CONTROLLER:SSL,{SECURE_LISTENER}:SASL_SSL",
            "listener.name.controller.ssl.client.auth": "required",
            **self.security.server_properties(),
        }

    def _properties(self, controller_port: int) -> str:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "controller.listener.names": "CONTROLLER",
            **self._listener_properties(controller_port),
            "log.dirs": str(self._logs_dir),
            # One node cannot satisfy the default replication of the internal topics; without
            # the transaction-log settings init_transactions() times out.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Faster start and fewer threads on a small machine.
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.num.partitions": "1",
            # A transaction left open by a killed producer is aborted once it times out; the
            # check runs every 10 s by default, holding read_committed readers back that long.
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            # KIP-848 groups: a member that died (SIGKILL, lost node) gives up its partitions
            # after the session timeout, 45 s by default. 10 s keeps failover short on one node.
            "group.consumer.min.session.timeout.ms": "6000",
            "group.consumer.session.timeout.ms": "10000",
            "group.consumer.min.heartbeat.interval.ms": "1000",
            "group.consumer.heartbeat.interval.ms": "2000",
            # Tests create many topics; keep segments small so disk use stays small.
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _read_info(self) -> BrokerInfo | None:
        try:
            return BrokerInfo(**json.loads(self._info_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _live_process(self) -> psutil.Process | None:
        """The broker process recorded in this data dir, if it is alive and really ours."""
        try:
            pid = int(self.pid_file.read_text().strip())
            proc = psutil.Process(pid)
            cmdline = proc.cmdline()
        except (OSError, ValueError, psutil.Error):
            return None
        # A recycled pid must not be mistaken for our broker: check it runs *this* data dir.
        ours = "kafka.Kafka" in cmdline and str(self.data_dir / "server.properties") in cmdline
        if not ours or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc

    def status(self) -> BrokerStatus:
        """Whether the broker recorded in the data dir runs, and where."""
        proc = self._live_process()
        return BrokerStatus(
            running=proc is not None,
            data_dir=str(self.data_dir),
            info=self._read_info() if proc else None,
        )

    def start(self, timeout_s: float = 90.0) -> BrokerInfo:
        """Start the broker in the background and wait until it serves clients.

        Returns the recorded :class:`BrokerInfo`. Raises :class:`PortInUseError` if the port is
        taken, :class:`BrokerError` with the log's tail if the JVM exits or never gets ready.
        """
        if self._live_process() is not None:
            raise BrokerError(
                f"a broker already runs for data dir {self.data_dir} "
                f"(pid {self.pid_file.read_text().strip()}); stop it first"
            )
        ensure_port_free(self.port)
        java = java_executable()
        libs = resolve_jars(self.state_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        controller_port = free_port()
        props_file = self.data_dir / "server.properties"
        # Owner-only: a secure broker's properties hold its JAAS line (a password).
        write_private(props_file, self._properties(controller_port))
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text((resources.files(__package__) / "log4j2.properties").read_text())
        classpath = f"{libs}/*"
        jvm = [java, *JVM_OPTS, f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]

        if not (self._logs_dir / "meta.properties").exists():
            self._format(jvm, props_file)
        elif self.security is not None:
            self._check_scram_users()

        with self.log_file.open("ab") as log:
            # A session of its own: the broker outlives `rayml kafka start`, and a Ctrl-C in the
            # starting terminal does not reach it.
            proc = subprocess.Popen(
                [*jvm, "kafka.Kafka", str(props_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        info = BrokerInfo(
            pid=proc.pid,
            port=self.port,
            controller_port=controller_port,
            kafka_version=KAFKA_VERSION,
            data_dir=str(self.data_dir),
            started_at=time.time(),
            security_protocol="PLAINTEXT" if self.security is None else "SASL_SSL",
        )
        self._info_file.write_text(json.dumps(asdict(info), indent=2))
        try:
            self._wait_ready(proc, timeout_s)
        except BaseException:
            self._terminate(proc.pid, 10.0)
            raise
        return info

    def _format(self, jvm: list[str], props_file: Path) -> None:
        """Format KRaft storage, creating the SCRAM users of a secure listener (KIP-900)."""
        cid_file = self.data_dir / "cluster.id"
        if not cid_file.exists():
            cid_file.write_text(_new_cluster_id())
        args = [
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cid_file.read_text().strip(),
            "--config",
            str(props_file),
            "--ignore-formatted",
            *(self.security.scram_arguments() if self.security else []),
        ]
        # The tool takes SCRAM passwords only as arguments: they go through a Java argument
        # file (owner-only, deleted at once) so they never show in a process list.
        argfile = self.data_dir / ".format.args"
        write_private(argfile, "\n".join(_argfile_quote(a) for a in args) + "\n")
        try:
            fmt = subprocess.run([*jvm, f"@{argfile}"], capture_output=True, text=True, check=False)
        finally:
            argfile.unlink(missing_ok=True)
        if fmt.returncode != 0:
            raise BrokerError(
                f"formatting KRaft storage in {self._logs_dir} failed:\n"
                f"{_redact((fmt.stdout + fmt.stderr)[-3000:], self.security)}"
            )
        if self.security is not None:
            self._scram_marker.write_text("".join(f"{u}\n" for u, _ in self.security.users))

    def _check_scram_users(self) -> None:
        """Refuse a secure start on a data dir formatted without (these) SCRAM users."""
        assert self.security is not None
        try:
            formatted = set(self._scram_marker.read_text().split())
        except OSError:
            formatted = set()
        missing = [u for u, _ in self.security.users if u not in formatted]
        if missing:
            raise BrokerError(
                f"the data dir {self.data_dir} was formatted without the SCRAM user(s) "
                f"{', '.join(missing)}; SCRAM users are created when storage is formatted, so "
                "start the secure broker on a new data dir"
            )

    def _readiness_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = dict(self.kafka_settings().client_config())
        conf.update({"log_level": 0, "logger": logging.getLogger("rayml.localkafka.readiness")})
        return conf

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        from confluent_kafka import KafkaError
        from confluent_kafka.admin import AdminClient  # I/O dependency, only when starting

        auth_errors: list[str] = []

        def on_error(err: KafkaError) -> None:
            if err.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL):
                auth_errors.append(err.str())

        # The same security settings as any client of this broker: a secure broker is ready
        # when a client can authenticate over TLS, not merely when its port is open.
        conf = self._readiness_config()
        conf["error_cb"] = on_error
        admin = AdminClient(conf)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise BrokerError(
                    f"the Kafka broker exited with code {code} while starting; "
                    f"last lines of {self.log_file}:\n{self.log_tail()}"
                )
            with contextlib.suppress(Exception):
                meta = admin.list_topics(timeout=1.0)
                if meta.brokers:
                    return
            admin.poll(0)  # serves error_cb
            if len(auth_errors) >= 3:
                # The listener is up but refuses our own credentials or certificate: waiting
                # longer will not help.
                raise BrokerError(
                    f"the Kafka broker refuses the launcher's own client: {auth_errors[-1]}; "
                    f"last lines of {self.log_file}:\n{self.log_tail()}"
                )
            time.sleep(0.2)
        raise BrokerError(
            f"the Kafka broker was not ready after {timeout_s:.0f}s; "
            f"last lines of {self.log_file}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop this data dir's broker: SIGTERM (controlled shutdown), SIGKILL after ``timeout_s``.

        Returns False if no broker was running. Only the recorded, verified pid is signalled.
        """
        proc = self._live_process()
        if proc is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self._terminate(proc.pid, timeout_s)
        self.pid_file.unlink(missing_ok=True)
        return True

    @staticmethod
    def _terminate(pid: int, timeout_s: float) -> None:
        try:
            proc = psutil.Process(pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except psutil.TimeoutExpired:
                logger.warning(
                    "broker pid %d ignored SIGTERM for %.0fs; sending SIGKILL", pid, timeout_s
                )
                proc.kill()
                proc.wait(timeout=10)
        except psutil.NoSuchProcess:
            pass
