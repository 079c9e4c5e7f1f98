"""Batching concurrent requests: one computation serves every request waiting for it.

Two things the server does cost far less per request in a batch than one at a time: the
saliency pass behind an uploaded image (per-sample gradients, ``parasal.core.saliency``)
and the index search behind a neighbour query (one matrix product for many query
vectors instead of one scan of the index each). :class:`GreedyBatcher` holds what the two
share; :class:`ProfileBatcher` and :class:`SearchBatcher` say how a batch is computed.

A worker takes the first queued request, then whatever else is queued at that moment (up
to ``max_batch``), computes them together and answers each. Idle, a request runs alone at
once. Under load one more rule matters: callers that were just answered send their next
requests a moment later, and a worker that starts on the first of them alone computes a
batch of one while the rest queue behind it (batches of 1, 7, 1, 7, ... for 8 steady
callers). So a worker expects, next, the requests it just answered back plus those that
queued meanwhile, and when that is more than one it *lingers*: it waits up to
``linger_s`` for the batch to grow to that size before computing.
Requests that cannot share a computation (different image shapes, different search
filters) are split by :meth:`GreedyBatcher.key` within a batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from parasal.core import filter_saliency

from .inline import must_not_block

__all__ = [
    "GreedyBatcher",
    "UploadProfile",
    "ProfileBatcher",
    "SearchBatcher",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_SEARCH_BATCH",
    "DEFAULT_PROFILE_LINGER_S",
    "DEFAULT_SEARCH_LINGER_S",
]

DEFAULT_MAX_BATCH = 32
#: Query vectors per search: past a few dozen the product stops getting cheaper per query.
DEFAULT_MAX_SEARCH_BATCH = 64
#: Lingers (see the module docstring), small next to what a batch takes to compute: a
#: saliency pass over 8 images ~30 ms, a search for 8 queries ~3 ms (2-core CPU). Longer
#: profile lingers measured worse (5 ms: +5 ms p50 for 8 uploaders on 2 cores).
DEFAULT_PROFILE_LINGER_S = 0.002
DEFAULT_SEARCH_LINGER_S = 0.0005

Req = TypeVar("Req")


class GreedyBatcher(Generic[Req]):
    """``workers`` threads, each computing one batch of queued requests at a time.

    Subclasses define :meth:`key` (requests with equal keys can be computed together) and
    :meth:`compute` (one result per request of a group, in order). A request is any object
    with a ``future`` attribute; :meth:`submit` queues it and waits for its result.
    """

    def __init__(
        self,
        name: str,
        *,
        workers: int,
        max_batch: int,
        linger_s: float = 0.0,
        initializer: Callable[[], None] | None = None,
    ):
        if workers < 1 or max_batch < 1 or linger_s < 0:
            raise ValueError("a batcher needs at least one worker, a batch of at least one and linger_s >= 0")
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._initializer = initializer
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"parasal-{name}-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def key(self, request: Req) -> Hashable:
        return None

    def compute(self, group: list[Req]) -> Sequence:  # pragma: no cover - abstract
        raise NotImplementedError

    def submit(self, request: Req):
        must_not_block("a batched computation")  # a caller on the event loop must not wait here
        self._queue.put(request)
        return request.future.result()

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    def _loop(self) -> None:
        if self._initializer is not None:
            self._initializer()
        expected = 1  # requests this worker expects in its next batch
        while True:
            batch = self._collect(expected)
            if batch is None:
                return
            groups: dict[Hashable, list[Req]] = {}
            for request in batch:
                groups.setdefault(self.key(request), []).append(request)
            for group in groups.values():
                self._answer(group)
            expected = len(batch) + self._queue.qsize()  # those just answered may come back

    def _collect(self, expected: int) -> list[Req] | None:
        """The next batch (None when closing): the first request, what else is queued, and,
        when more than one request is expected, what arrives within ``linger_s`` until the
        batch has the expected size."""
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        expected = min(expected, self._max_batch) if self._linger_s and expected > 1 else 0
        deadline = time.monotonic() + self._linger_s
        while len(batch) < self._max_batch:
            try:
                if len(batch) < expected:
                    more = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                else:
                    more = self._queue.get_nowait()
            except queue.Empty:
                if len(batch) < expected:
                    expected = 0  # the linger ran out: take what is queued now, nothing more
                    continue
                break
            if more is None:  # closing: finish this batch, then stop
                self._queue.put(None)
                break
            batch.append(more)
        return batch

    def _answer(self, group: list[Req]) -> None:
        try:
            results = self.compute(group)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            for r in group:
                r.future.set_exception(exc)
            return
        for r, result in zip(group, results):
            r.future.set_result(result)


# ---------------------------------------------------------------------------------------
# Upload profiles


@dataclass(frozen=True)
class UploadProfile:
    raw: np.ndarray  # (F,) float32 raw filter saliency (not standardized)
    probs: np.ndarray  # (K,) float64 softmax
    loss: float


@dataclass
class _ProfileRequest:
    x: torch.Tensor  # (C, H, W)
    label: int
    future: Future = field(default_factory=Future)


class ProfileBatcher(GreedyBatcher[_ProfileRequest]):
    """Raw profiles of uploads, one saliency pass per batch on a borrowed model replica.

    In eval mode samples do not interact, so each answer is the one computed alone (up to
    float rounding)."""

    def __init__(
        self,
        served,
        *,
        workers: int,
        max_batch: int = DEFAULT_MAX_BATCH,
        linger_s: float = DEFAULT_PROFILE_LINGER_S,
        process=None,
    ):
        """``process``: a :class:`~parasal.server.saliency_process.SaliencyProcess` to
        compute in (closed with this batcher); None computes here on a model replica."""
        self._served = served
        self._process = process
        super().__init__(f"profile-{served.name}", workers=workers, max_batch=max_batch, linger_s=linger_s)

    def profile(self, x: torch.Tensor, label: int) -> UploadProfile:
        """Raw profile, class probabilities and loss of one preprocessed image ``(C, H, W)``."""
        return self.submit(_ProfileRequest(x, int(label)))

    def key(self, request: _ProfileRequest) -> Hashable:
        return tuple(request.x.shape)

    def compute(self, group: list[_ProfileRequest]) -> list[UploadProfile]:
        x = torch.stack([r.x for r in group])  # (B, C, H, W)
        y = torch.tensor([r.label for r in group])  # (B,)
        if self._process is not None and self._process.settled():  # until then, here (start-up)
            raw, logits = self._process.compute(x.numpy(), y.numpy())
            logits = torch.from_numpy(logits)
        else:
            with self._served.replica() as model:
                device = next(model.parameters()).device
                raw, logits = filter_saliency(
                    model, x.to(device), y.to(device), layout=self._served.layout, return_logits=True
                )
            raw, logits = raw.cpu().numpy(), logits.cpu()  # (B, F), (B, K)
        logits = logits.double()
        probs = torch.softmax(logits, 1).numpy()
        losses = F.cross_entropy(logits, y, reduction="none").numpy()
        return [UploadProfile(raw[i], probs[i], float(losses[i])) for i in range(len(group))]

    def close(self) -> None:
        super().close()
        if self._process is not None:
            self._process.close()


# ---------------------------------------------------------------------------------------
# Neighbour searches


@dataclass
class _SearchRequest:
    vector: np.ndarray  # (F,) float32 standardized profile
    k: int
    filters: Hashable  # equal filters <=> equal `allowed`
    allowed: np.ndarray | None  # (N,) bool rows a neighbour may come from, or None for all
    layers: tuple[str, ...]
    future: Future = field(default_factory=Future)


class SearchBatcher(GreedyBatcher[_SearchRequest]):
    """Nearest indexed samples of query vectors, searched together (``Bundle.search``).

    Requests share a search when they ask for the same ``k``, row filter and layers; an
    exact search answers each exactly as alone (scores up to float rounding), an
    approximate one too, since its candidates depend on ``k`` and nothing else."""

    def __init__(
        self,
        bundle,
        name: str,
        *,
        workers: int = 1,
        max_batch: int = DEFAULT_MAX_SEARCH_BATCH,
        linger_s: float = DEFAULT_SEARCH_LINGER_S,
        initializer: Callable[[], None] | None = None,
    ):
        self._bundle = bundle
        super().__init__(
            f"search-{name}", workers=workers, max_batch=max_batch, linger_s=linger_s, initializer=initializer
        )

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        filters: Hashable = None,
        allowed: np.ndarray | None = None,
        layers: Sequence[str] = (),
    ) -> list[tuple[int, float]]:
        """The ``k`` best (sample id, cosine) for ``vector``; ``filters`` names ``allowed``
        (requests with equal ``filters`` must have equal ``allowed``)."""
        return self.submit(_SearchRequest(vector, int(k), filters, allowed, tuple(layers)))

    def key(self, request: _SearchRequest) -> Hashable:
        return request.k, request.filters, request.layers

    def compute(self, group: list[_SearchRequest]) -> list[list[tuple[int, float]]]:
        first = group[0]
        queries = np.stack([r.vector for r in group])  # (B, F)
        return self._bundle.search(queries, first.k, allowed=first.allowed, layers=list(first.layers) or None)
