"""Batching the profiles of concurrent uploads: one saliency pass serves every waiting request.

The per-sample engine (``parasal.core.saliency.filter_saliency``) costs far less per image
in a batch than one image at a time, so under load it pays to answer requests together.
Batching is greedy and adds no wait: a worker takes the first queued request, then
whatever else is queued at that moment (up to ``max_batch``), runs them as one batch on a
model replica, and answers each. Idle, a request runs alone at once; busy, batches form by
themselves while the workers compute. In eval mode samples do not interact, so each
answer is the same as computed alone (up to float rounding).
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from parasal.core.saliency import filter_saliency

__all__ = ["UploadProfile", "ProfileBatcher", "DEFAULT_MAX_BATCH"]

log = logging.getLogger("parasal.server")

DEFAULT_MAX_BATCH = 32


@dataclass(frozen=True)
class UploadProfile:
    raw: np.ndarray  # (F,) float32 raw filter saliency (not standardized)
    probs: np.ndarray  # (K,) float64 softmax
    loss: float


@dataclass
class _Request:
    x: torch.Tensor  # (C, H, W)
    label: int
    future: Future


class ProfileBatcher:
    """``workers`` threads, each computing one batch at a time on a borrowed model replica."""

    def __init__(self, served, *, workers: int, max_batch: int = DEFAULT_MAX_BATCH):
        self._served = served
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, name=f"parasal-batch-{served.name}-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def profile(self, x: torch.Tensor, label: int) -> UploadProfile:
        """Raw profile, class probabilities and loss of one preprocessed image ``(C, H, W)``."""
        request = _Request(x, int(label), Future())
        self._queue.put(request)
        return request.future.result()

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:  # closing: finish this batch, then stop
                    self._queue.put(None)
                    break
                batch.append(more)
            by_shape: dict[tuple, list[_Request]] = {}
            for request in batch:
                by_shape.setdefault(tuple(request.x.shape), []).append(request)
            for group in by_shape.values():
                self._run(group)

    def _run(self, group: list[_Request]) -> None:
        try:
            with self._served.replica() as model:
                device = next(model.parameters()).device
                x = torch.stack([r.x for r in group]).to(device)  # (B, C, H, W)
                y = torch.tensor([r.label for r in group], device=device)  # (B,)
                raw = filter_saliency(model, x, y, layout=self._served.layout).cpu().numpy()  # (B, F)
                with torch.no_grad():
                    logits = model(x).double()  # (B, K)
            probs = torch.softmax(logits, 1).cpu().numpy()
            losses = F.cross_entropy(logits, y, reduction="none").cpu().numpy()
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            for r in group:
                r.future.set_exception(exc)
            return
        for i, r in enumerate(group):
            r.future.set_result(UploadProfile(raw[i], probs[i], float(losses[i])))
