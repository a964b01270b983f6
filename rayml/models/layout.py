"""Where a model store keeps its versions, and how a new version appears atomically.

Layout::

    <root>/<name>/<version>/model.ubj | model.skops | model.pkl
    <root>/<name>/<version>/metadata.json
    <root>/<name>/<version>/promoted.json     (once the version is promoted: see below)

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

``promoted.json`` marks a version that was promoted (:mod:`rayml.models.promotion`): written
once, after the version is complete, and never removed but with the version. Its existence is
what counts; its content (when, why) is informative.

:class:`rayml.models.store.ModelStore` is the API; this module only moves bytes and directories. It
trusts its callers to have validated names and versions (:mod:`rayml.protocol.model_names`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from rayml.errors import ModelStoreError
from rayml.protocol.model_names import VERSION_RE, format_version

logger = logging.getLogger(__name__)

__all__ = ["METADATA_FILE", "PROMOTED_FILE", "TOMBSTONE_FILE", "StoreLayout", "dump_metadata"]

METADATA_FILE = "metadata.json"
#: Marks a promoted version (see the module docstring).
PROMOTED_FILE = "promoted.json"
#: Left in a deleted version's directory so that its number is never reused.
TOMBSTONE_FILE = "deleted.json"
_STAGING_PREFIX = ".staging-"
# A staging directory this old belongs to a writer that died; no save takes a day to write.
_STALE_STAGING_S = 24 * 3600
# A bounded number of version numbers to try before concluding something is wrong (e.g. a
# directory full of unreadable entries), instead of looping forever.
_MAX_RESERVE_ATTEMPTS = 1000


class StoreLayout:
    """The version directories of a model store on one (local or fsspec) filesystem.

    Args:
        fs: The fsspec filesystem.
        root: The store's root path on ``fs`` (without protocol).
        url: The root as the user gave it, for messages.

    Example:
        >>> import tempfile
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> layout = StoreLayout(LocalFileSystem(), tempfile.mkdtemp(), url="demo")
        >>> meta = {"writer": "me"}
        >>> version, uri = layout.commit("m", "model.pkl", b"bytes", meta)
        >>> version, meta["version"], layout.version_dirs("m")
        ('000001', '000001', ['000001'])
    """

    def __init__(self, fs: Any, root: str, *, url: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.url = url
        self.local = isinstance(fs, LocalFileSystem)

    # -- paths and listings -----------------------------------------------------------------

    def uri(self, path: str) -> str:
        """``path`` as users see it: plain for local roots, with its protocol (s3://...) else."""
        return path if self.local else str(self.fs.unstrip_protocol(path))

    def join(self, *parts: str) -> str:
        """The path of ``parts`` under the root."""
        return "/".join([self.root.rstrip("/"), *parts])

    def children(self, path: str) -> list[str]:
        """Names of the directories in ``path``, sorted (empty if ``path`` does not exist)."""
        try:
            entries = self.fs.ls(path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = []
        for entry in entries:
            if entry.get("type") == "directory":
                names.append(str(entry["name"]).rstrip("/").rsplit("/", 1)[-1])
        return sorted(set(names))

    def version_dirs(self, name: str) -> list[str]:
        """Version directories of ``name``, complete or not, by number (oldest first)."""
        dirs = [d for d in self.children(self.join(name)) if VERSION_RE.match(d)]
        return sorted(dirs, key=int)

    def read_metadata(self, name: str, version: str) -> dict[str, Any] | None:
        """Return a version's metadata, or ``None`` if the version is not complete."""
        path = f"{self.join(name, version)}/{METADATA_FILE}"
        try:
            raw = self.fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        try:
            metadata = json.loads(raw)
        except ValueError:
            logger.warning("model=%s version=%s has unreadable metadata; skipped", name, version)
            return None
        return metadata if isinstance(metadata, dict) else None

    def read_marker(self, name: str, version: str) -> dict[str, Any] | None:
        """A version's promotion marker, or ``None`` if it has none (an unreadable one reads
        as ``{}``: it exists, so the version was promoted)."""
        path = f"{self.join(name, version)}/{PROMOTED_FILE}"
        try:
            raw = self.fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        try:
            marker = json.loads(raw)
        except ValueError:
            return {}
        return marker if isinstance(marker, dict) else {}

    def marked(self, name: str) -> set[str]:
        """The versions of ``name`` that carry a promotion marker (one listing)."""
        pattern = f"{self.join(name)}/*/{PROMOTED_FILE}"
        try:
            paths = self.fs.glob(pattern)
        except (FileNotFoundError, NotADirectoryError):
            return set()
        found = set()
        for path in paths:
            version = str(path).rstrip("/").rsplit("/", 2)[-2]
            if VERSION_RE.match(version):
                found.add(version)
        return found

    def write_marker(self, name: str, version: str, marker: dict[str, Any]) -> None:
        """Mark a version promoted (overwrites an earlier marker)."""
        self.fs.pipe_file(f"{self.join(name, version)}/{PROMOTED_FILE}", dump_metadata(marker))

    def next_number(self, name: str) -> int:
        """The lowest version number above every directory of ``name``."""
        # Count incomplete directories too, so a crashed writer's leftovers are never reused.
        numbers = [int(v) for v in self.version_dirs(name)]
        return max(numbers, default=0) + 1

    # -- writing ----------------------------------------------------------------------------

    def commit(
        self, name: str, artifact: str, data: bytes, metadata: dict[str, Any]
    ) -> tuple[str, str]:
        """Write ``data`` as ``artifact`` of a new version of ``name``, then its metadata.

        Sets ``metadata["version"]`` to the number it reserved.

        Returns:
            The new version and its URI.

        Raises:
            ModelStoreError: Writing failed; no version became visible.
        """
        if self.local:
            return self._commit_local(name, artifact, data, metadata)
        return self._commit_remote(name, artifact, data, metadata)

    def _commit_local(
        self, name: str, artifact: str, data: bytes, metadata: dict[str, Any]
    ) -> tuple[str, str]:
        model_dir = self.join(name)
        os.makedirs(model_dir, exist_ok=True)
        # Staging lives next to the versions so the final rename stays on one filesystem
        # (rename is atomic only within one); its leading dot keeps it out of version listings.
        _remove_stale_staging(model_dir)
        staging = tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=model_dir)
        reserved: str | None = None
        try:
            _write_file(os.path.join(staging, artifact), data)
            number = self.next_number(name)
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
            _write_file(os.path.join(staging, METADATA_FILE), dump_metadata(metadata))
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
        return version, self.uri(reserved)

    def _commit_remote(
        self, name: str, artifact: str, data: bytes, metadata: dict[str, Any]
    ) -> tuple[str, str]:
        number = self.next_number(name)
        for _ in range(_MAX_RESERVE_ATTEMPTS):
            version = format_version(number)
            version_dir = self.join(name, version)
            meta_path = f"{version_dir}/{METADATA_FILE}"
            if self.fs.exists(meta_path):
                number += 1
                continue
            metadata["version"] = version
            try:
                self.fs.pipe_file(f"{version_dir}/{artifact}", data)
                # metadata.json last: it is the commit point that makes the version visible.
                self.fs.pipe_file(meta_path, dump_metadata(metadata))
            except Exception as exc:
                raise ModelStoreError(
                    f"saving model {name!r} version {version} to {self.url!r} failed: {exc}"
                ) from exc
            # No exclusive create on object stores: if another writer's metadata landed on the
            # same number after ours, that version is theirs; ours goes to the next number.
            current = self.read_metadata(name, version)
            if current is not None and current.get("writer") == metadata["writer"]:
                return version, self.uri(version_dir)
            logger.warning("model=%s version=%s taken by another writer; retrying", name, version)
            number += 1
        raise ModelStoreError(
            f"could not reserve a version for model {name!r} after {_MAX_RESERVE_ATTEMPTS} attempts"
        )

    def delete(self, name: str, version: str) -> bool:
        """Delete a complete version, leaving a tombstone; ``False`` if there was none.

        ``metadata.json`` goes first, so the version disappears at once for readers even if
        removing the artifact fails half way. The tombstone keeps the number from being reused.
        """
        version_dir = self.join(name, version)
        meta_path = f"{version_dir}/{METADATA_FILE}"
        if not self.fs.exists(meta_path):
            return False
        self.fs.rm_file(meta_path)
        for entry in self.fs.ls(version_dir, detail=False):
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(entry, recursive=True)
        deleted_at = dt.datetime.now(dt.UTC).isoformat()
        self.fs.pipe_file(
            f"{version_dir}/{TOMBSTONE_FILE}", dump_metadata({"deleted_at": deleted_at})
        )
        return True


def dump_metadata(metadata: dict[str, Any]) -> bytes:
    """Serialise metadata as ``metadata.json`` holds it (strict JSON: no NaN)."""
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
