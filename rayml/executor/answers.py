"""What a finished micro-batch owes Kafka: one answer per request, through the ResultWriter.

The ingest's dispatcher calls these when a batch comes back from a worker (:func:`answer_batch`)
or when its requests have used up their attempts (:func:`answer_exhausted`). Pure bookkeeping of
envelopes and timings: the writes themselves are :mod:`rayml.delivery.result_writer`'s.

Error hygiene: a request that exhausted its attempts is told *what* failed in words meant for
it ("the worker running it died"), never Ray's error text (node addresses, pids, actor ids,
tracebacks); that text is logged here with the request ids, and kept in the DLQ copy's headers
for the operator who replays it.
"""

from __future__ import annotations

import logging
import time

from rayml.delivery.sink import ResultSink
from rayml.errors import (
    BatchTimeoutError,
    DeadlineExceededError,
    PoolUnavailableError,
    RetriesExhaustedError,
)
from rayml.executor.work import BatchOutcome, InFlight, ItemError, Pending
from rayml.protocol.dead_letters import DeadLetter
from rayml.protocol.envelopes import ErrorInfo, ModelRef, Timings, error_info_from

logger = logging.getLogger(__name__)

# Ray's errors of a worker that died (by class name: this module does not import Ray).
_WORKER_DIED = frozenset({"RayActorError", "OutOfMemoryError", "WorkerCrashedError"})


def answer_batch(writer: ResultSink, batch: InFlight, outcome: BatchOutcome) -> tuple[int, float]:
    """Answer every request of a finished batch; return (error answers, wall clock in ms)."""
    model = (
        {"name": outcome.model_name, "version": outcome.model_version}
        if outcome.model_version
        else None
    )
    now_ms = time.time() * 1000.0
    compute_ms = round(outcome.compute_ms, 3)
    errors = 0
    _check_reply_topics(writer, batch.items)
    for item, output in zip(batch.items, outcome.outputs, strict=True):
        timings = {
            "queued_ms": round(batch.dispatched_ms - item.received_ms, 3),
            "compute_ms": compute_ms,
            "total_ms": round(now_ms - item.received_ms, 3),
        }
        request = item.request
        if isinstance(output, ItemError):
            errors += 1
            error = ErrorInfo(type=output.type, message=output.message, details=output.details)
            writer.answer(
                item.tp,
                item.offset,
                request.id,
                request.pipeline,
                request,
                error=error,
                model=ModelRef(**model) if model else None,
                timings=Timings(**timings),
                attempts=item.attempts,
            )
        else:
            writer.answer_ok(
                item.tp,
                item.offset,
                request,
                output,
                model=model,
                timings=timings,
                attempts=item.attempts,
            )
    return errors, now_ms


def _check_reply_topics(writer: ResultSink, items: list[Pending]) -> None:
    """Ask about the ``reply_to`` topics the answers of ``items`` name, in one round (none
    when no request names one)."""
    replies = {item.request.reply_to for item in items if item.request.reply_to}
    if replies:
        writer.check_reply_topics(replies)


def answer_expired(writer: ResultSink, items: list[Pending]) -> None:
    """``deadline_exceeded`` for requests whose deadline passed while they waited to run."""
    _check_reply_topics(writer, items)
    for item in items:
        err = DeadlineExceededError(
            "the request's deadline passed before it could run",
            {"deadline_ms": item.deadline_ms},
        )
        writer.answer(
            item.tp,
            item.offset,
            item.request.id,
            item.request.pipeline,
            item.request,
            error=error_info_from(err),
            received_ms=item.received_ms,
            attempts=max(1, item.attempts),
        )


def failure_for_caller(cause: BaseException) -> tuple[str, str]:
    """What a request's last failure was, as its caller may be told: a stable code and words.

    Example:
        >>> failure_for_caller(BatchTimeoutError("w-1", 2.0, 8))
        ('batch_timeout', 'its batch ran past its time bound')
    """
    if isinstance(cause, BatchTimeoutError):
        return "batch_timeout", "its batch ran past its time bound"
    if isinstance(cause, PoolUnavailableError):
        return "pool_unavailable", "no worker of its pipeline's pool could start in time"
    if _WORKER_DIED & {c.__name__ for c in type(cause).__mro__}:
        return "worker_died", "the worker running it died"
    return "worker_error", "the worker failed outside the pipeline"


def answer_exhausted(writer: ResultSink, items: list[Pending], cause: BaseException) -> None:
    """An error result *and* a DLQ copy for replay; each record is done once both are written.

    The result says what failed in the caller's terms (:func:`failure_for_caller`); Ray's own
    error (addresses, pids, actor ids, traceback) is logged with the request ids and kept in
    the DLQ copy's ``rayml.error.message``.
    """
    if not items:
        return
    code, words = failure_for_caller(cause)
    logger.warning(
        "requests %s%s gave up after their attempts (%s): %s: %s",
        ", ".join(item.request.id for item in items[:10]),
        f" and {len(items) - 10} more" if len(items) > 10 else "",
        code,
        type(cause).__name__,
        cause,
    )
    _check_reply_topics(writer, items)
    for item in items:
        # ``failures``: the times it failed on its own (a batch it shared was split, uncharged).
        err = RetriesExhaustedError(
            f"request failed on its own {item.failures} times ({item.attempts} dispatches); "
            f"last: {words}",
            {"attempts": item.attempts, "failures": item.failures, "last_error": code},
        )
        letter = DeadLetter(
            error_type=err.type,
            error_message=f"{err}; {type(cause).__name__}: {cause}"[:1000],
            source_topic=item.tp[0],
            source_partition=item.tp[1],
            source_offset=item.offset,
            request_id=item.request.id,
        )
        writer.answer(
            item.tp,
            item.offset,
            item.request.id,
            item.request.pipeline,
            item.request,
            error=error_info_from(err),
            received_ms=item.received_ms,
            attempts=max(1, item.attempts),  # never dispatched: its pool could not start
            dead_letter=(item.raw, letter),
        )
