"""Drift per version: a population-stability index of inputs and outputs against training.

A training job stores, with the version it trains, a :class:`DriftReference` (in the version's
metadata, ``extra.drift_reference``; :mod:`rayml.training.reference`): per input feature, decile
bin edges and the share of training rows in each bin, and, when the inference pipeline could
be run on those rows, the share of each predicted label. While a model is under rollout the
ingest writes each request's input vector with its answer (``VersionAnswer.inputs``); the
rollout monitor keeps them in a :class:`DriftWindow` and compares each version's traffic with
that version's reference (:meth:`DriftWindow.psi`).

**The index.** Over the bins of one feature (or the labels of the output),
``PSI = sum((observed - expected) * ln(observed / expected))`` with every share below
:data:`EPSILON` counted as :data:`EPSILON` (an empty bin would make it infinite). Read it as
usual: under :data:`MODERATE` (0.1) the population is stable, from 0.1 to :data:`SIGNIFICANT`
(0.25) it moved moderately, above 0.25 significantly. It is noisy on few rows: two samples of
the same population of ``n`` and ``m`` rows give about ``(bins - 1) * (1/n + 1/m)`` (10 bins,
500 rows against 400: ~0.04), so read it with its ``rows``.

**Bins.** A feature's edges are the unique deciles of the training values (training values
themselves, fewer than 9 when values tie: a binary 0/1 feature has the edges 0 and 1); a value
goes to the bin of the edges at or below it (:func:`numpy.searchsorted`, ``side="right"``), on
both sides. Outputs compare as predictions (``output["label"]`` when the output is an object
with one, else the output; 1 equals 1.0, a boolean is not a number), at most
:data:`MAX_CATEGORIES` labels kept, the rest as :data:`OTHER`.

**Bounds.** A reference comes from at most :data:`MAX_REFERENCE_ROWS` rows (evenly spaced
through the rows given) of at most :data:`MAX_FEATURES` features. A window keeps, per (model,
version), the newest ``max_rows`` answers of the last ``window_s`` (by answer time): about
``max_rows x (230 + 8 x features)`` bytes each (4.7 MB for 10,000 answers of 30 features).
Inputs that are not a vector of 1 to :data:`MAX_FEATURES` finite numbers are not kept (the
answer's prediction still is); a vector whose length is not the reference's is counted in
``mismatched``, never binned.

Not thread-safe. Pure: numpy, pydantic and the standard library.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(2_000, 2))
    >>> ref = reference_from_rows(train, outputs=[{"label": int(r[0] > 0)} for r in train])
    >>> window = DriftWindow(window_s=3600, max_rows=10_000)
    >>> for i, row in enumerate(rng.normal(size=(2_000, 2)) + [0.0, 2.0]):
    ...     window.add("m", "000001", 1_000 + i, row.tolist(), {"label": int(row[0] > 0)})
    >>> d = window.psi("m", "000001", ref, now_ms=5_000)
    >>> d.rows, d.max_feature, d.features[0] < MODERATE < SIGNIFICANT < d.features[1]
    (2000, 1, True)
    >>> d.output_psi < MODERATE, d.level
    (True, 'significant')
"""

from __future__ import annotations

import json
import math
import numbers
from array import array
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rayml.protocol.rollouts import VersionAnswer
from rayml.rollouts.quality import prediction, value_key

__all__ = [
    "BINS",
    "EPSILON",
    "MAX_CATEGORIES",
    "MAX_FEATURES",
    "MAX_REFERENCE_ROWS",
    "MAX_ROWS",
    "MODERATE",
    "OTHER",
    "REFERENCE_KEY",
    "SIGNIFICANT",
    "DriftFigures",
    "DriftReference",
    "DriftWindow",
    "FeatureBins",
    "label_key",
    "level",
    "reference_from_rows",
    "sample_rows",
]

