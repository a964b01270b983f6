"""What a finished micro-batch owes Kafka: one answer per request, through the ResultWriter.

The ingest's dispatcher calls these when a batch comes back from a worker (:func:`answer_batch`)
or when its requests have used up their attempts (:func:`answer_exhausted`). Pure bookkeeping of
envelopes and timings: the writes themselves are :mod:`rayml.delivery.result_writer`'s.
"""

from __future__ import annotations

import time

from rayml.delivery.sink import ResultSink
from rayml.errors import DeadlineExceededError, RetriesExhaustedError
from rayml.executor.work import BatchOutcome, InFlight, ItemError, Pending
from rayml.protocol.dead_letters import DeadLetter
from rayml.protocol.envelopes import ErrorInfo, ModelRef, Timings, error_info_from


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
    replies = {item.request.reply_to for item in batch.items if item.request.reply_to}
    if replies:
        writer.check_reply_topics(replies)
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


def answer_expired(writer: ResultSink, items: list[Pending]) -> None:
    """``deadline_exceeded`` for requests whose deadline passed while they waited to run."""
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


def answer_exhausted(writer: ResultSink, items: list[Pending], cause: BaseException) -> None:
    """An error result *and* a DLQ copy for replay; each record is done once both are written."""
    for item in items:
        # ``failures``: the times it failed on its own (a batch it shared was split, uncharged).
        err = RetriesExhaustedError(
            f"request failed on its own {item.failures} times ({item.attempts} dispatches); "
            f"last error: {type(cause).__name__}",
            {
                "attempts": item.attempts,
                "failures": item.failures,
                "last_error": str(cause)[:500],
            },
        )
        letter = DeadLetter(
            error_type=err.type,
            error_message=str(err),
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
            attempts=item.attempts,
            dead_letter=(item.raw, letter),
        )
