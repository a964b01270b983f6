"""The tenants of the settings and the checks a request must pass. Pure: no Kafka, no Ray.

* :func:`tenants_of`: the configured tenants, or the one default tenant (``topics.input``,
  ``topics.jobs`` for training, ``topics.output``; any ``reply_to`` that is not rayml's own).
* :func:`own_topics`: rayml's own topics (input, output, jobs, dead letters, models, registry,
  events, and every tenant's request topics): never a ``reply_to``.
* :class:`Tenancy`: the tenant of a topic, and the refusals (``None`` when allowed).

Example:
    >>> from rayml.config import load_settings
    >>> t = Tenancy(load_settings())
    >>> t.of_topic("ml.pipeline.input").name
    'default'
    >>> t.reply_to_refusal(t.of_topic("ml.pipeline.input"), "ml.pipeline.registry")
    "reply_to 'ml.pipeline.registry' is one of rayml's own topics"
    >>> t.reply_to_refusal(t.of_topic("ml.pipeline.input"), "team-a.results") is None
    True
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from rayml.config import Settings, TenantSettings

__all__ = ["DEFAULT_TENANT", "Tenancy", "own_topics", "tenants_of"]

DEFAULT_TENANT = "default"


def tenants_of(settings: Settings) -> list[TenantSettings]:
    """The configured tenants, or the one default tenant when there are none."""
    if settings.tenants:
        return list(settings.tenants)
    t = settings.topics
    return [
        TenantSettings(
            name=DEFAULT_TENANT,
            input_topic=t.input,
            training_topic=t.jobs,
            result_topic=t.output,
            # Not used: the default tenant may name any topic but rayml's own.
            reply_prefix=".",
        )
    ]


def own_topics(settings: Settings) -> frozenset[str]:
    """rayml's own topics: none of them may be a ``reply_to``."""
    t = settings.topics
    own = {t.input, t.output, t.jobs, t.dlq, t.models, t.registry, t.events}
    for tenant in tenants_of(settings):
        own.add(tenant.input_topic)
        if tenant.training_topic:
            own.add(tenant.training_topic)
    return frozenset(own)


class Tenancy:
    """The tenants of ``settings``, by topic, and the checks of their requests."""

    def __init__(self, settings: Settings) -> None:
        self.tenants = tenants_of(settings)
        self.own = own_topics(settings)
        self._default = not settings.tenants
        self._by_input = {t.input_topic: t for t in self.tenants}
        self._by_training = {t.training_topic: t for t in self.tenants if t.training_topic}

    @property
    def input_topics(self) -> list[str]:
        """Every tenant's inference request topic (what the ingest subscribes to)."""
        return list(self._by_input)

    @property
    def training_topics(self) -> list[str]:
        """Every training request topic (what the job runner subscribes to)."""
        return list(self._by_training)

    def of_topic(self, topic: str) -> TenantSettings:
        """The tenant whose request topic ``topic`` is. Raises KeyError for any other topic."""
        found = self._by_input.get(topic) or self._by_training.get(topic)
        if found is None:
            raise KeyError(topic)
        return found

    def reply_to_refusal(self, tenant: TenantSettings, reply_to: str) -> str | None:
        """Why ``tenant`` may not have results written to ``reply_to`` (None: it may)."""
        if reply_to in self.own:
            return f"reply_to {reply_to!r} is one of rayml's own topics"
        if self._default or reply_to.startswith(tenant.reply_prefix):
            return None
        return f"reply_to {reply_to!r} is not under tenant {tenant.name!r}'s reply prefix"

    def pipeline_refusal(self, tenant: TenantSettings, pipeline: str) -> str | None:
        """Why ``tenant`` may not call ``pipeline`` (None: it may)."""
        if any(fnmatchcase(pipeline, pattern) for pattern in tenant.pipelines):
            return None
        return f"tenant {tenant.name!r} may not call pipeline {pipeline!r}"
