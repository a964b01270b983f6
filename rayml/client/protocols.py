"""What the client's helpers need from a client, as structural types (no I/O, no behaviour).

:mod:`rayml.client.batch` and :mod:`rayml.client.training` do their work *for* a
:class:`~rayml.client.client.Client`, which imports them; typing them against these small
protocols instead of the ``Client`` class keeps the dependency one-way (the client knows its
helpers, the helpers know only what they call) and says exactly which part of the client each one
relies on. ``Client`` satisfies both structurally; it does not subclass them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from rayml.client.futures import RequestFuture
from rayml.client.pipelines import PipelineInfo
from rayml.config import Settings
from rayml.tenancy.rules import Lane

__all__ = ["BatchSender", "JobSender"]


class BatchSender(Protocol):
    """What :func:`rayml.client.batch.submit_batch` uses: check params, send them checked."""

    @property
    def validate(self) -> bool:
        """Whether params are checked against the pipeline's schema before sending."""
        ...

    def check_params(self, pipeline: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Params checked against ``pipeline``'s schema, as the wire will carry them."""
        ...

    def send_checked(
        self,
        pipeline: str,
        wire: dict[str, Any],
        request_id: str | None,
        model_version: str | None,
        deadline: datetime | None,
        tenant: str | None,
        *,
        priority: Lane = "interactive",
    ) -> RequestFuture:
        """Send params already made wire-ready, on ``priority``'s lane; return the request's
        future."""
        ...


class JobSender(Protocol):
    """What :mod:`rayml.client.training` uses: settings, the training topic, pipeline lookup,
    one request."""

    @property
    def settings(self) -> Settings:
        """The client's settings (the events topic and Kafka connection come from them)."""
        ...

    @property
    def validate(self) -> bool:
        """Whether the pipeline is looked up (and its kind checked) before sending."""
        ...

    def pipeline(self, name: str) -> PipelineInfo:
        """One pipeline's published description."""
        ...

    @property
    def training_topic(self) -> str:
        """Where training requests go."""
        ...

    def request(
        self,
        pipeline: str,
        params: Mapping[str, Any] | None = None,
        *,
        request_id: str | None = None,
        topic: str | None = None,
    ) -> RequestFuture:
        """Send one request under ``request_id`` to ``topic``; return its future."""
        ...
