"""The intake's decisions (rayml.executor.intake), pure: which request topics the ingest holds
from the records in flight per tenant and lane, and how much one poll may take."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import rayml.executor.intake
from rayml.config import load_settings
from rayml.executor.intake import DECIDE_EVERY_S, MIN_POLL, Intake
from rayml.tenancy.rules import Tenancy

ONE = {"in": ("default", "interactive"), "in.batch": ("default", "batch")}
TWO = {
    "a.in": ("a", "interactive"),
    "a.in.batch": ("a", "batch"),
    "b.in": ("b", "interactive"),
    "b.in.batch": ("b", "batch"),
}


def one_tenant(window: int = 1_000, share: float = 0.25, linger_s: float = 1.0) -> Intake:
    return Intake(
        ONE, {"default": 1.0}, window=window, batch_share=share, interactive_linger_s=linger_s
    )


def two_tenants(
    window: int = 1_000, weights: tuple[float, float] = (1.0, 1.0), min_share: int = 10
) -> Intake:
    return Intake(
        TWO,
        {"a": weights[0], "b": weights[1]},
        window=window,
        batch_share=1.0,  # the lanes out of the way: these tests are about tenants
        min_share_records=min_share,
        active_linger_s=1.0,
    )


def counts(**per_topic: int) -> list[tuple[tuple[str, int], int]]:
    """``in_batch=5`` -> ``[(("in.batch", 0), 5)]`` (underscores stand for dots; ``in_``: "in")."""
    return [((name.rstrip("_").replace("_", "."), 0), n) for name, n in per_topic.items()]


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.executor.intake).failed == 0


# --- lanes -------------------------------------------------------------------------------------


def test_bulk_alone_takes_the_whole_window() -> None:
    intake = one_tenant()
    intake.update(counts(in_batch=999), now=0.0)
    assert intake.held == frozenset()
    assert intake.poll_limit(2048) == 2048  # no share to keep: the window alone bounds it
    assert intake.batch_peak == 999


def test_bulk_keeps_to_its_share_while_interactive_work_is_in_flight() -> None:
    intake = one_tenant()
    assert intake.batch_cap == 250
    intake.update(counts(in_=1, in_batch=250), now=0.0)
    assert intake.held == {"in.batch"}
    assert intake.why == "bulk lanes at 250 of their 250 records"
    intake.update(counts(in_=1, in_batch=249), now=0.01)
    assert intake.held == frozenset(), "below its share bulk is always read"
    assert intake.poll_limit(2048) == MIN_POLL  # one room left, but a poll is never a trickle
    intake.update(counts(in_=1, in_batch=100), now=0.02)
    assert intake.poll_limit(2048) == 150  # what the share has room for


def test_interactive_work_lingers_then_bulk_takes_the_window_again() -> None:
    intake = one_tenant(linger_s=1.0)
    intake.update(counts(in_=1, in_batch=400), now=10.0)
    assert intake.held == {"in.batch"}
    # The interactive request is done; a trickle's next one is likely within the linger.
    intake.update(counts(in_=0, in_batch=400), now=10.9)
    assert intake.interactive_active
    assert intake.held == {"in.batch"}
    intake.update(counts(in_=0, in_batch=400), now=11.0)
    assert not intake.interactive_active
    assert intake.held == frozenset()
    # With no linger, only while a record is in flight.
    none = one_tenant(linger_s=0.0)
    none.update(counts(in_=1, in_batch=400), now=10.0)
    none.update(counts(in_=0, in_batch=400), now=10.0)
    assert none.held == frozenset()


def test_the_share_is_at_least_one_record_so_bulk_never_stops() -> None:
    intake = one_tenant(window=3, share=0.1)
    assert intake.batch_cap == 1
    intake.update(counts(in_=2, in_batch=0), now=0.0)
    assert intake.held == frozenset()


def test_partitions_of_a_topic_are_summed_and_other_topics_ignored() -> None:
    intake = one_tenant()
    pending = [(("in.batch", 0), 100), (("in.batch", 1), 160), (("in", 3), 2), (("x", 0), 999)]
    intake.update(pending, now=0.0)
    assert intake.in_flight == {("default", "interactive"): 2, ("default", "batch"): 260}
    assert intake.held == {"in.batch"}
    status = intake.status()
    assert status["in_flight"] == {"default": {"interactive": 2, "batch": 260}}
    assert status["held"] == ["in.batch"]
    assert status["batch_pauses"] == 1
    assert status["tenant_shares"] == {}  # one tenant: no shares


@settings(max_examples=200, deadline=None)
@given(
    window=st.integers(1, 5_000),
    share=st.floats(0.01, 1.0),
    interactive=st.integers(0, 5_000),
    bulk=st.integers(0, 5_000),
)
def test_the_lane_rule(window: int, share: float, interactive: int, bulk: int) -> None:
    """Held exactly while interactive work is in flight and bulk is at its share or more."""
    intake = one_tenant(window=window, share=share, linger_s=0.0)
    intake.update(counts(in_=interactive, in_batch=bulk), now=0.0)
    assert intake.batch_cap == max(1, int(window * share))
    assert (intake.held == {"in.batch"}) == (interactive > 0 and bulk >= intake.batch_cap)


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 3),  # interactive records the poll finds
            st.integers(0, 3_000),  # bulk records the poll finds
            st.integers(0, 2),  # interactive records done
            st.integers(0, 400),  # bulk records done
        ),
        min_size=1,
        max_size=60,
    )
)
# An interactive request in flight, then a deep bulk backlog behind it, drained slowly.
@example(steps=[(1, 0, 0, 0), (0, 3_000, 0, 100), (0, 3_000, 0, 100), (0, 3_000, 1, 300)])
def test_with_interactive_work_in_flight_bulk_passes_its_share_by_less_than_one_small_poll(
    steps: list[tuple[int, int, int, int]],
) -> None:
    """The ingest's turn, simulated: decide, poll (what is readable, up to the limit: the few
    interactive records, then as much bulk as there is), finish some. Bulk never passes its
    share by MIN_POLL or more once interactive work is in flight, and is read whenever it is
    below its share."""
    window = 2_000
    intake = one_tenant(window=window, linger_s=0.0)
    interactive = bulk = 0
    now = 0.0
    for found_interactive, found_bulk, done_i, done_b in steps:
        intake.update(counts(in_=interactive, in_batch=bulk), now)
        active = interactive > 0
        if active and bulk < intake.batch_cap:
            assert "in.batch" not in intake.held
        limit = intake.poll_limit(max(0, window - interactive - bulk))
        took_interactive = min(found_interactive, limit)
        took_bulk = 0 if "in.batch" in intake.held else min(found_bulk, limit - took_interactive)
        before = bulk
        bulk += took_bulk
        interactive += took_interactive
        if active:
            assert bulk <= max(before, intake.batch_cap + MIN_POLL - 1)
        interactive -= min(interactive, done_i)
        bulk -= min(bulk, done_b)
        now += DECIDE_EVERY_S


# --- tenants -----------------------------------------------------------------------------------


def test_a_tenant_alone_uses_the_whole_window() -> None:
    intake = two_tenants()
    intake.update(counts(a_in=600, a_in_batch=390), now=0.0)
    assert intake.held == frozenset()
    assert intake.shares == {}
    assert intake.poll_limit(2048) == 2048


def test_with_two_tenants_in_flight_each_keeps_to_its_weighted_share() -> None:
    intake = two_tenants(weights=(3.0, 1.0))
    intake.update(counts(a_in=600, a_in_batch=200, b_in=1), now=0.0)
    assert intake.shares == {"a": 750, "b": 250}
    assert intake.held == {"a.in", "a.in.batch"}  # 800 > 750: both of its lanes wait
    assert "tenant a at 800 of its 750 records" in intake.why
    assert intake.poll_limit(2048) == 249  # b's room
    intake.update(counts(a_in=700, a_in_batch=50, b_in=1), now=0.01)
    assert intake.held == frozenset(), "back at its share: read again"
    assert intake.status()["tenant_pauses"] == {"a": 1, "b": 0}


def test_a_tenant_with_a_tiny_weight_still_gets_the_least_share() -> None:
    intake = two_tenants(weights=(1_000.0, 1.0), min_share=50)
    intake.update(counts(a_in=10, b_in=50), now=0.0)
    assert intake.shares == {"a": 999, "b": 50}
    assert intake.held == frozenset()
    intake.update(counts(a_in=10, b_in=51), now=0.01)
    assert intake.held == {"b.in", "b.in.batch"}


def test_a_tenant_counts_as_busy_for_the_linger_after_its_last_record() -> None:
    intake = two_tenants()
    intake.update(counts(a_in=900, b_in=1), now=5.0)
    assert intake.held == {"a.in", "a.in.batch"}
    intake.update(counts(a_in=900, b_in=0), now=5.5)  # b's trickle between two requests
    assert intake.held == {"a.in", "a.in.batch"}
    intake.update(counts(a_in=900, b_in=0), now=6.0)  # b gone quiet: a alone again
    assert intake.held == frozenset()


@settings(max_examples=200, deadline=None)
@given(
    window=st.integers(10, 10_000),
    wa=st.floats(0.1, 100.0),
    wb=st.floats(0.1, 100.0),
    a=st.integers(0, 10_000),
    b=st.integers(0, 10_000),
    min_share=st.integers(1, 500),
)
def test_the_tenant_rule(window: int, wa: float, wb: float, a: int, b: int, min_share: int) -> None:
    """With both in flight: each held exactly while above max(min share, window x its weight
    / the sum); alone (the other has nothing in flight and never had): never held."""
    intake = two_tenants(window=window, weights=(wa, wb), min_share=min_share)
    intake.update(counts(a_in=a, b_in=b), now=0.0)
    if a and b:
        share_a = max(min_share, int(window * wa / (wa + wb)))
        share_b = max(min_share, int(window * wb / (wa + wb)))
        assert intake.shares == {"a": share_a, "b": share_b}
        assert ("a.in" in intake.held) == (a > share_a)
        assert ("b.in" in intake.held) == (b > share_b)
    else:
        assert intake.held == frozenset()


# --- when, and from the settings ---------------------------------------------------------------


def test_it_decides_after_each_poll_that_took_records_and_else_every_few_ms() -> None:
    intake = one_tenant()
    assert intake.due(0.0)
    intake.update([], now=0.0)
    assert not intake.due(DECIDE_EVERY_S / 2)
    intake.polled()
    assert intake.due(DECIDE_EVERY_S / 2)
    intake.update([], now=DECIDE_EVERY_S / 2)
    assert intake.due(DECIDE_EVERY_S * 2)


def test_from_the_settings_every_tenants_two_lanes_with_their_weights() -> None:
    settings_ = load_settings(
        executor={"max_in_flight": 2_000},
        lanes={"batch_share": 0.1},
        shares={"min_share_records": 7},
        tenants=[
            {
                "name": "a",
                "input_topic": "a.in",
                "result_topic": "a.out",
                "reply_prefix": "a.r.",
                "weight": 3,
            },
            {"name": "b", "input_topic": "b.in", "result_topic": "b.out", "reply_prefix": "b.r."},
        ],
    )
    intake = Intake.of(settings_, Tenancy(settings_))
    assert intake.window == 2_000
    assert intake.batch_cap == 200
    intake.update(counts(a_in=1, b_in_batch=1_990), now=0.0)
    # b's bulk lane is held twice over: interactive work waits, and b is past its share.
    assert intake.shares == {"a": 1_500, "b": 500}
    assert intake.held == {"a.in.batch", "b.in", "b.in.batch"}
    assert intake.status()["in_flight"] == {
        "a": {"interactive": 1, "batch": 0},
        "b": {"interactive": 0, "batch": 1_990},
    }


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        Intake(ONE, {"default": 1.0}, window=0, batch_share=0.25)
    with pytest.raises(ValueError, match="batch_share"):
        Intake(ONE, {"default": 1.0}, window=10, batch_share=0.0)
    with pytest.raises(ValueError, match="without a weight"):
        Intake(ONE, {"other": 1.0}, window=10, batch_share=0.25)
