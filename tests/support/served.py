"""An executor serving a test module's own topics, with the example model stored.

Shared by the modules that run an executor of their own (through a client, on plain and
secure Kafka; priority lanes; pools per pipeline): the settings differ in how to reach the
broker, the training section, and what a module sets on top (partitions, workers, autoscaling,
tenants).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rayml.config import Settings, load_settings
from rayml.executor.service import Executor
from rayml.kafka.topics import create_topics
from tests.support.models import store_breast_cancer

ROLES = ("input", "output", "jobs", "dlq", "models", "registry", "events", "shadow", "feedback")


def module_settings(
    kafka: dict[str, Any],
    root: Path,
    prefix: str,
    training: dict[str, Any] | None = None,
    *,
    topics: dict[str, Any] | None = None,
    executor: dict[str, Any] | None = None,
    **sections: Any,
) -> Settings:
    """Settings with topics and groups of their own (``{prefix}-{tag}.{role}``) under ``root``.

    ``topics`` and ``executor`` update those sections' values here (partitions, workers);
    ``sections`` are further sections as :func:`rayml.config.load_settings` takes them.
    """
    tag = uuid.uuid4().hex[:10]
    return load_settings(
        state_dir=root / "state",
        kafka=kafka,
        topics={
            **{role: f"{prefix}-{tag}.{role}" for role in ROLES},
            "input_partitions": 2,
            "output_partitions": 2,
            "jobs_partitions": 1,
            **(topics or {}),
        },
        executor={
            "group_id": f"g-{tag}",
            "jobs_group_id": f"j-{tag}",
            "worker_num_cpus": 0.5,
            "num_workers": 2,
            "drain_timeout_s": 10.0,
            **(executor or {}),
        },
        training=training or {},
        models={"root": str(root / "models")},
        **sections,
    )


@contextmanager
def running_executor(settings: Settings) -> Iterator[Settings]:
    """Create the topics and run an executor on ``settings`` until the block ends."""
    create_topics(settings.kafka, settings.topics)
    executor = Executor(settings)
    executor.start()
    try:
        yield settings
    finally:
        executor.drain(10)


@contextmanager
def serving(settings: Settings) -> Iterator[Any]:
    """Store the example model, then run an executor; yield the model."""
    _version, model = store_breast_cancer(settings.models.root)
    with running_executor(settings):
        yield model
