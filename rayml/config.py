"""Settings: one pydantic-settings tree, read from ``RAYML_*`` variables and an optional TOML file.

Every field can be set from the environment in pydantic-settings' nested form::

    RAYML_KAFKA__BOOTSTRAP_SERVERS=broker-1:9092
    RAYML_TOPICS__INPUT=ml.pipeline.input
    RAYML_EXECUTOR__MAX_BATCH_SIZE=512

Precedence, highest first: explicit overrides (CLI flags) > environment > TOML config file
(``--config`` or ``RAYML_CONFIG``) > defaults. A bad value fails at start with
:class:`~rayml.errors.ConfigError` naming the field (``kafka.bootstrap_servers: ...``).

Example:
    >>> from rayml.config import load_settings
    >>> load_settings(kafka={"bootstrap_servers": "127.0.0.1:19092"}).topics.input
    'ml.pipeline.input'
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rayml.errors import ConfigError

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST_PORT = re.compile(r"^[^\s,:]+:\d{1,5}$")

TopicName = Annotated[str, Field(pattern=_TOPIC_NAME.pattern)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class KafkaSettings(_Section):
    """How to reach Kafka. Security settings map 1:1 to librdkafka properties."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    ssl_endpoint_identification_algorithm: Literal["https", "none"] | None = None
    # Any other librdkafka property, passed through as is, e.g.
    # {"socket.keepalive.enable": "true"}.
    # Keys are librdkafka names; values are strings as librdkafka expects them.
    extra: dict[str, str] = Field(default_factory=dict)

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        bad = [s for s in servers if not _HOST_PORT.match(s)]
        if not servers or bad:
            raise ValueError(f"expected a comma-separated list of host:port, got {value!r}")
        return ",".join(servers)

    def client_config(self) -> dict[str, str]:
        """The librdkafka configuration shared by every producer, consumer and admin client.

        Secrets are revealed only here, into the dict handed to librdkafka; ``repr`` and logs
        of the settings show ``**********``.
        """
        conf: dict[str, str] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.lower(),
        }
        optional: dict[str, str | SecretStr | None] = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password,
            "ssl.endpoint.identification.algorithm": self.ssl_endpoint_identification_algorithm,
        }
        for key, value in optional.items():
            if isinstance(value, SecretStr):
                conf[key] = value.get_secret_value()
            elif value is not None:
                conf[key] = value
        conf.update(self.extra)
        return conf


class TopicSettings(_Section):
    """Topic names by role. ``rayml topics create`` makes them with per-role settings."""

    # Inference requests: the interactive lane of the default tenant (no tenants configured).
    input: TopicName = "ml.pipeline.input"
    # Its bulk lane (`priority="batch"`, `rayml replay`), read only as far as the interactive
    # lane leaves room (docs/service.md, "Priority lanes and tenant shares"). Left unset, it
    # follows `input`: "<input>.batch".
    input_batch: TopicName = "ml.pipeline.input.batch"
    output: TopicName = "ml.pipeline.output"
    jobs: TopicName = "ml.pipeline.jobs"
    dlq: TopicName = "ml.pipeline.dlq"
    models: TopicName = "ml.models"
    registry: TopicName = "ml.pipeline.registry"
    # Job status events (queued, running with progress, succeeded, failed), keyed by job id.
    events: TopicName = "ml.pipeline.events"
    # Rollouts (docs/rollouts.md): what each version answered while its model is under rollout
    # (the shadow's outputs, which no caller sees, beside the serving version's), and ground
    # truth by request id from any producer.
    shadow: TopicName = "ml.pipeline.shadow"
    feedback: TopicName = "ml.pipeline.feedback"
    # Partition counts bound the parallelism of ingest actors (one partition, one consumer).
    input_partitions: int = Field(8, ge=1, le=10_000)
    output_partitions: int = Field(8, ge=1, le=10_000)
    jobs_partitions: int = Field(4, ge=1, le=10_000)
    # Copies of each topic rayml creates; None: the broker's default.replication.factor.
    replication_factor: int | None = Field(None, ge=1, le=32)
    # None: min(2, replicas), so that acks=all means two copies wherever there are two.
    min_insync_replicas: int | None = Field(None, ge=1, le=32)

    @model_validator(mode="after")
    def _batch_lane_follows_input(self) -> TopicSettings:
        if "input_batch" not in self.model_fields_set:
            self.input_batch = _batch_topic(self.input)
        elif _canonical(self.input_batch) == _canonical(self.input):
            raise ValueError(
                f"input_batch {self.input_batch!r} is the input topic: the bulk lane is a topic "
                "of its own"
            )
        return self

    @model_validator(mode="after")
    def _insync_fits(self) -> TopicSettings:
        r, m = self.replication_factor, self.min_insync_replicas
        if r is not None and m is not None and m > r:
            raise ValueError(
                f"min_insync_replicas ({m}) above replication_factor ({r}): no acks=all write "
                "could ever succeed"
            )
        return self


