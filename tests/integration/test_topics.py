"""`rayml topics create` against the real broker: per-role settings, idempotent."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import ConfigResource

from rayml.config import Settings
from rayml.kafka.clients import admin_client
from rayml.kafka.topics import create_topics

pytestmark = pytest.mark.kafka


def test_create_topics_is_idempotent_and_compacts_models(settings: Settings) -> None:
    first = create_topics(settings.kafka, settings.topics)
    # "exists" can appear on a first call too: librdkafka retries a CreateTopics request that
    # timed out on a busy broker, and the retry finds the topic its first attempt made.
    assert "created" in first.values()
    assert len(first) == 10  # the nine roles, and the bulk lane beside the input topic
    again = create_topics(settings.kafka, settings.topics)
    assert set(again.values()) == {"exists"}

    admin = admin_client(settings.kafka)
    meta = admin.list_topics(timeout=10)
    assert len(meta.topics[settings.topics.input].partitions) == 4
    assert len(meta.topics[settings.topics.input_batch].partitions) == 4
    resources = [
        ConfigResource("topic", settings.topics.models),
        ConfigResource("topic", settings.topics.input),
    ]
    configs = {r.name: f.result(10) for r, f in admin.describe_configs(resources).items()}
    assert configs[settings.topics.models]["cleanup.policy"].value == "compact"
    assert configs[settings.topics.input]["cleanup.policy"].value == "delete"
