"""Errors that only the client raises (the executor never does).

They live beside the client rather than in :mod:`rayml.errors` so that the client can ship on
its own; each still descends from :class:`~rayml.errors.RaymlError`. Bad parameters and unknown
pipelines found *before* sending raise the executor's own :class:`~rayml.errors.InvalidParamsError`
and :class:`~rayml.errors.UnknownPipelineError`, so a caller handles one error type whether the
client or the executor found the problem.
"""

from __future__ import annotations

from rayml.errors import InfrastructureError, RaymlError, RecordError, UnknownPipelineError

__all__ = [
    "BrokerUnreachableError",
    "ClientClosedError",
    "DeliveryFailedError",
    "ResultTimeoutError",
]


class BrokerUnreachableError(InfrastructureError):
    """Raised when none of the bootstrap servers answered within the client's connect timeout."""

    def __init__(self, bootstrap_servers: str, timeout_s: float, reason: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout_s = timeout_s
        self.reason = reason
        super().__init__(
            f"cannot reach the Kafka broker at {bootstrap_servers} within {timeout_s:g}s "
            f"({reason}); is it running? (set RAYML_KAFKA__BOOTSTRAP_SERVERS or pass "
            f"bootstrap_servers=)"
        )


class DeliveryFailedError(InfrastructureError):
    """Raised on a request's future when the broker did not accept the request."""

    def __init__(self, request_id: str, topic: str, reason: str) -> None:
        self.request_id = request_id
        self.topic = topic
        self.reason = reason
        super().__init__(f"request {request_id!r} could not be delivered to {topic!r}: {reason}")


class ResultTimeoutError(RaymlError, TimeoutError):
    """Raised when a result did not arrive within the time the caller was willing to wait.

    It is also a :class:`TimeoutError`, so ``except TimeoutError`` catches it. The request
    may still be answered later; waiting again on the same future is allowed.
    """

    def __init__(
        self, request_id: str | None, pipeline: str, timeout_s: float, missing: int = 1
    ) -> None:
        self.request_id = request_id
        self.pipeline = pipeline
        self.timeout_s = timeout_s
        self.missing = missing
        what = f"request {request_id!r}" if request_id is not None else f"{missing} request(s)"
        super().__init__(
            f"no result for {what} to pipeline {pipeline!r} within {timeout_s:g}s "
            f"(is an executor running and serving this input topic?)"
        )


class PipelineNotServedError(UnknownPipelineError):
    """Raised when a pipeline was published by executors that are all gone: no live pool
    serves it (rayml.protocol.leases), so a request would wait in Kafka for one to start."""

    type = "pipeline_not_served"

    def __init__(self, pipeline: str, registry_topic: str) -> None:
        self.pipeline = pipeline
        self.known = []
        RecordError.__init__(
            self,
            f"pipeline {pipeline!r} was published on {registry_topic!r}, but no running "
            "executor serves it now (none holds a live lease for it): start one that has it, "
            "or use Client(validate=False) to send anyway (the request waits in Kafka)",
            {"pipeline": pipeline},
        )


class ClientClosedError(RaymlError):
    """Raised when a closed client is used, and set on requests still waiting at close."""

    def __init__(self, request_id: str | None = None) -> None:
        self.request_id = request_id
        if request_id is None:
            super().__init__("the client is closed")
        else:
            super().__init__(f"the client was closed before request {request_id!r} was answered")
