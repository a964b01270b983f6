"""Versioned model store: safe artifact formats, atomic versions, any fsspec filesystem.

A version is a directory holding the artifact and a ``metadata.json`` that is written last, so
readers never see a half-written version; numbers are never reused, even after a delete or a
crashed writer. How versions are laid out and committed atomically on local disks and object
stores is :mod:`rayml.models.layout`; names and versions are checked by
:mod:`rayml.protocol.model_names`.

Formats: XGBoost models as UBJ (``save_model``), scikit-learn estimators through ``skops``
(loaded only if every type it needs is allowed), and pickle only if the store was opened with
``allow_pickle=True``. Loading never unpickles bytes that anyone with write access to the store
could have crafted, unless told to (:mod:`rayml.models.formats`).

Example:
    >>> import tempfile
    >>> from sklearn.linear_model import LogisticRegression
    >>> store = ModelStore(tempfile.mkdtemp())
    >>> est = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    >>> v = store.save("demo", est, pipeline="demo.train", params={}, metrics={"acc": 1.0})
    >>> v.version, store.load("demo").model.predict([[1.0]]).tolist()
    ('000001', [1])
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec

from rayml.errors import (
    InvalidModelNameError,
    ModelNotFoundError,
    ModelStoreError,
    UnsafeModelFormatError,
)
from rayml.models.formats import (
    ARTIFACTS,
    DEFAULT_TRUSTED_PACKAGES,
    FORMATS,
    SaveFormat,
    deserialise,
    library_versions,
    serialise,
)
from rayml.models.layout import (
    METADATA_FILE,
    PROMOTED_FILE,
    TOMBSTONE_FILE,
    StoreLayout,
    dump_metadata,
)
from rayml.protocol.model_names import format_version, validate_model_name, validate_version

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TRUSTED_PACKAGES",
    "METADATA_FILE",
    "PROMOTED_FILE",
    "TOMBSTONE_FILE",
    "LoadedModel",
    "ModelStore",
    "ModelVersion",
    "SaveFormat",
    "fingerprint_arrays",
    "format_version",
    "validate_model_name",
    "validate_version",
]

#: Metadata layout version, so a later rayml can read stores written by this one.
METADATA_SCHEMA = 1


# --- lineage ----------------------------------------------------------------------------


def fingerprint_arrays(*arrays: Any) -> str:
    """Return a sha256 hex digest of arrays' shapes, dtypes and bytes (training-data lineage).

    Example:
        >>> import numpy as np
        >>> fingerprint_arrays(np.zeros(3)) == fingerprint_arrays(np.zeros(3))
        True
        >>> fingerprint_arrays(np.zeros(3)) == fingerprint_arrays(np.zeros((3, 1)))
        False
    """
    import numpy as np

    digest = hashlib.sha256()
    for array in arrays:
        arr = np.ascontiguousarray(array)
        # Shape and dtype go in too: the same bytes read as another shape are other data.
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelVersion:
    """One complete version in the store, with its metadata.

    Example:
        >>> ModelVersion("iris", "000001", "/s/iris/000001", {"metrics": {"a": 1.0}}).metrics
        {'a': 1.0}
    """

    name: str
    version: str
    uri: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def created_at(self) -> str | None:
        """UTC ISO-8601 time the version was saved."""
        value = self.metadata.get("created_at")
        return value if isinstance(value, str) else None

    @property
    def metrics(self) -> dict[str, float]:
        """Metrics recorded with the version."""
        value = self.metadata.get("metrics")
        return dict(value) if isinstance(value, dict) else {}

    @property
    def framework(self) -> str | None:
        """``"xgboost"``, ``"sklearn"`` or ``"pickle"``."""
        value = self.metadata.get("framework")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded from the store, ready to predict.

    Example:
        >>> LoadedModel("iris", "000001", object(), {}).version
        '000001'
    """

    name: str
    version: str
    model: Any
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)


# --- the store ----------------------------------------------------------------------------


