"""Versioned model store: safe artifact formats, atomic versions, any fsspec filesystem.

Layout::

    <root>/<name>/<version>/model.ubj | model.skops | model.pkl
    <root>/<name>/<version>/metadata.json

Versions are zero-padded integers (``"000001"``), so lexical order is age order; the newest
version is the highest *complete* one. A version is complete when its ``metadata.json`` exists:
``metadata.json`` is written last, so it is the commit point, and a reader never sees a version
whose artifact is half written.

* Local roots: the artifact and metadata are written into a staging directory next to the
  versions; a version number is reserved with ``os.mkdir`` (exclusive across processes on one
  filesystem), and the staging directory is renamed onto it, so the whole version appears at
  once. Two writers never get the same number.
* Other fsspec roots (``s3://``, ``gs://``, ``memory://``): the artifact is written, then
  ``metadata.json``. Object stores have no exclusive create, so two writers racing on the same
  model name may pick the same number; the later metadata wins and the earlier writer notices
  it on read-back and moves on to the next number. A narrow race remains (both read back before
  either is overwritten), so keep one writer per model name on such stores.

Formats: XGBoost models as UBJ (``save_model``), scikit-learn estimators through ``skops``
(loaded only if every type it needs is allowed), and pickle only if the store was opened with
``allow_pickle=True``. Loading never unpickles bytes that anyone with write access to the store
could have crafted, unless told to.

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

import contextlib
import datetime as dt
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import pickle
import platform
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import fsspec
from fsspec.implementations.local import LocalFileSystem

from rayml.errors import (
    InvalidModelNameError,
    ModelNotFoundError,
    ModelStoreError,
    UnsafeModelFormatError,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TRUSTED_PACKAGES",
    "METADATA_FILE",
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

METADATA_FILE = "metadata.json"
#: Left in a deleted version's directory so that its number is never reused.
TOMBSTONE_FILE = "deleted.json"
#: Metadata layout version, so a later rayml can read stores written by this one.
METADATA_SCHEMA = 1
#: Packages whose *classes* a skops artifact may reference without being listed explicitly.
DEFAULT_TRUSTED_PACKAGES = frozenset({"sklearn", "numpy", "scipy"})

SaveFormat = Literal["auto", "xgboost", "skops", "pickle"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VERSION_RE = re.compile(r"^[0-9]{1,12}$")
_VERSION_WIDTH = 6
# The only classes an XGBoost artifact may be loaded into: a store's metadata must not be able
# to name an arbitrary class to instantiate.
_XGBOOST_CLASSES = (
    "XGBClassifier",
    "XGBRegressor",
    "XGBRanker",
    "XGBRFClassifier",
    "XGBRFRegressor",
    "XGBModel",
    "Booster",
)
_ARTIFACTS = {"xgboost": "model.ubj", "sklearn": "model.skops", "pickle": "model.pkl"}
_FORMATS = {"xgboost": "ubj", "sklearn": "skops", "pickle": "pickle"}
_STAGING_PREFIX = ".staging-"
# A staging directory this old belongs to a writer that died; no save takes a day to write.
_STALE_STAGING_S = 24 * 3600
# A bounded number of version numbers to try before concluding something is wrong (e.g. a
# directory full of unreadable entries), instead of looping forever.
_MAX_RESERVE_ATTEMPTS = 1000


# --- names and versions -------------------------------------------------------------------


def validate_model_name(name: object) -> str:
    """Return ``name`` if it is a safe model name, else raise.

    Names are 1-128 characters of letters, digits, ``.``, ``_`` and ``-``, starting with a
    letter or digit, without ``..``: they become directory names, so nothing may escape the
    store's root.

    Raises:
        InvalidModelNameError: The name is not safe (``../etc``, ``a/b``, ``/abs``, empty...).

    Example:
        >>> validate_model_name("iris")
        'iris'
        >>> validate_model_name("../etc")
        Traceback (most recent call last):
        ...
        rayml.errors.InvalidModelNameError: model name '../etc' is not valid: use 1-128 \
letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise InvalidModelNameError(
            f"model name {name!r} is not valid: use 1-128 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit, without '..'"
        )
    return name


def validate_version(version: object) -> str:
    """Return the canonical (zero-padded) form of ``version``, else raise.

    Accepts ``"000003"``, ``"3"`` or ``3``.

    Raises:
        InvalidModelNameError: Not 1-12 digits.

    Example:
        >>> validate_version("3"), validate_version(12)
        ('000003', '000012')
    """
    if isinstance(version, int) and not isinstance(version, bool) and version >= 0:
        version = str(version)
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise InvalidModelNameError(f"model version {version!r} is not valid: use 1-12 digits")
    return format_version(int(version))


def format_version(number: int) -> str:
    """Return version ``number`` as a zero-padded string (``1`` -> ``"000001"``).

    Example:
        >>> format_version(42)
        '000042'
    """
    return f"{number:0{_VERSION_WIDTH}d}"


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
        self._fs, path = fsspec.core.url_to_fs(str(root), **(storage_options or {}))
        self._root = path.rstrip("/") or "/"
        self._local = isinstance(self._fs, LocalFileSystem)
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
        framework, data, model_class = self._serialise(model, format)
        artifact = _ARTIFACTS[framework]
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
            "format": _FORMATS[framework],
            "model_class": model_class,
            "artifact": artifact,
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_bytes": len(data),
            "libraries": _library_versions(),
            # Lets a writer on an object store recognise its own metadata on read-back.
            "writer": uuid.uuid4().hex,
        }
        # Fail on unserialisable params before anything is written or reserved.
        try:
            _dump_metadata(metadata)
        except (TypeError, ValueError) as exc:
            raise ModelStoreError(
                f"metadata for model {name!r} is not JSON-serialisable: {exc}"
            ) from exc
        if self._local:
            version = self._save_local(name, artifact, data, metadata)
        else:
            version = self._save_remote(name, artifact, data, metadata)
        logger.info(
            "saved model=%s version=%s framework=%s pipeline=%s bytes=%d",
            name,
            version.version,
            framework,
            pipeline,
            len(data),
        )
        return version

    def _save_local(
        self, name: str, artifact: str, data: bytes, metadata: dict[str, Any]
    ) -> ModelVersion:
        model_dir = self._join(name)
        os.makedirs(model_dir, exist_ok=True)
        # Staging lives next to the versions so the final rename stays on one filesystem
        # (rename is atomic only within one); its leading dot keeps it out of version listings.
        _remove_stale_staging(model_dir)
        staging = tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=model_dir)
        reserved: str | None = None
        try:
            _write_file(os.path.join(staging, artifact), data)
            number = self._next_number(name)
            for _ in range(_MAX_RESERVE_ATTEMPTS):
                candidate = os.path.join(model_dir, format_version(number))
                try:
                    # mkdir is exclusive: of two processes racing for a number, one wins and
                    # the other moves on. The empty directory is invisible (no metadata yet).
                    os.mkdir(candidate)
                except FileExistsError:
                    number += 1
                    continue
                reserved = candidate
                break
            else:
                raise ModelStoreError(
                    f"could not reserve a version for model {name!r} after "
                    f"{_MAX_RESERVE_ATTEMPTS} attempts"
                )
            version = format_version(number)
            metadata["version"] = version
            _write_file(os.path.join(staging, METADATA_FILE), _dump_metadata(metadata))
            # Renaming a directory onto an empty one replaces it atomically (POSIX): readers
            # see either the empty reservation or the complete version, never a partial one.
            os.rename(staging, reserved)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if reserved is not None:
                # Only our own empty reservation: the rename did not happen.
                with contextlib.suppress(OSError):
                    os.rmdir(reserved)
            if isinstance(exc, Exception) and not isinstance(exc, ModelStoreError):
                raise ModelStoreError(
                    f"saving model {name!r} failed: {type(exc).__name__}: {exc}"
                ) from exc
            raise
        return ModelVersion(name, version, self._uri(reserved), metadata)

    def _save_remote(
        self, name: str, artifact: str, data: bytes, metadata: dict[str, Any]
    ) -> ModelVersion:
        number = self._next_number(name)
        for _ in range(_MAX_RESERVE_ATTEMPTS):
            version = format_version(number)
            version_dir = self._join(name, version)
            meta_path = f"{version_dir}/{METADATA_FILE}"
            if self._fs.exists(meta_path):
                number += 1
                continue
            metadata["version"] = version
            try:
                self._fs.pipe_file(f"{version_dir}/{artifact}", data)
                # metadata.json last: it is the commit point that makes the version visible.
                self._fs.pipe_file(meta_path, _dump_metadata(metadata))
            except Exception as exc:
                raise ModelStoreError(
                    f"saving model {name!r} version {version} to {self.root!r} failed: {exc}"
                ) from exc
            # No exclusive create on object stores: if another writer's metadata landed on the
            # same number after ours, that version is theirs; ours goes to the next number.
            current = self._read_metadata(name, version)
            if current is not None and current.get("writer") == metadata["writer"]:
                return ModelVersion(name, version, self._uri(version_dir), metadata)
            logger.warning("model=%s version=%s taken by another writer; retrying", name, version)
            number += 1
        raise ModelStoreError(
            f"could not reserve a version for model {name!r} after {_MAX_RESERVE_ATTEMPTS} attempts"
        )

    def _next_number(self, name: str) -> int:
        # Count incomplete directories too, so a crashed writer's leftovers are never reused.
        numbers = [int(v) for v in self._version_dirs(name)]
        return max(numbers, default=0) + 1

    def _serialise(self, model: Any, format: SaveFormat) -> tuple[str, bytes, str | None]:
        if format not in ("auto", "xgboost", "skops", "pickle"):
            raise ModelStoreError(f"unknown format {format!r}; use auto, xgboost, skops or pickle")
        if format == "pickle":
            if not self.allow_pickle:
                raise UnsafeModelFormatError(
                    "format='pickle' needs a store opened with allow_pickle=True; loading a "
                    "pickle runs arbitrary code, so prefer XGBoost or scikit-learn (skops) models"
                )
            return "pickle", pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL), None
        xgb_class = _xgboost_class(model)
        if format == "xgboost" or (format == "auto" and xgb_class is not None):
            if xgb_class is None:
                raise UnsafeModelFormatError(
                    f"format='xgboost' needs an XGBoost model, got {type(model).__qualname__}"
                )
            return "xgboost", _xgboost_bytes(model), xgb_class
        if format == "skops" or (format == "auto" and _is_sklearn(model)):
            import skops.io

            try:
                return "sklearn", skops.io.dumps(model), None
            except Exception as exc:
                raise ModelStoreError(
                    f"skops could not serialise {type(model).__qualname__}: {exc}"
                ) from exc
        raise UnsafeModelFormatError(
            f"no safe format for {type(model).__module__}.{type(model).__qualname__}: store an "
            f"XGBoost model or a scikit-learn estimator, or pass format='pickle' to a store "
            f"opened with allow_pickle=True"
        )

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
        version_dir = self._join(name, version)
        meta_path = f"{version_dir}/{METADATA_FILE}"
        if not self._fs.exists(meta_path):
            raise ModelNotFoundError(name, version)
        self._fs.rm_file(meta_path)
        for entry in self._fs.ls(version_dir, detail=False):
            with contextlib.suppress(FileNotFoundError):
                self._fs.rm(entry, recursive=True)
        deleted_at = dt.datetime.now(dt.UTC).isoformat()
        self._fs.pipe_file(
            f"{version_dir}/{TOMBSTONE_FILE}", _dump_metadata({"deleted_at": deleted_at})
        )
        logger.info("deleted model=%s version=%s", name, version)

    # -- reading ----------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Return the names that have at least one complete version, sorted.

        Example:
            >>> import tempfile
            >>> ModelStore(tempfile.mkdtemp()).names()
            []
        """
        return [
            name
            for name in self._children(self._root)
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
        for version in self._version_dirs(name):
            metadata = self._read_metadata(name, version)
            if metadata is not None:
                result.append(
                    ModelVersion(name, version, self._uri(self._join(name, version)), metadata)
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
        for version in reversed(self._version_dirs(name)):
            metadata = self._read_metadata(name, version)
            if metadata is not None:
                return ModelVersion(name, version, self._uri(self._join(name, version)), metadata)
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
            read = self._read_metadata(name, version)
            if read is None:
                raise ModelNotFoundError(name, version)
            metadata = read
        artifact = metadata.get("artifact")
        framework = metadata.get("framework")
        if framework not in _ARTIFACTS or artifact != _ARTIFACTS[framework]:
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
        path = f"{self._join(name, version)}/{artifact}"
        try:
            data = self._fs.cat_file(path)
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
        model = self._deserialise(framework, data, metadata, f"{name} version {version}")
        logger.info("loaded model=%s version=%s framework=%s", name, version, framework)
        return LoadedModel(name, version, model, metadata)

    def _deserialise(self, framework: str, data: bytes, metadata: dict[str, Any], what: str) -> Any:
        if framework == "pickle":
            return pickle.loads(data)  # allowed explicitly by allow_pickle=True
        if framework == "xgboost":
            return _xgboost_load(data, metadata.get("model_class"), what)
        import skops.io

        try:
            untrusted = skops.io.get_untrusted_types(data=data)
        except Exception as exc:
            raise ModelStoreError(f"{what}: unreadable skops artifact: {exc}") from exc
        refused = [t for t in untrusted if not self._is_trusted(t)]
        if refused:
            raise UnsafeModelFormatError(
                f"{what}: skops artifact references types that are not trusted: {refused}. "
                f"If you trust them, pass trusted_types={refused!r} to ModelStore."
            )
        try:
            return skops.io.loads(data, trusted=list(untrusted))
        except Exception as exc:
            raise ModelStoreError(f"{what}: skops could not load the artifact: {exc}") from exc

    def _is_trusted(self, type_name: str) -> bool:
        if type_name in self.trusted_types:
            return True
        if type_name.split(".", 1)[0] not in DEFAULT_TRUSTED_PACKAGES:
            return False
        # Within sklearn/numpy/scipy only *classes* are trusted by default. A function reference
        # (e.g. the func of a FunctionTransformer) would later be called on request data, so
        # those must be listed explicitly.
        return isinstance(_resolve(type_name), type)

    # -- paths and listings -----------------------------------------------------------------

    def _uri(self, path: str) -> str:
        # Local paths stay plain paths; remote ones get their protocol back (s3://...).
        return path if self._local else str(self._fs.unstrip_protocol(path))

    def _join(self, *parts: str) -> str:
        return "/".join([self._root.rstrip("/"), *parts])

    def _children(self, path: str) -> list[str]:
        try:
            entries = self._fs.ls(path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = []
        for entry in entries:
            if entry.get("type") == "directory":
                names.append(str(entry["name"]).rstrip("/").rsplit("/", 1)[-1])
        return sorted(set(names))

    @staticmethod
    def _has_valid_name(name: str) -> bool:
        try:
            validate_model_name(name)
        except InvalidModelNameError:
            return False
        return True

    def _version_dirs(self, name: str) -> list[str]:
        """Version directories of ``name``, complete or not, by number (oldest first)."""
        dirs = [d for d in self._children(self._join(name)) if _VERSION_RE.match(d)]
        return sorted(dirs, key=int)

    def _read_metadata(self, name: str, version: str) -> dict[str, Any] | None:
        """Return a version's metadata, or ``None`` if the version is not complete."""
        path = f"{self._join(name, version)}/{METADATA_FILE}"
        try:
            raw = self._fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        try:
            metadata = json.loads(raw)
        except ValueError:
            logger.warning("model=%s version=%s has unreadable metadata; skipped", name, version)
            return None
        return metadata if isinstance(metadata, dict) else None


