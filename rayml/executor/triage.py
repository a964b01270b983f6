"""One polled record's first step: a dead letter, an error answer or a place in a batch.

The ingest loop tracks each polled offset, then hands the record here. Undecodable records go
to the dead-letter topic with their original bytes; the others are checked, once, against the
tenant of the topic they came from (:mod:`rayml.tenancy`), never against a field of the message:

1. a ``reply_to`` the tenant may not name (rayml's own topics, outside its reply prefix) is
   answered ``reply_to_refused`` on the tenant's result topic, and nothing is written to it;
2. a ``tenant`` field that is not the topic's tenant (``tenant_mismatch``), a pipeline outside
   the tenant's patterns (``pipeline_refused``, asked before the registry, so a refusal says
   nothing of what is served), an unknown pipeline, a training pipeline (training requests
   travel on the tenant's training topic, which the job runner reads: ``wrong_topic`` naming
   it, or ``training_refused`` for a tenant without one), a past deadline: an error result;
3. inference requests join a micro-batch keyed by (pipeline, model, version).

Every write goes through the :class:`~rayml.delivery.result_writer.ResultWriter` (as a
:class:`~rayml.delivery.sink.ResultSink`), whose delivery reports mark the offset done; it
answers on the tenant's result topic unless an authorised ``reply_to`` is given. Each check is
a dict or set lookup: no I/O, no Ray call. Pure: no ``ray``, no ``confluent_kafka``.

A poll's records are triaged together (:meth:`Triage.take_all`), and its error answers written
once all are screened: the ``reply_to`` topics they name are asked about first, in one round
(:meth:`~rayml.delivery.sink.ResultSink.check_reply_topics`), so a flood of bad requests naming
fresh ``reply_to`` topics costs one metadata round per poll, not one per request. A poll without
error answers naming a ``reply_to`` asks nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import NamedTuple, Protocol

from rayml.config import TenantSettings
from rayml.delivery.screening import screen
from rayml.delivery.sink import ResultSink
from rayml.errors import DeadlineExceededError, RecordError, ReplyToRefusedError
from rayml.executor.batching import Batch, MicroBatcher
from rayml.executor.work import Pending, Route
from rayml.kafka.partitions import TP
from rayml.kafka.records import PolledRecord, timestamp_ms
from rayml.models.versions import pinned_version
from rayml.pipeline import Registry
from rayml.protocol.envelopes import ErrorInfo, Rejected, Request, error_info_from
from rayml.protocol.rollouts import Rollout, goes_to_canary
from rayml.tenancy.rules import Tenancy
from rayml.tracing import RequestTraces

logger = logging.getLogger(__name__)


class NewestVersions(Protocol):
    """Where triage learns the newest version of a model (the ingest's
    :class:`~rayml.executor.version_follower.LatestVersions`)."""

    def get(self, model: str) -> str | None: ...

    @property
    def rollouts(self) -> Mapping[str, Rollout]:
        """The models under rollout (docs/rollouts.md) and their rollout."""
        ...


class _ErrorAnswer(NamedTuple):
    """An error answer owed, written once the whole poll is screened."""

    tp: TP
    offset: int
    request: Request
    answer_to: Request | None  # None: on the tenant's result topic, whatever its reply_to
    error: ErrorInfo
    received_ms: float


class Triage:
    """Decodes, checks and routes polled records (one call per poll, no I/O of its own).

    Args:
        writer: Where dead letters and error answers are written.
        registry: The pipelines this executor serves.
        versions: The newest version of each model (for requests that pin none).
        batcher: The ingest's micro-batcher; full batches are returned to the caller.
        max_request_bytes: Larger records are dead-lettered undecoded.
        tenancy: The tenants, by request topic, and their rules.
        traces: Request tracing (``None``: off, and no header is read).
    """

    def __init__(
        self,
        writer: ResultSink,
        registry: Registry,
        versions: NewestVersions,
        batcher: MicroBatcher[Route, Pending],
        max_request_bytes: int,
        tenancy: Tenancy,
        traces: RequestTraces | None = None,
    ) -> None:
        self.writer = writer
        self.traces = traces
        self.registry = registry
        self.versions = versions
        self.batcher = batcher
        self.max_request_bytes = max_request_bytes
        self.tenancy = tenancy
        self.refused = 0  # requests answered with a refusal (RefusedError), for status
        self._errors: list[_ErrorAnswer] = []

    def take_all(
        self,
        polled: Iterable[tuple[PolledRecord, TP, int]],
        now: float,
        wall_ms: float,
    ) -> list[Batch[Route, Pending]]:
        """Handle a poll's records (each with its partition and offset, in poll order); return
        the micro-batches they filled. Their error answers are written before it returns."""
        full: list[Batch[Route, Pending]] = []
        limit = self.max_request_bytes
        traces = self.traces
        for msg, tp, offset in polled:
            raw = msg.value() or b""
            request = screen(msg, tp, offset, raw, limit, self)
            if request is not None:
                if traces is not None:
                    try:  # the list confluent-kafka builds, not a copy (headers_of copies)
                        headers = msg.headers()
                    except (SystemError, UnicodeDecodeError):  # a header name not UTF-8
                        headers = None
                    traces.begin(
                        headers,
                        tp,
                        offset,
                        request.id,
                        request.pipeline,
                        timestamp_ms(msg, wall_ms),
                        wall_ms,
                    )
                full += self._route(msg, tp, offset, raw, request, now, wall_ms)
        if self._errors:
            self._write_errors()
        return full

    def _write_errors(self) -> None:
        """The poll's error answers, after one round of questions about their reply_to."""
        errors, self._errors = self._errors, []
        names = {e.answer_to.reply_to for e in errors if e.answer_to and e.answer_to.reply_to}
        if names:
            self.writer.check_reply_topics(names)
        for e in errors:
            self.writer.answer(
                e.tp,
                e.offset,
                e.request.id,
                e.request.pipeline,
                e.answer_to,
                error=e.error,
                received_ms=e.received_ms,
            )

    # What screen() cannot turn into a request (a RejectSink). Its answer goes to the tenant's
    # result topic: a bad envelope's reply_to is not trusted.

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
        tenant, refused = self.tenancy.check(
            tp[0], request.reply_to, request.tenant, request.pipeline
        )
        # Without its reply_to (None): the answer goes to the tenant's result topic.
        answer_to: Request | None = request
        try:
            if refused is not None:
                if isinstance(refused, ReplyToRefusedError):
                    answer_to = None
                raise refused
            spec = self.registry.get(request.pipeline)
            if spec.kind != "inference":
                wrong = self.tenancy.refuse_kind(tenant, tp[0], spec.name, spec.kind)
                if wrong is not None:
                    raise wrong
            if request.deadline is not None and request.deadline.timestamp() * 1000 < wall_ms:
                raise DeadlineExceededError(
                    f"the request's deadline {request.deadline.isoformat()} passed before it "
                    f"could run",
                    {"deadline": request.deadline.isoformat()},
                )
            # Params are validated by the worker, per request
            # (rayml.executor.worker.ModelWorker.run_batch).
            pinned = pinned_version(request)
            version = pinned or self.versions.get(spec.model)
        except RecordError as exc:
            self._refused(tenant, tp, offset, request, exc)
            self._errors.append(
                _ErrorAnswer(tp, offset, request, answer_to, error_info_from(exc), received_ms)
            )
            return []
        pending = Pending(tp, offset, raw, request, spec, received_ms)
        # Whose and which lane (the dispatcher's order): from the topic, like the checks above.
        pending.tenant = tenant.name
        pending.lane = self.tenancy.lane_of(tp[0])
        if request.deadline is not None:
            pending.deadline_ms = request.deadline.timestamp() * 1000.0
        rollouts = self.versions.rollouts
        if rollouts and pinned is None:
            rollout = rollouts.get(spec.model)
            if rollout is not None:
                if rollout.mode == "shadow":
                    pending.role = "serving"
                    pending.shadow = rollout.candidate
                elif goes_to_canary(request.id, rollout.fraction):
                    pending.role = "canary"
                    version = rollout.candidate
                else:
                    pending.role = "serving"
        return self.batcher.add((spec.import_path, spec.model, version), pending, now)

    def _refused(
        self, tenant: TenantSettings, tp: TP, offset: int, request: Request, exc: RecordError
    ) -> None:
        """Count a refusal and say it in the log (DEBUG: a flood of hostile requests must not
        become a flood of log lines; the results name each one)."""
        if exc.details.get("rule"):
            self.refused += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "request=%s tenant=%s partition=%s[%d] offset=%d answered %s: %s",
                request.id,
                tenant.name,
                tp[0],
                tp[1],
                offset,
                exc.type,
                exc,
            )
