"""A served bundle: one opened bundle with everything that answers from it.

The bundle itself (read-only), its model (the pristine master and the replicas calls
borrow, replicas.py), the batchers that compute upload profiles and neighbour searches
together (batching.py), the precomputed neighbour lists (neighbor_lists.py) and a cache of
decoded sample metadata. registry.py opens them; queries and evaluations use them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from parasal.indexer import SampleNotFound

from .batching import ProfileBatcher, SearchBatcher
from .config import ServerConfig
from .errors import NotFound
from .neighbor_lists import NeighborLists
from .replicas import Replicas

if TYPE_CHECKING:
    from parasal.indexer import Bundle

__all__ = ["ServedBundle"]


@dataclass
class ServedBundle:
    name: str
    bundle: Bundle
    master: torch.nn.Module  # no call runs on it; evaluations work on their own copy
    spec: str
    fingerprint: str
    device: torch.device
    num_classes: int
    class_names: list[str]
    replicas: Replicas = field(repr=False)  # what calls run on, one call per copy
    batcher: ProfileBatcher | None = field(default=None, repr=False)  # upload profiles, batched
    searcher: SearchBatcher | None = field(default=None, repr=False)  # neighbour searches, batched
    neighbor_lists: NeighborLists | None = field(default=None, repr=False)  # by-id answers, precomputed
    cache_size: int = ServerConfig.sample_cache  # sample metadata records kept decoded (about 1 KB each)

    @property
    def layout(self):
        return self.bundle.layout

    @property
    def stats(self):
        return self.bundle.stats

    @property
    def preprocessing(self):
        return self.bundle.preprocessing

    def __post_init__(self):
        # Bundles never change while served, so a sample's metadata is read from LMDB and
        # decoded once; neighbour answers name ten samples each.
        self._cached_meta = functools.lru_cache(maxsize=self.cache_size)(self._read_meta)

    def hot_ids(self) -> np.ndarray:
        """The ids worth caching first, at most ``cache_size``: misclassified samples (what
        similar-failure queries mostly return), then the others, each in id order."""
        order = np.argsort(self.bundle.correct, kind="stable")  # False (misclassified) first
        return self.bundle.ids[order[: self.cache_size]]

    def meta(self, sample_id: int):
        """The sample's metadata; NotFound naming the bundle (not its path on the server)."""
        return self._cached_meta(int(sample_id))

    def metas(self, ids):
        return [self._cached_meta(int(i)) for i in ids]

    @contextlib.contextmanager
    def _known(self, sample_id: int) -> Iterator[None]:
        """The indexer's SampleNotFound as NotFound naming the bundle (not its path on the server)."""
        try:
            yield
        except SampleNotFound:
            raise NotFound(f"no sample with id {sample_id} in bundle {self.name!r}") from None

    def _read_meta(self, sample_id: int):
        with self._known(sample_id):
            return self.bundle.meta(sample_id)

    def row(self, sample_id: int) -> int:
        """The sample's row position in the bundle; NotFound for an unknown id."""
        with self._known(sample_id):
            return self.bundle.row_of(sample_id)

    def listed_neighbors(
        self, sample_id: int, k: int, allowed: np.ndarray | None, exclude_self: bool
    ) -> list[tuple[int, float]] | None:
        """The k nearest (id, cosine) of an indexed sample from its precomputed list, when
        that list proves the exact answer (neighbor_lists.py); else None: search instead.
        NotFound for an unknown id."""
        if self.neighbor_lists is None:
            return None
        row = self.row(sample_id)
        return self.neighbor_lists.nearest(row, k, allowed, row if exclude_self else None)

    def profile(self, sample_id: int) -> np.ndarray:
        """(F,) float32 standardized profile as stored; NotFound for an unknown id."""
        with self._known(sample_id):
            return self.bundle.profile(sample_id)

    def replica(self):
        """A model copy for this thread alone until the block ends (waits for a free one)."""
        return self.replicas.borrow()

    def close(self) -> None:
        for batcher in (self.batcher, self.searcher):
            if batcher is not None:
                batcher.close()
        self.bundle.close()
