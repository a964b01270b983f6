"""The ACL plan of the tenants and the executor (no broker)."""

from __future__ import annotations

from rayml.config import Settings, load_settings
from rayml.tenancy.grants import Grant, executor_grants, missing_grants, plan, tenant_grants

TEAMS = [
    {
        "name": "team-a",
        "principal": "User:team-a",
        "input_topic": "a.in",
        "training_topic": "a.train",
        "result_topic": "a.out",
        "reply_prefix": "a.replies.",
    },
    {
        "name": "team-b",
        "principal": "User:team-b",
        "input_topic": "b.in",
        "result_topic": "b.out",
        "reply_prefix": "b.replies.",
    },
]


def settings_with(teams: list[dict[str, object]] = TEAMS) -> Settings:
    return load_settings(tenants=teams, executor={"group_id": "ex", "jobs_group_id": "jobs"})


def rights(grants: list[Grant]) -> set[tuple[str, str, str, str]]:
    return {(g.resource, g.name, g.pattern, g.operation) for g in grants}


def test_a_tenant_may_send_to_its_topics_and_read_its_results_and_replies_only() -> None:
    settings = settings_with()
    team_a = settings.tenants[0]
    grants = tenant_grants(settings, team_a)
    assert {g.principal for g in grants} == {"User:team-a"}
    assert rights(grants) == {
        ("topic", "a.in", "literal", "Write"),
        ("topic", "a.in", "literal", "Describe"),
        # Its bulk lane (priority="batch", replays): <input>.batch unless named.
        ("topic", "a.in.batch", "literal", "Write"),
        ("topic", "a.in.batch", "literal", "Describe"),
        ("topic", "a.train", "literal", "Write"),
        ("topic", "a.train", "literal", "Describe"),
        ("topic", "a.out", "literal", "Read"),
        ("topic", "a.out", "literal", "Describe"),
        ("topic", "a.replies.", "prefixed", "Read"),
        ("topic", "a.replies.", "prefixed", "Describe"),
        ("topic", "a.replies.", "prefixed", "Create"),
        ("topic", "a.replies.", "prefixed", "Delete"),
        ("topic", "ml.pipeline.registry", "literal", "Read"),
        ("topic", "ml.pipeline.registry", "literal", "Describe"),
        ("topic", "ml.models", "literal", "Read"),
        ("topic", "ml.models", "literal", "Describe"),
        ("topic", "ml.pipeline.events", "literal", "Read"),
        ("topic", "ml.pipeline.events", "literal", "Describe"),
        ("group", "team-a.", "prefixed", "Read"),
        ("group", "rayml-client-", "prefixed", "Describe"),
    }
    assert len(grants) == len(rights(grants))


def test_a_tenant_that_may_not_train_gets_no_training_or_events_rights() -> None:
    settings = settings_with()
    team_b = tenant_grants(settings, settings.tenants[1])
    assert not any(g.name in ("a.train", "ml.pipeline.events") for g in team_b)
    # Nothing of team A's, and never a write to what the executor writes or owns.
    team_a_names = {"a.in", "a.in.batch", "a.train", "a.out", "a.replies.", "team-a."}
    assert not any(g.name in team_a_names for g in team_b)
    writes = {g.name for g in team_b if g.operation in ("Write", "Create", "Delete")}
    assert writes == {"b.in", "b.in.batch", "b.replies."}


def test_the_executor_reads_requests_writes_results_and_its_own_topics() -> None:
    settings = settings_with()
    grants = executor_grants(settings, "User:rayml")
    assert {g.principal for g in grants} == {"User:rayml"}
    r = rights(grants)
    for request_topic in ("a.in", "a.in.batch", "a.train", "b.in", "b.in.batch"):
        assert {(x[1], x[3]) for x in r if x[1] == request_topic} == {
            (request_topic, "Read"),
            (request_topic, "Describe"),
        }
    for result in ("a.out", "b.out"):
        assert {x[3] for x in r if x[1] == result} == {"Write", "Describe"}
    for prefix in ("a.replies.", "b.replies."):
        assert {(x[2], x[3]) for x in r if x[1] == prefix} == {
            ("prefixed", "Write"),
            ("prefixed", "Describe"),
        }
    t = settings.topics
    # Least privilege: requests are read, never written; results, dead letters and events
    # written, never read; the state topics both.
    expected = {
        t.input: {"Read"},
        t.input_batch: {"Read"},
        t.jobs: {"Read"},
        t.output: {"Write"},
        t.dlq: {"Write"},
        t.events: {"Write"},
        t.models: {"Read", "Write"},
        t.registry: {"Read", "Write"},
    }
    for own, ops in expected.items():
        assert {x[3] for x in r if x[1] == own and x[0] == "topic"} == {*ops, "Describe"}
    assert ("group", "ex", "literal", "Read") in r
    assert ("group", "jobs", "literal", "Read") in r
    assert ("group", "rayml-versions-", "prefixed", "Describe") in r
    # Exactly-once ids are "{group_id}.{ingest_id}" and "{jobs_group_id}.{runner_id}".
    txn = {(x[1], x[3]) for x in r if x[0] == "transactional_id"}
    assert txn == {("ex.", "Write"), ("ex.", "Describe"), ("jobs.", "Write"), ("jobs.", "Describe")}
    assert ("cluster", "kafka-cluster", "literal", "IdempotentWrite") in r
    # The executor creates nothing: an admin made its topics, clients make reply topics.
    assert not any(g.operation in ("Create", "Delete") for g in grants)


def test_the_plan_is_every_tenant_then_the_executor_without_repeats() -> None:
    settings = settings_with()
    everything = plan(settings, "User:rayml")
    assert len(everything) == len(set(everything))
    principals = list(dict.fromkeys(g.principal for g in everything))
    assert principals == ["User:team-a", "User:team-b", "User:rayml"]
    assert {g.principal for g in plan(settings, None)} == {"User:team-a", "User:team-b"}


def test_the_default_tenant_gets_no_acls_and_its_replies_are_the_clients_default() -> None:
    settings = load_settings()
    assert plan(settings, None) == []
    grants = executor_grants(settings, "User:rayml")
    prefixes = {g.name for g in grants if g.pattern == "prefixed" and g.resource == "topic"}
    assert prefixes == {"ml.pipeline.input.reply."}


def test_a_tenant_without_a_principal_gets_topics_but_no_acls() -> None:
    teams = [{**TEAMS[0], "principal": None}, TEAMS[1]]
    settings = settings_with(teams)
    assert tenant_grants(settings, settings.tenants[0]) == []
    # The executor still serves it.
    assert ("a.in", "Read") in {(g.name, g.operation) for g in executor_grants(settings, "U:x")}


def test_missing_grants_keep_the_plan_order() -> None:
    settings = settings_with()
    wanted = plan(settings, "User:rayml")
    present = set(wanted[::2])
    assert missing_grants(wanted, present) == wanted[1::2]
    assert missing_grants(wanted, set(wanted)) == []


def test_a_grant_reads_as_who_may_do_what_on_which_resource() -> None:
    grant = Grant("User:team-a", "topic", "a.replies.", "prefixed", "Create")
    assert str(grant) == "User:team-a may Create topic 'a.replies.' (prefix)"
    cluster = Grant("User:rayml", "cluster", "kafka-cluster", "literal", "IdempotentWrite")
    assert str(cluster) == "User:rayml may IdempotentWrite the cluster"
