"""The dispatcher's queue: batches merge while workers are busy, never across routes or retries."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from rayml.executor.dispatch import Dispatcher
from rayml.executor.work import Pending, Route

A: Route = ("pipes:a", "model-a", "1")
B: Route = ("pipes:b", "model-b", "1")


class FakePool:
    """Room for ``room`` calls; records each call's params."""

    def __init__(self, room: int = 0) -> None:
        self.room = room
        self.calls: list[tuple[str, list[Any]]] = []

    def try_submit(
        self,
        model_key: str,
        import_path: str,
        version: str,
        params: list[Any],
        deadlines: list[float | None] | None = None,
        **_: Any,
    ):
        if self.room <= 0:
            return None
        self.room -= 1
        self.calls.append((import_path, params))
        return "w0", object()


def _items(first: int, n: int, pipeline_limit: int | None = None) -> list[Pending]:
    spec = SimpleNamespace(max_batch_size=pipeline_limit)
    return [
        Pending(("in", 0), o, b"", SimpleNamespace(params=o), spec, 0.0)  # type: ignore[arg-type]
        for o in range(first, first + n)
    ]


def _dispatcher(pool: FakePool, max_batch_size: int = 100) -> Dispatcher:
    return Dispatcher(
        pool,  # type: ignore[arg-type]
        max_attempts=3,
        max_batch_size=max_batch_size,
        on_finished=lambda *_: None,
        on_exhausted=lambda *_: None,
        owner="test",
    )


def test_an_idle_pool_gets_each_batch_at_once() -> None:
    pool = FakePool(room=2)
    d = _dispatcher(pool)
    d.enqueue(A, _items(0, 3))
    d.enqueue(A, _items(3, 2))
    assert pool.calls == [("pipes:a", [0, 1, 2]), ("pipes:a", [3, 4])]


def test_batches_waiting_for_a_worker_merge_into_one_call() -> None:
    pool = FakePool(room=0)
    d = _dispatcher(pool)
    for first in range(0, 30, 3):
        d.enqueue(A, _items(first, 3))
    assert len(d.ready) == 10
    pool.room = 1
    d.pump()
    assert pool.calls == [("pipes:a", list(range(30)))]
    assert not d.ready
    assert d.batches == 1


def test_merging_stops_at_the_batch_size_limit() -> None:
    pool = FakePool(room=0)
    d = _dispatcher(pool, max_batch_size=10)
    for first in range(0, 24, 4):
        d.enqueue(A, _items(first, 4))
    pool.room = 10
    d.pump()
    assert [params for _, params in pool.calls] == [
        list(range(0, 8)),
        list(range(8, 16)),
        list(range(16, 24)),
    ]


def test_a_pipelines_own_limit_wins() -> None:
    pool = FakePool(room=0)
    d = _dispatcher(pool, max_batch_size=100)
    for first in range(0, 9, 3):
        d.enqueue(A, _items(first, 3, pipeline_limit=5))
    pool.room = 10
    d.pump()
    assert all(len(params) <= 5 for _, params in pool.calls)
    assert sorted(x for _, params in pool.calls for x in params) == list(range(9))


def test_routes_never_mix_and_the_other_route_keeps_its_place() -> None:
    pool = FakePool(room=0)
    d = _dispatcher(pool)
    d.enqueue(A, _items(0, 2))
    d.enqueue(B, _items(100, 2))
    d.enqueue(A, _items(2, 2))
    d.enqueue(B, _items(102, 2))
    pool.room = 10
    d.pump()
    assert pool.calls == [("pipes:a", [0, 1, 2, 3]), ("pipes:b", [100, 101, 102, 103])]


def test_a_retried_batch_is_not_merged_again() -> None:
    pool = FakePool(room=0)
    d = _dispatcher(pool)
    retried = _items(0, 2)
    for item in retried:
        item.attempts = 1
    d.ready.append(A, retried, ("interactive", ""))
    d.enqueue(A, _items(2, 2))
    d.enqueue(A, _items(4, 2))
    pool.room = 10
    d.pump()
    assert pool.calls == [("pipes:a", [0, 1]), ("pipes:a", [2, 3, 4, 5])]


