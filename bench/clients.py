"""The load generator and the result reader, each in a process of its own.

``python -m bench``'s own process is also the Ray driver of the rayml contenders (the executor
lives there); producing and reading results in its threads would charge their CPU, and their
share of the GIL, to the contender's driver and blur latency. So each contender gets two
``spawn``-ed processes, started before it and closed after it, that serve commands over a pipe:

* the **load generator** is handed a run (its payloads cross the pipe before any clock starts)
  and then produces it with :func:`~bench.workload.produce_burst` or
  :func:`~bench.workload.produce_at_rate`; it sends back the send time of each request and how
  long producing took;
* the **result reader** holds a :class:`~bench.workload.ResultCounter` on the output topic,
  assigned its partitions before :meth:`Clients.start` returns; it is told about each run, and
  waits for it (every id answered, or nothing new for ``idle_s``) while the generator
  produces; it sends back the receive time of each request, the contender's own
  ``timings.total_ms``, and the duplicates, wrong labels and error results it counted.

Send and receive times are both :func:`bench.workload.clock` (``CLOCK_MONOTONIC``, one clock for
every process of the machine), so latency = receive time - send time across the two processes.
The driver fills its own :class:`~bench.workload.Run` with what comes back, so the report reads
runs as before. Both processes are daemonic (ended when the driver exits), exit on their own
when the driver's pid goes away (even if it was killed), and ignore Ctrl-C (the driver closes
them).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench.workload import (
    ResultCounter,
    Run,
    burst_producer,
    produce_at_rate,
    produce_burst,
    rate_producer,
)

LOAD_GENERATOR = "load generator"
RESULT_READER = "result reader"
START_TIMEOUT_S = 120.0  # a process's imports, and the reader's partition assignment


# ---- in the child processes ----------------------------------------------------------------


class _Producing:
    """The load generator's commands (each gets ``notify``, unused here).

    Its two producers live as long as the process: a producer made per run would take its
    librdkafka threads, and the CPU they used, away with it before the burst's CPU is read.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._runs: dict[str, Run] = {}
        self._burst = burst_producer(bootstrap)
        self._rate = rate_producer(bootstrap)

    def load(self, notify: Callable[[], None], run: Run) -> None:
        self._runs[run.tag] = run

    def burst(self, notify: Callable[[], None], tag: str) -> tuple[Any, float]:
        run = self._runs.pop(tag)
        produce_burst(self._bootstrap, self._topic, run, self._burst)
        return run.sent_at, run.produce_s

    def at_rate(self, notify: Callable[[], None], tag: str, rate: float) -> tuple[Any, float]:
        run = self._runs.pop(tag)
        produce_at_rate(self._bootstrap, self._topic, run, rate, self._rate)
        return run.sent_at, run.produce_s

    def close(self) -> None:
        self._burst.flush(5)
        self._rate.flush(5)


