"""The tenants of the settings and the checks a request must pass. Pure: no Kafka, no Ray.

* :func:`tenants_of`: the configured tenants, or the one default tenant (``topics.input`` and
  its bulk lane ``topics.input_batch``, ``topics.jobs`` for training, ``topics.output``; any
  ``reply_to`` that is not rayml's own).
* :func:`own_topics`: rayml's own topics (input and its bulk lane, output, jobs, dead letters,
  models, registry, events, and every tenant's request topics): never a ``reply_to``.
* :class:`Tenancy`: the tenant of a topic and its lane (each tenant's inference requests come
  on two topics: its interactive ``input_topic`` and its bulk ``batch_topic``, read only as
  far as interactive work leaves room: :mod:`rayml.executor.intake`), and the refusals
  (``None`` when allowed): as reasons
  (``*_refusal``, a sentence) and as the errors a refused request is answered with (``check``,
  one call per request; ``refuse*``: :class:`~rayml.errors.RefusedError`, whose
  ``details["rule"]`` names the rule).

The checks run once per request where it is taken in (the ingest's triage, the job runner), each
a dict or set lookup: the tenant by topic, the ``reply_to`` against rayml's own topics and the
prefix, the pipeline against the tenant's patterns (remembered per tenant and name).

Example:
    >>> from rayml.config import load_settings
    >>> t = Tenancy(load_settings())
    >>> t.of_topic("ml.pipeline.input").name
    'default'
    >>> t.of_topic("ml.pipeline.input.batch").name, t.lane_of("ml.pipeline.input.batch")
    ('default', 'batch')
    >>> t.reply_to_refusal(t.of_topic("ml.pipeline.input"), "ml.pipeline.registry")
    "reply_to 'ml.pipeline.registry' is one of rayml's own topics"
    >>> t.reply_to_refusal(t.of_topic("ml.pipeline.input"), "team-a.results") is None
    True
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from rayml.config import Settings, TenantSettings
from rayml.errors import (
    PipelineRefusedError,
    RefusedError,
    ReplyToRefusedError,
    TenantMismatchError,
    TrainingRefusedError,
    WrongTopicError,
)

__all__ = ["DEFAULT_TENANT", "LANES", "Lane", "Tenancy", "own_topics", "tenants_of"]

DEFAULT_TENANT = "default"

#: Which of a tenant's two inference topics a request came on: its interactive one
#: (``input_topic``) or its bulk one (``batch_topic``).
Lane = Literal["interactive", "batch"]
LANES: tuple[Lane, ...] = ("interactive", "batch")

# Pipeline checks remembered (per tenant and pipeline name) at most; then forgotten at once
# (hostile requests may name a fresh pipeline each time).
_MAX_REMEMBERED = 4096


def tenants_of(settings: Settings) -> list[TenantSettings]:
    """The configured tenants, or the one default tenant when there are none."""
    if settings.tenants:
        return list(settings.tenants)
    t = settings.topics
    return [
        TenantSettings(
            name=DEFAULT_TENANT,
            input_topic=t.input,
            batch_topic=t.input_batch,
            training_topic=t.jobs,
            result_topic=t.output,
            # Not used: the default tenant may name any topic but rayml's own.
            reply_prefix=".",
        )
    ]


def own_topics(settings: Settings) -> frozenset[str]:
    """rayml's own topics: none of them may be a ``reply_to``."""
    t = settings.topics
    own = {t.input, t.output, t.jobs, t.dlq, t.models, t.registry, t.events, t.shadow, t.feedback}
    own.add(t.input_batch)
    for tenant in tenants_of(settings):
        own.add(tenant.input_topic)
        own.add(tenant.bulk_topic)
        if tenant.training_topic:
            own.add(tenant.training_topic)
    return frozenset(own)


