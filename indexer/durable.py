"""Durable, reproducible files: atomic replacement, fsync, deterministic ``.npz``.

Everything the indexer writes goes through here. A file is written under a temporary
name in its final directory, fsynced, and moved into place with ``os.replace`` (atomic on
POSIX), then the directory is fsynced so the rename itself survives a crash. A reader or
a resumed job therefore sees either no file or a complete one, never a prefix.

``np.savez`` stamps each member with the current time, so two runs that compute the same
arrays produce different bytes; :func:`write_npz` fixes the zip timestamps so equal
arrays give byte-identical files (what makes a resumed bundle identical to a clean one).
The result is a standard ``.npz`` that ``np.load(..., allow_pickle=False)`` reads.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = [
    "fsync_dir",
    "fsync_file",
    "atomic_write",
    "atomic_write_bytes",
    "write_npz",
    "read_npz",
    "sha256_file",
    "temp_name",
]

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def temp_name(path: str | os.PathLike) -> Path:
    """A sibling of ``path`` that no reader looks at and no other process picks."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(3).hex()}")


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make renames/creations inside ``path`` durable (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write via ``write(file)`` to a temp sibling of ``path``, fsync it, ``os.replace`` it
    onto ``path`` and fsync the directory: readers see the old file or the new one, whole.
    The file gets ordinary permissions (0666 less the umask)."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An uncompressed ``.npz`` with fixed timestamps, members in the given order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            value = np.asarray(value)
            if value.dtype.hasobject:
                raise TypeError(f"array {name!r} has dtype object; bundles never hold pickled data")
            member = io.BytesIO()
            np.lib.format.write_array(member, value, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o600 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Atomically write a deterministic ``.npz`` (see module docstring)."""
    atomic_write_bytes(path, npz_bytes(arrays))


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, loaded eagerly, never unpickling."""
    with np.load(path, allow_pickle=False) as z:
        return {name: z[name] for name in z.files}


def sha256_file(path: str | os.PathLike, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()
