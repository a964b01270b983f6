"""The Ray memory an ingest actor reserves: from its byte budget, capped to what a node has."""

from __future__ import annotations

from rayml.config import load_settings
from rayml.executor.service import (
    INGEST_BASE_MEMORY,
    INGEST_MEMORY_PER_HELD_BYTE,
    ingest_memory_bytes,
)

MIB = 1024**2


def test_the_default_budget_reserves_the_base_plus_four_times_the_budget() -> None:
    budget = load_settings().executor.max_in_flight_bytes
    reserved, wanted = ingest_memory_bytes(budget, [16 * 1024 * MIB], 1)
    assert reserved == wanted == INGEST_BASE_MEMORY + INGEST_MEMORY_PER_HELD_BYTE * budget
    assert reserved == 1280 * MIB


def test_a_small_node_caps_the_reservation_so_the_actor_can_be_placed() -> None:
    # A 2-core laptop's Ray with little memory, two ingest actors on it.
    reserved, wanted = ingest_memory_bytes(1024 * MIB, [1_500 * MIB, 3_000 * MIB], 2)
    assert wanted == 4352 * MIB
    assert reserved == 375 * MIB, "half of the smallest node, shared by its two ingests"
    assert 2 * reserved <= 1_500 * MIB


def test_no_node_known_yet_reserves_what_the_budget_wants() -> None:
    # A cluster autoscaling from zero: Ray's autoscaler finds a node with the memory.
    assert ingest_memory_bytes(32 * MIB, [], 1) == (384 * MIB, 384 * MIB)
