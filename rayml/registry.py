"""Deprecated: the pipeline API moved to :mod:`rayml.pipeline`; import it from there.

``from rayml.registry import inference, training, ...`` keeps working: every name this module
exported before the move (its ``__all__``, the very same objects as in :mod:`rayml.pipeline`, and
the rayml errors it imported) is re-exported, and importing it issues a
:class:`DeprecationWarning`. Nothing inside rayml imports this module.

Rebinding a name here changes nothing elsewhere: to redirect the decorators' default registry,
replace ``rayml.pipeline.registry.default_registry``.
"""

from __future__ import annotations

import warnings

# Importable from the old module though not in its __all__; kept so `except` clauses still work.
from rayml.errors import InvalidParamsError as InvalidParamsError
from rayml.errors import RaymlError as RaymlError
from rayml.errors import RegistrationError as RegistrationError
from rayml.errors import UnknownPipelineError as UnknownPipelineError
from rayml.pipeline import (
    DEFAULT_PACKAGE,
    ENTRY_POINT_GROUP,
    SPEC_ATTR,
    PipelineKind,
    PipelineSpec,
    Registry,
    Resources,
    TrainedModel,
    TrainingContext,
    default_registry,
    get_spec,
    inference,
    load_spec_by_path,
    run_inference,
    run_training,
    training,
    validate_spec_params,
)

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

warnings.warn(
    "rayml.registry is deprecated; import from rayml.pipeline", DeprecationWarning, stacklevel=2
)
