"""The drift reference a training task stores with the version it trains (docs/rollouts.md).

A training pipeline may return its training inputs in ``TrainedModel.reference_rows`` (one
numeric vector per row, in the order of its inference params' one list field). The task then
stores, in the version's metadata (``extra.drift_reference``), a
:class:`~rayml.rollouts.drift.DriftReference`: per feature, decile bin edges and the training
rows' share per bin, from at most 10,000 rows (:func:`~rayml.rollouts.drift.sample_rows`).

The output's share per predicted label comes from running the model's **inference twin** on
those rows: the one inference pipeline of the same model in the training pipeline's module
whose params have exactly one required field, a list of numbers (:func:`inference_twin`), in
batches of its ``max_batch_size`` (1,000 without one). That is the code that serves the
version, so the reference's labels are what serving answers would be on the training data.
Without a twin, or when it fails on the rows, the reference holds the inputs only (logged):
a reference never fails a training.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np
from pydantic import BaseModel

from rayml.pipeline import PipelineSpec, TrainedModel, get_spec, run_inference
from rayml.rollouts.drift import REFERENCE_KEY, reference_from_rows, sample_rows

logger = logging.getLogger(__name__)

__all__ = ["DRIFT_KEY", "drift_reference", "inference_twin", "vector_field"]

DRIFT_KEY = REFERENCE_KEY
"""The key of the reference in a version's ``extra`` metadata."""
_BATCH = 1_000


def vector_field(params: type[BaseModel]) -> str | None:
    """The name (as in a request) of ``params``' one field that is a list of numbers, when it
    is its only required field; else ``None``.

    Example:
        >>> from pydantic import BaseModel
        >>> class Row(BaseModel):
        ...     features: list[float]
        ...     tag: str = ""
        >>> vector_field(Row)
        'features'
    """
    schema = params.model_json_schema()
    properties = schema.get("properties", {})
    found = [
        name
        for name, prop in properties.items()
        if isinstance(prop, dict)
        and prop.get("type") == "array"
        and isinstance(prop.get("items"), dict)
        and prop["items"].get("type") in ("number", "integer")
    ]
    if len(found) != 1 or set(schema.get("required", [])) - set(found):
        return None
    return str(found[0])


def inference_twin(spec: PipelineSpec) -> tuple[PipelineSpec, str] | None:
    """The inference pipeline of ``spec``'s model in ``spec``'s module, and its vector field:
    when exactly one there serves that model and takes one vector (:func:`vector_field`)."""
    module = sys.modules.get(getattr(spec.fn, "__module__", ""))
    if module is None:
        return None
    twins: dict[str, tuple[PipelineSpec, str]] = {}
    for value in list(vars(module).values()):
        found = get_spec(value)
        if found is None or found.kind != "inference" or found.model != spec.model:
            continue
        field = vector_field(found.params)
        if field is not None:
            twins[found.name] = (found, field)
    return next(iter(twins.values())) if len(twins) == 1 else None


def drift_reference(spec: PipelineSpec, trained: TrainedModel) -> dict[str, Any] | None:
    """The JSON drift reference of what ``spec`` trained, or ``None`` without usable
    ``reference_rows`` (logged)."""
    if trained.reference_rows is None:
        return None
    try:
        rows = sample_rows(trained.reference_rows)
    except ValueError as exc:
        logger.warning("pipeline=%s no drift reference stored: %s", spec.name, exc)
        return None
    outputs = _outputs(spec, trained.model, rows)
    return reference_from_rows(rows, outputs).model_dump(mode="json")


def _outputs(spec: PipelineSpec, model: Any, rows: np.ndarray) -> list[Any] | None:
    twin = inference_twin(spec)
    if twin is None:
        logger.info("pipeline=%s drift reference of inputs only: no inference twin", spec.name)
        return None
    infer, field = twin
    size = infer.max_batch_size or _BATCH
    outputs: list[Any] = []
    try:
        for start in range(0, len(rows), size):
            batch = [
                infer.params.model_validate({field: row.tolist()})
                for row in rows[start : start + size]
            ]
            outputs.extend(run_inference(infer, model, batch))
    except Exception as exc:  # the twin refused the rows or raised: inputs only
        logger.warning(
            "pipeline=%s drift reference of inputs only: %s on the training rows failed: %s",
            spec.name,
            infer.name,
            exc,
        )
        return None
    return outputs
