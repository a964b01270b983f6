"""One polled record's first step: a dead letter, an error answer, a job hand-off or a batch.

The ingest loop tracks each polled offset, then hands the record here. Undecodable records go
to the dead-letter topic with their original bytes; invalid ones (and requests past their
deadline, or for an unknown pipeline) are answered with an error naming the problem; training
requests are handed off to the jobs topic; inference requests join a micro-batch keyed by
(pipeline, model, version). Every write goes through the :class:`~rayml.delivery.result_writer.
ResultWriter` (as a :class:`~rayml.delivery.sink.ResultSink`), whose delivery reports mark
the offset done. Pure: no ``ray``, no ``confluent_kafka``.
"""

from __future__ import annotations

from typing import Protocol

from rayml.delivery.screening import screen
from rayml.delivery.sink import ResultSink
from rayml.errors import DeadlineExceededError, RecordError
from rayml.executor.batching import Batch, MicroBatcher
from rayml.executor.work import Pending, Route
from rayml.kafka.partitions import TP
from rayml.kafka.records import PolledRecord, timestamp_ms
from rayml.models.versions import pinned_version
from rayml.pipeline import Registry
from rayml.protocol.envelopes import Rejected, Request, error_info_from


class NewestVersions(Protocol):
    """Where triage learns the newest version of a model (the ingest's
    :class:`~rayml.executor.version_follower.LatestVersions`)."""

    def get(self, model: str) -> str | None: ...


class Triage:
    """Decodes, checks and routes polled records (one call per record, no I/O of its own).

    Args:
        writer: Where dead letters, error answers and job hand-offs are written.
        registry: The pipelines this executor serves.
        versions: The newest version of each model (for requests that pin none).
        batcher: The ingest's micro-batcher; full batches are returned to the caller.
        max_request_bytes: Larger records are dead-lettered undecoded.
    """

    def __init__(
        self,
        writer: ResultSink,
        registry: Registry,
        versions: NewestVersions,
        batcher: MicroBatcher[Route, Pending],
        max_request_bytes: int,
    ) -> None:
        self.writer = writer
        self.registry = registry
        self.versions = versions
        self.batcher = batcher
        self.max_request_bytes = max_request_bytes

    def take(
        self, msg: PolledRecord, tp: TP, offset: int, now: float, wall_ms: float
    ) -> list[Batch[Route, Pending]]:
        """Handle one record; return the micro-batches it filled (usually none)."""
        raw = msg.value() or b""
        request = screen(msg, tp, offset, raw, self.max_request_bytes, self)
        if request is None:
            return []
        return self._route(msg, tp, offset, raw, request, now, wall_ms)

    # What screen() cannot turn into a request (a RejectSink).

    def dead_letter(self, msg: PolledRecord, error_type: str, message: str) -> None:
        self.writer.dead_letter(msg, error_type, message)

    def reject(self, msg: PolledRecord, tp: TP, offset: int, rejected: Rejected) -> None:
        self.writer.answer(
            tp,
            offset,
            rejected.request_id,
            rejected.pipeline or "",
            None,
            error=rejected.error,
            received_ms=timestamp_ms(msg),
        )

    def _route(
        self,
        msg: PolledRecord,
        tp: TP,
        offset: int,
        raw: bytes,
        request: Request,
        now: float,
        wall_ms: float,
    ) -> list[Batch[Route, Pending]]:
        received_ms = timestamp_ms(msg, wall_ms)
        try:
            spec = self.registry.get(request.pipeline)
            if request.deadline is not None and request.deadline.timestamp() * 1000 < wall_ms:
                raise DeadlineExceededError(
                    f"the request's deadline {request.deadline.isoformat()} passed before it "
                    f"could run",
                    {"deadline": request.deadline.isoformat()},
                )
            if spec.kind == "training":
                self.writer.hand_off_job(msg, tp, offset, request)
                return []
            # Params are validated by the worker, per request
            # (rayml.executor.worker.ModelWorker.run_batch).
            version = pinned_version(request) or self.versions.get(spec.model)
        except RecordError as exc:
            self.writer.answer(
                tp,
                offset,
                request.id,
                request.pipeline,
                request,
                error=error_info_from(exc),
                received_ms=received_ms,
            )
            return []
        pending = Pending(tp, offset, raw, request, spec, received_ms)
        if request.deadline is not None:
            pending.deadline_ms = request.deadline.timestamp() * 1000.0
        return self.batcher.add((spec.import_path, spec.model, version), pending, now)
