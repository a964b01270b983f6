"""Training from the client: start a job, follow its status events, get its result.

A training request goes to the training topic (``Client(training_topic=...)``, default
``settings.topics.jobs``), which the job runner reads: training is a right of its own, apart
from inference. Its result comes back on the client's reply topic like any other
(:mod:`rayml.client.client`). While it runs, the job runner publishes status events
(:class:`~rayml.protocol.training.JobEvent`) to the events topic, keyed by the job id (= the
request id). :class:`TrainingJob` reads them to drive a progress bar.

Events are advisory (at most once) and the events topic is shared by every job, so following
costs a consumer that reads all jobs' events while it follows one; the *result* never depends
on them. That is why the follower exists only while someone watches: ``train(wait=True)`` assigns
it at the topic's end *before* the request goes out (no event can be missed), ``wait=False``
creates none, and :meth:`TrainingJob.wait` creates one from the current end (a job that is
already far along shows its next event's progress).

Example:
    >>> progress = JobProgress()
    >>> progress.update(JobEvent(job_id="j", pipeline="p", model="m", state="running",
    ...                          progress=0.5, trial=0, trials=2, at_ms=1))
    >>> progress.fraction, progress.describe()
    (0.25, 'running (2 trials)')
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from confluent_kafka import TopicPartition

from rayml.client.batch import progress_bar
from rayml.client.futures import RequestFuture
from rayml.client.kafka import end_offsets, partitions_of
from rayml.client.protocols import JobSender
from rayml.config import Settings
from rayml.errors import InvalidRequestError
from rayml.kafka import clients as kafka_clients
from rayml.protocol.envelopes import Result
from rayml.protocol.training import JobEvent, decode_event

logger = logging.getLogger(__name__)

__all__ = ["EventFollower", "JobProgress", "TrainingJob", "start_training"]


class JobProgress:
    """What the events of one job say so far: state, fraction done, last message, outcome.

    The job's fraction is the mean over its trials of each trial's latest reported fraction
    (a trial that reported nothing counts 0; a finished job is 1).
    """

    def __init__(self) -> None:
        self.state = "sent"
        self.trials = 1
        self.message = ""
        self.version: str | None = None
        self.metrics: dict[str, float] = {}
        self.error: str | None = None
        self.events = 0
        self._fractions: dict[int, float] = {}

    def update(self, event: JobEvent) -> None:
        """Take one event into account."""
        self.events += 1
        if event.trials:
            self.trials = event.trials
        if event.progress is not None:
            self._fractions[event.trial if event.trial is not None else 0] = event.progress
        state = self.state
        if event.trial is None or event.state in {"queued", "running"}:
            # A failed event *with* a trial is one trial's failure; the job goes on.
            state = event.state
        if event.message:
            self.message = event.message
        elif state != self.state:
            # A new state without a word (a trial that waited for resources starts running):
            # the last message no longer holds.
            self.message = ""
        self.state = state
        if event.state == "succeeded" and event.trial is None:
            self.version = event.version
            self.metrics = dict(event.metrics or {})
        if event.error is not None:
            self.error = f"{event.error.type}: {event.error.message}"

    @property
    def fraction(self) -> float:
        """Fraction done, 0..1."""
        if self.state == "succeeded":
            return 1.0
        return min(1.0, sum(self._fractions.values()) / max(1, self.trials))

    @property
    def headline(self) -> str:
        """The state and the number of trials: ``running (4 trials)``."""
        return self.state + (f" ({self.trials} trials)" if self.trials > 1 else "")

    def describe(self) -> str:
        """A short status line: ``running (4 trials) round 40/100``, or ``queued waiting for
        resources: needs {'CPU': 1.0}; ...`` while the cluster has no room for a trial."""
        return f"{self.headline} {self.message}" if self.message else self.headline


class EventFollower:
    """A consumer of the events topic from its current end, yielding one job's events."""

    def __init__(self, settings: Settings, job_id: str, timeout_s: float = 10.0) -> None:
        topic = settings.topics.events
        self.job_id = job_id
        self._key = job_id.encode()
        self._consumer = kafka_clients.consumer(
            settings.kafka, f"rayml-client-events-{uuid.uuid4().hex[:12]}"
        )
        partitions = partitions_of(self._consumer, topic, timeout_s)
        ends = end_offsets(self._consumer, topic, partitions, timeout_s)
        self._consumer.assign(
            [TopicPartition(topic, p, e) for p, e in zip(partitions, ends, strict=True)]
        )
        if not partitions:
            logger.info("events topic %s does not exist: no progress to show", topic)

    def poll(self, timeout_s: float) -> list[JobEvent]:
        """Events of this job read within ``timeout_s`` (possibly none)."""
        found = []
        for msg in self._consumer.consume(500, timeout=timeout_s):
            if msg.error() is not None or msg.key() != self._key:
                continue
            try:
                found.append(decode_event(msg.value() or b""))
            except ValueError:
                continue  # an event from a newer writer: progress is advisory
        return found

    def close(self) -> None:
        self._consumer.close()


