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
    # Both lanes: the interactive topic first, then its bulk lane.
    assert t.input_topics == [settings.topics.input, settings.topics.input_batch]
    assert t.of_topic(settings.topics.input_batch) is tenant
    assert t.training_topics == [settings.topics.jobs]
    assert t.reply_to_refusal(tenant, "anything.at.all") is None


@pytest.mark.parametrize(
    "own", ["input", "input_batch", "output", "jobs", "dlq", "models", "registry", "events"]
)
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
    assert "rayml's own" in str(t.reply_to_refusal(a, "b.in.batch"))
    assert {"a.in", "a.in.batch", "a.train", "b.in", "b.in.batch"} <= own_topics(
        load_settings(tenants=TEAMS)
    )


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


def test_another_tenants_result_topic_is_refused_its_own_is_not() -> None:
    t = Tenancy(load_settings(tenants=TEAMS))
    a, b = t.of_topic("a.in"), t.of_topic("b.in")
    assert "tenant 'team-b''s result topic" in str(t.reply_to_refusal(a, "b.out"))
    assert t.reply_to_refusal(b, "b.out") is None
    assert t.result_topics == ["a.out", "b.out"]


def test_refusals_come_as_the_errors_a_request_is_answered_with() -> None:
    t = Tenancy(load_settings(tenants=TEAMS))
    a, b = t.of_topic("a.in"), t.of_topic("b.in")
    refused = t.refuse_reply_to(a, "ml.pipeline.registry")
    assert refused is not None
    assert (refused.type, refused.details["rule"]) == ("reply_to_refused", "reply_to")
    assert "'a.out'" in str(refused), "it says where the answer is"
    assert t.refuse_reply_to(a, None) is None
    assert t.refuse_reply_to(a, "a.replies.x") is None

    mismatch = t.refuse(b, "b.in", "team-a", "iris.predict")
    assert mismatch is not None
    assert mismatch.type == "tenant_mismatch"
    assert t.refuse(b, "b.in", "team-b", "iris.predict") is None
    assert t.refuse(b, "b.in", None, "iris.predict") is None
    pipeline = t.refuse(a, "a.in", None, "breast_cancer.predict")
    assert pipeline is not None
    assert pipeline.type == "pipeline_refused"


def test_each_kind_of_work_belongs_on_its_own_topic() -> None:
    t = Tenancy(load_settings(tenants=TEAMS))
    a, b = t.of_topic("a.in"), t.of_topic("b.in")
    assert t.refuse_kind(a, "a.in", "iris.predict", "inference") is None
    assert t.refuse_kind(a, "a.train", "iris.train", "training") is None
    wrong = t.refuse_kind(a, "a.in", "iris.train", "training")
    assert wrong is not None
    assert (wrong.type, wrong.details["use"]) == ("wrong_topic", "a.train")
    back = t.refuse_kind(a, "a.train", "iris.predict", "inference")
    assert back is not None
    assert (back.type, back.details["use"]) == ("wrong_topic", "a.in")
    cannot = t.refuse_kind(b, "b.in", "iris.train", "training")
    assert cannot is not None
    assert cannot.type == "training_refused"
    assert "tenant 'team-b' may not train" in str(cannot)


def test_pipeline_checks_are_remembered_and_bounded() -> None:
    t = Tenancy(load_settings(tenants=TEAMS))
    a = t.of_topic("a.in")
    for n in range(10_000):  # a flood of fresh names
        assert t.pipeline_refusal(a, f"x{n}.predict") is not None
    assert len(t._allowed) <= 4096
    assert t.pipeline_refusal(a, "iris.predict") is None


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"reply_prefix": "b.r"}, "covers team-b"),  # covers team-b's prefix b.r.
        ({"reply_prefix": "ml."}, "covers a topic of rayml's"),
        ({"reply_prefix": "b."}, "covers"),  # team-b's input b.in
        ({"result_topic": "ml.pipeline.registry"}, "one of rayml's own"),
        ({"result_topic": "b.out"}, "another tenant's"),
        ({"result_topic": "b_out"}, "another tenant's"),  # Kafka: '.' and '_' collide
        ({"result_topic": "a.replies.out"}, "covers a topic of team-a's"),
    ],
)
def test_a_tenant_cannot_be_configured_over_another_or_over_raymls_topics(
    change: dict, why: str
) -> None:
    from rayml.errors import ConfigError

    with pytest.raises(ConfigError, match=why):
        load_settings(tenants=[{**TEAMS[0], **change}, TEAMS[1]])


