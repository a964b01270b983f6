"""A secure broker with Kafka's ACLs in force, two tenants and the executor's principal.

The setup of the tenant tests (``tests/integration/test_tenant_acls.py``, and an executor
end-to-end test over the same tenants):

- the local broker with a ``SASL_SSL`` listener and Kafka's ``StandardAuthorizer``
  (``allow.everyone.if.no.acl.found=false``), SCRAM users ``admin`` (the broker's own identity
  and a super user: it creates topics and ACLs), ``rayml`` (the executor), ``team-a`` and
  ``team-b``;
- a TOML settings file (no secrets) with rayml's topics, the executor's groups, the model store
  and the two tenants of :data:`TENANTS`;
- ``rayml tenants apply --executor-principal User:rayml`` run as the admin, through the real
  command line.

:meth:`SecureTenants.settings` gives the same settings as any of the four users.

Example (a module fixture; a session-wide one can wrap the same context manager)::

    @pytest.fixture(scope="module")
    def tenants(tmp_path_factory):
        with secure_tenants(tmp_path_factory.mktemp("tenants")) as found:
            yield found

    def test_a(tenants):
        executor = tenants.settings("rayml")   # Executor(executor).start() serves both tenants
        team_a = tenants.settings("team-a")    # a Client of team A: topics.input = its topic
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayml.config import KafkaSettings, Settings, TenantSettings, load_settings
from rayml.localkafka import LocalBroker, SecureListener

REPO = Path(__file__).resolve().parents[2]

ADMIN, EXECUTOR, TEAM_A, TEAM_B = "admin", "rayml", "team-a", "team-b"
USERS = (ADMIN, EXECUTOR, TEAM_A, TEAM_B)
EXECUTOR_PRINCIPAL = f"User:{EXECUTOR}"

# Team A may call any pipeline and train; team B only iris.* and may not train.
TENANTS: list[dict[str, Any]] = [
    {
        "name": TEAM_A,
        "principal": f"User:{TEAM_A}",
        "input_topic": "team-a.requests",
        "training_topic": "team-a.training",
        "result_topic": "team-a.results",
        "reply_prefix": "team-a.replies.",
        "pipelines": ["*"],
    },
    {
        "name": TEAM_B,
        "principal": f"User:{TEAM_B}",
        "input_topic": "team-b.requests",
        "result_topic": "team-b.results",
        "reply_prefix": "team-b.replies.",
        "pipelines": ["iris.*"],
    },
]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for these plain ASCII values
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def write_toml(
    path: Path, sections: dict[str, dict[str, Any]], tenants: list[dict[str, Any]]
) -> Path:
    """A settings file: top-level keys under ``""``, then ``[section]`` tables and
    ``[[tenants]]`` (what pydantic-settings' TOML source reads)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in sections.get("", {}).items()]
    for name, table in sections.items():
        if name:
            lines += ["", f"[{name}]", *(f"{k} = {_toml_value(v)}" for k, v in table.items())]
    for tenant in tenants:
        lines += ["", "[[tenants]]", *(f"{k} = {_toml_value(v)}" for k, v in tenant.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def kafka_env(kafka: KafkaSettings) -> dict[str, str]:
    """``RAYML_KAFKA__*`` for a command line run with ``kafka``'s credentials."""
    env = {
        "RAYML_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "RAYML_KAFKA__SECURITY_PROTOCOL": kafka.security_protocol,
    }
    optional = {
        "RAYML_KAFKA__SASL_MECHANISM": kafka.sasl_mechanism,
        "RAYML_KAFKA__SASL_USERNAME": kafka.sasl_username,
        "RAYML_KAFKA__SASL_PASSWORD": (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        ),
        "RAYML_KAFKA__SSL_CA_LOCATION": kafka.ssl_ca_location,
        "RAYML_KAFKA__SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": (
            kafka.ssl_endpoint_identification_algorithm
        ),
    }
    env.update({k: v for k, v in optional.items() if v is not None})
    return env


@dataclass(frozen=True)
class SecureTenants:
    """The running secure broker, its users and the tenants' settings file."""

    broker: LocalBroker
    listener: SecureListener
    config_file: Path
    # What the setup's `rayml tenants apply` printed.
    apply_output: str

    def kafka(self, user: str) -> KafkaSettings:
        """Kafka settings for ``user`` (SCRAM-SHA-512 over TLS)."""
        return self.listener.kafka_settings(self.broker.bootstrap_servers, user)

    def settings(self, user: str, **overrides: Any) -> Settings:
        """The tenants' settings as ``user``; ``overrides`` replace whole sections."""
        return load_settings(self.config_file, kafka=self.kafka(user).model_dump(), **overrides)

    def tenant(self, name: str) -> TenantSettings:
        return next(t for t in self.settings(ADMIN).tenants if t.name == name)

    def cli_env(self, user: str, kafka: KafkaSettings | None = None) -> dict[str, str]:
        """The environment of a ``rayml`` command line run as ``user`` on these settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAYML_")}
        env["RAYML_CONFIG"] = str(self.config_file)
        env.update(kafka_env(kafka or self.kafka(user)))
        return env

    def rayml(
        self, user: str, *args: str, kafka: KafkaSettings | None = None, timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m rayml.cli.main ARGS`` as ``user`` (or with ``kafka``'s credentials)."""
        return subprocess.run(
            [sys.executable, "-m", "rayml.cli.main", *args],
            cwd=REPO,
            env=self.cli_env(user, kafka),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


@contextmanager
def secure_tenants(folder: Path, state_dir: Path = REPO / ".rayml") -> Iterator[SecureTenants]:
    """Start the broker, write the settings, apply the tenants as the admin; stop at the end."""
    listener = SecureListener.generate(
        folder / "tls", users=USERS, authorizer=True, super_users=(ADMIN,)
    )
    config_file = write_toml(
        folder / "tenants.toml",
        {
            "": {"state_dir": str(folder / "state")},
            "topics": {"input_partitions": 2, "output_partitions": 2, "jobs_partitions": 1},
            "executor": {
                "group_id": "rayml-executor",
                "jobs_group_id": "rayml-jobs",
                "worker_num_cpus": 0.5,
                "num_workers": 2,
                "drain_timeout_s": 10.0,
            },
            "models": {"root": str(folder / "models")},
        },
        TENANTS,
    )
    with LocalBroker.ephemeral(state_dir=state_dir, security=listener) as broker:
        found = SecureTenants(broker, listener, config_file, apply_output="")
        applied = found.rayml(ADMIN, "tenants", "apply", "--executor-principal", EXECUTOR_PRINCIPAL)
        if applied.returncode != 0:
            raise RuntimeError(
                f"rayml tenants apply failed ({applied.returncode}):\n"
                f"{applied.stdout}\n{applied.stderr}"
            )
        yield SecureTenants(broker, listener, config_file, apply_output=applied.stdout)