class _Reading:
    """The result reader's commands: ``wait`` notifies once it polls, then replies at the end."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._counter = ResultCounter(bootstrap, topic)
        self._counter.wait_assigned(START_TIMEOUT_S)

    def track(self, notify: Callable[[], None], run: Run) -> None:
        self._counter.track(run)

    def wait(
        self, notify: Callable[[], None], tag: str, timeout_s: float, idle_s: float
    ) -> dict[str, Any]:
        run = self._counter.runs[tag]
        notify()
        self._counter.wait(run, timeout_s=timeout_s, idle_s=idle_s)
        return {
            "received_at": run.received_at,
            "server_ms": run.server_ms,
            "queued_ms": run.queued_ms,
            "duplicates": run.duplicates,
            "wrong": run.wrong,
            "errors": run.errors,
            "unknown": self._counter.unknown,
        }

    def close(self) -> None:
        self._counter.close()


def _exit_with(parent: int) -> None:
    """Exit this process as soon as the driver (pid ``parent``) is gone, even if killed -9."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _serve(
    conn: multiprocessing.connection.Connection,
    parent: int,
    kind: str,
    bootstrap: str,
    topic: str,
) -> None:
    """A child's loop: ``(method, args)`` in, ``("ok", value)`` or ``("error", text)`` out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with(parent)
    try:
        handler: _Producing | _Reading = (
            _Producing(bootstrap, topic) if kind == LOAD_GENERATOR else _Reading(bootstrap, topic)
        )
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ok", None))  # ready (the reader: its partitions are assigned)
    try:
        while True:
            try:
                method, args = conn.recv()
            except EOFError:  # the driver is gone
                return
            if method == "close":
                return
            try:
                value = getattr(handler, method)(lambda: conn.send(("ok", None)), *args)
            except Exception:
                conn.send(("error", traceback.format_exc()))
            else:
                conn.send(("ok", value))
    finally:
        handler.close()


# ---- in the driver -------------------------------------------------------------------------


class _Child:
    """One spawned client process and the driver's end of its pipe."""

    def __init__(self, kind: str, bootstrap: str, topic: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.kind = kind
        self._conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(
            target=_serve,
            args=(theirs, os.getpid(), kind, bootstrap, topic),
            name=f"bench {kind}",
            daemon=True,
        )
        self.proc.start()
        theirs.close()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def send(self, method: str, *args: Any) -> None:
        self._conn.send((method, args))

    def reply(self, timeout_s: float) -> Any:
        """The next reply's value; raises if the process failed, died or did not answer."""
        deadline = time.monotonic() + timeout_s
        while not self._conn.poll(0.2):
            if not self.proc.is_alive() and not self._conn.poll(0):
                raise RuntimeError(f"the {self.kind} process exited ({self.proc.exitcode})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {self.kind} process did not answer in {timeout_s:g} s")
        try:
            status, value = self._conn.recv()
        except EOFError:
            self.proc.join(1)
            raise RuntimeError(f"the {self.kind} process exited ({self.proc.exitcode})") from None
        if status != "ok":
            raise RuntimeError(f"the {self.kind} process failed:\n{value}")
        return value

    def close(self) -> None:
        """Ask it to stop; if it is busy (say, still waiting for results), end it by its pid."""
        if self.proc.is_alive():
            with contextlib.suppress(OSError):
                self.send("close")
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self._conn.close()


class Clients:
    """A load generator on ``input_topic`` and a result reader on ``output_topic``."""

    def __init__(self, bootstrap: str, input_topic: str, output_topic: str) -> None:
        self._children: list[_Child] = []
        try:
            self.reader = self._start(RESULT_READER, bootstrap, output_topic)
            self.loadgen = self._start(LOAD_GENERATOR, bootstrap, input_topic)
        except BaseException:
            self.close()
            raise

    def _start(self, kind: str, bootstrap: str, topic: str) -> _Child:
        child = _Child(kind, bootstrap, topic)
        self._children.append(child)
        return child

    def start(self) -> None:
        """Wait until both run (and the reader's consumer is assigned its partitions)."""
        for child in self._children:
            child.reply(START_TIMEOUT_S)

    def groups(self) -> dict[str, list[int]]:
        """Their pids, as process groups for CPU and memory."""
        return {child.kind: [child.pid] for child in self._children}

    def helper_pids(self) -> set[int]:
        """Their pids and multiprocessing's resource tracker (a child of the driver too)."""
        pids = {child.pid for child in self._children}
        tracker = getattr(multiprocessing, "resource_tracker", None)
        tracker_pid = getattr(getattr(tracker, "_resource_tracker", None), "_pid", None)
        if isinstance(tracker_pid, int):
            pids.add(tracker_pid)
        return pids

    def prepare(self, run: Run) -> None:
        """Hand ``run`` to both processes (the payloads to the generator only), before any
        clock starts."""
        self.loadgen.send("load", run)
        self.reader.send("track", replace(run, payloads=[]))
        self.loadgen.reply(START_TIMEOUT_S)
        self.reader.reply(START_TIMEOUT_S)

    def run(self, run: Run, timeout_s: float, idle_s: float, rate: float | None = None) -> None:
        """Produce a prepared ``run`` -- as fast as possible, or at ``rate`` requests/s -- while
        the reader waits for its results (as :meth:`ResultCounter.wait`); fill ``run`` in."""
        self.reader.send("wait", run.tag, timeout_s, idle_s)
        self.reader.reply(START_TIMEOUT_S)  # it polls: now produce
        if rate is None:
            self.loadgen.send("burst", run.tag)
        else:
            self.loadgen.send("at_rate", run.tag, rate)
        sent_at, run.produce_s = self.loadgen.reply(timeout_s + 120)
        got = self.reader.reply(timeout_s + 120)
        run.sent_at[:] = sent_at
        run.received_at[:] = got["received_at"]
        run.server_ms[:] = got["server_ms"]
        run.queued_ms[:] = got["queued_ms"]
        run.duplicates = got["duplicates"]
        run.wrong = got["wrong"]
        run.errors = got["errors"]

    def close(self) -> None:
        for child in self._children:
            child.close()
