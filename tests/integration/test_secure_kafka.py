"""rayml against a broker that requires TLS and SASL/SCRAM, and its secrets kept out of logs.

The module starts its own broker with rayml's launcher: one ``SASL_SSL`` client listener (no
PLAINTEXT one), a server certificate signed by a CA this module generates into a temporary
folder, SCRAM users created when the storage is formatted. Then:

- a PLAINTEXT client, a client without the CA and a client with a wrong password are refused,
  the last with an error that says so (Python and Java);
- an in-process executor on the session's Ray serves N requests from the Python client and N
  from the Java client over SASL_SSL, every one answered correctly;
- the password never appears in the settings' repr or dumps, the driver's log records, the
  Ray workers' log files, librdkafka's full debug log, the CLI's output, or the Java client's
  output.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from rayml import Client
from rayml.client.errors import BrokerUnreachableError
from rayml.config import Settings, load_settings
from rayml.errors import ConfigError
from rayml.localkafka import LocalBroker, SecureListener
from tests.integration.test_java_client import SUMMARY, java_client_jar
from tests.support.models import breast_cancer_rows
from tests.support.served import module_settings, serving

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PREDICT = "breast_cancer.predict"
N = 100


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> SecureListener:
    """A new test CA, a server certificate for 127.0.0.1, and two SCRAM users."""
    return SecureListener.generate(tmp_path_factory.mktemp("tls"), users=("rayml", "analyst"))


@pytest.fixture(scope="module")
def secure_broker(listener: SecureListener) -> Iterator[LocalBroker]:
    started = time.monotonic()
    with LocalBroker.ephemeral(state_dir=REPO / ".rayml", security=listener) as broker:
        # Shown with -s; the launcher's start includes formatting with the SCRAM users.
        print(f"\nsecure broker ready in {time.monotonic() - started:.1f}s")
        yield broker


def password(listener: SecureListener, user: str = "rayml") -> str:
    return listener.credentials(user)[1].get_secret_value()


# --- who gets in -------------------------------------------------------------------------------


def test_the_broker_has_no_plaintext_client_listener(secure_broker: LocalBroker) -> None:
    props = (secure_broker.data_dir / "server.properties").read_text()
    listeners = next(line for line in props.splitlines() if line.startswith("listeners="))
    assert "PLAINTEXT://" not in listeners.replace("CONTROLLER://", "")
    assert json.loads((secure_broker.data_dir / "broker.json").read_text())[
        "security_protocol"
    ] == ("SASL_SSL")
    assert (secure_broker.data_dir / "server.properties").stat().st_mode & 0o077 == 0


def test_plaintext_client_is_refused(secure_broker: LocalBroker) -> None:
    settings = load_settings(kafka={"bootstrap_servers": secure_broker.bootstrap_servers})
    with pytest.raises(BrokerUnreachableError):
        Client(settings=settings, connect_timeout_s=2)


def test_client_without_the_ca_is_refused(secure_broker: LocalBroker) -> None:
    kafka = secure_broker.kafka_settings().model_copy(update={"ssl_ca_location": None})
    with pytest.raises(BrokerUnreachableError):
        Client(settings=load_settings(kafka=kafka.model_dump()), connect_timeout_s=2)


def test_wrong_password_is_refused(secure_broker: LocalBroker, listener: SecureListener) -> None:
    wrong = "not-the-password-" + uuid.uuid4().hex[:8]
    kafka = secure_broker.kafka_settings().model_copy(update={"sasl_password": SecretStr(wrong)})
    with pytest.raises(BrokerUnreachableError) as refused:
        Client(settings=load_settings(kafka=kafka.model_dump()), connect_timeout_s=2)
    assert wrong not in str(refused.value)
    assert password(listener) not in str(refused.value)


def test_python_client_error_names_the_authentication_failure(
    secure_broker: LocalBroker,
) -> None:
    kafka = secure_broker.kafka_settings().model_copy(
        update={"sasl_password": SecretStr("not-the-password-123")}
    )
    with pytest.raises(BrokerUnreachableError) as refused:
        Client(settings=load_settings(kafka=kafka.model_dump()), connect_timeout_s=2)
    assert "Authentication failed" in str(refused.value)


def test_librdkafka_says_why_a_wrong_password_is_refused(
    secure_broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """What an application polling its own client sees (error_cb, rayml.librdkafka logs)."""
    from confluent_kafka import KafkaError, KafkaException

    from rayml.kafka import clients as kafka_clients

    errors: list[KafkaError] = []
    kafka = secure_broker.kafka_settings().model_copy(
        update={"sasl_password": SecretStr("not-the-password-123")}
    )
    caplog.set_level(logging.INFO, logger="rayml.librdkafka")
    admin = kafka_clients.admin_client(kafka, error_cb=errors.append)
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=2)
    admin.poll(0.5)  # serves error_cb and the queued log lines
    reasons = [e.str() for e in errors if e.code() == KafkaError._AUTHENTICATION]
    assert reasons, [e.str() for e in errors]
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in reasons[0]
    assert "invalid credentials" in caplog.text


def test_java_client_with_a_wrong_password_says_so(
    secure_broker: LocalBroker, listener: SecureListener, tmp_path: Path
) -> None:
    jar = java_client_jar()
    wrong = "not-the-password-" + uuid.uuid4().hex[:8]
    config = tmp_path / "client.properties"
    config.write_text(listener.java_properties().replace(password(listener), wrong))
    run = subprocess.run(
        [
            "java",
            "-jar",
            str(jar),
            "--bootstrap-servers",
            secure_broker.bootstrap_servers,
            "--pipeline",
            PREDICT,
            "--kafka-config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1, run.stderr
    assert "Authentication failed" in run.stderr, run.stderr
    assert wrong not in run.stdout + run.stderr


# --- the executor and both clients over SASL_SSL -------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def driver_log() -> Iterator[list[str]]:
    """Every log record of this process at DEBUG while the module's executor runs."""
    handler, root = _Collect(), logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@pytest.fixture(scope="module")
