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


class PoolUnavailableError(InfrastructureError):
    """Raised (as the cause of an error answer) when no worker of a pipeline's own pool could
    start within ``executor.pool_start_timeout_s`` while requests waited for it."""

    def __init__(self, pool: str, waited_s: float, requests: int) -> None:
        self.pool = pool
        self.waited_s = waited_s
        self.requests = requests
        super().__init__(
            f"no worker of pool {pool!r} served for {waited_s:.0f}s ({requests} requests "
            "waiting): none could be placed (a GPU pool without a GPU node, or a cluster out of "
            "room)"
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
        # Kept for whoever raised it (a client lists what it read from the registry topic),
        # never in the message or details: a result must not tell a caller what else is served.
        self.known = sorted(known or [])
        super().__init__(f"no pipeline named {pipeline!r} is registered", {"pipeline": pipeline})


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


# --- refusals: what a tenant may not do (docs/security.md) ----------------------------------


class RefusedError(RecordError):
    """Raised when a request is not allowed for the tenant of the topic it came from.

    ``details["rule"]`` names the rule that refused it; the message says what to do instead.
    """

    type = "refused"
    rule = ""

    def __init__(self, tenant: str, message: str, details: dict[str, Any] | None = None) -> None:
        self.tenant = tenant
        super().__init__(message, {"tenant": tenant, "rule": self.rule, **(details or {})})


class ReplyToRefusedError(RefusedError):
    """Raised when a request's ``reply_to`` is one of rayml's own topics or outside its
    tenant's reply prefix; its error result goes to the tenant's result topic instead."""

    type = "reply_to_refused"
    rule = "reply_to"

    def __init__(self, tenant: str, reply_to: str, why: str) -> None:
        self.reply_to = reply_to
        super().__init__(tenant, why, {"reply_to": reply_to})


class TenantMismatchError(RefusedError):
    """Raised when a request's ``tenant`` field names another tenant than its topic's."""

    type = "tenant_mismatch"
    rule = "tenant"

    def __init__(self, tenant: str, claimed: str, topic: str) -> None:
        self.claimed = claimed
        super().__init__(
            tenant,
            f"the request says tenant {claimed!r} but came from {topic!r}, a topic of tenant "
            f"{tenant!r}; a request's tenant is its topic's (leave the field out or set it to "
            f"{tenant!r})",
            {"claimed": claimed, "topic": topic},
        )


class PipelineRefusedError(RefusedError):
    """Raised when a tenant calls a pipeline outside its ``pipelines`` patterns."""

    type = "pipeline_refused"
    rule = "pipelines"

    def __init__(self, tenant: str, pipeline: str) -> None:
        self.pipeline = pipeline
        super().__init__(
            tenant,
            f"tenant {tenant!r} may not call pipeline {pipeline!r} (the tenant's pipelines "
            f"setting does not allow it)",
            {"pipeline": pipeline},
        )


class WrongTopicError(RefusedError):
    """Raised when a request came to a topic for the other kind of work: training on an
    inference topic, or inference on a training topic; the message names the topic to use."""

    type = "wrong_topic"
    rule = "topic"

    def __init__(self, tenant: str, pipeline: str, kind: str, topic: str, use: str) -> None:
        self.topic = topic
        self.use = use
        super().__init__(
            tenant,
            f"pipeline {pipeline!r} is a {kind} pipeline: send its requests to {use!r}, not "
            f"{topic!r}",
            {"pipeline": pipeline, "kind": kind, "topic": topic, "use": use},
        )


class TrainingRefusedError(RefusedError):
    """Raised when a tenant without a training topic sends a training request."""

    type = "training_refused"
    rule = "training"

    def __init__(self, tenant: str, pipeline: str) -> None:
        self.pipeline = pipeline
        super().__init__(
            tenant,
            f"tenant {tenant!r} may not train (it has no training topic); pipeline "
            f"{pipeline!r} was not run",
            {"pipeline": pipeline},
        )


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
