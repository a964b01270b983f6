"""The ingest's per-message cost on the delivery path, without Kafka or Ray:
``python -m bench.micro_hot_path``.

Times, best of ``--repeat`` rounds of ``--n`` messages each, the kinds taking turns, the
garbage collector off while timing as :mod:`timeit` has it (``--gc`` leaves it on) (µs per
message):

* ``answer_ok``: :meth:`~rayml.delivery.result_writer.ResultWriter.answer_ok` of an ``ok``
  result into a producer that only keeps the delivery callback, without and with a
  ``reply_to`` (its topic checked once per batch, as the ingest does);
* ``answer_ok+ack``: the same plus the delivery callback run as the broker's acknowledgement
  (the offset marked done);
* ``track+done``: :class:`~rayml.delivery.offsets.OffsetTracker` tracking an offset with its
  size, then marking it done, in order.

The results are printed, nothing more: compare two checkouts by running this file from each
(``PYTHONPATH=<other checkout> python bench/micro_hot_path.py`` runs that checkout's rayml).
"""

from __future__ import annotations

import argparse
import gc
import inspect
import time
from collections.abc import Callable
from typing import Any

from rayml.delivery.offsets import OffsetTracker
from rayml.delivery.reply_topics import ReplyTopics
from rayml.delivery.result_writer import ResultWriter
from rayml.delivery.sink import TopicTenant
from rayml.protocol.envelopes import Request


class _Producer:
    """Keeps each delivery callback; ``ack`` runs them as the broker's acknowledgements."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[Any, Any], None]] = []

    def produce(
        self, topic: str, *, value: bytes, key: bytes | None, headers: Any, on_delivery: Any
    ) -> None:
        self.callbacks.append(on_delivery)

    def poll(self, _timeout: float) -> int:
        return 0

    def ack(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback(None, None)


def answer_ok_round(n: int, reply_to: str | None, ack: bool) -> Callable[[], float]:
    """One round: µs per ``ok`` result (and its acknowledgement with ``ack``)."""
    producer = _Producer()
    done = [0]

    def on_done(_tp: Any, _offset: int) -> None:
        done[0] += 1

    writer = ResultWriter(
        producer,  # type: ignore[arg-type]
        tenants={"in": TopicTenant("team-a", "out")},
        dlq_topic="dlq",
        on_done=on_done,
        owner="bench",
        reply_topics=ReplyTopics(lambda names: dict.fromkeys(names)),
    )
    requests = [
        Request(id=f"r-{i}", pipeline="p.predict", params={"x": i}, reply_to=reply_to)
        for i in range(n)
    ]
    output = {"label": 1, "probability": 0.75}
    model = {"name": "m", "version": "000002"}
    timings = {"queued_ms": 1.5, "compute_ms": 0.25, "total_ms": 3.0}
    tp = ("in", 0)

    def run() -> float:
        producer.callbacks.clear()
        started = time.perf_counter()
        if reply_to:
            writer.check_reply_topics([reply_to])  # once per batch, as answer_batch does
        for offset, request in enumerate(requests):
            writer.answer_ok(tp, offset, request, output, model=model, timings=timings, attempts=1)
        if ack:
            producer.ack()
        return (time.perf_counter() - started) / n * 1e6

    return run


def track_done_round(n: int) -> Callable[[], float]:
    """One round: µs per record tracked with its size and marked done."""
    one_call = len(inspect.signature(OffsetTracker.track).parameters) >= 4
    tp = ("in", 0)

    def run() -> float:
        t = OffsetTracker()
        track, done = t.track, t.done
        started = time.perf_counter()
        if one_call:
            for offset in range(n):
                track(tp, offset, 1_000)
        else:  # before: tracked, then weighed
            weigh = t.weigh  # type: ignore[attr-defined]
            for offset in range(n):
                track(tp, offset)  # type: ignore[call-arg]
                weigh(tp, offset, 1_000)
        for offset in range(n):
            done(tp, offset)
        return (time.perf_counter() - started) / n * 1e6

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="messages per round")
    parser.add_argument("--repeat", type=int, default=25, help="rounds; the best is kept")
    parser.add_argument(
        "--gc",
        action="store_true",
        help="leave the garbage collector on while timing (then the objects a message "
        "allocates cost collections too, more so the more objects are alive)",
    )
    args = parser.parse_args()
    n, repeat = args.n, args.repeat
    rounds = {
        "answer_ok, no reply_to": answer_ok_round(n, None, ack=False),
        "answer_ok, reply_to": answer_ok_round(n, "replies", ack=False),
        "answer_ok+ack, no reply_to": answer_ok_round(n, None, ack=True),
        "answer_ok+ack, reply_to": answer_ok_round(n, "replies", ack=True),
        "track+done": track_done_round(n),
    }
    best = dict.fromkeys(rounds, float("inf"))
    for _ in range(repeat):  # the kinds take turns: none is favoured by when it runs
        for name, run in rounds.items():
            gc.collect()
            if not args.gc:
                gc.disable()  # as timeit does: the cost of the code, not of the heap around it
            try:
                best[name] = min(best[name], run())
            finally:
                gc.enable()
    for name, us in best.items():
        print(f"{name:<28} {us:6.2f} µs/message (best of {repeat} x {n})")


if __name__ == "__main__":
    main()
