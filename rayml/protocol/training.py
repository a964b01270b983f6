"""Wire envelopes of training: job status events and model announcements. No I/O here.

**Job events** go to ``settings.topics.events`` keyed by job id (the request id), so all events
of one job are on one partition, in order. A client showing a progress bar reads them::

    {"v": 1, "job_id": "job-7", "pipeline": "breast_cancer.train", "model": "breast_cancer",
     "state": "running", "progress": 0.41, "message": "round 41/100",
     "trial": 0, "trials": 1, "attempt": 1, "at_ms": 1764150000000}

``state`` is ``queued`` (the runner accepted the job), ``running`` (a trial's task started;
repeated with ``progress`` in [0, 1] where the pipeline reports it), ``succeeded`` (with
``version`` and ``metrics``) or ``failed`` (with ``error``, e.g. ``trial_timeout`` for a trial
past its time bound); ``queued`` comes again when a trial lost to an infrastructure failure
waits for another attempt, and, with ``trial`` and a ``message`` such as ``waiting for
resources: needs {'CPU': 1.0}; the cluster has {'CPU': 0.0} free of {'CPU': 2.0}``, while a
launched trial's task waits for Ray to find it room (repeated at an interval while it waits).
For a sweep, ``trial`` says which trial an event is about and ``trials`` how many there are (a
``failed`` event *with* ``trial`` is one trial's failure; the others go on); the job's progress
is the mean of its trials' latest fractions. Events without ``trial`` are about the whole job.
Events are advisory (at most once): the result on the output topic is the answer.

**Model announcements** go to the compacted ``settings.topics.models`` keyed by model name, so
the newest announcement of every model survives compaction and an executor that starts later
reads it from the beginning of the topic::

    {"v": 1, "name": "breast_cancer", "version": "000007", "metrics": {"accuracy": 0.97},
     "created_at": "2025-11-26T10:00:00+00:00", "pipeline": "breast_cancer.train",
     "job_id": "job-7", "promoted_from": "000005"}

Example:
    >>> event = JobEvent(job_id="j1", pipeline="p", model="m", state="queued", at_ms=1)
    >>> decode_event(encode_event(event)) == event
    True
"""

from __future__ import annotations

import time
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rayml.protocol.envelopes import ErrorInfo

__all__ = [
    "JobEvent",
    "JobState",
    "ModelAnnouncement",
    "decode_announcement",
    "decode_event",
    "encode_announcement",
    "encode_event",
    "now_ms",
]

JobState = Literal["queued", "running", "succeeded", "failed"]

_VERSION: Final = 1


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return int(time.time() * 1000)


class JobEvent(BaseModel):
    """One status change or progress report of a training job (key = ``job_id``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="rayml job event")

    v: Literal[1] = Field(default=1, description="Envelope version.")
    job_id: str = Field(min_length=1, description="The training request's id.")
    pipeline: str
    model: str
    state: JobState
    progress: float | None = Field(
        default=None, ge=0, le=1, description="Fraction done of this trial, when reported."
    )
    message: str | None = Field(
        default=None,
        description="What the pipeline says it does, or what a waiting trial waits for.",
    )
    trial: int | None = Field(default=None, ge=0, description="Trial the event is about.")
    trials: int | None = Field(default=None, ge=1, description="Trials of the job.")
    attempt: int = Field(default=1, ge=1, description="Attempt of this trial.")
    version: str | None = Field(default=None, description="Version stored (succeeded).")
    metrics: dict[str, float] | None = None
    error: ErrorInfo | None = None
    at_ms: int = Field(default_factory=now_ms, ge=0, description="When, epoch milliseconds.")


class ModelAnnouncement(BaseModel):
    """A new servable version of a model (key = ``name``, on the compacted models topic)."""

    model_config = ConfigDict(extra="ignore", frozen=True, title="rayml model announcement")

    v: Literal[1] = 1
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: str | None = None
    pipeline: str | None = None
    job_id: str | None = None
    promoted_from: str | None = Field(
        default=None, description="For a sweep: the best trial's version this one copies."
    )


def encode_event(event: JobEvent) -> bytes:
    """Serialise a job event as compact JSON; absent fields are left out."""
    return event.model_dump_json(exclude_none=True).encode()


def decode_event(raw: bytes) -> JobEvent:
    """Parse a job event (e.g. in a client).

    Raises:
        pydantic.ValidationError: Not a job event.
    """
    return JobEvent.model_validate_json(raw)


def encode_announcement(announcement: ModelAnnouncement) -> bytes:
    """Serialise a model announcement as compact JSON; absent fields are left out."""
    return announcement.model_dump_json(exclude_none=True).encode()


def decode_announcement(raw: bytes | None) -> ModelAnnouncement | None:
    """Parse an announcement; ``None`` for a tombstone or anything that is not one.

    Unknown fields are ignored, so a newer writer's announcements still parse.

    Example:
        >>> decode_announcement(b'{"name": "iris", "version": "000002", "x": 1}').version
        '000002'
        >>> decode_announcement(b"nope") is None, decode_announcement(None) is None
        (True, True)
    """
    if not raw:
        return None
    try:
        return ModelAnnouncement.model_validate_json(raw)
    except ValidationError:
        return None
