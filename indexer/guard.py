"""A guard over a bundle's memory-mapped files: refuse to read a file that shrank.

``profiles.npy`` and ``meta.lmdb`` (and ``index.faiss`` where FAISS maps it) are read
through memory maps. If someone truncates one of them under a running reader, touching a
page past the new end of file raises SIGBUS, which kills the whole process (no Python
exception, no log line). So the reader keeps one descriptor per mapped file and, before
each mapped read, compares ``fstat`` sizes with the sizes it opened: a few microseconds
per call. A file that shrank makes the guard fail, and stay failed (the bundle answers
:class:`BundleCorrupt`, i.e. DATA_LOSS, from then on, while other bundles keep serving).

What it does not cover: a truncation in the microseconds between the check and the read
(only reads that never map the file would close that window), and a file rewritten in
place at the same size (the sha256 checks at open catch that, not while serving). A file
*replaced* by a rename is harmless: the descriptors and maps keep the old inode.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from .errors import BundleCorrupt

__all__ = ["FileGuard"]

log = logging.getLogger(__name__)


class FileGuard:
    """Descriptors and opening sizes of ``names`` inside ``directory`` (see module docstring).

    ``label`` names the bundle in messages (clients may see them: not a path)."""

    def __init__(self, directory: str | os.PathLike, names: Iterable[str], label: str):
        self.directory = Path(directory)
        self.label = label
        self._files: list[tuple[str, int, int]] = []  # (name, fd, size at open)
        self._failure: str | None = None
        self._lock = threading.Lock()
        try:
            for name in names:
                fd = os.open(self.directory / name, os.O_RDONLY)
                self._files.append((name, fd, os.fstat(fd).st_size))
        except OSError as e:
            self.close()
            raise BundleCorrupt(f"bundle {label!r}: cannot open {e.filename and Path(e.filename).name}") from e

    def check(self) -> None:
        """Raise BundleCorrupt if a guarded file is smaller than when it was opened."""
        if self._failure is None:
            for name, fd, size in self._files:
                now = os.fstat(fd).st_size
                if now < size:
                    self._fail(f"{name} shrank from {size} to {now} bytes")
                    break
        if self._failure is not None:
            raise BundleCorrupt(
                f"bundle {self.label!r} is damaged: {self._failure} while it was open; "
                "it cannot be read until it is repaired and reopened"
            )

    def _fail(self, what: str) -> None:
        with self._lock:
            if self._failure is None:  # log once, with the path (the server log may name it)
                self._failure = what
                log.error("bundle %r (%s): %s while open; refusing reads from it", self.label, self.directory, what)

    def close(self) -> None:
        files, self._files = self._files, []
        for _, fd, _ in files:
            os.close(fd)
