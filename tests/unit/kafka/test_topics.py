"""Per-role topic settings and the durability decisions (pure)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from rayml.config import TenantSettings, TopicSettings, load_settings
from rayml.errors import ConfigError
from rayml.kafka.topics import (
    creation_request,
    fewest_replicas,
    min_insync_replicas,
    single_replica_topics,
    tenant_topic_specs,
    topic_specs,
    warn_single_replicas,
)


def test_every_role_has_a_spec_and_state_topics_are_compacted() -> None:
    specs = {s.role: s for s in topic_specs(TopicSettings())}
    assert set(specs) == {
        "input",
        "input_batch",
        "output",
        "jobs",
        "dlq",
        "models",
        "registry",
        "events",
        "shadow",
        "feedback",
    }
    assert specs["models"].config["cleanup.policy"] == "compact"
    assert specs["registry"].config["cleanup.policy"] == "compact"
    assert specs["input"].partitions == 8
    assert "cleanup.policy" not in specs["input"].config
    # The bulk lane beside the input topic is made like it.
    assert specs["input_batch"].name == "ml.pipeline.input.batch"
    assert specs["input_batch"].partitions == specs["input"].partitions
    assert specs["input_batch"].config == specs["input"].config


# --- durability: replication factor and min.insync.replicas ---------------------------------------


@pytest.mark.parametrize(
    ("replication_factor", "min_insync", "broker_default", "asked", "insync"),
    [
        (None, None, 1, -1, "1"),  # one broker: one copy, so min.insync.replicas 1
        (None, None, 2, -1, "2"),
        (None, None, 3, -1, "2"),  # min(2, replicas)
        (3, None, 1, 3, "2"),  # the setting wins over the broker's default
        (1, None, 3, 1, "1"),
        (5, 3, None, 5, "3"),  # an explicit min.insync.replicas
        (None, 3, 2, -1, "2"),  # never above the copies the broker will make
        (None, None, None, -1, None),  # default unknown: left to the broker
    ],
)
def test_topics_get_the_broker_default_replication_and_min_insync_of_two_at_most(
    replication_factor: int | None,
    min_insync: int | None,
    broker_default: int | None,
    asked: int,
    insync: str | None,
) -> None:
    topics = TopicSettings(replication_factor=replication_factor, min_insync_replicas=min_insync)
    spec = topic_specs(topics)[0]
    got, config = creation_request(spec, topics, broker_default)
    assert got == asked
    assert config.get("min.insync.replicas") == insync
    assert {k: v for k, v in config.items() if k != "min.insync.replicas"} == spec.config


def test_the_default_is_the_broker_default_replication() -> None:
    assert TopicSettings().replication_factor is None
    assert min_insync_replicas(1) == 1
    assert min_insync_replicas(3) == 2
    assert min_insync_replicas(3, 3) == 3


def test_min_insync_above_the_replication_factor_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"min_insync_replicas \(3\) above replication_factor"):
        load_settings(topics={"replication_factor": 2, "min_insync_replicas": 3})


def test_single_replica_topics_are_named_only_on_a_multi_broker_cluster() -> None:
    replicas = {"in": 1, "out": 3, "models": 1}
    assert single_replica_topics(replicas, brokers=1) == []
    assert single_replica_topics(replicas, brokers=3) == ["in", "models"]
    assert single_replica_topics({"out": 2}, brokers=3) == []


def _metadata(brokers: int, topics: dict[str, list[int]]) -> SimpleNamespace:
    return SimpleNamespace(
        brokers=dict.fromkeys(range(brokers)),
        topics={
            name: SimpleNamespace(
                error=None,
                partitions={
                    p: SimpleNamespace(replicas=list(range(n))) for p, n in enumerate(counts)
                },
            )
            for name, counts in topics.items()
        },
    )


def test_serve_warns_of_its_single_replica_topics_on_a_multi_broker_cluster(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # "in" has one partition with a single copy: that partition is what a broker's loss loses.
    meta = _metadata(3, {"in": [3, 1], "out": [3, 3], "other": [1]})
    assert fewest_replicas(meta, ["in", "out", "gone"]) == {"in": 1, "out": 3}
    caplog.set_level(logging.WARNING, logger="rayml.kafka.topics")
    assert warn_single_replicas(meta, ["in", "out"]) == ["in"]
    [record] = caplog.records
    assert "topic=in has one replica on a cluster of 3 brokers" in record.getMessage()
    caplog.clear()
    assert warn_single_replicas(_metadata(1, {"in": [1]}), ["in"]) == []
    assert caplog.records == []


def test_tenant_topics_take_the_settings_of_their_role() -> None:
    topics = TopicSettings()
    a = TenantSettings(
        name="team-a",
        input_topic="a.in",
        training_topic="a.train",
        result_topic="a.out",
        reply_prefix="a.r.",
    )
    b = TenantSettings(name="team-b", input_topic="b.in", result_topic="b.out", reply_prefix="b.")
    by_name = {s.name: s for s in tenant_topic_specs(topics, [a, b])}
    assert list(by_name) == [
        "a.in",
        "a.in.batch",
        "a.train",
        "a.out",
        "b.in",
        "b.in.batch",
        "b.out",
    ]
    roles = {s.role: s for s in topic_specs(topics)}
    assert by_name["a.in"].partitions == roles["input"].partitions
    # Each tenant's bulk lane is made like its input topic.
    assert by_name["b.in.batch"].partitions == roles["input"].partitions
    assert by_name["b.in.batch"].config == roles["input"].config
    assert by_name["b.in.batch"].role == "team-b input_batch"
    assert by_name["a.train"].config == roles["jobs"].config
    assert by_name["b.out"].partitions == roles["output"].partitions
    assert by_name["a.train"].role == "team-a jobs"
    # The default tenant's topics are rayml's own: not specified twice.
    default = TenantSettings(
        name="default",
        input_topic=topics.input,
        training_topic=topics.jobs,
        result_topic=topics.output,
        reply_prefix=".",
    )
    assert tenant_topic_specs(topics, [default]) == []
