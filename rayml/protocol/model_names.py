"""Model names and version numbers, as requests, announcements and registrations carry them:
what is safe as a path component, and the canonical form.

Names and versions become directories of the model store, and they arrive in requests and
pipeline registrations, so they are checked here, before any path is built from them. This
module imports nothing heavy: the registry checks model names when a pipeline is decorated.
"""

from __future__ import annotations

import re

from rayml.errors import InvalidModelNameError

__all__ = ["VERSION_RE", "format_version", "validate_model_name", "validate_version"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: A version directory's name: 1-12 digits (zero-padded to six when rayml writes it).
VERSION_RE = re.compile(r"^[0-9]{1,12}$")
_VERSION_WIDTH = 6


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
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise InvalidModelNameError(f"model version {version!r} is not valid: use 1-12 digits")
    return format_version(int(version))


def format_version(number: int) -> str:
    """Return version ``number`` as a zero-padded string (``1`` -> ``"000001"``).

    Example:
        >>> format_version(42)
        '000042'
    """
    return f"{number:0{_VERSION_WIDTH}d}"
