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
    attempts: int = 0  # dispatches so far
    failures: int = 0  # failures charged to this request alone (rayml.executor.isolation)
    # Sent only to a worker with nothing else in flight, so that its next failure is its own.
    isolate: bool = False
    # The request's deadline (wall clock ms), checked again at dispatch and by the worker.
    deadline_ms: float | None = None
    # Its model under rollout (docs/rollouts.md): which side answers it ("serving" or
    # "canary"), and the shadow version that also runs on it, if any.
    role: str | None = None
    shadow: str | None = None
    # Its tenant (the name of the tenant whose request topic it came from) and its lane
    # ("interactive" or "batch": which of the tenant's request topics), for the dispatcher's
    # order: interactive first with a bounded share for bulk, and a weighted share per tenant.
    tenant: str = ""
    lane: str = "interactive"


@dataclass(slots=True)
class InFlight:
    """A micro-batch sent to a worker and not back yet."""

    route: Route
    items: list[Pending]
    worker_id: str
    dispatched_ms: float
    seq: int = 0  # dispatch order (a worker runs its batches in this order)
    # When it began to run: at dispatch on an idle worker, else when the batch before it on
    # its worker came back (monotonic seconds; None while queued at the worker).
    started: float | None = None
    # Sent to a worker with nothing else in flight (its items were isolated).
    exclusive: bool = False
    # Queued behind the batch that hung its worker: resent whole and uncharged.
    bystander: bool = False
    # On a worker that died with other batches in flight, so which one killed it is unknown:
    # resent whole, uncharged, isolated (its next failure, if any, is its own).
    ambiguous: bool = False
    # Why its worker was ended by the dispatcher (a batch past its time bound), if it was.
    failure: BaseException | None = None
    # A shadow's copy of answered requests: its outputs reach no caller, it is never retried
    # and never charged to its requests.
    shadow: bool = False


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
