"""Many requests at once: bounded in flight, results in input order, a progress bar.

:func:`submit_batch` is what :meth:`rayml.Client.submit_many` runs. At most ``max_in_flight``
requests are sent and unanswered at any time: a slot is taken before each send and given back
when its result arrives (on the client's reply thread), so a million-row input never means a
million requests queued in the producer or a million futures in memory at once beyond the
results themselves.

In a notebook with ``ipywidgets`` the bar is a widget; elsewhere (a terminal, a notebook without
widgets, CI) it is tqdm's text bar on stderr. ``tqdm.auto`` alone would pick the widget in any
notebook and fail where ``ipywidgets`` is missing.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from rayml.client.errors import ResultTimeoutError
from rayml.client.futures import RequestFuture
from rayml.client.pipelines import to_wire
from rayml.client.protocols import BatchSender
from rayml.protocol.envelopes import Result
from rayml.tenancy.rules import Lane

__all__ = ["BatchProgress", "progress_bar", "submit_batch"]


def progress_bar(**kwargs: Any) -> Any:
    """A tqdm bar: the notebook widget where it can render, else the text bar."""
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(**kwargs)


class BatchProgress:
    """Counts finished requests of a batch (from any thread) and shows them on one bar.

    Completions arrive on the client's reply thread; the bar is drawn only from the caller's
    thread (:meth:`refresh`), because widget bars must not be touched from other threads.

    Example:
        >>> with BatchProgress("demo.p", total=1, enabled=False) as bar:
        ...     future = Future()
        ...     future.set_result(Result.ok("r1", "demo.p", 1))
        ...     bar.count(future)
        >>> bar.ok, bar.errors, bar.failed
        (1, 0, 0)
    """

    def __init__(self, pipeline: str, total: int | None, *, enabled: bool = True) -> None:
        self.total = total
        self.ok = 0
        self.errors = 0  # error results (the executor answered "error")
        self.failed = 0  # no result (delivery failed, client closed)
        self._lock = threading.Lock()
        self._shown = 0
        self._bar = (
            progress_bar(total=total, desc=pipeline, unit="req", dynamic_ncols=True)
            if enabled
            else None
        )

    def count(self, future: Future[Result]) -> None:
        """Record one finished request (thread-safe)."""
        with self._lock:
            if future.cancelled() or future.exception() is not None:
                self.failed += 1
            elif future.result().status == "ok":
                self.ok += 1
            else:
                self.errors += 1

    def refresh(self) -> None:
        """Bring the bar up to date (call from the thread that created it)."""
        if self._bar is None:
            return
        with self._lock:
            done = self.ok + self.errors + self.failed
            postfix = {"ok": self.ok, "errors": self.errors}
            if self.failed:
                postfix["failed"] = self.failed
        if done != self._shown:
            self._bar.update(done - self._shown)
            self._shown = done
            self._bar.set_postfix(postfix, refresh=False)

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.refresh()
        if self._bar is not None:
            self._bar.close()


def submit_batch(
    client: BatchSender,
    pipeline: str,
    params: Iterable[Mapping[str, Any]],
    *,
    max_in_flight: int,
    progress: bool,
    timeout_s: float | None,
    model_version: str | None,
    priority: Lane = "interactive",
) -> list[Result]:
    """Send one request per params mapping; see :meth:`rayml.Client.submit_many`."""
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    items: Iterable[dict[str, Any]]
    if isinstance(params, Sequence) and client.validate:
        # Checked as a whole first: one bad row sends nothing.
        items = [client.check_params(pipeline, p) for p in params]
    elif client.validate:
        items = (client.check_params(pipeline, p) for p in params)
    else:
        items = (to_wire(pipeline, p) for p in params)
    total = len(params) if isinstance(params, Sequence) else None
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    slots = threading.BoundedSemaphore(max_in_flight)
    futures: list[RequestFuture] = []

    def check_deadline() -> None:
        if deadline is not None and time.monotonic() > deadline:
            missing = sum(not f.done() for f in futures)
            raise ResultTimeoutError(None, pipeline, timeout_s or 0.0, missing=missing)

    with BatchProgress(pipeline, total, enabled=progress) as bar:

        def finished(future: Future[Result]) -> None:
            slots.release()
            bar.count(future)

        for wire in items:
            while not slots.acquire(timeout=0.1):
                bar.refresh()
                check_deadline()
            future = client.send_checked(
                pipeline, wire, None, model_version, None, None, priority=priority
            )
            future.add_done_callback(finished)
            futures.append(future)
            if len(futures) % 256 == 0:
                bar.refresh()
        remaining: set[Future[Result]] = set(futures)
        while remaining:
            _done, remaining = concurrent.futures.wait(remaining, timeout=0.1)
            bar.refresh()
            check_deadline()
    return [f.result(0) for f in futures]