def served(
    secure_broker: LocalBroker,
    ray_runtime: str,
    tmp_path_factory: pytest.TempPathFactory,
    driver_log: list[str],
) -> Iterator[tuple[Settings, object]]:
    settings = module_settings(
        secure_broker.kafka_settings().model_dump(),
        tmp_path_factory.mktemp("srv"),
        "s",
        training={"job_runners": 0},
    )
    with serving(settings) as model:
        yield settings, model


def test_executor_answers_python_and_java_clients_over_sasl_ssl(
    served: tuple[Settings, object],
    listener: SecureListener,
    tmp_path: Path,
    driver_log: list[str],
) -> None:
    settings, model = served
    secret = password(listener)
    rows = breast_cancer_rows(2 * N, seed=11)
    proba = model.predict_proba(rows)  # type: ignore[attr-defined]

    # Python: the analyst user, over SCRAM-SHA-256 (both mechanisms are enabled).
    kafka = listener.kafka_settings(settings.kafka.bootstrap_servers, "analyst").model_copy(
        update={"sasl_mechanism": "SCRAM-SHA-256"}
    )
    with Client(settings=settings.model_copy(update={"kafka": kafka})) as client:
        results = client.submit_many(
            PREDICT, [{"features": r.tolist()} for r in rows[:N]], progress=False, timeout_s=60
        )
    assert [r.status for r in results] == ["ok"] * N
    for i, r in enumerate(results):
        assert r.result is not None
        assert r.result["label"] == int(proba[i].argmax()), f"python row {i}"

    # Java: the rayml user, SCRAM-SHA-512, the CA as a PEM truststore, from a properties file.
    jar = java_client_jar()
    config = tmp_path / "client.properties"
    config.write_text(listener.java_properties())
    params_file = tmp_path / "rows.jsonl"
    params_file.write_text("".join(json.dumps({"features": r.tolist()}) + "\n" for r in rows[N:]))
    run = subprocess.run(
        [
            "java",
            "-jar",
            str(jar),
            "--bootstrap-servers",
            settings.kafka.bootstrap_servers,
            "--kafka-config",
            str(config),
            "--pipeline",
            PREDICT,
            "--params-file",
            str(params_file),
            "--input-topic",
            settings.topics.input,
            "--timeout-s",
            "60",
            "--print-results",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = run.stdout.strip().splitlines()
    summary = SUMMARY.match(lines[-1]) if lines else None
    assert summary, f"no summary line:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    assert tuple(map(int, summary.groups())) == (N, N, 0, 0), lines[-1]
    for line in lines[:-1]:
        record = json.loads(line)
        i, result = record["index"], record["result"]
        assert result["status"] == "ok", result
        assert result["result"]["label"] == int(proba[N + i].argmax()), f"java row {i}"

    # Nothing printed or logged on the way carries a password: the driver's records (executor,
    # client, librdkafka) from the executor's start on, the Java client's output.
    assert any("executor=" in line for line in driver_log), "the driver's logs were captured"
    for text in ("\n".join(driver_log), run.stdout, run.stderr):
        assert secret not in text
        assert password(listener, "analyst") not in text


def test_ray_worker_logs_hold_no_password(
    served: tuple[Settings, object], listener: SecureListener
) -> None:
    """The ingest actors and workers log into Ray's session folder, not through caplog."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert files
    secret = password(listener).encode()
    leaking = [p.name for p in files if secret in p.read_bytes()]
    assert leaking == []


# --- secrets in settings, librdkafka's debug log, the CLI ----------------------------------------


def test_settings_never_show_the_password(
    secure_broker: LocalBroker, listener: SecureListener
) -> None:
    secret = password(listener)
    settings = load_settings(kafka=secure_broker.kafka_settings().model_dump())
    shown = [
        repr(settings),
        str(settings),
        repr(settings.kafka),
        settings.model_dump_json(),
        json.dumps(settings.model_dump(mode="json")),
        repr(listener),
    ]
    for text in shown:
        assert secret not in text
    # Only the dict handed to librdkafka holds it.
    assert settings.kafka.client_config()["sasl.password"] == secret


def test_librdkafka_debug_log_redacts_the_password(
    secure_broker: LocalBroker, listener: SecureListener, caplog: pytest.LogCaptureFixture
) -> None:
    from rayml.kafka import clients as kafka_clients

    caplog.set_level(logging.DEBUG, logger="rayml.librdkafka")
    admin = kafka_clients.admin_client(secure_broker.kafka_settings(), debug="all")
    assert admin.list_topics(timeout=10).brokers
    admin.poll(0.5)
    assert "sasl.password = [redacted]" in caplog.text
    assert password(listener) not in caplog.text


def test_cli_with_the_password_in_its_environment_never_prints_it(
    secure_broker: LocalBroker, listener: SecureListener, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYML_")}
    # What `rayml kafka start --secure` writes to <data-dir>/tls/client.env.
    env_file, props_file = listener.write_client_files(tmp_path, secure_broker.bootstrap_servers)
    assert env_file.stat().st_mode & 0o077 == 0
    assert props_file.stat().st_mode & 0o077 == 0
    for line in env_file.read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value.strip("'")
    env["RAYML_TOPICS__INPUT"] = f"cli-{uuid.uuid4().hex[:8]}.input"
    run = subprocess.run(
        [sys.executable, "-m", "rayml.cli.main", "--log-level", "DEBUG", "topics", "create"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "created" in run.stdout
    assert password(listener) not in run.stdout + run.stderr


def test_a_mistyped_password_variable_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYML_KAFKA__SASL_PASWORD", "typo-secret-123456")
    with pytest.raises(ConfigError) as bad:
        load_settings()
    assert "typo-secret-123456" not in str(bad.value)


def test_the_ray_runtime_rayml_starts_requires_a_token(ray_runtime: str) -> None:
    """Ray 2.60 turns token authentication on for a new local runtime (ray.init without an
    address); nothing in rayml's start path may turn it off (RAY_AUTH_MODE=disabled)."""
    from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, get_authentication_mode

    assert get_authentication_mode() == AuthenticationMode.TOKEN
    assert os.environ.get("RAY_AUTH_MODE") == "token"
    assert AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)
