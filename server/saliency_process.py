"""Upload saliency in a child process, away from the server's GIL.

A saliency pass is a few hundred torch calls, each releasing the GIL for its kernel and
taking it back after. In the server, other threads run Python all the time (gRPC's
dispatch, searches, response building), so every take-back waits: on a 2-core CPU a
batch of 4 uploads cost 6.9 ms per sample there against 4.1 ms alone, and a thread that
runs pure Python beside it slows it 80-fold. A spawned child process with its own copy of
the bundle's model computes the batches instead; only the preprocessed images (B, C, H, W)
go in and the raw profiles (B, F) and logits (B, K) come back, a few KB each.

The child loads the model from the bundle's manifest like the server does (and refuses to
start when the weights no longer match the recorded fingerprint). When it dies (killed, out of
memory), the batches it held fail with :class:`Unavailable` (clients retry) and the next
batch starts a new child.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from .errors import Unavailable

__all__ = ["SaliencyProcess"]

log = logging.getLogger("parasal.server")

_child: dict = {}  # in the child: the model, its layout and device


class SaliencyProcess:
    """One child process computing ``filter_saliency`` batches for one bundle."""

    def __init__(self, manifest: dict, device: str = "cpu", torch_threads: int = 1):
        self._args = (manifest, device, torch_threads)
        self._lock = threading.Lock()
        self._pool, self._ready = self._start()

    def _start(self):
        # spawn, not fork: the parent has gRPC, OpenMP and maybe CUDA state a fork would copy broken.
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_load,
                                   initargs=self._args)
        return pool, pool.submit(_ready)  # the child loads the model meanwhile

    def wait_ready(self) -> None:
        """Block until the child has loaded its model; raises what stopped it (start-up
        errors surface here, and the first request is not the slow one)."""
        try:
            self._ready.result()
        except BrokenProcessPool:
            self.close()
            raise RuntimeError("the saliency worker process failed to start (its error is logged above)") from None

    def compute(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw filter saliency (B, F) float32 and logits (B, K) float32 of images ``x``
        (B, C, H, W) float32 with true labels ``y`` (B,) int64."""
        pool = self._pool
        try:
            return pool.submit(_compute, x, y).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:  # the first to notice restarts it
                    log.error("the saliency worker process died; starting a new one")
                    pool.shutdown(wait=False)
                    self._pool, self._ready = self._start()
            raise Unavailable("the saliency worker process stopped while computing this request; retry") from None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def pid(self) -> int | None:
        """The child's process id (for tests and operators)."""
        processes = list(getattr(self._pool, "_processes", {}) or {})
        return processes[0] if processes else None


# ---------------------------------------------------------------------------------------
# In the child


def _load(manifest: dict, device: str, torch_threads: int) -> None:
    import torch

    from parasal.core.layout import FilterLayout
    from parasal.indexer.models import load_model_from_manifest

    if torch_threads:
        torch.set_num_threads(torch_threads)
    loaded = load_model_from_manifest(manifest)  # ModelMismatch if the weights changed
    _child.update(model=loaded.model.to(device).eval(), layout=FilterLayout.from_dict(manifest["layout"]),
                  device=torch.device(device))


def _ready() -> bool:
    return "model" in _child


def _compute(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from parasal.core.saliency import filter_saliency

    device = _child["device"]
    inputs = torch.from_numpy(x).to(device)  # (B, C, H, W)
    targets = torch.from_numpy(y).to(device)  # (B,)
    raw, logits = filter_saliency(_child["model"], inputs, targets, layout=_child["layout"], return_logits=True)
    return raw.cpu().numpy(), logits.float().cpu().numpy()