class ModelStore:
    """Versioned model store on a local directory or any fsspec URL.

    Args:
        root: Local path or fsspec URL (``s3://bucket/models``).
        allow_pickle: Allow saving with ``format="pickle"`` and loading pickle artifacts.
            Leave it off for any store that others can write: unpickling runs arbitrary code.
        trusted_types: Extra fully qualified type names (``"mypkg.MyTransformer"``) that skops
            artifacts may reference, beyond scikit-learn/numpy/scipy classes.
        storage_options: Passed to fsspec (credentials, endpoint...).

    Example:
        >>> import tempfile
        >>> store = ModelStore(tempfile.mkdtemp())
        >>> store.names(), store.latest("iris")
        ([], None)
    """

    def __init__(
        self,
        root: str,
        *,
        allow_pickle: bool = False,
        trusted_types: Sequence[str] = (),
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        fs, path = fsspec.core.url_to_fs(str(root), **(storage_options or {}))
        self._layout = StoreLayout(fs, path, url=str(root))
        self.root = str(root)
        self.allow_pickle = allow_pickle
        self.trusted_types = frozenset(trusted_types)

    def __repr__(self) -> str:
        return f"ModelStore({self.root!r}, allow_pickle={self.allow_pickle})"

    # -- writing ----------------------------------------------------------------------------

    def save(
        self,
        name: str,
        model: Any,
        *,
        pipeline: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        data_fingerprint: str | None = None,
        extra: dict[str, Any] | None = None,
        format: SaveFormat = "auto",
    ) -> ModelVersion:
        """Store ``model`` as the next version of ``name`` and return that version.

        Args:
            name: Model name (see :func:`validate_model_name`).
            model: XGBoost model or ``Booster``, or scikit-learn estimator (any object with
                ``format="pickle"`` on a store that allows pickle).
            pipeline: Training pipeline that produced it.
            params: Its training params (JSON-serialisable).
            metrics: Its evaluation metrics.
            data_fingerprint: Hash of its training data (see :func:`fingerprint_arrays`).
            extra: More JSON-serialisable metadata.
            format: ``"auto"`` picks XGBoost UBJ or skops from the model's type.

        Raises:
            InvalidModelNameError: Unsafe name.
            UnsafeModelFormatError: Pickle requested on a store that does not allow it, or a
                model type with no safe format.
            ModelStoreError: Serialisation or writing failed; no version became visible.

        Example:
            >>> import tempfile
            >>> from xgboost import XGBRegressor
            >>> store = ModelStore(tempfile.mkdtemp())
            >>> reg = XGBRegressor(n_estimators=2).fit([[0.0], [1.0]], [0.0, 1.0])
            >>> store.save("r", reg, pipeline="p", params={}, metrics={}).metadata["framework"]
            'xgboost'
        """
        validate_model_name(name)
        framework, data, model_class = serialise(model, format, allow_pickle=self.allow_pickle)
        artifact = ARTIFACTS[framework]
        metadata: dict[str, Any] = {
            "schema": METADATA_SCHEMA,
            "name": name,
            "version": None,  # filled in once a number is reserved
            "pipeline": pipeline,
            "params": params,
            "metrics": {str(k): float(v) for k, v in metrics.items()},
            "data_fingerprint": data_fingerprint,
            "extra": extra or {},
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "framework": framework,
            "format": FORMATS[framework],
            "model_class": model_class,
            "artifact": artifact,
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_bytes": len(data),
            "libraries": library_versions(),
            # Lets a writer on an object store recognise its own metadata on read-back.
            "writer": uuid.uuid4().hex,
        }
        # Fail on unserialisable params before anything is written or reserved.
        try:
            dump_metadata(metadata)
        except (TypeError, ValueError) as exc:
            raise ModelStoreError(
                f"metadata for model {name!r} is not JSON-serialisable: {exc}"
            ) from exc
        version, uri = self._layout.commit(name, artifact, data, metadata)
        logger.info(
            "saved model=%s version=%s framework=%s pipeline=%s bytes=%d",
            name,
            version,
            framework,
            pipeline,
            len(data),
        )
        return ModelVersion(name, version, uri, metadata)

    def delete(self, name: str, version: str | int) -> None:
        """Delete one version; its number is never handed out again.

        ``metadata.json`` goes first, so the version disappears at once for readers even if
        removing the artifact fails half way. A tombstone file stays in the version directory:
        a client that pinned this version must get "not found", never a different model that
        reused the number.

        Raises:
            ModelNotFoundError: No such (complete) version.

        Example:
            >>> import tempfile
            >>> ModelStore(tempfile.mkdtemp()).delete("iris", "1")
            Traceback (most recent call last):
            ...
            rayml.errors.ModelNotFoundError: model 'iris' version '000001' is not in the model store
        """
        validate_model_name(name)
        version = validate_version(version)
        if not self._layout.delete(name, version):
            raise ModelNotFoundError(name, version)
        logger.info("deleted model=%s version=%s", name, version)

    def mark_promoted(self, name: str, version: str | int, marker: dict[str, Any]) -> None:
        """Mark a version as promoted (see :mod:`rayml.models.promotion`); idempotent.

        Args:
            marker: JSON-serialisable facts about the promotion (when, why, by what).

        Raises:
            ModelNotFoundError: No such (complete) version.
            ModelStoreError: Writing the marker failed.

        Example:
            >>> import tempfile
            >>> ModelStore(tempfile.mkdtemp()).mark_promoted("iris", 1, {})
            Traceback (most recent call last):
            ...
            rayml.errors.ModelNotFoundError: model 'iris' version '000001' is not in the model store
        """
        validate_model_name(name)
        version = validate_version(version)
        if self._layout.read_metadata(name, version) is None:
            raise ModelNotFoundError(name, version)
        try:
            self._layout.write_marker(name, version, marker)
        except Exception as exc:
            raise ModelStoreError(
                f"marking model {name!r} version {version} promoted failed: {exc}"
            ) from exc
        logger.info("promoted model=%s version=%s", name, version)

    # -- reading ----------------------------------------------------------------------------

    def describe(self, name: str, version: str | int) -> ModelVersion | None:
        """One version with its metadata (one small read), or ``None`` if it is not complete.

        Example:
            >>> import tempfile
            >>> ModelStore(tempfile.mkdtemp()).describe("iris", "3") is None
            True
        """
        validate_model_name(name)
        version = validate_version(version)
        metadata = self._layout.read_metadata(name, version)
        if metadata is None:
            return None
        return ModelVersion(
            name, version, self._layout.uri(self._layout.join(name, version)), metadata
        )

    def promotion(self, name: str, version: str | int) -> dict[str, Any] | None:
        """The promotion marker of a version, or ``None`` if it was never promoted."""
        validate_model_name(name)
        return self._layout.read_marker(name, validate_version(version))

    def promoted_versions(self, name: str) -> set[str]:
        """The versions of ``name`` that were promoted (one listing of the store).

        Example:
            >>> import tempfile
            >>> ModelStore(tempfile.mkdtemp()).promoted_versions("iris")
            set()
        """
        validate_model_name(name)
        return self._layout.marked(name)

    def newest_first(self, name: str) -> Iterator[ModelVersion]:
        """The complete versions of ``name``, newest first, reading metadata as it goes."""
        validate_model_name(name)
        for version in reversed(self._layout.version_dirs(name)):
            metadata = self._layout.read_metadata(name, version)
            if metadata is not None:
                yield ModelVersion(
                    name, version, self._layout.uri(self._layout.join(name, version)), metadata
                )

    def names(self) -> list[str]:
        """Return the names that have at least one complete version, sorted.

        Example:
            >>> import tempfile
            >>> ModelStore(tempfile.mkdtemp()).names()
            []
        """
        return [
            name
            for name in self._layout.children(self._layout.root)
            if self._has_valid_name(name) and self.latest(name) is not None
        ]

    def versions(self, name: str) -> list[ModelVersion]:
        """Return the complete versions of ``name``, oldest first (empty if none).

        Example:
            >>> import tempfile
            >>> ModelStore(tempfile.mkdtemp()).versions("iris")
            []
        """
        validate_model_name(name)
        result = []
        for version in self._layout.version_dirs(name):
            metadata = self._layout.read_metadata(name, version)
            if metadata is not None:
                result.append(
                    ModelVersion(
                        name, version, self._layout.uri(self._layout.join(name, version)), metadata
                    )
                )
        return result

    def latest(self, name: str) -> ModelVersion | None:
        """Return the newest complete version of ``name``, or ``None``.

        Example:
            >>> import tempfile
            >>> ModelStore(tempfile.mkdtemp()).latest("iris") is None
            True
        """
        validate_model_name(name)
        # Newest first, stopping at the first complete one: incomplete leftovers are skipped.
        for version in reversed(self._layout.version_dirs(name)):
            metadata = self._layout.read_metadata(name, version)
            if metadata is not None:
                return ModelVersion(
                    name, version, self._layout.uri(self._layout.join(name, version)), metadata
                )
        return None

    def load(self, name: str, version: str | int | None = None) -> LoadedModel:
        """Load version ``version`` of ``name`` (the newest complete one if ``None``).

        Raises:
            InvalidModelNameError: Unsafe name or version.
            ModelNotFoundError: No such model or version.
            UnsafeModelFormatError: A pickle artifact on a store that does not allow pickle, a
                skops artifact referencing untrusted types, or an XGBoost class not allowed.
            ModelStoreError: The artifact is unreadable or does not match its checksum.

        Example:
            >>> import tempfile
            >>> ModelStore(tempfile.mkdtemp()).load("iris")
            Traceback (most recent call last):
            ...
            rayml.errors.ModelNotFoundError: model 'iris' is not in the model store
        """
        validate_model_name(name)
        if version is None:
            found = self.latest(name)
            if found is None:
                raise ModelNotFoundError(name)
            version, metadata = found.version, found.metadata
        else:
            version = validate_version(version)
            read = self._layout.read_metadata(name, version)
            if read is None:
                raise ModelNotFoundError(name, version)
            metadata = read
        artifact = metadata.get("artifact")
        framework = metadata.get("framework")
        if framework not in ARTIFACTS or artifact != ARTIFACTS[framework]:
            # The metadata names the file to read; only our own fixed names are accepted.
            raise ModelStoreError(
                f"model {name!r} version {version}: unknown framework {framework!r} or artifact "
                f"{artifact!r} in metadata"
            )
        if framework == "pickle" and not self.allow_pickle:
            # Refuse before reading: nothing of the artifact is touched.
            raise UnsafeModelFormatError(
                f"model {name!r} version {version} is a pickle; loading it would run arbitrary "
                f"code. Open the store with allow_pickle=True only if you trust every writer."
            )
        path = f"{self._layout.join(name, version)}/{artifact}"
        try:
            data = self._layout.fs.cat_file(path)
        except FileNotFoundError:
            raise ModelNotFoundError(name, version) from None
        except Exception as exc:
            raise ModelStoreError(f"reading {path!r} failed: {exc}") from exc
        expected = metadata.get("sha256")
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise ModelStoreError(
                f"model {name!r} version {version}: artifact does not match its sha256 "
                f"(corrupted or overwritten)"
            )
        model = deserialise(
            framework,
            data,
            metadata,
            f"{name} version {version}",
            trusted_types=self.trusted_types,
        )
        logger.info("loaded model=%s version=%s framework=%s", name, version, framework)
        return LoadedModel(name, version, model, metadata)

    @staticmethod
    def _has_valid_name(name: str) -> bool:
        try:
            validate_model_name(name)
        except InvalidModelNameError:
            return False
        return True
