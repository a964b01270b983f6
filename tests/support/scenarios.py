"""Settings shared by the fault, exactly-once, cluster and operations scenarios."""

from __future__ import annotations

from typing import Any

from rayml.config import Settings
from rayml.kafka.topics import create_topics
from tests.support.models import store_breast_cancer


def slow_pipeline_settings(
    settings: Settings, topics: dict[str, Any] | None = None, **executor: Any
) -> Settings:
    """``settings`` for a scenario on the ``testing.slow`` pipeline; topics created, model stored.

    Small batches of a pipeline that takes 100 ms a batch: a burst of thousands of requests
    lasts several seconds, so a kill lands mid-burst with commits before it and work after it;
    a small in-flight window leaves most of the burst in Kafka. ``executor`` and ``topics``
    override single fields.
    """
    ex = settings.executor.model_copy(
        update={
            "worker_num_cpus": 0.5,
            "num_workers": 2,
            "drain_timeout_s": 15.0,
            "commit_interval_s": 0.25,
            "pipeline_modules": ["tests.support.executor_pipelines"],
            "max_batch_size": 100,
            "max_in_flight": 1_000,
            **executor,
        }
    )
    settings = settings.model_copy(
        update={"executor": ex, "topics": settings.topics.model_copy(update=topics or {})}
    )
    create_topics(settings.kafka, settings.topics)
    store_breast_cancer(settings.models.root, n_estimators=10)
    return settings