class Tenancy:
    """The tenants of ``settings``, by topic, and the checks of their requests."""

    def __init__(self, settings: Settings) -> None:
        self.tenants = tenants_of(settings)
        self.own = own_topics(settings)
        self._default = not settings.tenants
        # Both lanes of every tenant's inference requests, each topic with its lane.
        self._by_input = {t.input_topic: t for t in self.tenants}
        self._by_input.update({t.bulk_topic: t for t in self.tenants})
        self._lanes: dict[str, Lane] = {t.input_topic: "interactive" for t in self.tenants}
        self._lanes.update({t.bulk_topic: "batch" for t in self.tenants})
        self._by_training = {t.training_topic: t for t in self.tenants if t.training_topic}
        self._by_result = {t.result_topic: t for t in self.tenants}
        self._allowed: dict[tuple[str, str], bool] = {}

    @property
    def input_topics(self) -> list[str]:
        """Every tenant's inference request topics, both lanes (what the ingest subscribes
        to): the interactive topics first, then the bulk ones."""
        return list(self._by_input)

    @property
    def batch_topics(self) -> list[str]:
        """Every tenant's bulk lane."""
        return [t.bulk_topic for t in self.tenants]

    @property
    def training_topics(self) -> list[str]:
        """Every training request topic (what the job runner subscribes to)."""
        return list(self._by_training)

    @property
    def result_topics(self) -> list[str]:
        """Every tenant's result topic."""
        return list(self._by_result)

    def of_topic(self, topic: str) -> TenantSettings:
        """The tenant whose request topic ``topic`` is (either lane, or training). Raises
        KeyError for any other topic."""
        found = self._by_input.get(topic) or self._by_training.get(topic)
        if found is None:
            raise KeyError(topic)
        return found

    def lane_of(self, topic: str) -> Lane:
        """The lane of an inference request topic: ``"interactive"`` (a tenant's
        ``input_topic``) or ``"batch"`` (its bulk topic). Raises KeyError for any other topic
        (a training topic has no lanes)."""
        return self._lanes[topic]

    def reply_to_refusal(self, tenant: TenantSettings, reply_to: str) -> str | None:
        """Why ``tenant`` may not have results written to ``reply_to`` (None: it may)."""
        if reply_to in self.own:
            return f"reply_to {reply_to!r} is one of rayml's own topics"
        other = self._by_result.get(reply_to)
        if other is not None and other is not tenant:
            return f"reply_to {reply_to!r} is tenant {other.name!r}'s result topic"
        if self._default or reply_to.startswith(tenant.reply_prefix):
            return None
        if reply_to == tenant.result_topic:
            return None  # where its results go anyway
        return f"reply_to {reply_to!r} is not under tenant {tenant.name!r}'s reply prefix"

    def pipeline_refusal(self, tenant: TenantSettings, pipeline: str) -> str | None:
        """Why ``tenant`` may not call ``pipeline`` (None: it may)."""
        if self._may_call(tenant, pipeline):
            return None
        return f"tenant {tenant.name!r} may not call pipeline {pipeline!r}"

    def _may_call(self, tenant: TenantSettings, pipeline: str) -> bool:
        key = (tenant.name, pipeline)
        allowed = self._allowed.get(key)
        if allowed is None:
            allowed = any(fnmatchcase(pipeline, pattern) for pattern in tenant.pipelines)
            if len(self._allowed) >= _MAX_REMEMBERED:
                self._allowed.clear()
            self._allowed[key] = allowed
        return allowed

    # -- the errors a refused request is answered with -------------------------------------

    def check(
        self, topic: str, reply_to: str | None, claimed: str | None, pipeline: str
    ) -> tuple[TenantSettings, RefusedError | None]:
        """The tenant of a request on ``topic``, and the error it is refused with (None: none).

        One call per request where it is taken in, in this order: its ``reply_to``
        (:meth:`refuse_reply_to`; a :class:`~rayml.errors.ReplyToRefusedError` is answered on
        the tenant's result topic), its ``tenant`` field, its pipeline (:meth:`refuse`). The
        allowed path is a few dict and set lookups; the kind of work is checked once the
        pipeline is known (:meth:`refuse_kind`). Raises KeyError for a topic of no tenant.
        """
        tenant = self._by_input.get(topic) or self._by_training[topic]
        if reply_to is not None and (
            reply_to in self.own
            or reply_to in self._by_result
            or not (self._default or reply_to.startswith(tenant.reply_prefix))
        ):
            refused_reply = self.refuse_reply_to(tenant, reply_to)
            if refused_reply is not None:
                return tenant, refused_reply
        if claimed is not None and claimed != tenant.name:
            return tenant, TenantMismatchError(tenant.name, claimed, topic)
        allowed = self._allowed.get((tenant.name, pipeline))
        if allowed is None:
            allowed = self._may_call(tenant, pipeline)
        if not allowed:
            return tenant, PipelineRefusedError(tenant.name, pipeline)
        return tenant, None

    def refuse_reply_to(
        self, tenant: TenantSettings, reply_to: str | None
    ) -> ReplyToRefusedError | None:
        """The error of a ``reply_to`` that ``tenant`` may not name (None: none, or allowed).

        A refused request is answered on the tenant's result topic, never on ``reply_to``.
        """
        if not reply_to:
            return None
        why = self.reply_to_refusal(tenant, reply_to)
        if why is None:
            return None
        return ReplyToRefusedError(
            tenant.name, reply_to, f"{why}; the result is on {tenant.result_topic!r}"
        )

    def refuse(
        self, tenant: TenantSettings, topic: str, claimed: str | None, pipeline: str
    ) -> RefusedError | None:
        """The error of a request on ``topic`` that claims tenant ``claimed`` and calls
        ``pipeline``, if ``tenant`` may not send it (None: it may).

        Checked: the ``tenant`` field (absent, or the topic's tenant), then the pipeline
        against the tenant's patterns -- before the registry is asked, so that a refused
        tenant learns nothing of which pipelines exist.
        """
        if claimed is not None and claimed != tenant.name:
            return TenantMismatchError(tenant.name, claimed, topic)
        if not self._may_call(tenant, pipeline):
            return PipelineRefusedError(tenant.name, pipeline)
        return None

    def refuse_kind(
        self, tenant: TenantSettings, topic: str, pipeline: str, kind: str
    ) -> RefusedError | None:
        """The error of a ``kind`` pipeline's request on ``topic`` if it belongs on the other
        request topic (None: it belongs here).

        Training requests go to the tenant's training topic (none: it may not train);
        inference requests to its input topic or its bulk lane.
        """
        if kind == "training":
            if topic == tenant.training_topic:
                return None
            if tenant.training_topic is None:
                return TrainingRefusedError(tenant.name, pipeline)
            return WrongTopicError(tenant.name, pipeline, kind, topic, tenant.training_topic)
        if topic == tenant.input_topic or topic == tenant.bulk_topic:
            return None
        return WrongTopicError(tenant.name, pipeline, kind, topic, tenant.input_topic)
