"""The user contract for pipelines: what a pipeline author imports.

This subpackage owns everything between rayml and a user's pipeline function: how a function is
declared a pipeline (the :func:`inference` and :func:`training` decorators and the checks they
run), what describes one (:class:`PipelineSpec`, :class:`Resources`), what it receives and returns
(:class:`TrainingContext`, :class:`TrainedModel`), how rayml calls it (:func:`run_inference`,
:func:`run_training`), and how pipelines are found by name (:class:`Registry`,
:data:`default_registry`, discovery and :func:`load_spec_by_path`). It is pure: it imports neither
``ray`` nor ``confluent_kafka``, so pipelines can be written and unit-tested as plain Python, and
the ingest can import them to validate requests cheaply.

The names below are the public API; import them from here. They are defined in small modules:

* :mod:`rayml.pipeline.spec` -- :class:`PipelineSpec`, :class:`Pool` (an inference pipeline's own
  worker pool), :class:`Resources`, :func:`get_spec`;
* :mod:`rayml.pipeline.contract` -- :class:`InferenceContext`, :class:`TrainingContext`,
  :class:`TrainedModel`,
  :func:`run_inference`, :func:`run_training`;
* :mod:`rayml.pipeline.registry` -- :class:`Registry`, :data:`default_registry`,
  :func:`load_spec_by_path`, :func:`validate_spec_params`;
* :mod:`rayml.pipeline.signatures` -- the checks the decorators run when applied;
* :mod:`rayml.pipeline.decorators` -- :func:`inference`, :func:`training`.

Those modules import one another, never this package. The decorators add to
``rayml.pipeline.registry.default_registry`` as it is when they are applied: replace it there (as
tests do), not here. The former import path ``rayml.registry`` (deprecated: it warns) exports the
same objects as this package.

Example:
    >>> from pydantic import BaseModel
    >>> from rayml.pipeline import Registry, inference, run_inference
    >>> class Echo(BaseModel):
    ...     text: str
    >>> reg = Registry()
    >>> @inference("demo.echo", model="echo", params=Echo, registry=reg)
    ... def echo(model: object, batch: list[Echo]) -> list[str]:
    ...     return [p.text.upper() for p in batch]
    >>> batch = [reg.validate_params("demo.echo", {"text": "hi"})]
    >>> run_inference(reg.get("demo.echo"), None, batch)
    ['HI']
"""

from __future__ import annotations

from rayml.pipeline.contract import (
    InferenceContext,
    TrainedModel,
    TrainingContext,
    run_inference,
    run_training,
)
from rayml.pipeline.decorators import inference, training
from rayml.pipeline.registry import (
    DEFAULT_PACKAGE,
    ENTRY_POINT_GROUP,
    Registry,
    default_registry,
    load_spec_by_path,
    validate_batch_params,
    validate_spec_params,
)
from rayml.pipeline.spec import SPEC_ATTR, PipelineKind, PipelineSpec, Pool, Resources, get_spec

__all__ = [
    "DEFAULT_PACKAGE",
    "ENTRY_POINT_GROUP",
    "SPEC_ATTR",
    "InferenceContext",
    "PipelineKind",
    "PipelineSpec",
    "Pool",
    "Registry",
    "Resources",
    "TrainedModel",
    "TrainingContext",
    "default_registry",
    "get_spec",
    "inference",
    "load_spec_by_path",
    "run_inference",
    "run_training",
    "training",
    "validate_batch_params",
    "validate_spec_params",
]