class TrainingJob:
    """A training job in flight: its id, its result future, and what its events said.

    Attributes:
        job_id: The request id, which is also the job id on the events topic.
        future: The future of the job's result.
        progress: The latest state from its events (updated while :meth:`wait` runs).
    """

    def __init__(
        self, client: JobSender, future: RequestFuture, follower: EventFollower | None
    ) -> None:
        self._client = client
        self.future = future
        self.job_id = future.request_id
        self.pipeline = future.pipeline
        self.progress = JobProgress()
        self._follower = follower

    def done(self) -> bool:
        """Whether the result has arrived."""
        return self.future.done()

    def result(self, timeout: float | None = None) -> Result:
        """Wait for the result without following events (see :meth:`wait`)."""
        return self.future.result(timeout)

    def wait(self, timeout_s: float | None = None, progress: bool = True) -> Result:
        """Follow the job's events (with a progress bar) until its result arrives.

        Raises:
            ResultTimeoutError: No result within ``timeout_s``; the job goes on, and ``wait``
                may be called again.
        """
        follower = self._follower or EventFollower(self._client.settings, self.job_id)
        self._follower = None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        bar = (
            progress_bar(total=100, desc=self.pipeline, unit="%", dynamic_ncols=True)
            if progress
            else None
        )
        shown, described, said = 0, "", ""
        try:
            while not self.future.done():
                if deadline is not None and time.monotonic() > deadline:
                    return self.future.result(0)  # raises ResultTimeoutError
                for event in follower.poll(0.2):
                    self.progress.update(event)
                if bar is not None:
                    now = int(self.progress.fraction * 100)
                    if now > shown:
                        bar.update(now - shown)
                        shown = now
                    description = f"{self.pipeline}: {self.progress.headline}"[:70]
                    if description != described:
                        bar.set_description(description)
                        described = description
                    # The message (a pipeline's "round 40/100", or what a trial waits for)
                    # after the bar, where the terminal's width is all that cuts it.
                    if self.progress.message != said:
                        said = self.progress.message
                        bar.set_postfix_str(said)
            result = self.future.result(0)
            if bar is not None and result.status == "ok" and shown < 100:
                bar.update(100 - shown)
            return result
        finally:
            follower.close()
            if bar is not None:
                bar.close()

    def __repr__(self) -> str:
        return f"<TrainingJob {self.job_id!r} {self.pipeline!r} {self.progress.describe()}>"


def start_training(
    client: JobSender, pipeline: str, params: dict[str, Any], *, follow: bool
) -> TrainingJob:
    """Send a training request to the client's training topic; with ``follow``, attach an
    event follower first.

    Raises:
        InvalidRequestError: ``pipeline`` is published as an inference pipeline.
    """
    if client.validate:
        info = client.pipeline(pipeline)
        if info.kind != "training":
            raise InvalidRequestError(
                f"pipeline {pipeline!r} is an {info.kind} pipeline; use submit() for it",
                {"pipeline": pipeline, "kind": info.kind},
            )
    job_id = f"train-{uuid.uuid4().hex}"
    follower = EventFollower(client.settings, job_id) if follow else None
    try:
        future = client.request(pipeline, params, request_id=job_id, topic=client.training_topic)
    except BaseException:
        if follower is not None:
            follower.close()
        raise
    return TrainingJob(client, future, follower)
