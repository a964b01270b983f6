"""WorkerPool's view of its workers' room (loop-thread bookkeeping; no Ray call, no worker)."""

from __future__ import annotations

import pytest

from rayml.config import load_settings
from rayml.executor.pool import WorkerPool, _Slot
from rayml.pipeline import Pool


def _pool(max_batches_per_worker: int, *in_flight: int) -> WorkerPool:
    settings = load_settings(executor={"max_batches_per_worker": max_batches_per_worker})
    # A pool that may be at zero, so that it starts nothing; its slots are set by hand.
    pool = WorkerPool(settings, "ingest-t", size=0, shape=Pool(min_replicas=0))
    for n, count in enumerate(in_flight):
        pool._slots[f"w{n}"] = _Slot(handle=None, in_flight=count)
    return pool


@pytest.mark.parametrize("cap", [2, 3, 8])
def test_a_worker_has_room_while_nothing_waits_behind_what_it_runs(cap: int) -> None:
    # Room (for a partial batch sent before its batch wait) means: what is sent now runs next.
    assert _pool(cap, 0).has_room
    assert _pool(cap, 1).has_room
    assert not _pool(cap, 2).has_room  # a batch already waits behind the running one
    assert _pool(cap, 2, 1).has_room  # another worker runs one batch only


def test_one_batch_per_worker_means_room_only_when_idle() -> None:
    assert _pool(1, 0).has_room
    assert not _pool(1, 1).has_room


def test_starting_draining_and_isolating_workers_have_no_room() -> None:
    pool = _pool(2)
    pool._slots["starting"] = _Slot(handle=None, starting=object())
    pool._slots["draining"] = _Slot(handle=None, draining=True)
    pool._slots["isolating"] = _Slot(handle=None, exclusive=True)
    assert not pool.has_room
