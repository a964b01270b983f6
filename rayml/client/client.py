"""The Python client: send requests to rayml, get results back as futures.

Example:
    >>> import rayml
    >>> with rayml.Client("127.0.0.1:9092") as client:                    # doctest: +SKIP
    ...     future = client.submit("iris.predict", features=[5.1, 3.5, 1.4, 0.2])
    ...     print(future.result(timeout=30).result)
    {'label': 0, 'probability': 1.0}

**How replies find their client.** Every :class:`Client` has a *reply topic* of its own,
``<input topic>.reply.<client id>`` (one partition, one hour retention), created the first time
it sends and deleted when it closes. Each request carries ``reply_to`` = that topic, so the
executor writes the result there, keyed by the request id. One background thread per client
reads the reply topic and completes the waiting future by id (:mod:`rayml.client.futures`).

So a client reads only its own results: a thousand clients on the platform do not each read
everyone's output, and the shared output topic (``ml.pipeline.output``) stays for services that
do not set ``reply_to``. The reply thread is also assigned its topic *before* the first request
leaves, so no result can arrive unseen.

The cost is one topic per client instance (and a topic create/delete per client lifetime).
That suits notebooks, scripts and long-lived services. For thousands of short-lived clients --
one per web request, say -- pass ``reply_topic="my-service.replies"``: all instances of the
service share that topic (created if missing, never deleted by the client), each reads it from
its current end and ignores results it is not waiting for. Results to a ``reply_to`` topic that
does not exist (deleted, or never created) go to the output topic instead, so none is lost.
With a broker that auto-creates topics, a result arriving after its client closed recreates the
deleted topic; rayml's brokers should run with ``auto.create.topics.enable=false``.

Params are checked against the pipeline's published JSON Schema before sending
(:mod:`rayml.client.pipelines`); training jobs are followed through their status events
(:mod:`rayml.client.training`); :class:`rayml.client.async_client.AsyncClient` is the asyncio form.

**Topics.** Inference requests go to ``settings.topics.input`` (the interactive lane), or
with ``priority="batch"`` to the bulk lane beside it (``batch_topic``, default
``settings.topics.input_batch``, which follows ``topics.input`` unless set:
``<input>.batch``). The executor reads the bulk lane only as far as interactive work leaves
room (docs/service.md, "Priority lanes and tenant shares"): use it for backfills and bulk
re-scoring, so that they never queue interactive callers behind them. Training requests go to
the training topic (``training_topic``, default ``settings.topics.jobs``): training is a right
of its own, on a topic Kafka's ACLs guard apart from inference (docs/security.md). A tenant's
clients use its topics (e.g. ``RAYML_TOPICS__INPUT=team-a.requests``, whose bulk lane is then
``team-a.requests.batch`` unless the tenant names its ``batch_topic``: then
``RAYML_TOPICS__INPUT_BATCH`` or ``batch_topic=``; ``training_topic="team-a.training"``) and a
``reply_topic`` under its reply prefix; the executor refuses a ``reply_to`` outside it,
answering on the tenant's result topic.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal, overload

from confluent_kafka import KafkaError, KafkaException
from pydantic import ValidationError

from rayml.client.batch import submit_batch
from rayml.client.errors import ClientClosedError, DeliveryFailedError, PipelineNotServedError
from rayml.client.futures import PendingReplies, RequestFuture
from rayml.client.kafka import check_reachable, read_to_end
from rayml.client.pipelines import ParamsChecker, PipelineInfo, to_wire
from rayml.client.replies import ClientResources, ReplyReader, release
from rayml.client.training import TrainingJob, start_training
from rayml.config import KafkaSettings, Settings, load_settings
from rayml.errors import ConfigError, InvalidRequestError, UnknownPipelineError
from rayml.kafka import clients as kafka_clients
from rayml.models.promotion import ServingRecord
from rayml.protocol.envelopes import Request, Result, encode_request
from rayml.protocol.leases import has_leases, is_lease_key, live_pipelines
from rayml.protocol.training import ModelAnnouncement, decode_announcement
from rayml.tenancy.rules import LANES, Lane
from rayml.tracing import request_trace_headers

logger = logging.getLogger(__name__)

__all__ = ["Client", "RequestFuture"]

# Least time between two registry reads triggered by a name the client does not know.
_REFRESH_INTERVAL_S = 1.0


def resolve_settings(bootstrap_servers: str | None, settings: Settings | None) -> Settings:
    """Settings from ``RAYML_*``/the config file, with ``bootstrap_servers`` overriding.

    Raises:
        ConfigError: ``bootstrap_servers`` is not a comma-separated list of host:port.
    """
    base = settings if settings is not None else load_settings()
    if bootstrap_servers is None:
        return base
    try:
        kafka = KafkaSettings.model_validate(
            {**base.kafka.model_dump(), "bootstrap_servers": bootstrap_servers}
        )
    except ValidationError as exc:
        raise ConfigError(
            f"invalid bootstrap_servers {bootstrap_servers!r}: expected host:port[,host:port...]"
        ) from exc
    return base.model_copy(update={"kafka": kafka})


class Client:
    """Sends requests to rayml pipelines and completes their futures from its reply topic.

    Args:
        bootstrap_servers: Kafka ``host:port[,...]``; default: the settings
            (``RAYML_KAFKA__BOOTSTRAP_SERVERS`` or the config file).
        settings: Full settings (topics, security); default: :func:`rayml.load_settings`.
        reply_topic: A reply topic shared with other instances (see the module docstring);
            default: a topic of this client's own, deleted on :meth:`close`.
        tenant: Tenant written into every request (optional: the executor takes a request's
            tenant from its topic, and refuses one that names another).
        validate: Check params against the published schemas before sending.
        connect_timeout_s: How long to wait for the broker at start and for admin calls.
        client_id: Names the client's reply topic and Kafka client ids; random by default.
        training_topic: Where :meth:`train` sends training requests; default
            ``settings.topics.jobs``.
        batch_topic: Where requests with ``priority="batch"`` go (the bulk lane); default
            ``settings.topics.input_batch``.

    Raises:
        BrokerUnreachableError: No bootstrap server answered within ``connect_timeout_s``.
        ConfigError: ``bootstrap_servers`` is malformed.

    Example:
        >>> with Client("127.0.0.1:9092") as client:                     # doctest: +SKIP
        ...     [p.name for p in client.pipelines()]
        ['breast_cancer.predict', 'breast_cancer.train', 'iris.predict', 'iris.train']
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        settings: Settings | None = None,
        reply_topic: str | None = None,
        tenant: str | None = None,
        validate: bool = True,
        connect_timeout_s: float = 10.0,
        client_id: str | None = None,
        training_topic: str | None = None,
        batch_topic: str | None = None,
    ) -> None:
        self.settings = resolve_settings(bootstrap_servers, settings)
        self.training_topic = training_topic or self.settings.topics.jobs
        self.batch_topic = batch_topic or self.settings.topics.input_batch
        self.client_id = client_id or uuid.uuid4().hex[:12]
        self.tenant = tenant
        self.validate = validate
        self.timeout_s = connect_timeout_s
        prefix = self.settings.topics.input[: 249 - len(".reply.") - len(self.client_id)]
        self.reply_topic = reply_topic or f"{prefix}.reply.{self.client_id}"
        kafka = self.settings.kafka
        # librdkafka reports why it cannot connect (authentication, TLS) only to error_cb.
        connect_errors: list[KafkaError] = []
        admin = kafka_clients.admin_client(
            kafka, **{"client.id": self._kafka_id("admin"), "error_cb": connect_errors.append}
        )
        check_reachable(admin, kafka, connect_timeout_s, connect_errors)
        self._producer = kafka_clients.producer(kafka, **{"client.id": self._kafka_id("producer")})
        self._pending = PendingReplies()
        self._resources = ClientResources(
            admin=admin,
            producer=self._producer,
            pending=self._pending,
            reply_topic=self.reply_topic,
            owns_reply_topic=reply_topic is None,
        )
        self._release = weakref.finalize(self, release, self._resources)
        self._lock = threading.Lock()
        self._catalog: dict[str, PipelineInfo] | None = None
        self._checkers: dict[str, ParamsChecker] = {}
        self._catalog_read_at = 0.0
        self._closed = False

    # -- sending --------------------------------------------------------------------------

    def submit(
        self, pipeline: str, /, *, priority: Lane = "interactive", **params: Any
    ) -> RequestFuture:
        """Send one request; return the future of its :class:`~rayml.protocol.envelopes.Result`.

        ``priority="batch"`` sends it on the bulk lane (:attr:`batch_topic`), which the
        executor reads only as far as interactive work leaves room. (A pipeline whose params
        include one named ``priority`` takes it through :meth:`request`.)

        Raises:
            InvalidParamsError: The params do not match the pipeline's schema (nothing sent);
                the message names each bad field (``params.features``).
            UnknownPipelineError: No executor has published a pipeline of that name.
            ClientClosedError: The client is closed.

        Example:
            >>> client.submit("iris.predict", features=[5.1, 3.5, 1.4, 0.2]).result(30).status
            'ok'
            >>> client.submit("iris.predict", priority="batch", features=[5.1, 3.5, 1.4, 0.2]
            ...               ).result(300).status
            'ok'
        """
        return self.request(pipeline, params, priority=priority)

    def request(
        self,
        pipeline: str,
        params: Mapping[str, Any] | None = None,
        *,
        request_id: str | None = None,
        model_version: str | None = None,
        deadline: datetime | None = None,
        tenant: str | None = None,
        validate: bool | None = None,
        topic: str | None = None,
        priority: Lane = "interactive",
    ) -> RequestFuture:
        """Send one request with every envelope option; :meth:`submit` is the short form.

        Args:
            pipeline: A registered pipeline name.
            params: Its parameters (numpy values are converted).
            request_id: Unique id (default: random); the result's key.
            model_version: Pin a model version (default: the newest).
            deadline: After it, the executor answers ``deadline_exceeded`` instead of running.
            tenant: Overrides the client's tenant.
            validate: Overrides the client's ``validate``.
            topic: Where to send it (default: by ``priority``; :meth:`train` sends to the
                training topic).
            priority: ``"interactive"`` (``settings.topics.input``) or ``"batch"`` (the bulk
                lane, :attr:`batch_topic`).

        Raises:
            InvalidParamsError, UnknownPipelineError: See :meth:`submit`.
            InvalidRequestError: An envelope field (id, deadline) or ``priority`` is
                malformed.
        """
        self._check_open()
        topic = topic or self.lane_topic(priority)
        check = self.validate if validate is None else validate
        wire = (
            self.check_params(pipeline, params or {}) if check else to_wire(pipeline, params or {})
        )
        return self.send_checked(
            pipeline,
            wire,
            request_id,
            model_version,
            deadline,
            tenant,
            topic=topic,
            priority=priority,
        )

    def submit_many(
        self,
        pipeline: str,
        params: Iterable[Mapping[str, Any]],
        *,
        max_in_flight: int = 1000,
        progress: bool = True,
        timeout_s: float | None = None,
        model_version: str | None = None,
        priority: Lane = "interactive",
    ) -> list[Result]:
        """Send many requests with at most ``max_in_flight`` unanswered; results in input order.

        A list (any sequence) is checked as a whole before the first request goes out, so a
        bad item sends nothing. Other iterables are read lazily (a generator over a large file
        never sits in memory) and checked as they are read.

        Args:
            pipeline: A registered pipeline name.
            params: One params mapping per request.
            max_in_flight: Requests sent but not yet answered, at most.
            progress: Show a progress bar (tqdm) with ok/error counts.
            timeout_s: For the whole batch; ``None`` waits as long as it takes.
            model_version: Pin a model version for every request.
            priority: ``"batch"`` sends them on the bulk lane (a backfill that must not queue
                interactive callers behind it); default ``"interactive"``.

        Raises:
            ResultTimeoutError: Not every result came within ``timeout_s`` (``missing`` says
                how many did not).
            InvalidParamsError, UnknownPipelineError: See :meth:`submit`.

        Example:
            >>> rows = [{"features": [5.1, 3.5, 1.4, 0.2]}] * 1000
            >>> results = client.submit_many("iris.predict", rows)
            >>> sum(r.status == "ok" for r in results)
            1000
        """
        return submit_batch(
            self,
            pipeline,
            params,
            max_in_flight=max_in_flight,
            progress=progress,
            timeout_s=timeout_s,
            model_version=model_version,
            priority=priority,
        )

    def send_checked(
        self,
        pipeline: str,
        wire: dict[str, Any],
        request_id: str | None,
        model_version: str | None,
        deadline: datetime | None,
        tenant: str | None,
        *,
        topic: str | None = None,
        priority: Lane = "interactive",
    ) -> RequestFuture:
        """Send params already made wire-ready by :meth:`check_params` (or ``to_wire``), to
        ``topic`` (default: ``priority``'s lane, :meth:`lane_topic`)."""
        topic = topic or self.lane_topic(priority)
        replies = self._reply_reader()
        try:
            request = Request(
                id=request_id or uuid.uuid4().hex,
                pipeline=pipeline,
                params=wire,
                reply_to=self.reply_topic,
                deadline=deadline,
                model_version=model_version,
                tenant=tenant or self.tenant,
                sent_at_ms=int(time.time() * 1000),
            )
        except ValidationError as exc:
            raise InvalidRequestError(
                f"invalid request to pipeline {pipeline!r}: {exc.errors()[0]['msg']}",
                {"pipeline": pipeline},
            ) from exc
        # Each request starts a trace (in the caller's own, when it has a current span).
        headers, trace_id = request_trace_headers(f"rayml.send {pipeline}")
        # Registered before it is produced: the reply cannot overtake its own registration.
        future = self._pending.add(request.id, pipeline)
        future.trace_id = trace_id
        value = encode_request(request)
        while True:
            try:
                self._producer.produce(
                    topic,
                    key=request.id.encode(),
                    value=value,
                    headers=headers,
                    on_delivery=replies.delivered,
                )
                return future
            except BufferError:
                # librdkafka's local queue is full: let delivery reports drain it.
                self._producer.poll(0.05)
            except KafkaException as exc:
                self._pending.discard(request.id)
                raise DeliveryFailedError(request.id, topic, str(exc)) from exc

    def lane_topic(self, priority: Lane) -> str:
        """Where requests of ``priority`` go: ``settings.topics.input`` for ``"interactive"``,
        :attr:`batch_topic` for ``"batch"``.

        Raises:
            InvalidRequestError: ``priority`` is neither.
        """
        if priority == "interactive":
            return self.settings.topics.input
        if priority == "batch":
            return self.batch_topic
        raise InvalidRequestError(
            f"priority must be one of {', '.join(map(repr, LANES))}, got {priority!r}",
            {"priority": str(priority)},
        )

    # -- pipelines and models -----------------------------------------------------------------

    def pipelines(self) -> list[PipelineInfo]:
        """The pipelines the executors published, with parameter schemas, sorted by name.

        Reads the compacted registry topic from its beginning to its current end.

        Example:
            >>> [(p.name, p.kind, p.required) for p in client.pipelines()][:1]
            [('breast_cancer.predict', 'inference', ['features'])]
        """
        self._check_open()
        records = read_to_end(self.settings.kafka, self.settings.topics.registry, self.timeout_s)
        # Which executors serve what now (their leases; none at all: older executors).
        now_ms = int(time.time() * 1000)
        live = live_pipelines(records, now_ms) if has_leases(records, now_ms) else None
        catalog: dict[str, PipelineInfo] = {}
        for key, value in records.items():
            if value is None or is_lease_key(key):
                continue  # a tombstone (the pipeline was withdrawn), or a lease
            try:
                info = PipelineInfo.from_description(json.loads(value))
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning("registry record %r is not a pipeline description: %s", key, exc)
                continue
            served_by = None if live is None else live.get(info.name, [])
            catalog[info.name] = dataclasses.replace(info, served_by=served_by)
        with self._lock:
            self._catalog = catalog
            self._checkers = {}
            self._catalog_read_at = time.monotonic()
        return [catalog[name] for name in sorted(catalog)]

    def pipeline(self, name: str) -> PipelineInfo:
        """One pipeline's description.

        Raises:
            UnknownPipelineError: No executor has published it.
        """
        return self._checker(name).info

    def models(self) -> list[ModelAnnouncement]:
        """The served version of every model, with its metrics, sorted by name.

        Reads the compacted models topic (``ml.models``), where each model's serving record
        names the version served (a trained version the promotion gate held back is not
        there). A model copied into the store by hand is served but not listed here;
        ``rayml models`` lists the store itself.
        """
        self._check_open()
        records = read_to_end(self.settings.kafka, self.settings.topics.models, self.timeout_s)
        found = [a for v in records.values() if (a := decode_announcement(v)) is not None]
        return sorted(found, key=lambda a: a.name)

    # -- training -----------------------------------------------------------------------------

    @overload
    def train(
        self,
        pipeline: str,
        /,
        *,
        wait: Literal[True] = ...,
        progress: bool = ...,
        timeout_s: float | None = ...,
        **params: Any,
    ) -> Result: ...

    @overload
    def train(
        self,
        pipeline: str,
        /,
        *,
        wait: Literal[False],
        progress: bool = ...,
        timeout_s: float | None = ...,
        **params: Any,
    ) -> TrainingJob: ...

    def train(
        self,
        pipeline: str,
        /,
        *,
        wait: bool = True,
        progress: bool = True,
        timeout_s: float | None = None,
        **params: Any,
    ) -> Result | TrainingJob:
        """Start a training job; by default follow it with a progress bar and return its result.

        A sweep is one call: ``client.train("iris.train", grid={"max_depth": [2, 4]})``. The
        request goes to the training topic (:attr:`training_topic`), which the job runner reads.

        Args:
            pipeline: A training pipeline.
            wait: Follow the job to its end and return its Result; ``False`` returns a
                :class:`~rayml.client.training.TrainingJob` at once (``job.wait()`` later).
            progress: Show a progress bar fed by the job's status events.
            timeout_s: How long to wait (``wait=True`` only).
            **params: The pipeline's parameters (and ``grid``/``sweep``).

        Raises:
            ResultTimeoutError: ``wait`` and no result within ``timeout_s``.
            InvalidParamsError, UnknownPipelineError: As for :meth:`submit`.
            InvalidRequestError: ``pipeline`` is an inference pipeline.

        Example:
            >>> result = client.train("breast_cancer.train", n_estimators=50)
            >>> result.result["version"], result.result["metrics"]["accuracy"] > 0.9
            ('000001', True)
        """
        job = start_training(self, pipeline, params, follow=wait)
        if not wait:
            return job
        return job.wait(timeout_s=timeout_s, progress=progress)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the reply thread, fail unanswered futures, delete the own reply topic.

        Requests already handed to the producer are flushed (for up to ``timeout_s``) so that
        they reach the executor even though their results will not be read. Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._resources.timeout_s = timeout_s
        self._release()  # runs release() once, here or at garbage collection, never twice

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def stats(self) -> dict[str, Any]:
        """In-flight, completed, duplicate and foreign result counts."""
        return {
            "client_id": self.client_id,
            "reply_topic": self.reply_topic,
            **self._pending.stats(),
        }

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"Client({self.settings.kafka.bootstrap_servers!r}, "
            f"reply_topic={self.reply_topic!r}, {state})"
        )

    def start_replies(self) -> None:
        """Create the reply topic and start reading it now, instead of on the first send.

        Useful to pay the topic creation up front, and with a shared reply topic, to start
        reading it at a known point.
        """
        self._reply_reader()

    def check_params(self, pipeline: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Params checked against ``pipeline``'s schema, as the wire will carry them."""
        return self._checker(pipeline).check(params)

    # -- internals ------------------------------------------------------------------------------

    def _kafka_id(self, role: str) -> str:
        return f"rayml-client-{self.client_id}-{role}"

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError()

    def _checker(self, pipeline: str) -> ParamsChecker:
        checker = self._checkers.get(pipeline)
        if checker is not None:
            return checker
        with self._lock:
            catalog = self._catalog
            stale = time.monotonic() - self._catalog_read_at > _REFRESH_INTERVAL_S
        if catalog is None or (pipeline not in catalog and stale):
            # First use, or a pipeline published since the last read.
            self.pipelines()
            with self._lock:
                catalog = self._catalog or {}
        info = catalog.get(pipeline)
        if info is None:
            error = UnknownPipelineError(pipeline, list(catalog))
            if not catalog:
                error.add_note(
                    f"No pipelines are published on {self.settings.topics.registry!r}: is an "
                    f"executor running with these topics? (Client(validate=False) skips checks.)"
                )
            raise error
        if not info.live:
            # Not cached: the next send reads the registry again, in case one has started.
            with self._lock:
                self._catalog_read_at = 0.0
            raise PipelineNotServedError(pipeline, self.settings.topics.registry)
        checker = ParamsChecker(info)
        with self._lock:
            self._checkers[pipeline] = checker
        return checker

    def _sends_without_io(self, pipeline: str) -> bool:
        """Whether sending to ``pipeline`` now needs no broker round trip (for AsyncClient)."""
        ready = self._resources.replies is not None
        return ready and (not self.validate or pipeline in self._checkers)

    def _reply_reader(self) -> ReplyReader:
        replies = self._resources.replies
        if replies is not None:
            return replies
        with self._lock:
            self._check_open()
            res = self._resources
            if res.replies is None:
                res.replies = ReplyReader(
                    self.settings,
                    self.reply_topic,
                    admin=res.admin,
                    producer=res.producer,
                    pending=res.pending,
                    own_topic=res.owns_reply_topic,
                    client_id=self.client_id,
                    timeout_s=self.timeout_s,
                )
            return res.replies

    # -- which version is served ----------------------------------------------------------------

    def promote(
        self, model: str, version: str | int, *, reason: str | None = None
    ) -> ServingRecord:
        """Serve ``version`` of ``model`` from now on (``rayml models promote``).

        Marks the version promoted in the model store (``settings.models.root``: this needs
        write access to it), then writes the model's serving record to the models topic: this
        needs Write on that topic, which is how Kafka's ACLs decide who may promote. Every
        executor serves it within about a second. See :mod:`rayml.client.promotion`.

        Returns:
            The :class:`~rayml.models.promotion.ServingRecord` written.

        Raises:
            VersionNotFoundError: No such version in the store.
            RaymlError: The models topic could not be read or written.
        """
        from rayml.client.promotion import promote

        self._check_open()
        return promote(self.settings, model, version, reason=reason, timeout_s=self.timeout_s)

    def rollback(self, model: str) -> ServingRecord:
        """Serve the version of ``model`` served before the current one (``rayml models
        rollback``); needs Write on the models topic.

        Returns:
            The :class:`~rayml.models.promotion.ServingRecord` written.

        Raises:
            NothingToRollBackError: No earlier served version is left.
            RaymlError: The models topic could not be read or written.
        """
        from rayml.client.promotion import rollback

        self._check_open()
        return rollback(self.settings, model, timeout_s=self.timeout_s)

    # -- rollouts (docs/rollouts.md) -----------------------------------------------------------

    def start_rollout(
        self,
        model: str,
        version: str | int,
        mode: Literal["shadow", "canary"] = "shadow",
        *,
        fraction: float | None = None,
        reason: str | None = None,
    ) -> ServingRecord:
        """Roll ``version`` of ``model`` out beside the served one (``rayml rollout start``):
        a ``"shadow"`` runs on a copy of the traffic and answers no one; a ``"canary"``
        answers ``fraction`` of the requests (by a hash of their id). Needs Write on the models
        topic and on the model store. See :func:`rayml.client.rollouts.start_rollout`.
        """
        from rayml.client.rollouts import start_rollout

        self._check_open()
        return start_rollout(
            self.settings,
            model,
            version,
            mode,
            fraction=fraction,
            reason=reason,
            timeout_s=self.timeout_s,
        )

    def rollout_status(self, model: str | None = None) -> list[dict[str, Any]]:
        """Each rollout (or ``model``'s, with or without one): its candidate, live figures per
        version (answers, errors, labelled, accuracy, p50/p99 compute), the two versions'
        agreement, each version's drift (PSI per input feature and of the output against its
        training reference) and what the policy would decide now (``rayml rollout status
        --json``), rebuilt from the shadow, feedback and models topics."""
        from rayml.rollouts.status import rollout_status

        self._check_open()
        return rollout_status(self.settings, model, self.timeout_s)

    def promote_rollout(self, model: str, *, reason: str | None = None) -> ServingRecord:
        """Serve ``model``'s rollout candidate from now on (``rayml rollout promote``)."""
        from rayml.client.rollouts import promote_rollout

        self._check_open()
        return promote_rollout(self.settings, model, reason=reason, timeout_s=self.timeout_s)

    def abort_rollout(self, model: str, *, reason: str | None = None) -> ServingRecord:
        """End ``model``'s rollout; the served version stays (``rayml rollout abort``)."""
        from rayml.client.rollouts import abort_rollout

        self._check_open()
        return abort_rollout(self.settings, model, reason=reason, timeout_s=self.timeout_s)
