"""The dispatcher's ready queue: one FIFO per (lane, tenant), served in weighted fair order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rayml.executor.ready import BULK, INTERACTIVE, ReadyQueues

INT = (INTERACTIVE, "t")
BLK = (BULK, "t")


def _serve(q: ReadyQueues[str], rounds: int, size: int) -> list[tuple[str, str]]:
    """Send ``rounds`` batches of ``size`` the way the dispatcher does; the classes sent."""
    sent = []
    for _ in range(rounds):
        if not q:
            break
        cls = q.next_class()
        q.queue(cls).popleft()
        q.taken(cls, 1)
        q.charge(cls, size)
        sent.append(cls)
    return sent


def test_one_class_is_a_fifo() -> None:
    q: ReadyQueues[str] = ReadyQueues()
    for n in range(5):
        q.append("r", [n], INT)
    order = []
    while q:
        cls = q.next_class()
        order.append(q.queue(cls).popleft()[1][0])
        q.taken(cls, 1)
        q.charge(cls, 1)
    assert order == [0, 1, 2, 3, 4]
    assert len(q) == 0
    assert q.requests == 0


def test_an_interactive_batch_overtakes_a_bulk_backlog() -> None:
    q: ReadyQueues[str] = ReadyQueues(batch_share=0.25)
    for _ in range(100):
        q.append("r", [0] * 10, BLK)
    assert _serve(q, 3, 10) == [BLK, BLK, BLK]
    q.append("r", [1], INT)
    # The next batch sent is the interactive one, ahead of 97 bulk batches.
    assert _serve(q, 1, 1) == [INT]


def test_both_lanes_backlogged_share_by_weight() -> None:
    q: ReadyQueues[str] = ReadyQueues(batch_share=0.25)
    for _ in range(1000):
        q.append("r", [0] * 10, BLK)
        q.append("r", [0] * 10, INT)
    sent = _serve(q, 400, 10)
    assert sent.count(BLK) == 100  # exactly its share, neither lane starves
    assert sent.count(INT) == 300


def test_tenants_share_by_weight() -> None:
    q: ReadyQueues[str] = ReadyQueues(tenant_weights={"a": 1.0, "b": 3.0})
    for _ in range(1000):
        q.append("r", [0] * 10, (INTERACTIVE, "a"))
        q.append("r", [0] * 10, (INTERACTIVE, "b"))
    sent = _serve(q, 400, 10)
    assert sent.count((INTERACTIVE, "a")) == 100
    assert sent.count((INTERACTIVE, "b")) == 300


def test_an_idle_class_hoards_no_credit() -> None:
    q: ReadyQueues[str] = ReadyQueues(tenant_weights={"a": 1.0, "b": 1.0})
    a, b = (INTERACTIVE, "a"), (INTERACTIVE, "b")
    for _ in range(50):
        q.append("r", [0], a)
    assert _serve(q, 50, 1) == [a] * 50  # b had nothing: a alone uses everything
    for _ in range(20):
        q.append("r", [0], a)
        q.append("r", [0], b)
    # Now both wait: they alternate; b does not get 50 sends in a row for a's past.
    sent = _serve(q, 20, 1)
    assert abs(sent.count(a) - sent.count(b)) <= 1


def test_filter_items_and_counts() -> None:
    q: ReadyQueues[str] = ReadyQueues()
    q.append("r", [1, 2, 3], INT)
    q.append("r", [4], BLK)
    q.appendleft("r", [0], INT)
    assert len(q) == 3
    assert q.requests == 5
    assert q.requests_by_class() == {INT: 4, BLK: 1}
    assert q.filter_items(lambda n: n % 2 == 0) == 2
    assert [items for _, items in q] == [[0], [2], [4]]
    assert q.filter_items(lambda n: n != 4) == 1
    assert len(q) == 2
    assert q.requests_by_class() == {INT: 2}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([INT, BLK, (INTERACTIVE, "u")]), st.integers(1, 50)),
        min_size=1,
        max_size=60,
    )
)
def test_every_batch_comes_out_once_in_class_order(batches: list) -> None:
    q: ReadyQueues[int] = ReadyQueues(batch_share=0.3, tenant_weights={"u": 2.0})
    for n, (cls, size) in enumerate(batches):
        q.append(n, [cls] * size, cls)
    out: list[int] = []
    while q:
        cls = q.next_class()
        route, items = q.queue(cls).popleft()
        q.taken(cls, 1)
        q.charge(cls, len(items))
        out.append(route)
    assert sorted(out) == list(range(len(batches)))
    for cls in {c for c, _ in batches}:
        mine = [n for n in out if batches[n][0] == cls]
        assert mine == sorted(mine)  # FIFO within a class
