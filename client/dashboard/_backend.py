"""`Backend`: the dashboard's one way to the gRPC server, the SDK's `Client`.

It adds what a web page needs on top of the SDK: the bundle's description cached for a few
seconds (every page names classes), class names for labels, and *optional sections*: a call
the server (or this SDK) does not offer, or that needs data the bundle lacks, becomes a note
on the page instead of an error page. Every other error propagates to the error page.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from ..errors import ParasalError

# BundleInfo changes only when the server reloads a bundle; a few seconds of staleness
# saves one ListBundles round trip per page and per image.
INFO_TTL_S = 10.0

# Status codes that mean "this section cannot be shown for this server or bundle", not
# "something broke": an older server, or a bundle without the data (no reference data).
_OPTIONAL_CODES = frozenset({grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.FAILED_PRECONDITION})


@dataclass(frozen=True)
class Section:
    """An optional part of a page: its value, or why it is missing (``note``)."""

    value: Any = None
    note: str = ""

    @property
    def shown(self) -> bool:
        return self.value is not None


class Backend:
    """The SDK client plus the bundle the dashboard shows ("" = the server's default)."""

    def __init__(self, client, *, bundle: str = "", target: str = "") -> None:
        self.client = client
        self.bundle = bundle
        self.target = target or getattr(client, "target", "")
        self._info = None
        self._info_at = 0.0
        self._lock = threading.Lock()

    # -- the bundle -----------------------------------------------------------------------

    def info(self):
        """The shown bundle's BundleInfo (cached INFO_TTL_S seconds)."""
        with self._lock:
            if self._info is not None and time.monotonic() - self._info_at < INFO_TTL_S:
                return self._info
        info = self.client.index_info(bundle=self.bundle)[0]
        with self._lock:
            self._info, self._info_at = info, time.monotonic()
        return info

    def class_names(self) -> list[str]:
        info = self.info()
        return list(info.class_names) or [str(i) for i in range(_num_classes(info))]

    def class_name(self, label: int) -> str:
        names = self.info().class_names
        return names[label] if 0 <= label < len(names) else str(label)

    def has_reference(self) -> bool:
        return getattr(self.info(), "reference", None) is not None

    # -- optional sections ----------------------------------------------------------------

    def offers(self, method: str) -> bool:
        return callable(getattr(self.client, method, None))

    def optional(self, method: str, *args, what: str, **kwargs) -> Section:
        """``client.method(*args, bundle=..., **kwargs)`` as a Section: a note when this SDK
        lacks the method or the server cannot answer it for this bundle."""
        call: Callable | None = getattr(self.client, method, None)
        if not callable(call):
            return Section(note=f"{what}: not available with this version of parasal.client")
        try:
            return Section(call(*args, bundle=self.bundle, **kwargs))
        except ParasalError as exc:
            if exc.code in _OPTIONAL_CODES:
                return Section(note=f"{what}: {exc.details or exc.code.name}")
            raise

    def call(self, method: str, *args, **kwargs):
        """``client.method(*args, bundle=<the shown bundle>, **kwargs)``."""
        return getattr(self.client, method)(*args, bundle=self.bundle, **kwargs)


def _num_classes(info) -> int:
    """Classes of a bundle that records no names: the largest label seen + 1 is unknown
    here, so fall back to the model's output width when the layers end in a linear one."""
    for layer in reversed(info.layers):
        if layer.kind == "linear":
            return layer.filters
    return 0