# --- lanes: each tenant's interactive topic and its bulk topic --------------------------------


def test_each_tenant_has_a_bulk_lane_beside_its_input_topic_that_maps_back_to_it() -> None:
    teams = [TEAMS[0], {**TEAMS[1], "batch_topic": "b.bulk"}]
    t = Tenancy(load_settings(tenants=teams))
    # Unnamed: <input_topic>.batch; named: as named.
    assert t.input_topics == ["a.in", "b.in", "a.in.batch", "b.bulk"]
    assert t.batch_topics == ["a.in.batch", "b.bulk"]
    assert t.of_topic("a.in.batch").name == "team-a"
    assert t.of_topic("b.bulk").name == "team-b"
    assert [t.lane_of(x) for x in ("a.in", "a.in.batch", "b.in", "b.bulk")] == [
        "interactive",
        "batch",
        "interactive",
        "batch",
    ]
    with pytest.raises(KeyError):
        t.lane_of("a.train")  # a training topic has no lanes
    with pytest.raises(KeyError):
        t.lane_of("a.out")
    # The same checks hold on the bulk lane: a request there is the tenant's.
    tenant, refused = t.check("b.bulk", None, "team-a", "breast_cancer.predict")
    assert tenant.name == "team-b"
    assert refused is not None
    assert refused.type == "tenant_mismatch"
    assert t.refuse_kind(tenant, "b.bulk", "iris.predict", "inference") is None
    wrong = t.refuse_kind(t.of_topic("a.in"), "a.in.batch", "iris.train", "training")
    assert wrong is not None
    assert (wrong.type, wrong.details["use"]) == ("wrong_topic", "a.train")


def test_the_default_tenants_bulk_lane_follows_its_input_topic_unless_named() -> None:
    assert load_settings().topics.input_batch == "ml.pipeline.input.batch"
    assert load_settings(topics={"input": "x.requests"}).topics.input_batch == "x.requests.batch"
    named = load_settings(topics={"input": "x.requests", "input_batch": "x.bulk"})
    assert named.topics.input_batch == "x.bulk"
    t = Tenancy(named)
    assert t.input_topics == ["x.requests", "x.bulk"]
    assert t.lane_of("x.bulk") == "batch"
    from rayml.errors import ConfigError

    with pytest.raises(ConfigError, match="the bulk lane is a topic of its own"):
        load_settings(topics={"input": "x.requests", "input_batch": "x_requests"})


def test_a_bulk_lane_may_not_be_another_tenants_topic_nor_raymls_nor_too_long() -> None:
    from rayml.errors import ConfigError

    with pytest.raises(ConfigError, match="bulk request topic"):
        load_settings(tenants=[TEAMS[0], {**TEAMS[1], "batch_topic": "a.in"}])
    with pytest.raises(ConfigError, match="bulk request topic"):
        load_settings(tenants=[{**TEAMS[1], "batch_topic": "ml.pipeline.input.batch"}])
    with pytest.raises(ConfigError, match="request topic"):  # b.in = a's bulk lane
        load_settings(tenants=[{**TEAMS[0], "batch_topic": "b.in"}, TEAMS[1]])
    with pytest.raises(ConfigError, match="Kafka allows 249"):
        load_settings(tenants=[{**TEAMS[1], "input_topic": "b" * 245}])
    # Named, a long input topic is fine.
    long = load_settings(tenants=[{**TEAMS[1], "input_topic": "b" * 245, "batch_topic": "b.x"}])
    assert long.tenants[0].bulk_topic == "b.x"


def test_docstring_examples_run() -> None:
    import doctest

    import rayml.tenancy.rules

    assert doctest.testmod(rayml.tenancy.rules).failed == 0
