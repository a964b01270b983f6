"""Rollouts on the wire: a candidate version's state, what each version answered, ground truth.

Three records (see docs/rollouts.md):

* :class:`Rollout`, inside a model's serving record on the compacted models topic
  (:class:`rayml.models.promotion.ServingRecord.rollout`): the candidate version, the mode
  (``shadow``: it also runs on a copy of the traffic, its outputs reach no caller; ``canary``:
  it answers a stable ``fraction`` of the requests) and when it started.
* :class:`VersionAnswer`, on the shadow topic (``topics.shadow``, key = request id): what one
  version answered one request while its model is under rollout: the serving version's and the
  canary's answers as callers got them, and the shadow's that no caller sees.
* :class:`Feedback`, on the feedback topic (``topics.feedback``): a request's ground truth, from
  any producer, in any order, hours later: ``{"id": ..., "label": ...}``.

:func:`input_vector` is the input vector a ``VersionAnswer`` carries for drift figures.
:func:`canary_share` is the stable split of requests between the serving version and a canary:
by a hash of the request id, so a retried request (same id) lands on the same side, in every
process. Pure: pydantic and the standard library.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from array import array
from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_INPUTS",
    "Feedback",
    "Rollout",
    "RolloutMode",
    "VersionAnswer",
    "VersionRole",
    "canary_share",
    "goes_to_canary",
    "input_vector",
    "sample_share",
]

RolloutMode = Literal["shadow", "canary"]
VersionRole = Literal["serving", "canary", "shadow"]

_SCALE: Final = float(1 << 64)

MAX_INPUTS: Final = 256
"""The longest input vector a :class:`VersionAnswer` carries (:func:`input_vector`)."""


class Rollout(BaseModel):
    """A candidate version being rolled out (part of a serving record)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    candidate: str = Field(min_length=1, description="The version being rolled out.")
    mode: RolloutMode
    fraction: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="canary: the share of requests the candidate answers (by request id).",
    )
    started_at_ms: int = Field(description="When the rollout started, epoch milliseconds.")


class VersionAnswer(BaseModel):
    """What one version answered one request during a rollout (the shadow topic's record)."""

    model_config = ConfigDict(extra="ignore", frozen=True, title="rayml version answer")

    v: Literal[1] = 1
    id: str = Field(min_length=1, description="The request's id.")
    model: str
    version: str
    role: VersionRole = Field(
        description="serving or canary: the answer its caller got; shadow: no caller saw it."
    )
    pipeline: str
    status: Literal["ok", "error"]
    output: Any = Field(default=None, description="The pipeline's output when ok.")
    error_type: str | None = None
    compute_ms: float | None = Field(
        default=None, description="The compute time of the batch that answered it."
    )
    at_ms: int = Field(ge=0, le=10**14, description="When it was answered, epoch milliseconds.")
    inputs: list[float] | None = Field(
        default=None,
        description="serving or canary: the request's input vector, when its params have "
        "exactly one list of numbers (at most MAX_INPUTS long): for drift figures.",
    )


class Feedback(BaseModel):
    """Ground truth for one request (the feedback topic's record, key = the request id)."""

    model_config = ConfigDict(extra="ignore", frozen=True, title="rayml feedback")

    id: str = Field(min_length=1, max_length=200)
    label: Any


def input_vector(params: Mapping[str, Any]) -> list[float] | None:
    """A request's input vector: the one field of ``params`` that is a list of numbers.

    ``None`` unless exactly one field is a non-empty list of numbers (booleans are not), at
    most :data:`MAX_INPUTS` long and all finite; any longer list makes it ``None`` unread, so
    the cost is bounded whatever the request holds.

    Example:
        >>> input_vector({"features": [5.1, 3, 1.4], "tag": "x"})
        [5.1, 3.0, 1.4]
        >>> input_vector({"a": [1.0], "b": [2.0]}) is None, input_vector({"a": [True]}) is None
        (True, True)
    """
    found: array[float] | None = None
    for value in params.values():
        if not isinstance(value, list) or not value:
            continue
        if len(value) > MAX_INPUTS:
            return None
        try:
            vector = array("d", value)  # in C: refuses what is not a number
        except (TypeError, OverflowError):
            continue
        if bool in map(type, value):
            continue  # array("d") takes true as 1.0: not a measurement
        if found is not None:
            return None  # two of them: which one is the vector is unknown
        found = vector
    if found is None or not all(map(math.isfinite, found)):
        return None
    return found.tolist()


def canary_share(request_id: str) -> float:
    """Where ``request_id`` falls in [0, 1): the same in every process and every retry.

    Example:
        >>> canary_share("r-1") == canary_share("r-1")
        True
        >>> 0.0 <= canary_share("anything") < 1.0
        True
    """
    digest = hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def sample_share(request_id: bytes) -> float:
    """Where a request id falls in [0, 1) for *sampling* the figures (CRC-32: cheap, and the
    same in the ingest, which writes the answers of a sample, and in the monitor, which reads
    a sample; an id's answers and label are kept or skipped together).

    Example:
        >>> sample_share(b"r-1") == sample_share(b"r-1"), 0.0 <= sample_share(b"x") < 1.0
        (True, True)
    """
    return zlib.crc32(request_id) / 4294967296.0


def goes_to_canary(request_id: str, fraction: float) -> bool:
    """Whether a canary at ``fraction`` answers ``request_id``."""
    return canary_share(request_id) < fraction
