"""Model artifacts to bytes and back, in safe formats only.

XGBoost models are stored as UBJ (``save_model``), scikit-learn estimators through ``skops``
(loaded only if every type they reference is trusted), and pickle only where the store allows
it. The store's metadata names the format and, for XGBoost, the class to load into; both are
checked against fixed lists here, so metadata that anyone with write access could edit never
picks a file to read or a class to instantiate.

:class:`rayml.models.store.ModelStore` decides *where* bytes go; this module decides *what* the
bytes are. Heavy libraries (xgboost, skops, scikit-learn) are imported only when a model of theirs
is saved or loaded.

Example:
    >>> from sklearn.linear_model import LogisticRegression
    >>> est = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    >>> framework, data, model_class = serialise(est, "auto", allow_pickle=False)
    >>> framework, ARTIFACTS[framework], model_class
    ('sklearn', 'model.skops', None)
    >>> deserialise(framework, data, {}, "demo", trusted_types=()).predict([[1.0]]).tolist()
    [1]
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import pickle
import platform
import tempfile
from collections.abc import Collection
from typing import Any, Literal

from rayml.errors import ModelStoreError, UnsafeModelFormatError

logger = logging.getLogger(__name__)

__all__ = [
    "ARTIFACTS",
    "DEFAULT_TRUSTED_PACKAGES",
    "FORMATS",
    "SaveFormat",
    "deserialise",
    "is_trusted",
    "library_versions",
    "serialise",
]

#: Packages whose *classes* a skops artifact may reference without being listed explicitly.
DEFAULT_TRUSTED_PACKAGES = frozenset({"sklearn", "numpy", "scipy"})

SaveFormat = Literal["auto", "xgboost", "skops", "pickle"]

#: Artifact file name per framework; the only names a store ever reads.
ARTIFACTS = {"xgboost": "model.ubj", "sklearn": "model.skops", "pickle": "model.pkl"}
#: Serialisation format per framework, recorded in the metadata.
FORMATS = {"xgboost": "ubj", "sklearn": "skops", "pickle": "pickle"}

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


def serialise(
    model: Any, format: SaveFormat, *, allow_pickle: bool
) -> tuple[str, bytes, str | None]:
    """Return ``(framework, bytes, xgboost class name or None)`` for ``model``.

    Args:
        model: XGBoost model or ``Booster``, or scikit-learn estimator (anything with
            ``format="pickle"`` when ``allow_pickle``).
        format: ``"auto"`` picks XGBoost UBJ or skops from the model's type.
        allow_pickle: Whether ``format="pickle"`` is allowed.

    Raises:
        UnsafeModelFormatError: Pickle requested but not allowed, or no safe format fits.
        ModelStoreError: Unknown format, or the library failed to serialise the model.
    """
    if format not in ("auto", "xgboost", "skops", "pickle"):
        raise ModelStoreError(f"unknown format {format!r}; use auto, xgboost, skops or pickle")
    if format == "pickle":
        if not allow_pickle:
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


def deserialise(
    framework: str,
    data: bytes,
    metadata: dict[str, Any],
    what: str,
    *,
    trusted_types: Collection[str],
) -> Any:
    """Load the model in ``data``, written as ``framework`` (see :data:`ARTIFACTS`).

    The caller has already refused pickle where it is not allowed and checked the checksum.

    Args:
        framework: ``"xgboost"``, ``"sklearn"`` or ``"pickle"``.
        data: The artifact's bytes.
        metadata: The version's metadata (``model_class`` names the XGBoost class).
        what: ``"<name> version <version>"``, for error messages.
        trusted_types: Extra type names skops artifacts may reference (see :func:`is_trusted`).

    Raises:
        UnsafeModelFormatError: Untrusted skops types, or an XGBoost class not allowed.
        ModelStoreError: The library could not read the artifact.
    """
    if framework == "pickle":
        return pickle.loads(data)  # allowed explicitly by allow_pickle=True
    if framework == "xgboost":
        return _xgboost_load(data, metadata.get("model_class"), what)
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:
        raise ModelStoreError(f"{what}: unreadable skops artifact: {exc}") from exc
    refused = [t for t in untrusted if not is_trusted(t, trusted_types)]
    if refused:
        raise UnsafeModelFormatError(
            f"{what}: skops artifact references types that are not trusted: {refused}. "
            f"If you trust them, pass trusted_types={refused!r} to ModelStore."
        )
    try:
        return skops.io.loads(data, trusted=list(untrusted))
    except Exception as exc:
        raise ModelStoreError(f"{what}: skops could not load the artifact: {exc}") from exc


def is_trusted(type_name: str, trusted_types: Collection[str] = ()) -> bool:
    """Whether a skops artifact may reference ``type_name``.

    Listed ``trusted_types`` are; otherwise only *classes* of scikit-learn, numpy and scipy.

    Example:
        >>> is_trusted("sklearn.linear_model.LogisticRegression"), is_trusted("os.system")
        (True, False)
        >>> is_trusted("numpy.load"), is_trusted("numpy.load", {"numpy.load"})
        (False, True)
    """
    if type_name in trusted_types:
        return True
    if type_name.split(".", 1)[0] not in DEFAULT_TRUSTED_PACKAGES:
        return False
    # Within sklearn/numpy/scipy only *classes* are trusted by default. A function reference
    # (e.g. the func of a FunctionTransformer) would later be called on request data, so
    # those must be listed explicitly.
    return isinstance(_resolve(type_name), type)


def library_versions() -> dict[str, str | None]:
    """Versions of Python and the ML libraries, recorded with each saved model."""
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
