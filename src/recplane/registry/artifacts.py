"""The registry's file store: copies of exported model folders under one root, local or any fsspec URL.

A version's files live under ``<root>/<name>/<version>/``. Registering copies the source folder into a staging
folder first (the slow part, outside any database transaction) and then moves it to its numbered place while
the version row is being committed, so a version row never points at half-copied files and deleting the run
the model came from never breaks a version. Folders on object storage are downloaded once into a local cache
(versions are immutable, so a cached copy never goes stale).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
import shutil
import uuid
from pathlib import Path
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from recplane.errors import BackendUnavailable, InvalidInput, NotFound

__all__ = ["ArtifactStore", "read_json_file"]

MANIFEST = "manifest.json"
_STAGING = ".staging"
_COPY_CHUNK = 8 * 1024 * 1024


def _filesystem(uri: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem and path of ``uri``; a scheme without its package installed says what to install."""
    try:
        fs, path = url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise BackendUnavailable(f"Cannot open {uri!r}: {exc}. Install the fsspec backend for its scheme.") from exc
    return fs, str(path).rstrip("/")


def read_json_file(folder: str, name: str) -> dict[str, Any] | None:
    """The JSON object in ``folder/name`` (a path or fsspec URL), or None when the file is not there."""
    fs, path = _filesystem(folder)
    target = f"{path}/{name}"
    if not fs.isfile(target):
        return None
    with fs.open(target, "rb") as handle:
        try:
            data = json.loads(handle.read())
        except ValueError as exc:
            raise InvalidInput(f"{folder}/{name} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{folder}/{name} must hold a JSON object.")
    return data


def _copy_tree(source: str, destination: str) -> int:
    """Copy every file under ``source`` to ``destination`` (both paths or URLs, any filesystems); bytes copied."""
    src_fs, src_path = _filesystem(source)
    dst_fs, dst_path = _filesystem(destination)
    copied = 0
    for file in sorted(src_fs.find(src_path)):
        relative = posixpath.relpath(file, src_path)
        target = f"{dst_path}/{relative}"
        dst_fs.makedirs(posixpath.dirname(target), exist_ok=True)
        with src_fs.open(file, "rb") as reader, dst_fs.open(target, "wb") as writer:
            shutil.copyfileobj(reader, writer, _COPY_CHUNK)
        copied += int(src_fs.size(file) or 0)
    return copied


class ArtifactStore:
    """Model version folders under ``root`` (a path or fsspec URL), with a local cache for remote ones."""

    def __init__(self, root: str, cache: Path) -> None:
        self._fs, self._root = _filesystem(root)
        # URIs keep the root as configured (s3://bucket/models/...), local roots become absolute paths.
        self._base = str(Path(self._root).resolve()) if isinstance(self._fs, LocalFileSystem) else root.rstrip("/")
        self._cache = cache

    @property
    def root(self) -> str:
        """The store's root as a path or URL."""
        return self._base

    def version_uri(self, name: str, version: int) -> str:
        """Where version ``version`` of model ``name`` lives."""
        return f"{self._base}/{name}/{version}"

    def stage(self, source: str, name: str) -> str:
        """Copy the folder ``source`` into a fresh staging folder of model ``name``; returns its URI."""
        staging = f"{self._base}/{name}/{_STAGING}/{uuid.uuid4().hex}"
        try:
            _copy_tree(source, staging)
        except BaseException:
            self.discard(staging)
            raise
        return staging

    def publish(self, staged: str, name: str, version: int) -> str:
        """Move a staged folder to its numbered place (replacing leftovers of a crashed attempt); returns the URI.

        Only call it while holding the version's row: nobody else can own that number then.
        """
        _, staged_path = _filesystem(staged)
        _, final = _filesystem(self.version_uri(name, version))
        if self._fs.exists(final):
            self._fs.rm(final, recursive=True)
        self._fs.makedirs(posixpath.dirname(final), exist_ok=True)
        self._fs.mv(staged_path, final, recursive=True)
        return self.version_uri(name, version)

    def discard(self, uri: str) -> None:
        """Remove a staged or published folder (best effort: cleanup must not hide the error that caused it)."""
        _, path = _filesystem(uri)
        with contextlib.suppress(FileNotFoundError, OSError):
            if self._fs.exists(path):
                self._fs.rm(path, recursive=True)

    def local_path(self, uri: str, name: str, version: int) -> Path:
        """A local folder with the files of ``uri``: the folder itself on local disk, else a cached download."""
        fs, path = _filesystem(uri)
        if isinstance(fs, LocalFileSystem):
            folder = Path(path)
            if not (folder / MANIFEST).is_file():
                raise NotFound(f"The files of model {name}:{version} are missing at {folder} (no {MANIFEST}).")
            return folder
        digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
        cached = self._cache / name / f"{version}-{digest}"
        if (cached / MANIFEST).is_file():
            return cached
        return self._download(uri, cached)

    def _download(self, uri: str, cached: Path) -> Path:
        """Download into a temporary folder and rename it into place, so a reader never sees half a folder."""
        cached.parent.mkdir(parents=True, exist_ok=True)
        incoming = cached.parent / f".incoming-{uuid.uuid4().hex}"
        try:
            _copy_tree(uri, str(incoming))
            if not (incoming / MANIFEST).is_file():
                raise NotFound(f"The files at {uri} hold no {MANIFEST}; the registry's copy is damaged.")
            try:
                incoming.rename(cached)
            except OSError:
                if not (cached / MANIFEST).is_file():  # another process won the race only if its copy is whole
                    raise
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        return cached
