"""Session-wide real services for integration tests: one Kafka broker and one local Ray.

Both are started by the tests themselves (the broker through rayml's own launcher) and stopped
by pid at the end. There is no skip when a service is missing: a broker or Ray that cannot
start fails the tests that need it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayml.config import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[object]:
    """A real Apache Kafka broker on free ports, in a temporary data dir."""
    from rayml.localkafka import LocalBroker

    with LocalBroker.ephemeral(state_dir=REPO / ".rayml") as broker:
        yield broker


@pytest.fixture(scope="session")
def bootstrap_servers(kafka_broker: object) -> str:
    return str(kafka_broker.bootstrap_servers)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[str]:
    """A real local Ray runtime shared by the session; yields its GCS address."""
    import ray

    ray.init(
        address="local",  # always a new runtime of our own, never a cluster found on the machine
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        namespace=f"rayml-tests-{uuid.uuid4().hex[:6]}",
        object_store_memory=400 * 1024 * 1024,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(bootstrap_servers: str, tmp_path: Path) -> Settings:
    """Settings for one test: unique topics, consumer groups and model store."""
    tag = uuid.uuid4().hex[:10]
    return load_settings(
        state_dir=tmp_path / "state",
        kafka={"bootstrap_servers": bootstrap_servers},
        topics={
            "input": f"t-{tag}.input",
            "output": f"t-{tag}.output",
            "jobs": f"t-{tag}.jobs",
            "dlq": f"t-{tag}.dlq",
            "models": f"t-{tag}.models",
            "registry": f"t-{tag}.registry",
            "events": f"t-{tag}.events",
            "shadow": f"t-{tag}.shadow",
            "feedback": f"t-{tag}.feedback",
            "input_partitions": 4,
            "output_partitions": 4,
            "jobs_partitions": 2,
        },
        executor={"group_id": f"g-{tag}", "jobs_group_id": f"j-{tag}"},
        models={"root": str(tmp_path / "models")},
    )


@pytest.fixture(autouse=True)
def _no_rayml_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the settings they set: a developer's RAYML_* variables don't leak in."""
    for key in list(os.environ):
        if key.startswith("RAYML_"):
            monkeypatch.delenv(key)
