"""Futures of requests in flight, and the table that completes them by request id (no I/O).

The client's reply thread reads results off its reply topic and hands each to
:meth:`PendingReplies.complete`; whoever sent the request holds its :class:`RequestFuture`.
Kept free of Kafka so the correlation rules are unit-tested in milliseconds:

* a result completes the future of its id exactly once; a second result under the same id (an
  at-least-once redelivery) is counted as a duplicate and dropped;
* a result whose id this client is not waiting for (another instance's, on a shared reply
  topic, or one that arrived after its caller gave up) is counted and dropped;
* closing fails every future still waiting with :class:`~rayml.client.errors.ClientClosedError`.

Example:
    >>> from rayml.protocol.envelopes import Result
    >>> table = PendingReplies()
    >>> future = table.add("r1", "demo.p")
    >>> table.complete(Result.ok("r1", "demo.p", 42)), table.complete(Result.ok("r1", "demo.p", 42))
    (True, False)
    >>> future.result(timeout=0).result, table.duplicates
    (42, 1)
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any

from rayml.client.errors import ClientClosedError, ResultTimeoutError
from rayml.protocol.envelopes import Result

__all__ = ["PendingReplies", "RequestFuture"]


class RequestFuture(concurrent.futures.Future[Result]):
    """The future result of one request: a :class:`concurrent.futures.Future` of a
    :class:`~rayml.protocol.envelopes.Result`, plus the request's id and pipeline.

    An error *result* (``status == "error"``: bad params, the pipeline raised) is a normal
    outcome and is returned, not raised; what raises is the absence of a result:
    :class:`~rayml.client.errors.ResultTimeoutError` (also a ``TimeoutError``) when ``timeout``
    passes, :class:`~rayml.client.errors.ClientClosedError` when the client closed first, and
    :class:`~rayml.client.errors.DeliveryFailedError` when the broker refused the request.

    It works with ``concurrent.futures.wait``/``as_completed`` and ``asyncio.wrap_future``.

    Example:
        >>> future = RequestFuture("r1", "demo.p")
        >>> try:
        ...     future.result(timeout=0.01)
        ... except TimeoutError as exc:
        ...     print(type(exc).__name__, exc.request_id)
        ResultTimeoutError r1
    """

    def __init__(self, request_id: str, pipeline: str) -> None:
        super().__init__()
        self.request_id = request_id
        self.pipeline = pipeline
        self.sent_at = time.monotonic()
        #: Seconds from send to result, measured by the client (``None`` until done).
        self.latency_s: float | None = None
        #: The W3C trace id (32 hex digits) the request was sent in (its ``traceparent``
        #: header); look it up in your tracing backend when rayml exports spans.
        self.trace_id: str | None = None

    def result(self, timeout: float | None = None) -> Result:
        """Wait for the result; ``timeout`` in seconds (``None``: wait as long as it takes).

        Raises:
            ResultTimeoutError: No result within ``timeout``. The request may still be
                answered; calling ``result`` again keeps waiting.
            ClientClosedError: The client was closed before the result came.
            DeliveryFailedError: The request never reached the broker.
        """
        try:
            return super().result(timeout)
        except concurrent.futures.TimeoutError as exc:
            if self.done():  # raced with completion
                return super().result(0)
            raise ResultTimeoutError(self.request_id, self.pipeline, timeout or 0.0) from exc

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<RequestFuture {self.request_id!r} pipeline={self.pipeline!r} {state}>"


class PendingReplies:
    """Request id -> future of every request still waiting for its result. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, RequestFuture] = {}
        self._closed = False
        #: Results under an id that was already answered (at-least-once redelivery).
        self.duplicates = 0
        #: Results under an id this table never had (another client's, or given up on).
        self.foreign = 0
        self.completed = 0
        self._answered: dict[str, None] = {}  # recent ids, to tell duplicates from foreign

    def add(self, request_id: str, pipeline: str) -> RequestFuture:
        """Register a request before it is sent (so that no reply can beat its registration).

        Raises:
            ClientClosedError: The table was closed.
            ValueError: ``request_id`` is already waiting (ids must be unique).
        """
        future = RequestFuture(request_id, pipeline)
        with self._lock:
            if self._closed:
                raise ClientClosedError()
            if request_id in self._pending:
                raise ValueError(f"request id {request_id!r} is already in flight")
            self._pending[request_id] = future
        return future

    def complete(self, result: Result) -> bool:
        """Complete the future of ``result.id``; return False if nobody here waits for it."""
        with self._lock:
            future = self._pending.pop(result.id, None)
            if future is None:
                if result.id in self._answered:
                    self.duplicates += 1
                else:
                    self.foreign += 1
                return False
            self.completed += 1
            self._remember(result.id)
        future.latency_s = time.monotonic() - future.sent_at
        # Outside the lock: done-callbacks run here and may submit more requests.
        if future.set_running_or_notify_cancel():
            future.set_result(result)
        return True

    def fail(self, request_id: str, exc: BaseException) -> bool:
        """Fail one waiting request (e.g. its delivery failed); False if it was not waiting."""
        with self._lock:
            future = self._pending.pop(request_id, None)
        if future is None:
            return False
        if future.set_running_or_notify_cancel():
            future.set_exception(exc)
        return True

    def discard(self, request_id: str) -> None:
        """Stop waiting for a request (its send failed before it left the process)."""
        with self._lock:
            self._pending.pop(request_id, None)

    def close(self) -> int:
        """Fail every waiting request with ClientClosedError; later ``add`` calls raise.

        Returns:
            How many requests were still waiting.
        """
        with self._lock:
            self._closed = True
            waiting = list(self._pending.values())
            self._pending.clear()
        for future in waiting:
            if future.set_running_or_notify_cancel():
                future.set_exception(ClientClosedError(future.request_id))
        return len(waiting)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def stats(self) -> dict[str, Any]:
        """Counters for logs and tests."""
        with self._lock:
            return {
                "in_flight": len(self._pending),
                "completed": self.completed,
                "duplicates": self.duplicates,
                "foreign": self.foreign,
            }

    _REMEMBER = 100_000

    def _remember(self, request_id: str) -> None:
        # Bounded memory of answered ids (insertion-ordered dict as a FIFO).
        self._answered[request_id] = None
        if len(self._answered) > self._REMEMBER:
            del self._answered[next(iter(self._answered))]
