"""The pipeline API under its previous single import, ``rayml.pipeline.registry``.

Every name that this module exported before the pipeline modules were split is still importable
from it, so existing ``from rayml.pipeline.registry import ...`` lines keep working. Nothing is
defined here; each name comes from its defining module:

* :mod:`rayml.pipeline.catalog` -- :class:`Registry`, :data:`default_registry`,
  :func:`load_spec_by_path`, :func:`validate_spec_params` and the discovery constants;
* :mod:`rayml.pipeline.decorators` -- :func:`inference` and :func:`training`;
* :mod:`rayml.pipeline.contract` -- :class:`TrainingContext`, :class:`TrainedModel`,
  :func:`run_inference` and :func:`run_training`;
* :mod:`rayml.pipeline.spec` -- :class:`PipelineSpec`, :class:`Resources` and :func:`get_spec`.

New code imports from the package, :mod:`rayml.pipeline`. To redirect the decorators' default
registry, replace ``rayml.pipeline.catalog.default_registry``: rebinding the name here changes
nothing.

Example:
    >>> import rayml.pipeline
    >>> import rayml.pipeline.registry as old
    >>> [name for name in old.__all__ if getattr(old, name) is not getattr(rayml.pipeline, name)]
    []
"""

from __future__ import annotations

from rayml.pipeline.catalog import (
    DEFAULT_PACKAGE,
    ENTRY_POINT_GROUP,
    Registry,
    default_registry,
    load_spec_by_path,
    validate_spec_params,
)
from rayml.pipeline.contract import TrainedModel, TrainingContext, run_inference, run_training
from rayml.pipeline.decorators import inference, training
from rayml.pipeline.spec import SPEC_ATTR, PipelineKind, PipelineSpec, Resources, get_spec

__all__ = [
    "DEFAULT_PACKAGE",
    "ENTRY_POINT_GROUP",
    "SPEC_ATTR",
    "PipelineKind",
    "PipelineSpec",
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
    "validate_spec_params",
]
