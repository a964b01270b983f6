"""The Ray memory an ingest actor reserves: from its byte budget, capped to what a node has."""

from __future__ import annotations

from rayml.config import load_settings
from rayml.executor.service import (
    INGEST_BASE_MEMORY,
    INGEST_MEMORY_PER_HELD_BYTE,
    ingest_memory_bytes,
)

MIB = 1024**2


def test_the_default_budget_reserves_the_base_plus_two_and_a_half_times_the_budget() -> None:
    budget = load_settings().executor.max_in_flight_bytes
    reserved, wanted = ingest_memory_bytes(budget, [16 * 1024 * MIB], 1)
    assert reserved == wanted == INGEST_BASE_MEMORY + int(INGEST_MEMORY_PER_HELD_BYTE * budget)
    assert reserved == 896 * MIB


def test_the_reservation_covers_the_measured_rss() -> None:
    # Measured with 1 MiB requests (test_executor_faults.py's backlog): RSS at most 249 MiB
    # behind a 32 MiB budget, 414 MiB behind 64 MiB.
    for budget, rss in ((32 * MIB, 249 * MIB), (64 * MIB, 414 * MIB)):
        reserved, _ = ingest_memory_bytes(budget, [], 1)
        assert rss <= reserved <= rss + 96 * MIB


def test_a_small_node_caps_the_reservation_so_the_actor_can_be_placed() -> None:
    # A 2-core laptop's Ray with little memory, two ingest actors on it.
    reserved, wanted = ingest_memory_bytes(1024 * MIB, [1_500 * MIB, 3_000 * MIB], 2)
    assert wanted == 2816 * MIB
    assert reserved == 187.5 * MIB, "a quarter of the smallest node, shared by its two ingests"
    assert 2 * reserved <= 1_500 * MIB / 4


def test_a_4_gib_box_leaves_three_quarters_of_rays_memory_to_the_rest() -> None:
    # A 4 GiB machine: Ray's memory resource is ~2.4 GiB there; one ingest, default budget.
    node = 2.4 * 1024 * MIB
    reserved, wanted = ingest_memory_bytes(256 * MIB, [node], 1)
    assert wanted == 896 * MIB
    assert reserved == int(node / 4)
    assert node - reserved >= 1.8 * 1024 * MIB


def test_no_node_known_yet_reserves_what_the_budget_wants() -> None:
    # A cluster autoscaling from zero: Ray's autoscaler finds a node with the memory.
    assert ingest_memory_bytes(32 * MIB, [], 1) == (336 * MIB, 336 * MIB)