def test_drop_forgets_the_queued_requests_of_released_partitions() -> None:
    pool = FakePool(room=0)
    d = _dispatcher(pool)
    mixed = _items(0, 4)
    mixed[1].tp = mixed[3].tp = ("in", 1)
    d.enqueue(A, mixed)
    d.enqueue(B, [_items(10, 1)[0]])
    gone = _items(20, 2)
    for item in gone:
        item.tp = ("in", 1)
    d.enqueue(A, gone)
    assert d.drop({("in", 1)}) == 4
    assert [[p.offset for p in items] for _, items in d.ready] == [[0, 2], [10]]
    pool.room = 10
    d.pump()
    assert sorted(x for _, params in pool.calls for x in params) == [0, 2, 10]


def test_requests_past_their_deadline_are_answered_without_running() -> None:
    import time

    pool = FakePool(room=1)
    expired: list[int] = []
    d = Dispatcher(
        pool,  # type: ignore[arg-type]
        max_attempts=3,
        max_batch_size=100,
        on_finished=lambda *_: None,
        on_exhausted=lambda *_: None,
        owner="test",
        on_expired=lambda items: expired.extend(p.offset for p in items),
    )
    items = _items(0, 4)
    now_ms = time.time() * 1000.0
    items[1].deadline_ms = now_ms - 1_000  # passed while it waited
    items[2].deadline_ms = now_ms + 60_000
    d.enqueue(A, items)
    assert expired == [1]
    assert pool.calls == [("pipes:a", [0, 2, 3])]
    assert not d.ready


class ExclusivePool(FakePool):
    """Records whether each call asked for a worker of its own."""

    def __init__(self, room: int = 0) -> None:
        super().__init__(room)
        self.exclusive: list[bool] = []

    def try_submit(self, *args: Any, exclusive: bool = False, **kw: Any):  # type: ignore[override]
        sent = super().try_submit(*args, **kw)
        if sent is not None:
            self.exclusive.append(exclusive)
        return sent


def _shadowing(pool: FakePool, max_queued: int = 100) -> Dispatcher:
    return Dispatcher(
        pool,  # type: ignore[arg-type]
        max_attempts=3,
        max_batch_size=100,
        on_finished=lambda *_: None,
        on_exhausted=lambda *_: None,
        owner="test",
        on_shadow=lambda *_: None,
        shadow_max_queued=max_queued,
    )


def test_a_shadow_batch_waits_for_callers_and_goes_only_to_an_idle_worker() -> None:
    """A shadow never takes a slot a caller's batch could use: it is sent only while no
    caller's batch waits, and only to a worker with nothing in flight (exclusive)."""
    pool = ExclusivePool(room=0)
    d = _shadowing(pool)
    d.enqueue(A, _items(0, 3))  # no room: the caller's batch waits
    d.enqueue_shadow(("pipes:a", "model-a", "2"), _items(0, 3))
    pool.room = 1
    d.pump()
    assert pool.calls == [("pipes:a", [0, 1, 2])]  # the caller's first
    assert pool.exclusive == [False]
    pool.room = 1
    d.pump()
    assert pool.exclusive == [False, True]  # then the shadow, on a worker of its own
    assert d.shadow_sent == 3
    assert d.batches == 1  # a shadow batch is not a caller's batch


def test_a_shadows_copy_past_its_queue_bound_is_skipped_and_counted() -> None:
    d = _shadowing(FakePool(room=0), max_queued=5)
    d.enqueue_shadow(("pipes:a", "model-a", "2"), _items(0, 4))
    d.enqueue_shadow(("pipes:a", "model-a", "2"), _items(4, 4))
    assert (d.shadow_queued, d.shadow_skipped) == (5, 3)


def test_batches_queued_together_go_by_the_ready_queues_order_not_by_arrival() -> None:
    # The bulk lane has had a batch sent (its share is charged). Then, with one free slot, a
    # bulk batch formed before an interactive one: queued without sending (pump=False) and
    # sent once, the interactive one takes the slot (rayml.executor.ready); sent as each was
    # queued, the bulk batch would have taken it.
    pool = FakePool(room=1)
    d = _dispatcher(pool)

    def bulk(first: int) -> list[Pending]:
        items = _items(first, 2)
        for item in items:
            item.lane = "batch"
        return items

    d.enqueue(A, bulk(0))
    assert pool.calls == [("pipes:a", [0, 1])]
    pool.room = 1
    d.enqueue(A, bulk(2), pump=False)
    d.enqueue(B, _items(4, 2), pump=False)
    assert pool.calls == [("pipes:a", [0, 1])]
    d.pump()
    assert pool.calls[-1] == ("pipes:b", [4, 5])
