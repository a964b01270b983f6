"""rayml.protocol.leases: which pipelines a live lease lists (pure)."""

from __future__ import annotations

from rayml.protocol.leases import (
    CLOCK_SLACK_MS,
    RECENT_MS,
    ServingLease,
    encode_lease,
    has_leases,
    is_lease_key,
    lease_key,
    live_pipelines,
)


def lease(instance: str, pipelines: list[str], until: int) -> bytes:
    return encode_lease(ServingLease(instance=instance, pipelines=pipelines, lease_until_ms=until))


def test_a_pipeline_is_live_while_an_unexpired_lease_lists_it() -> None:
    records = {
        b"iris.predict": b"{}",
        b"old.predict": b"{}",
        lease_key("ex-a"): lease("ex-a", ["iris.predict"], 2000),
        lease_key("ex-b"): lease("ex-b", ["iris.predict", "old.predict"], 1000),
    }
    assert live_pipelines(records, now_ms=500 - CLOCK_SLACK_MS) == {
        "iris.predict": ["ex-a", "ex-b"],
        "old.predict": ["ex-b"],
    }
    # ex-b's lease lapsed (it crashed): only what ex-a serves is live.
    assert live_pipelines(records, now_ms=1500 + CLOCK_SLACK_MS) == {"iris.predict": ["ex-a"]}
    assert live_pipelines(records, now_ms=2000 + CLOCK_SLACK_MS) == {}
    assert has_leases(records, now_ms=2000)
    # A crash long past says nothing about today: liveness unknown again.
    assert not has_leases(records, now_ms=2000 + RECENT_MS)


def test_withdrawn_leases_and_junk_count_for_nothing() -> None:
    records = {
        lease_key("ex-a"): None,  # a tombstone: stopped cleanly
        lease_key("ex-b"): b"not json",
        lease_key("ex-c"): b'{"instance": "ex-c"}',
        b"iris.predict": b"{}",
    }
    assert live_pipelines(records, now_ms=0) == {}
    assert not has_leases(records, now_ms=0)


def test_lease_keys_are_told_from_pipeline_names() -> None:
    assert is_lease_key(lease_key("ex-1"))
    assert is_lease_key("_lease/ex-1")
    assert not is_lease_key(b"iris.predict")
    assert not is_lease_key(None)