def _batch_topic(input_topic: str) -> str:
    """The bulk lane's default name beside an interactive request topic: ``<input>.batch``."""
    name = f"{input_topic}.batch"
    if len(name) > 249:
        raise ValueError(
            f"the bulk lane of {input_topic!r} would be {len(name)} characters (Kafka allows "
            "249): name it yourself (topics.input_batch, or the tenant's batch_topic)"
        )
    return name


def _canonical(topic: str) -> str:
    """A topic name as Kafka compares names for collisions (``.`` and ``_`` are one)."""
    return topic.replace("_", ".")


class TenantSettings(_Section):
    """One tenant: a team's topics, which Kafka's ACLs guard (docs/security.md).

    The executor knows a request's tenant from the topic it came from, never from the message.
    With no tenants configured, one default tenant keeps the single-topic behaviour (its topics
    are ``topics.input``, ``topics.jobs`` and ``topics.output``, any ``reply_to`` that is not
    one of rayml's own topics).
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    # The Kafka principal of the team's services ("User:team-a"): `rayml tenants apply` grants
    # it Write on its request topics and Read on its result topic and reply prefix.
    principal: str | None = Field(None, pattern=r"^[A-Za-z]+:.+$")
    # Inference requests: its interactive lane.
    input_topic: TopicName
    # Its bulk lane (`priority="batch"`, `rayml replay`): read only as far as the interactive
    # lanes leave room. None: "<input_topic>.batch".
    batch_topic: TopicName | None = None
    # Training requests; None: the tenant may not train.
    training_topic: TopicName | None = None
    # Results of requests without a reply_to, and errors about refused reply_to names.
    result_topic: TopicName
    # A request's reply_to must start with this (e.g. "team-a.replies.").
    reply_prefix: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    # Pipelines (fnmatch patterns, e.g. "iris.*") the tenant may call.
    pipelines: list[str] = Field(default_factory=lambda: ["*"])
    # Its weight in the ingest's intake: while several tenants have records in flight, each
    # may hold window x weight / (sum of their weights) of them (at least
    # shares.min_share_records); alone, the whole window. The dispatcher shares a pool's
    # workers by the same weights. Bounded (0.01..100) so that no tenant's requests, once
    # read, wait behind another's for ever.
    weight: float = Field(1.0, ge=0.01, le=100)

    @model_validator(mode="after")
    def _bulk_lane_named(self) -> TenantSettings:
        if self.batch_topic is None:
            _batch_topic(self.input_topic)  # refuses a default name Kafka would refuse
        return self

    @property
    def bulk_topic(self) -> str:
        """Its bulk lane: ``batch_topic``, else ``<input_topic>.batch``."""
        return self.batch_topic or _batch_topic(self.input_topic)


class ExecutorSettings(_Section):
    """How the executor consumes, batches, dispatches and commits."""

    group_id: str = Field("rayml-executor", min_length=1)
    jobs_group_id: str = Field("rayml-jobs", min_length=1)
    # Ingest actors (consumer-group members), each one Python loop of its own. "auto": one per
    # 4 CPUs of each ML node (at least one a node), at most one per configured input partition
    # (rayml.executor.service.ingest_count); resolved when the executor starts.
    ingest_actors: int | Literal["auto"] = Field(1)

    num_workers: int = Field(2, ge=1, le=10_000)
    max_batch_size: int = Field(1024, ge=1, le=100_000)
    max_batch_wait_ms: float = Field(5.0, ge=0, le=60_000)
    # True: a batch leaves before max_batch_wait_ms when a worker has room for it (fewer than
    # max_batches_per_worker in flight): an idle executor answers at once, a busy one still
    # fills batches (they wait for a worker, and the dispatcher merges those queued). False:
    # every batch waits to fill or for max_batch_wait_ms, e.g. for a GPU model whose cost
    # hardly grows with the batch.
    dispatch_when_idle: bool = True
    poll_max_messages: int = Field(2048, ge=1, le=100_000)
    max_in_flight: int = Field(20_000, ge=1, le=10_000_000)
    # Bytes of record values the ingest holds at once (from poll until the offset is done),
    # beside the record count above: over either it pauses its partitions and resumes once both
    # are down to half. Each poll takes what fits at the average record size seen, so records of
    # similar sizes stay within it; a record larger than the whole budget still runs, alone.
    # The ingest actor reserves Ray memory from it (rayml.executor.service.ingest_memory_bytes).
    max_in_flight_bytes: int = Field(256 * 1024**2, ge=1024, le=1 << 40)
    commit_interval_s: float = Field(1.0, gt=0, le=600)
    # Failures charged to a request alone before it gives up (a batch that fails its worker is
    # split without charge: rayml.executor.isolation).
    max_attempts: int = Field(3, ge=1, le=100)
    # Time bound of one batch on a worker (model load included): past it the worker is ended
    # and replaced, and the batch is handled as after a worker death. A pipeline may declare
    # its own (`@inference(..., batch_timeout_s=...)`); None: no bound.
    batch_timeout_s: float | None = Field(300.0, gt=0, le=86_400)
    max_request_bytes: int = Field(1_048_576, ge=256)
    # A destination topic whose writes fail (deleted, its ACL removed, a broker away beyond
    # librdkafka's own retries) is *failing*: its writes wait, uncommitted, while one of them
    # probes it after write_retry_initial_s, doubling up to write_retry_max_s, with jitter
    # (rayml.delivery.retries). It is logged when it starts failing, then at most once per
    # write_failure_log_interval_s, and when it works again; `rayml status` lists it.
    write_retry_initial_s: float = Field(0.1, gt=0, le=60)
    write_retry_max_s: float = Field(30.0, gt=0, le=3600)
    write_failure_log_interval_s: float = Field(30.0, gt=0, le=3600)
    drain_timeout_s: float = Field(30.0, ge=0, le=3600)
    # CPUs reserved per ModelWorker actor; fractional values pack several on one core. None
    # (the default): sized from the cluster when the executor starts, up to 1 per worker, so
    # that `training.reserve_cpus` stay free for training tasks (rayml.executor.service
    # .size_worker_cpus): on a 2-CPU machine two workers get 0.5 each and `rayml train` runs.
    worker_num_cpus: float | None = Field(None, ge=0, le=1024)
    # Threads a worker's BLAS/OpenMP pools may use (single-row predicts are fastest with 1).
    worker_threads: int = Field(1, ge=1, le=1024)
    # Batches queued at one worker at most: one running, one waiting hides the Ray round trip;
    # more would only move the queue from Kafka (where lag is visible) into actor mailboxes.
    max_batches_per_worker: int = Field(2, ge=1, le=1000)
    # How many workers may hold one model warm (model-affinity routing).
    model_replicas: int = Field(2, ge=1, le=10_000)
    # Models kept per worker (LRU) and the memory budget of that cache.
    worker_model_cache_size: int = Field(4, ge=1, le=1000)
    worker_model_cache_bytes: int = Field(2 * 1024**3, ge=1)
    # Extra modules that register pipelines, besides the `pipelines` package and entry points.
    pipeline_modules: list[str] = Field(default_factory=list)
    # at_least_once: a result is written, then its input offset committed (readers dedupe by
    # id). exactly_once: results and input offsets commit in one Kafka transaction per ingest
    # (rayml.delivery.transactions); read_committed readers see each result once, even across a
    # crash.
    delivery: Literal["at_least_once", "exactly_once"] = "at_least_once"
    # How often the executor checks that its ingest actors are alive; one whose node is gone
    # is started again on another node.
    supervise_interval_s: float = Field(2.0, gt=0, le=600)
    # How long the executor's liveness lease on the registry topic holds without renewal
    # (renewed every third of it): clients and `rayml pipelines` show a pipeline as served while
    # a lease lists it (rayml.protocol.leases).
    registry_lease_s: float = Field(30.0, ge=1, le=86_400)
    # spread: ingest actors pinned one per ML node (a lost node takes only its share);
    # default: Ray's placement, beside the driver on the head (never scaled down, but one
    # failure domain). See rayml.executor.service.ingest_placements.
    ingest_placement: Literal["spread", "default"] = "spread"
    # An ingest whose pool has had no serving worker this long (its workers wait for a node
    # with room, e.g. after a node loss without spare capacity) leaves the consumer group, so
    # its partitions go to ingests that can serve them; it rejoins once a worker serves.
    # 0: never leave. See rayml.executor.membership.
    leave_group_without_workers_s: float = Field(30.0, ge=0, le=3600)
    # A pipeline's own pool (rayml.pipeline.Pool) with requests queued and no worker that
    # serves (none could be placed: a GPU pool without a GPU node, a cluster out of room) for
    # this long: its queued requests are answered `pool_unavailable` and dead-lettered for
    # replay, so that one pool that cannot start never holds the partitions' offsets (and the
    # in-flight window every other pipeline shares) for ever.
    pool_start_timeout_s: float = Field(300.0, gt=0, le=86_400)
    # exactly_once: how often the open transaction commits. Results become visible to
    # read_committed readers only then (latency), and each commit costs broker round trips
    # (the loop seals the transaction and commits once its writes are acknowledged, without
    # waiting for them: rayml.delivery.transactions).
    transaction_commit_interval_s: float = Field(0.1, gt=0, le=600)
    # exactly_once: the broker aborts a transaction left open longer than this (an executor
    # that was SIGKILLed); until then read_committed readers of its output partitions wait.
    transaction_timeout_s: float = Field(10.0, ge=1, le=900)

    @field_validator("ingest_actors")
    @classmethod
    def _check_ingest_actors(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 1024:
            raise ValueError("ingest_actors must be 1..1024 or 'auto'")
        return value


class LaneSettings(_Section):
    """Priority lanes (docs/service.md, "Priority lanes and tenant shares"): each tenant's
    interactive request topic and its bulk topic beside it. The ingest reads the bulk lanes
    only as far as interactive work leaves room (:mod:`rayml.executor.intake`)."""

    # While interactive work is in flight, the bulk lanes together may hold this share of the
    # in-flight window (executor.max_in_flight); beyond it their partitions are paused until
    # they are back under it. Below it they are always read (bulk never starves); with no
    # interactive work in flight they may take the whole window.
    batch_share: float = Field(0.25, ge=0.01, le=0.99)
    # Interactive work counts as in flight until this long after its last record was done, so
    # that a steady trickle of interactive requests keeps the bulk lanes to their share
    # between two requests (0: only while a record is in flight).
    interactive_linger_s: float = Field(1.0, ge=0, le=600)


class ShareSettings(_Section):
    """Per-tenant shares of the ingest's intake (only with two tenants or more; see
    ``TenantSettings.weight`` and :mod:`rayml.executor.intake`)."""

    # The least a tenant with records in flight may hold, whatever the weights say.
    min_share_records: int = Field(256, ge=1, le=10_000_000)
    # A tenant counts as having records in flight until this long after its last one was
    # done (a steady trickle keeps its share between two requests).
    active_linger_s: float = Field(1.0, ge=0, le=600)


class TrainingSettings(_Section):
    """How the job runner runs training jobs from the jobs topic (see
    :mod:`rayml.training.runner`)."""

    # Job runner actors per executor; they share the jobs partitions (0: no training here).
    job_runners: int = Field(1, ge=0, le=1024)
    # Training tasks (a sweep's trials count one each) in flight per runner; beyond it the
    # runner pauses its jobs partitions. Bounds how many CPUs training can claim at once.
    max_concurrent_tasks: int = Field(2, ge=1, le=10_000)
    # Largest sweep (number of trials) one request may ask for.
    max_trials: int = Field(64, ge=1, le=10_000)
    # Attempts per trial when its task is lost to an infrastructure failure (worker or node
    # died); a pipeline that raises is not retried.
    max_attempts: int = Field(3, ge=1, le=100)
    # Least time between two progress events of one trial (the first and the last always go).
    progress_interval_s: float = Field(1.0, ge=0, le=3600)
    # CPUs that sizing the workers from the cluster (executor.worker_num_cpus unset) leaves
    # free for training tasks: a pipeline's default task asks for 1.
    reserve_cpus: float = Field(1.0, ge=0, le=1024)
    # Time bound of one trial, counted from when its task starts running (not from launch: a
    # task waiting for CPUs is not charged). Past it the task is cancelled (its worker process
    # ended) and the trial fails with `trial_timeout`, a record failure, not retried. A
    # pipeline may declare its own (`@training(..., timeout_s=...)`); None: no bound.
    trial_timeout_s: float | None = Field(3600.0, gt=0, le=30 * 86_400)
    # A trial's task that has not started this long after its launch (Ray is holding it until
    # a node has its resources) gets a `queued` event saying what it waits for, repeated at
    # this interval while it waits; the cluster's resources are read at most once per interval.
    waiting_notice_s: float = Field(5.0, gt=0, le=3600)
    # A launched trial's task not started this long after its launch is cancelled and the
    # trial fails with `resources_unavailable` (saying what it waited for): a trial that waits
    # holds a slot and, exactly-once, the answers behind it on its partition. None: no bound.
    max_wait_s: float | None = Field(1800.0, gt=0, le=30 * 86_400)
    # A trial asking for more than any node of the cluster has in total (CPUs, GPUs, memory)
    # fails at once with `resources_unavailable`, naming the largest node. Set false on a
    # cluster that autoscales, where a node that fits may still come (max_wait_s bounds it).
    fail_unplaceable: bool = True


class RaySettings(_Section):
    """Where Ray runs: ``address=None`` starts (or joins) a local runtime."""

    address: str | None = None
    namespace: str = "rayml"


class ModelStoreSettings(_Section):
    """Where models live: a local directory by default, any fsspec URL on a cluster; which
    versions a request may pin; how many versions ``rayml models gc`` keeps."""

    root: str = ".rayml/models"
    allow_pickle: bool = False
    # `rayml models gc` keeps the newest keep_versions versions of each model, plus every
    # promoted one and the one served; it deletes the rest.
    keep_versions: int = Field(20, ge=1, le=1_000_000)
    # A request may pin (`model_version`) only a promoted version, or one saved outside
    # training jobs; true: any stored version (sweep trials, versions the gate held back).
    allow_unpromoted_pins: bool = False
    # A worker remembers a pinned version that does not exist, or may not be pinned, this long
    # (at most one store read per version and interval, however many batches pin it). Also how
    # long a version promoted right after a worker refused it may still be refused there.
    version_check_ttl_s: float = Field(2.0, gt=0, le=3600)


PromotePolicy = Literal["metric", "manual"]


class PromotionSettings(_Section):
    """Which newly trained versions are served (see docs/training.md, "The promotion gate").

    ``metric``: a new version is served when its held-out metric (the pipeline's
    ``@training(metric=..., mode=...)``) is no worse than the served version's, within
    ``tolerance``; the first version of a model is served (nothing to compare). ``manual``:
    every version, the first included, is stored and served only after ``rayml models promote
    NAME VERSION``. The gate fails closed: no finite metric on either side, not served.
    """

    promote: PromotePolicy = "metric"
    # How much worse (in the metric's own units) a new version may be and still be served.
    tolerance: float = Field(0.0, ge=0)
    # Per model overrides of `promote`, e.g. {"breast_cancer": "manual"}.
    models: dict[str, PromotePolicy] = Field(default_factory=dict)

    def policy(self, model: str) -> PromotePolicy:
        """The policy for ``model``: its override, else ``promote``.

        Example:
            >>> PromotionSettings(models={"iris": "manual"}).policy("iris")
            'manual'
        """
        return self.models.get(model, self.promote)


class AutoscaleSettings(_Section):
    """The pool autoscaler (:mod:`rayml.autoscaling.policy`, :mod:`rayml.autoscaling.controller`).

    Worker counts are per ingest actor (each ingest owns its pool). The pool grows to keep up
    with the input and drain any lag within ``target_lag_s``; Ray's cluster autoscaler adds
    nodes for workers that do not fit.
    """

    enabled: bool = False
    min_workers: int = Field(1, ge=1, le=10_000)
    max_workers: int = Field(8, ge=1, le=10_000)
    # Lag up to this many seconds of arrivals is normal (commit latency); a backlog beyond it
    # is drained within this many seconds.
    target_lag_s: float = Field(5.0, gt=0, le=86_400)
    # Optional second rule: in-flight records per worker (Ray Serve's ongoing-requests target).
    target_in_flight_per_worker: int | None = Field(None, ge=1)
    # A wish to grow (shrink) must hold this long before the pool changes: spikes and lulls
    # shorter than that are ridden out.
    upscale_delay_s: float = Field(3.0, ge=0, le=3600)
    downscale_delay_s: float = Field(60.0, ge=0, le=86_400)
    # Fraction of the way to the desired size taken per change (1: all the way).
    upscale_smoothing: float = Field(1.0, gt=0, le=1)
    downscale_smoothing: float = Field(1.0, gt=0, le=1)
    interval_s: float = Field(1.0, gt=0, le=600)
    # On a sharp burst (desired >= burst_factor x current) ask Ray's autoscaler for the nodes
    # of the whole desired pool at once (ray.autoscaler.sdk.request_resources); cleared when
    # the pool shrinks. (max_workers < min_workers is refused when the autoscaler starts.)
    request_resources: bool = True
    burst_factor: float = Field(2.0, ge=1, le=1000)


class RolloutSettings(_Section):
    """Rollouts of a candidate version (docs/rollouts.md): how quality is measured on live
    traffic, and the policy that promotes or aborts a rollout by itself.

    After ``min_labels`` labelled answers of *each* version, the candidate is promoted when its
    metric is no worse than the serving version's by more than ``tolerance``, its error rate
    no more than ``max_error_rate_increase`` above the serving version's, and its p99 compute
    time at most ``max_p99_ratio`` times the serving version's; otherwise it is aborted.
    """

    # false: decisions only by `rayml rollout promote|abort`; the figures are still kept.
    auto_decide: bool = True
    min_labels: int = Field(200, ge=1, le=10_000_000)
    tolerance: float = Field(0.0, ge=0.0, le=1.0)
    max_error_rate_increase: float = Field(0.01, ge=0.0, le=1.0)
    max_p99_ratio: float = Field(2.0, ge=1.0, le=1000.0)
    # The window the figures cover, and how far back a restarted executor reads the shadow
    # and feedback topics to rebuild them.
    window_s: float = Field(3600.0, gt=0, le=30 * 86_400)
    # Requests remembered per model for the join with labels (oldest forgotten first).
    max_tracked: int = Field(100_000, ge=100, le=10_000_000)
    # How often the monitor looks for a decision.
    interval_s: float = Field(2.0, gt=0, le=3600)
    # The monitor's budget: above this many answer records a second (a busy model under
    # rollout writes one or two per request), it keeps a sample of request ids (by a hash of
    # the id, the same for answers and labels), so its CPU stays bounded; below it, every one.
    monitor_max_answers_per_s: float = Field(2000.0, gt=0, le=10_000_000)
    # A shadow never delays callers: at most this many requests wait for a shadow batch; the
    # rest of the copy is skipped (counted) while the workers are busy.
    shadow_max_queued: int = Field(8192, ge=0, le=10_000_000)
    # A shadow batch running longer ends its worker (a caller's batch has batch_timeout_s).
    shadow_timeout_s: float = Field(10.0, gt=0, le=3600)


class TracingSettings(_Section):
    """Request tracing (:mod:`rayml.tracing`, docs/observability.md): W3C trace context carried
    from a request's Kafka headers through the ingest to its result, spans exported over
    OTLP/HTTP. Off (no cost: no header is read) while ``otlp_endpoint`` is unset."""

    # An OTLP/HTTP receiver, e.g. http://127.0.0.1:4318 (an OpenTelemetry Collector, Jaeger,
    # Tempo); "/v1/traces" is added when the URL has no path.
    otlp_endpoint: str | None = Field(None, pattern=r"^https?://[^\s/]+(/\S*)?$")
    # Requests whose traceparent is sampled (flag 01) are always traced; the others (no header,
    # or a parent not sampled) are traced at this ratio, decided by the trace id.
    sample_ratio: float = Field(0.01, ge=0, le=1)
    # At most this many requests traced per second per ingest, sampled parents included (a
    # caller can mark every request sampled); the others get their header echoed. A traced
    # request costs the ingest ~0.1-0.3 ms of CPU.
    max_traced_per_s: float = Field(100.0, gt=0, le=1_000_000)
    service_name: str = Field("rayml", min_length=1, max_length=200)


class Settings(BaseSettings):
    """The whole configuration of rayml."""

    model_config = SettingsConfigDict(
        env_prefix="RAYML_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    # Where local state goes: the local broker's data and jars, the default model store.
    state_dir: Path = Path(".rayml")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    models: ModelStoreSettings = Field(default_factory=ModelStoreSettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
    autoscale: AutoscaleSettings = Field(default_factory=AutoscaleSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    lanes: LaneSettings = Field(default_factory=LaneSettings)
    shares: ShareSettings = Field(default_factory=ShareSettings)
    # Empty: one default tenant over topics.input (and its bulk lane topics.input_batch) /
    # topics.jobs / topics.output.
    tenants: list[TenantSettings] = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _tenants_apart(self) -> Settings:
        """Tenants keep apart: distinct names; every tenant topic distinct from every other
        and from rayml's own; no reply prefix covers another's, nor any tenant's or rayml's
        topic (its ACL grants Create, Read and Delete under it). Kafka treats ``.`` and ``_``
        in topic names as colliding, so names are compared with them as one."""
        names = [t.name for t in self.tenants]
        if len(set(names)) != len(names):
            raise ValueError("tenants: two tenants have the same name")
        if not self.tenants:
            return self
        t = self.topics
        owner: dict[str, str] = {
            _canonical(topic): "rayml"
            for topic in (
                t.input,
                t.input_batch,
                t.output,
                t.jobs,
                t.dlq,
                t.models,
                t.registry,
                t.events,
                t.shadow,
                t.feedback,
            )
        }
        for tenant in self.tenants:
            for role, topic in (
                ("request", tenant.input_topic),
                ("bulk request", tenant.bulk_topic),
                ("training", tenant.training_topic),
                ("result", tenant.result_topic),
            ):
                if topic is None:
                    continue
                key = _canonical(topic)
                if key in owner:
                    raise ValueError(
                        f"tenants: {tenant.name}'s {role} topic {topic!r} is {owner[key]}'s "
                        "too (another tenant's, or one of rayml's own)"
                    )
                owner[key] = tenant.name
        prefixes = {tenant.name: _canonical(tenant.reply_prefix) for tenant in self.tenants}
        for name, prefix in prefixes.items():
            for other, other_prefix in prefixes.items():
                if other != name and other_prefix.startswith(prefix):
                    raise ValueError(
                        f"tenants: {name}'s reply prefix {prefix!r} covers {other}'s "
                        f"{other_prefix!r}"
                    )
            for key, topic_owner in owner.items():
                if key.startswith(prefix):
                    raise ValueError(
                        f"tenants: {name}'s reply prefix {prefix!r} covers a topic of "
                        f"{topic_owner}'s ({key!r}): the prefix's ACL would let it be read, "
                        "deleted or shadowed"
                    )
        return self

    # Set by load_settings(); not a setting itself.
    _config_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("RAYML_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(settings)"


_SECRET_WORDS = ("password", "secret", "token", "credential", "jaas")


def _may_echo(err: Any) -> bool:
    """Whether an error may quote the bad input: never a secret's, nor an unknown key's (a
    mistyped ``RAYML_KAFKA__SASL_PASWORD`` holds a password all the same)."""
    if err["type"] in ("missing", "extra_forbidden"):
        return False
    path = _field_path(err["loc"]).lower()
    return not any(word in path for word in _SECRET_WORDS)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings from overrides, ``RAYML_*`` variables and an optional TOML file.

    Args:
        config_file: A TOML file with the same tree (``[kafka]``, ``[topics]`` ...). Falls back
            to ``RAYML_CONFIG``.
        **overrides: Top-level sections or fields to force (CLI flags), as plain values or dicts.

    Raises:
        ConfigError: if any value is invalid; the message lists every bad field by its path.
    """
    previous = os.environ.get("RAYML_CONFIG")
    try:
        if config_file is not None:
            path = Path(config_file)
            if not path.is_file():
                raise ConfigError(f"config file {str(path)!r} does not exist")
            os.environ["RAYML_CONFIG"] = str(path)
        elif previous and not Path(previous).is_file():
            raise ConfigError(f"RAYML_CONFIG names {previous!r}, which does not exist")
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_field_path(err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            if _may_echo(err)
            else f"{_field_path(err['loc'])}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid rayml settings: {problems}") from exc
    finally:
        if config_file is not None:
            if previous is None:
                os.environ.pop("RAYML_CONFIG", None)
            else:
                os.environ["RAYML_CONFIG"] = previous
