"""Tenancy rules without Kafka: tenants by topic, reply_to and pipeline checks."""

from __future__ import annotations

import pytest

from rayml.config import load_settings
from rayml.tenancy.rules import DEFAULT_TENANT, Tenancy, own_topics

TEAMS = [
    {
        "name": "team-a",
        "input_topic": "a.in",
        "training_topic": "a.train",
        "result_topic": "a.out",
        "reply_prefix": "a.replies.",
        "pipelines": ["iris.*"],
    },
    {"name": "team-b", "input_topic": "b.in", "result_topic": "b.out", "reply_prefix": "b.r."},
]


def test_without_tenants_one_default_tenant_owns_the_default_topics() -> None:
    settings = load_settings()
    t = Tenancy(settings)
    [tenant] = t.tenants
    assert tenant.name == DEFAULT_TENANT
    assert t.of_topic(settings.topics.input) is tenant
    assert t.of_topic(settings.topics.jobs) is tenant
    assert t.input_topics == [settings.topics.input]
    assert t.training_topics == [settings.topics.jobs]
    assert t.reply_to_refusal(tenant, "anything.at.all") is None


@pytest.mark.parametrize("own", ["input", "output", "jobs", "dlq", "models", "registry", "events"])
def test_no_tenant_may_name_one_of_raymls_own_topics_as_reply_to(own: str) -> None:
    for settings in (load_settings(), load_settings(tenants=TEAMS)):
        topic = getattr(settings.topics, own)
        t = Tenancy(settings)
        for tenant in t.tenants:
            assert "rayml's own" in str(t.reply_to_refusal(tenant, topic))


def test_a_tenant_may_reply_only_under_its_prefix_and_never_to_another_tenants_topics() -> None:
    t = Tenancy(load_settings(tenants=TEAMS))
    a, b = t.of_topic("a.in"), t.of_topic("b.in")
    assert t.reply_to_refusal(a, "a.replies.svc-1") is None
    assert "reply prefix" in str(t.reply_to_refusal(a, "b.r.svc-1"))
    assert "rayml's own" in str(t.reply_to_refusal(a, "b.in"))
    assert "rayml's own" in str(t.reply_to_refusal(b, "a.train"))
    assert {"a.in", "a.train", "b.in"} <= own_topics(load_settings(tenants=TEAMS))


def test_the_tenant_comes_from_the_topic_only() -> None:
    t = Tenancy(load_settings(tenants=TEAMS))
    assert t.of_topic("a.train").name == "team-a"
    assert t.training_topics == ["a.train"]
    with pytest.raises(KeyError):
        t.of_topic("ml.pipeline.input")


def test_pipelines_a_tenant_may_call() -> None:
    t = Tenancy(load_settings(tenants=TEAMS))
    a, b = t.of_topic("a.in"), t.of_topic("b.in")
    assert t.pipeline_refusal(a, "iris.predict") is None
    assert "may not call" in str(t.pipeline_refusal(a, "breast_cancer.predict"))
    assert t.pipeline_refusal(b, "breast_cancer.predict") is None


def test_tenants_must_not_share_request_topics_or_take_raymls_own() -> None:
    from rayml.errors import ConfigError

    with pytest.raises(ConfigError, match="request topic"):
        load_settings(tenants=[TEAMS[0], {**TEAMS[1], "input_topic": "a.train"}])
    with pytest.raises(ConfigError, match="request topic"):
        load_settings(tenants=[{**TEAMS[1], "input_topic": "ml.pipeline.dlq"}])
    with pytest.raises(ConfigError, match="same name"):
        load_settings(tenants=[TEAMS[0], {**TEAMS[1], "name": "team-a"}])
