"""The units of work the executor passes between its steps, as plain data.

Triage makes :class:`Pending` requests, the batcher groups them by :data:`Route`, dispatch sends
them as an :class:`InFlight` batch, a worker answers with a :class:`BatchOutcome` (an output or an
:class:`ItemError` per request), and the answers step turns that into results. Kept apart from
the modules that do those steps, so that triage and answers stay pure (no ``ray``, no
``confluent_kafka``) and every step imports the types from one low module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rayml.kafka.partitions import TP
from rayml.pipeline.spec import PipelineSpec
from rayml.protocol.envelopes import Request

# (pipeline import path, model name, model version): one micro-batch never mixes these.
Route = tuple[str, str, str | None]


@dataclass(slots=True)
class Pending:
    """One accepted inference request, from poll until its result is acknowledged."""

    tp: TP
    offset: int
    raw: bytes
    request: Request
    spec: PipelineSpec
    received_ms: float  # the record's timestamp (producer create time), wall clock ms
    attempts: int = 0


@dataclass(slots=True)
class InFlight:
    """A micro-batch sent to a worker and not back yet."""

    route: Route
    items: list[Pending]
    worker_id: str
    dispatched_ms: float


@dataclass(frozen=True, slots=True)
class ItemError:
    """Why one request of a batch failed (becomes the result's ``error``)."""

    type: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """A worker's answer for one micro-batch: one entry per request, in order.

    Each entry is the pipeline's output for that request, or an :class:`ItemError`.
    """

    model_name: str
    model_version: str | None
    outputs: list[Any]
    compute_ms: float
    worker_id: str