BINS: Final = 10
"""Deciles: at most 9 edges, 10 bins per feature."""
EPSILON: Final = 1e-4
"""A share below this counts as this in the index (an empty bin would make it infinite)."""
MODERATE: Final = 0.1
"""PSI from here up to :data:`SIGNIFICANT`: the population moved moderately."""
SIGNIFICANT: Final = 0.25
"""PSI above this: it moved significantly (look at the model, or retrain it)."""
MAX_FEATURES: Final = 256
"""Longest input vector a reference or a window keeps."""
MAX_REFERENCE_ROWS: Final = 10_000
"""Most training rows a reference is computed from."""
MAX_ROWS: Final = 10_000
"""The monitor's ``max_rows``: answers kept per (model, version)."""
MAX_CATEGORIES: Final = 64
"""Most predicted labels a reference keeps one by one; the rest count as :data:`OTHER`."""
OTHER: Final = "(other)"
"""The label key of every prediction not among a reference's labels."""
REFERENCE_KEY: Final = "drift_reference"
"""Where a version's metadata holds its reference: ``metadata["extra"][REFERENCE_KEY]``."""
_MAX_KEY_CHARS: Final = 64

Level = Literal["stable", "moderate", "significant"]


class FeatureBins(BaseModel):
    """One feature of a reference: bin edges, and the training rows' share in each bin."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    edges: list[float] = Field(max_length=BINS - 1, description="Ascending, unique.")
    shares: list[float] = Field(min_length=1, max_length=BINS)

    @model_validator(mode="after")
    def _check(self) -> FeatureBins:
        if len(self.shares) != len(self.edges) + 1:
            raise ValueError("a feature has one share more than it has edges")
        if any(not math.isfinite(e) for e in self.edges) or any(
            b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)
        ):
            raise ValueError("edges must be finite and strictly ascending")
        if any(not (0.0 <= s <= 1.0) for s in self.shares):
            raise ValueError("shares must be in [0, 1]")
        return self


class DriftReference(BaseModel):
    """What a version's training data looked like, for :meth:`DriftWindow.psi` (JSON).

    Example:
        >>> ref = reference_from_rows([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]], outputs=[0, 0, 1])
        >>> ref.features[1].edges, ref.outputs
        ([1.0], {'0': 0.666667, '1': 0.333333})
        >>> DriftReference.model_validate_json(ref.model_dump_json()) == ref
        True
    """

    model_config = ConfigDict(extra="ignore", frozen=True, title="rayml drift reference")

    v: Literal[1] = 1
    rows: int = Field(ge=1, description="The training rows it was computed from.")
    features: list[FeatureBins] = Field(min_length=1, max_length=MAX_FEATURES)
    outputs: dict[str, float] | None = Field(
        default=None,
        max_length=MAX_CATEGORIES + 1,
        description="Share of each predicted label (label_key) on those rows; None: not known.",
    )


@dataclass(frozen=True)
class DriftFigures:
    """One version's drift in the window: PSI per feature and of the output.

    Attributes:
        rows: Input vectors compared (of the reference's length).
        mismatched: Input vectors of another length, not compared.
        features: PSI of each feature, in vector order; ``None`` without rows.
        max_psi: The largest of them, and ``max_feature`` its index.
        outputs: Predictions compared; ``output_psi`` their PSI (``None`` without any, or
            without the reference's output distribution).
    """

    rows: int
    mismatched: int
    features: list[float] | None
    max_psi: float | None
    max_feature: int | None
    outputs: int
    output_psi: float | None

    @property
    def level(self) -> Level | None:
        """``level`` of the worse of ``max_psi`` and ``output_psi``; ``None``: neither known."""
        known = [p for p in (self.max_psi, self.output_psi) if p is not None]
        return level(max(known)) if known else None

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON values, with ``level``."""
        return {**asdict(self), "level": self.level}


def level(psi: float) -> Level:
    """``stable`` under :data:`MODERATE`, ``significant`` above :data:`SIGNIFICANT`.

    Example:
        >>> level(0.02), level(0.1), level(0.25), level(0.26)
        ('stable', 'moderate', 'moderate', 'significant')
    """
    if psi < MODERATE:
        return "stable"
    return "moderate" if psi <= SIGNIFICANT else "significant"


def label_key(value: Any) -> str:
    """A prediction as a short JSON text, the key of its share in a reference.

    Numbers by value (``1`` and ``1.0`` are ``"1"``; ``true`` is not), strings quoted; a value
    whose text is longer than 64 characters (or has none) is keyed by a digest.

    Example:
        >>> label_key(1), label_key(1.0), label_key(True), label_key("setosa")
        ('1', '1', 'true', '"setosa"')
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        value = int(number) if number.is_integer() else number
    if value is None or isinstance(value, str | bool | int | float):
        try:
            text = json.dumps(value)
        except ValueError:  # an int too long to print
            text = ""
        if 0 < len(text) <= _MAX_KEY_CHARS:
            return text
    return "#" + value_key(value).hex()


def sample_rows(rows: Any) -> np.ndarray:
    """``rows`` as a float matrix, ready for :func:`reference_from_rows`: rows holding a value
    that is not finite dropped, at most :data:`MAX_REFERENCE_ROWS` kept (evenly spaced).

    Raises:
        ValueError: Not a matrix of 1 to :data:`MAX_FEATURES` numeric columns, or no row left.

    Example:
        >>> sample_rows([[1, 2], [float("nan"), 0], [3, 4]]).tolist()
        [[1.0, 2.0], [3.0, 4.0]]
    """
    try:
        matrix = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"reference rows are not a numeric matrix: {exc}") from exc
    if matrix.ndim != 2 or not 1 <= matrix.shape[1] <= MAX_FEATURES:
        raise ValueError(
            f"reference rows must be a matrix of 1 to {MAX_FEATURES} columns, "
            f"got shape {matrix.shape}"
        )
    matrix = matrix[np.isfinite(matrix).all(axis=1)]
    if not len(matrix):
        raise ValueError("no reference row of finite values")
    if len(matrix) > MAX_REFERENCE_ROWS:
        pick = np.linspace(0, len(matrix) - 1, MAX_REFERENCE_ROWS).round().astype(np.int64)
        matrix = matrix[pick]
    return matrix


def reference_from_rows(rows: Any, outputs: Sequence[Any] | None = None) -> DriftReference:
    """The reference of training ``rows`` (and of the pipeline's ``outputs`` on them).

    Args:
        rows: One input vector per row (see :func:`sample_rows`, which is applied).
        outputs: The inference pipeline's output for each row, in order, or ``None``. Pass
            the rows :func:`sample_rows` returned so the two stay aligned.

    Raises:
        ValueError: ``rows`` not usable (see :func:`sample_rows`), or ``outputs`` not one
            per row.
    """
    matrix = sample_rows(rows)
    if outputs is not None and (len(outputs) != len(matrix) or len(rows) != len(matrix)):
        raise ValueError(
            f"outputs must be one per row of sample_rows(rows): {len(outputs)} outputs "
            f"for {len(matrix)} rows"
        )
    features = []
    for column in matrix.T:
        # Data values as edges ("higher"), so tied values never get an edge between them.
        edges = np.unique(np.quantile(column, np.arange(1, BINS) / BINS, method="higher"))
        counts = np.bincount(np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1)
        features.append(
            FeatureBins(
                edges=[float(e) for e in edges],
                shares=[round(float(c) / len(column), 6) for c in counts],
            )
        )
    shares: dict[str, float] | None = None
    if outputs is not None:
        counts_by_label = Counter(label_key(prediction(o)) for o in outputs)
        kept = counts_by_label.most_common(MAX_CATEGORIES)
        if len(counts_by_label) > MAX_CATEGORIES:
            kept = kept[: MAX_CATEGORIES - 1]
        shares = {k: round(c / len(outputs), 6) for k, c in kept}
        rest = len(outputs) - sum(c for _, c in kept)
        if rest:
            shares[OTHER] = round(rest / len(outputs), 6)
    return DriftReference(rows=len(matrix), features=features, outputs=shares)


def _index(observed: np.ndarray, expected: np.ndarray) -> float:
    o = np.maximum(observed, EPSILON)
    e = np.maximum(expected, EPSILON)
    return float(np.sum((o - e) * np.log(o / e)))


def _vector(inputs: Any) -> array[float] | None:
    """``inputs`` as a compact vector, or ``None`` unless 1 to MAX_FEATURES finite numbers."""
    if not isinstance(inputs, list | tuple) or not 1 <= len(inputs) <= MAX_FEATURES:
        return None
    if any(isinstance(x, bool) for x in inputs):
        return None  # array("d") would take it as 0 or 1: not a measurement
    try:
        vector = array("d", inputs)
    except (TypeError, OverflowError):
        return None
    return vector if all(map(math.isfinite, vector)) else None


_NO_OUTPUT: Final = object()


class DriftWindow:
    """Input vectors and predictions per (model, version), by answer time, bounded.

    Args:
        window_s: How long an answer counts (``rollout.window_s``).
        max_rows: Answers kept per (model, version), the newest.

    Raises:
        ValueError: ``window_s`` not > 0 or ``max_rows`` < 1.
    """

    def __init__(self, window_s: float, max_rows: int = MAX_ROWS) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self._window_ms = float(window_s) * 1000.0
        self._max_rows = max_rows
        # (at_ms, inputs or None, label key or None), in arrival order
        self._kept: dict[tuple[str, str], deque[tuple[int, array[float] | None, str | None]]] = {}
        self._clock = -math.inf

    def __len__(self) -> int:
        """Answers kept in all (model, version) pairs."""
        return sum(len(d) for d in self._kept.values())

    def add_answer(self, answer: VersionAnswer) -> None:
        """Keep ``answer``'s inputs (if any) and its prediction (if ok)."""
        self.add(
            answer.model,
            answer.version,
            answer.at_ms,
            answer.inputs,
            answer.output if answer.status == "ok" else _NO_OUTPUT,
        )

    def add(
        self,
        model: str,
        version: str,
        at_ms: int,
        inputs: Sequence[float] | None = None,
        output: Any = _NO_OUTPUT,
    ) -> None:
        """Keep one answer of ``version``: its input vector and its output (left out: none)."""
        self._advance(at_ms)
        if at_ms <= self._cutoff():
            return  # already out of the window
        vector = None if inputs is None else _vector(inputs)
        label = None if output is _NO_OUTPUT else label_key(prediction(output))
        if vector is None and label is None:
            return
        key = (model, version)
        kept = self._kept.get(key)
        if kept is None:
            kept = self._kept[key] = deque(maxlen=self._max_rows)
        kept.append((at_ms, vector, label))

    def forget_model(self, model: str) -> None:
        """Drop everything kept for ``model``."""
        for key in [k for k in self._kept if k[0] == model]:
            del self._kept[key]

    def psi(
        self,
        model: str,
        version: str,
        reference: DriftReference,
        now_ms: int,
        inputs_of: str | None = None,
    ) -> DriftFigures:
        """``version``'s drift at ``now_ms`` against ``reference``.

        Args:
            inputs_of: Take the input vectors of this version instead: a shadow runs on the
                served version's requests, whose inputs the served version's answers carry.
        """
        self._advance(now_ms)
        cutoff = self._cutoff()
        n_features = len(reference.features)
        vectors: list[array[float]] = []
        mismatched = 0
        for at_ms, vector, _ in self._kept.get((model, inputs_of or version), ()):
            if vector is None or at_ms <= cutoff:
                continue
            if len(vector) == n_features:
                vectors.append(vector)
            else:
                mismatched += 1
        labels = [
            label
            for at_ms, _, label in self._kept.get((model, version), ())
            if label is not None and at_ms > cutoff
        ]
        per_feature: list[float] | None = None
        if vectors:
            matrix = np.array(vectors, dtype=np.float64)
            per_feature = []
            for bins, column in zip(reference.features, matrix.T, strict=True):
                edges = np.asarray(bins.edges, dtype=np.float64)
                counts = np.bincount(
                    np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1
                )
                per_feature.append(
                    _index(counts / len(column), np.asarray(bins.shares, dtype=np.float64))
                )
        output_psi = None
        if labels and reference.outputs:
            expected = reference.outputs
            counts_by_label = Counter(lab if lab in expected else OTHER for lab in labels)
            keys = sorted(set(expected) | set(counts_by_label))
            output_psi = _index(
                np.array([counts_by_label[k] / len(labels) for k in keys]),
                np.array([expected.get(k, 0.0) for k in keys]),
            )
        top = None if not per_feature else int(np.argmax(per_feature))
        return DriftFigures(
            rows=len(vectors),
            mismatched=mismatched,
            features=None if per_feature is None else [round(p, 6) for p in per_feature],
            max_psi=None if top is None or per_feature is None else round(per_feature[top], 6),
            max_feature=top,
            outputs=len(labels),
            output_psi=None if output_psi is None else round(output_psi, 6),
        )

    def _cutoff(self) -> float:
        return self._clock - self._window_ms

    def _advance(self, now_ms: float) -> None:
        if now_ms <= self._clock:
            return
        self._clock = now_ms
        cutoff = self._cutoff()
        for key, kept in list(self._kept.items()):
            # Arrival order is about time order; one that came late leaves when it reaches the
            # front, and psi() never counts it once out of the window.
            while kept and kept[0][0] <= cutoff:
                kept.popleft()
            if not kept:
                del self._kept[key]
