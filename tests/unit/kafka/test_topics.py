"""Per-role topic settings (pure)."""

from __future__ import annotations

from rayml.config import TopicSettings
from rayml.kafka.topics import topic_specs


def test_every_role_has_a_spec_and_state_topics_are_compacted() -> None:
    specs = {s.role: s for s in topic_specs(TopicSettings())}
    assert set(specs) == {"input", "output", "jobs", "dlq", "models", "registry", "events"}
    assert specs["models"].config["cleanup.policy"] == "compact"
    assert specs["registry"].config["cleanup.policy"] == "compact"
    assert specs["input"].partitions == 8
    assert "cleanup.policy" not in specs["input"].config
