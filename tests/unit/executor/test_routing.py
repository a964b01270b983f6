"""Unit tests for rayml.executor.routing: rendezvous hashing over workers, least-loaded among
replicas."""

from __future__ import annotations

import doctest
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rayml.executor.routing
from rayml.executor.routing import pick_worker, preferred_workers

worker_ids = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12),
    min_size=1,
    max_size=12,
    unique=True,
)
model_keys = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=30, unique=True)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.executor.routing).failed == 0


def test_no_worker_is_an_error() -> None:
    with pytest.raises(ValueError, match="no worker"):
        pick_worker("m@1", [], {})


@given(worker_ids, st.text(max_size=20))
def test_preferred_workers_is_a_deterministic_ranking_of_all_workers(
    workers: list[str], key: str
) -> None:
    ranked = preferred_workers(key, workers)
    assert sorted(ranked) == sorted(workers)
    # Independent of the order in which workers are listed.
    assert preferred_workers(key, list(reversed(workers))) == ranked


@given(worker_ids, st.text(max_size=20), st.data())
def test_removing_a_worker_keeps_the_order_of_the_others(
    workers: list[str], key: str, data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(workers))
    before = preferred_workers(key, workers)
    after = preferred_workers(key, [w for w in workers if w != gone])
    assert after == [w for w in before if w != gone]


@given(worker_ids, model_keys, st.data())
def test_removing_a_worker_only_moves_models_that_ranked_it_first(
    workers: list[str], keys: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(workers))
    rest = [w for w in workers if w != gone]
    for key in keys:
        before = pick_worker(key, workers, {}, replicas=1)
        if not rest:
            continue
        after = pick_worker(key, rest, {}, replicas=1)
        if before != gone:
            assert after == before
        else:
            # The model moves to its second choice, not anywhere.
            assert after == preferred_workers(key, workers)[1]


@given(worker_ids, model_keys, st.text(min_size=1, max_size=12))
def test_adding_a_worker_only_moves_models_to_it(
    workers: list[str], keys: list[str], new: str
) -> None:
    if new in workers:
        return
    for key in keys:
        before = pick_worker(key, workers, {}, replicas=1)
        after = pick_worker(key, [*workers, new], {}, replicas=1)
        assert after in (before, new)


def test_models_spread_over_workers() -> None:
    workers = [f"w{i}" for i in range(4)]
    owners = Counter(pick_worker(f"model-{i}@1", workers, {}, replicas=1) for i in range(400))
    assert set(owners) == set(workers)
    assert min(owners.values()) > 50  # about 100 each; rendezvous hashing is uniform


@given(
    worker_ids,
    st.text(max_size=20),
    st.integers(min_value=1, max_value=5),
    st.dictionaries(st.text(max_size=12), st.integers(min_value=0, max_value=10)),
)
def test_picks_the_least_loaded_of_the_first_replicas(
    workers: list[str], key: str, replicas: int, load: dict[str, int]
) -> None:
    picked = pick_worker(key, workers, load, replicas=replicas)
    candidates = preferred_workers(key, workers)[:replicas]
    assert picked in candidates
    assert load.get(picked, 0) == min(load.get(w, 0) for w in candidates)
    # Ties go to the most preferred candidate: the model stays where it is warm.
    tied = [w for w in candidates if load.get(w, 0) == load.get(picked, 0)]
    assert picked == tied[0]


def test_least_loaded_replica_takes_the_batch() -> None:
    workers = ["a", "b", "c", "d"]
    first, second, third, _ = preferred_workers("hot@1", workers)

    assert pick_worker("hot@1", workers, {first: 3, second: 1}, replicas=2) == second
    # Never beyond the replicas, however idle the others are.
    assert pick_worker("hot@1", workers, {first: 3, second: 2}, replicas=2) == second
    assert pick_worker("hot@1", workers, {first: 3, second: 2}, replicas=3) == third


def test_ties_are_sticky() -> None:
    workers = ["a", "b", "c", "d"]
    first, second, *_ = preferred_workers("m@1", workers)
    for replicas in (1, 2, 4):
        assert pick_worker("m@1", workers, {}, replicas=replicas) == first
        assert pick_worker("m@1", workers, dict.fromkeys(workers, 5), replicas=replicas) == first
    # Among the replicas, the most preferred of the least loaded.
    assert pick_worker("m@1", workers, {first: 1, second: 0}, replicas=2) == second
    assert pick_worker("m@1", workers, {first: 0, second: 0}, replicas=2) == first


@pytest.mark.parametrize("replicas", [0, -3])
def test_fewer_than_one_replica_means_one(replicas: int) -> None:
    workers = ["a", "b", "c"]
    first = preferred_workers("m@1", workers)[0]
    assert pick_worker("m@1", workers, {first: 9}, replicas=replicas) == first


def test_more_replicas_than_workers_uses_all_workers() -> None:
    workers = ["a", "b"]
    first, second = preferred_workers("m@1", workers)
    assert pick_worker("m@1", workers, {first: 1}, replicas=10) == second
