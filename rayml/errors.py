"""rayml's exceptions: one root, a subclass per situation, messages built from named fields.

Two families matter to the executor:

* *Infrastructure* failures (:class:`InfrastructureError`): an actor died, the broker is away.
  The work is retried or re-dispatched; the request itself is fine.
* *Record* failures (:class:`RecordError`): this one request cannot succeed (bad params, unknown
  pipeline, the pipeline raised). It gets an error result naming the problem, and the executor
  moves on.
"""

from __future__ import annotations

from typing import Any


class RaymlError(Exception):
    """Root of every error rayml raises on purpose."""


# --- configuration and local services ------------------------------------------------------


class ConfigError(RaymlError):
    """Raised when settings are invalid; the message names each bad field."""


class ToolMissingError(RaymlError):
    """Raised when an external program rayml needs (java, mvn) is not installed."""

    def __init__(self, tool: str, install_hint: str) -> None:
        self.tool = tool
        self.install_hint = install_hint
        super().__init__(f"{tool!r} was not found on PATH. {install_hint}")


class BrokerError(RaymlError):
    """Raised when the local Kafka broker cannot be set up, started, or stopped."""


class PortInUseError(BrokerError):
    """Raised when a port the local broker should listen on is already taken."""

    def __init__(self, port: int, owner: str | None = None) -> None:
        self.port = port
        self.owner = owner
        held = f" (held by {owner})" if owner else ""
        super().__init__(
            f"port {port} on 127.0.0.1 is already in use{held}; "
            f"pick another with --port or stop what holds it"
        )


class KafkaAdminError(RaymlError):
    """Raised when a Kafka admin operation (create topics, describe groups) fails."""


# --- infrastructure vs record failures ------------------------------------------------------


class InfrastructureError(RaymlError):
    """Raised when the platform failed (actor died, broker unreachable); retry the work."""


class BatchTimeoutError(InfrastructureError):
    """Raised (as the cause of a retry) when a batch ran past its time bound; its worker was
    ended and replaced."""

    def __init__(self, worker_id: str, timeout_s: float, requests: int) -> None:
        self.worker_id = worker_id
        self.timeout_s = timeout_s
        self.requests = requests
        super().__init__(
            f"a batch of {requests} requests ran past its {timeout_s:g}s time bound on "
            f"worker {worker_id}; the worker was ended and replaced"
        )


class RecordError(RaymlError):
    """Raised when one request cannot succeed; it gets an error result, others go on.

    ``type`` is the stable error code written into the result envelope's ``error.type``.
    """

    type: str = "record_error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        self.details = details or {}
        super().__init__(message)


class UnknownPipelineError(RecordError):
    """Raised when a request names a pipeline that is not registered."""

    type = "unknown_pipeline"

    def __init__(self, pipeline: str, known: list[str] | None = None) -> None:
        self.pipeline = pipeline
        known = sorted(known or [])
        super().__init__(
            f"no pipeline named {pipeline!r} is registered",
            {"pipeline": pipeline, "known": known},
        )


class InvalidParamsError(RecordError):
    """Raised when a request's params do not validate against its pipeline's parameter model."""

    type = "invalid_params"


class InvalidRequestError(RecordError):
    """Raised when a request with a usable id has a malformed envelope (bad field, too large)."""

    type = "invalid_request"


class DeadlineExceededError(RecordError):
    """Raised when a request's deadline passed before it could be run."""

    type = "deadline_exceeded"


class PipelineFailedError(RecordError):
    """Raised when the pipeline function itself raised for a request."""

    type = "pipeline_failed"


class RetriesExhaustedError(RecordError):
    """Raised when a request failed on every allowed attempt."""

    type = "retries_exhausted"


# --- registry and models ---------------------------------------------------------------------


class RegistrationError(RaymlError):
    """Raised at decoration/registration time: duplicate name, malformed signature, bad options."""


class ModelStoreError(RaymlError):
    """Raised when the model store cannot read or write a model."""


class ModelNotFoundError(ModelStoreError, RecordError):
    """Raised when a model name (or the pinned version) does not exist in the store."""

    type = "model_not_found"

    def __init__(self, name: str, version: str | None = None) -> None:
        self.name = name
        self.version = version
        what = f"model {name!r}" + (f" version {version!r}" if version else "")
        RecordError.__init__(
            self, f"{what} is not in the model store", {"model": name, "version": version}
        )


class InvalidModelNameError(ModelStoreError):
    """Raised when a model name or version is not a safe identifier (e.g. path traversal)."""


class UnsafeModelFormatError(ModelStoreError):
    """Raised when loading an artifact in an unsafe format (pickle) that was not allowed."""


class RequestTooLargeError(InvalidRequestError):
    """Raised when a request message is larger than the ingest's configured maximum size."""

    type = "request_too_large"

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size = size
        self.max_bytes = max_bytes
        super().__init__(
            f"request is {size} bytes, more than the limit of {max_bytes} bytes",
            {"size": size, "max_bytes": max_bytes},
        )