# --- format helpers -----------------------------------------------------------------------


def _dump_metadata(metadata: dict[str, Any]) -> bytes:
    return json.dumps(metadata, indent=2, sort_keys=True, allow_nan=False).encode()


def _remove_stale_staging(model_dir: str) -> None:
    """Remove staging directories left by writers that crashed (they are invisible anyway)."""
    now = time.time()
    with os.scandir(model_dir) as entries:
        for entry in entries:
            if not entry.name.startswith(_STAGING_PREFIX):
                continue
            with contextlib.suppress(OSError):
                if now - entry.stat().st_mtime > _STALE_STAGING_S:
                    shutil.rmtree(entry.path, ignore_errors=True)


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        # Durable before it is made visible by the rename: a power cut must not leave a
        # complete-looking version with an empty artifact.
        os.fsync(fh.fileno())


def _library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist, key in (
        ("xgboost", "xgboost"),
        ("scikit-learn", "sklearn"),
        ("numpy", "numpy"),
        ("skops", "skops"),
    ):
        try:
            versions[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[key] = None
    return versions


def _xgboost_class(model: Any) -> str | None:
    """Name of the first allowed XGBoost class in ``model``'s MRO, or ``None``."""
    # Check the module name before importing xgboost: non-XGBoost models never pay for it.
    if not any(cls.__module__.startswith("xgboost") for cls in type(model).__mro__):
        return None
    import xgboost

    for cls in type(model).__mro__:
        if cls.__name__ in _XGBOOST_CLASSES and getattr(xgboost, cls.__name__, None) is cls:
            if cls is not type(model):
                # A user subclass is stored as its XGBoost base: only xgboost's own classes are
                # ever instantiated from metadata.
                logger.info("storing %s as xgboost.%s", type(model).__qualname__, cls.__name__)
            return str(cls.__name__)
    return None


def _xgboost_bytes(model: Any) -> bytes:
    # save_model (not Booster.save_raw) also records the scikit-learn wrapper's attributes
    # (classes, objective), which it only writes to a file; a temp file gives us the bytes.
    with tempfile.TemporaryDirectory(prefix="rayml-xgb-") as tmp:
        path = os.path.join(tmp, "model.ubj")
        try:
            model.save_model(path)
        except Exception as exc:
            raise ModelStoreError(f"XGBoost could not save the model: {exc}") from exc
        with open(path, "rb") as fh:
            return fh.read()


def _xgboost_load(data: bytes, class_name: Any, what: str) -> Any:
    if class_name not in _XGBOOST_CLASSES:
        raise UnsafeModelFormatError(
            f"{what}: metadata names model class {class_name!r}; only {_XGBOOST_CLASSES} load"
        )
    import xgboost

    cls = getattr(xgboost, class_name)
    try:
        model = cls()
        model.load_model(bytearray(data))
    except Exception as exc:
        raise ModelStoreError(f"{what}: XGBoost could not load the artifact: {exc}") from exc
    return model


def _is_sklearn(model: Any) -> bool:
    try:
        from sklearn.base import BaseEstimator
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        return False
    return isinstance(model, BaseEstimator)


def _resolve(type_name: str) -> Any:
    """Import ``pkg.module.Attr`` (within trusted packages only) and return it, or ``None``."""
    module_name, _, attr = type_name.rpartition(".")
    if not module_name:
        return None
    try:
        module = importlib.import_module(module_name)
    except Exception:
        return None
    return getattr(module, attr, None)
