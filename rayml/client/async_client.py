"""The client for asyncio code: the same requests and replies, awaited instead of blocked on.

:class:`AsyncClient` wraps a :class:`~rayml.client.client.Client`. Sending is non-blocking already
(the producer only queues), so it happens on the event loop; results are awaited through
``asyncio.wrap_future`` on the client's futures, completed by its reply thread. Everything that
does blocking I/O (connecting, creating the reply topic, reading the registry, closing) runs in
a worker thread, so the event loop never stalls.

Example:
    >>> import asyncio
    >>> async def main() -> None:                                      # doctest: +SKIP
    ...     async with AsyncClient("127.0.0.1:9092") as client:
    ...         result = await client.submit("iris.predict", features=[5.1, 3.5, 1.4, 0.2])
    ...         print(result.result)
    >>> asyncio.run(main())                                            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from rayml.client.client import Client
from rayml.client.errors import ClientClosedError, ResultTimeoutError
from rayml.client.futures import RequestFuture
from rayml.client.pipelines import PipelineInfo
from rayml.config import Settings
from rayml.protocol.envelopes import Result
from rayml.protocol.training import ModelAnnouncement
from rayml.tenancy.rules import Lane

__all__ = ["AsyncClient"]


class AsyncClient:
    """asyncio client for rayml; use ``async with`` (or ``await client.start()``/``aclose()``).

    Takes the same arguments as :class:`~rayml.client.client.Client`. Connecting happens in
    :meth:`start` (called by ``async with``), not in the constructor, so that a constructor
    never blocks the event loop.

    Raises:
        BrokerUnreachableError: From :meth:`start`, when no bootstrap server answers.
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        settings: Settings | None = None,
        reply_topic: str | None = None,
        tenant: str | None = None,
        validate: bool = True,
        connect_timeout_s: float = 10.0,
        client_id: str | None = None,
        batch_topic: str | None = None,
    ) -> None:
        self._options: dict[str, Any] = {
            "batch_topic": batch_topic,
            "settings": settings,
            "reply_topic": reply_topic,
            "tenant": tenant,
            "validate": validate,
            "connect_timeout_s": connect_timeout_s,
            "client_id": client_id,
        }
        self._bootstrap_servers = bootstrap_servers
        self._client: Client | None = None
        self._closed = False

    async def start(self) -> AsyncClient:
        """Connect (and check the broker answers); idempotent."""
        if self._closed:
            raise ClientClosedError()
        if self._client is None:
            self._client = await asyncio.to_thread(Client, self._bootstrap_servers, **self._options)
        return self

    @property
    def client(self) -> Client:
        """The underlying synchronous client (after :meth:`start`)."""
        if self._client is None:
            raise (
                ClientClosedError()
                if self._closed
                else RuntimeError(
                    "AsyncClient is not started: use `async with AsyncClient(...)` or "
                    "`await client.start()`"
                )
            )
        return self._client

    async def submit(
        self,
        pipeline: str,
        /,
        *,
        timeout_s: float | None = None,
        priority: Lane = "interactive",
        **params: Any,
    ) -> Result:
        """Send one request and await its result (``priority="batch"``: on the bulk lane, as
        :meth:`Client.submit`).

        Raises:
            ResultTimeoutError: No result within ``timeout_s``.
            InvalidParamsError, UnknownPipelineError: As :meth:`Client.submit`.
        """
        future = await self.request(pipeline, params, priority=priority)
        return await self.wait(future, timeout_s)

    async def request(
        self, pipeline: str, params: Mapping[str, Any] | None = None, **options: Any
    ) -> RequestFuture:
        """Send one request (options as :meth:`Client.request`); return its future at once."""
        client = self.client
        if not client._sends_without_io(pipeline):
            # First send (reply topic to create) or a pipeline not looked up yet: in a thread.
            return await asyncio.to_thread(client.request, pipeline, params, **options)
        return client.request(pipeline, params, **options)

    async def wait(self, future: RequestFuture, timeout_s: float | None = None) -> Result:
        """Await a request's result.

        Raises:
            ResultTimeoutError: No result within ``timeout_s`` (the request stays in flight).
        """
        try:
            # shield: a timeout here must not cancel the client's future, which is its own.
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout_s)
        except TimeoutError as exc:
            raise ResultTimeoutError(future.request_id, future.pipeline, timeout_s or 0.0) from exc

    async def submit_many(
        self,
        pipeline: str,
        params: Iterable[Mapping[str, Any]],
        *,
        max_in_flight: int = 1000,
        progress: bool = True,
        timeout_s: float | None = None,
        priority: Lane = "interactive",
    ) -> list[Result]:
        """:meth:`Client.submit_many`, run in a thread; results in input order."""
        return await asyncio.to_thread(
            self.client.submit_many,
            pipeline,
            list(params),
            max_in_flight=max_in_flight,
            progress=progress,
            timeout_s=timeout_s,
            priority=priority,
        )

    async def pipelines(self) -> list[PipelineInfo]:
        """:meth:`Client.pipelines`, run in a thread."""
        return await asyncio.to_thread(self.client.pipelines)

    async def models(self) -> list[ModelAnnouncement]:
        """:meth:`Client.models`, run in a thread."""
        return await asyncio.to_thread(self.client.models)

    async def train(
        self,
        pipeline: str,
        /,
        *,
        progress: bool = True,
        timeout_s: float | None = None,
        **params: Any,
    ) -> Result:
        """:meth:`Client.train` with ``wait=True``, run in a thread."""

        def run() -> Result:
            return self.client.train(
                pipeline, wait=True, progress=progress, timeout_s=timeout_s, **params
            )

        return await asyncio.to_thread(run)

    async def aclose(self) -> None:
        """Close the underlying client (in a thread); idempotent."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    async def __aenter__(self) -> AsyncClient:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
