"""Appends that can be re-run: after a kill at any point, the same command finishes the
same append, once, and leaves nothing behind.

An append is many steps: shards in ``<bundle>.partial/``, a generation assembled under
``.gen-N.staging-*``, renamed to ``gen-N``, ``CURRENT`` replaced (via ``.CURRENT.tmp-*``),
then the work directory removed. A kill between two of them used to leave a state the
re-run misread: after ``CURRENT`` moved, the re-run saw a new base and appended the same
samples again; before it moved, the re-run published ``gen-N+1`` and left ``gen-N`` and
the temp file for ever. So:

- **A request key** (:func:`request_key`) names what an append adds: the data (its
  description and every file's size and mtime), ``--limit``, batch and shard size, device
  kind, the image limit. The dataset entry the append adds to the manifest records it
  (``datasets[-1]["request"]``), and later generations copy that list.
- **One append at a time**: rank 0 holds an exclusive ``flock`` on the bundle directory
  for the whole job (:class:`AppendLock`; the kernel drops it when the process dies). A
  second append fails at once, so whatever the holder finds that no finished step
  explains is debris of a killed job.
- **Recovery first** (:func:`recover`), under the lock: a generation numbered above
  ``CURRENT``'s is an orphan. It is adopted (``CURRENT`` replaced: the step the killed run
  did not reach) when it is complete and is this request on top of ``CURRENT``; any other
  is removed, as are staging directories and ``CURRENT`` temp files.
- **Published already?** If the current generation's datasets hold this request
  (:func:`published_entry`), the append happened: the re-run removes the work directory
  and reports that generation; nothing is computed. Running a finished append again is
  therefore a no-op too: a dataset is never appended twice with the same options.

Readers never take the lock: they resolve ``CURRENT`` once and only read generations.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from .assemble import GenerationInputs, assemble_generation
from .durable import fsync_dir
from .errors import BundleError, IndexerError
from .manifest import (
    CURRENT,
    generation_name,
    parse_generation,
    read_manifest,
    resolve_generation,
    verify_files,
    write_current,
)

__all__ = ["AppendLock", "request_key", "recover", "published_entry", "publish_append"]

log = logging.getLogger(__name__)


def request_key(ds, options: dict) -> str:
    """sha256 of what an append adds: the dataset (description + each file's size and
    mtime, so changed files make a new request) and the ``options`` that change its rows."""
    files = hashlib.sha256()
    for path in getattr(ds, "paths", ()):  # file datasets; Fashion-MNIST's description hashes its files
        try:
            st = os.stat(path)
            files.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            files.update(f"{path}\0missing\n".encode())
    body = {"data": ds.describe(), "files": files.hexdigest(), "options": options}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AppendLock:
    """An exclusive, non-blocking ``flock`` on the bundle directory, held while appending."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.abspath(root))
        self._fd: int | None = None

    def __enter__(self) -> AppendLock:
        fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IndexerError(
                f"another `parasal index --append-to {self.root}` is running (it holds the bundle's lock); "
                "wait for it to finish, then rerun"
            ) from None
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None


def published_entry(manifest: dict, request: str) -> dict | None:
    """The dataset entry this request added to the bundle, if it did."""
    return next((d for d in manifest.get("datasets", ()) if d.get("request") == request), None)


def recover(root: str | os.PathLike, request: str) -> None:
    """Under the lock: adopt this request's orphaned generation, remove every other orphan,
    staging directory and ``CURRENT`` temp file (see the module docstring)."""
    root = Path(os.path.abspath(root))
    current = parse_generation(resolve_generation(root).name)
    for path in sorted(root.glob(".gen-*.staging-*")) + sorted(root.glob(f".{CURRENT}.tmp-*")):
        log.info("removing %s, left by an append that was killed", path.name)
        _remove(path)
    for path in sorted(root.glob("gen-*")):
        number = _generation_number(path)
        if number is None or number <= current:
            continue  # the current generation and older ones (readers may still use them)
        if _is_adoptable(path, request, current):
            write_current(root, number)
            log.warning("%s: adopted %s, published by a killed run of this append", root, path.name)
            current = number
        else:
            log.warning("%s: removing %s, a generation that %s never named (a killed append)", root, path.name, CURRENT)
            _remove(path)
    fsync_dir(root)


def _is_adoptable(gen: Path, request: str, current: int) -> bool:
    """Complete (manifest checksum, file sizes), built on ``current`` by this request."""
    try:
        manifest = read_manifest(gen)
        verify_files(gen, manifest, "size")
    except BundleError:
        return False
    datasets = manifest.get("datasets") or [{}]
    return manifest.get("parent_generation") == current and datasets[-1].get("request") == request


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def publish_append(root: Path, base_gen: Path, inputs: GenerationInputs) -> tuple[Path, int, dict]:
    """Assemble generation N+1 on ``base_gen`` under a staging name, rename it into place
    and point ``CURRENT`` at it. Call under the lock, after :func:`recover`."""
    from .bundle import open_bundle

    root = Path(os.path.abspath(root))
    existing = [n for n in (_generation_number(p) for p in root.glob("gen-*") if p.is_dir()) if n is not None]
    number = max(existing + [int(read_manifest(base_gen)["generation"])]) + 1
    name = generation_name(number)
    staging = root / f".{name}.staging-{os.getpid()}-{os.urandom(3).hex()}"
    try:
        with open_bundle(base_gen, verify=True, gpu=False) as base:
            inputs.generation, inputs.base = number, base
            manifest = assemble_generation(staging, inputs)
            inputs.base = None
        if resolve_generation(root).resolve() != base_gen.resolve():
            raise IndexerError(
                f"{root} changed while appending (its {CURRENT} no longer points to {base_gen.name}); "
                "rerun the command to append to the new generation"
            )
        os.rename(staging, root / name)
        fsync_dir(root)
        write_current(root, number)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root, number, manifest


def _generation_number(path: Path) -> int | None:
    """The number of a ``gen-NNNNN`` directory; None for anything else that starts with
    ``gen-`` (a user's ``gen-old``): never ours to adopt, remove or count."""
    try:
        return parse_generation(path.name)
    except BundleError:
        return None
