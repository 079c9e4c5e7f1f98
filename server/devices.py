"""Where the server's work runs: the torch device, and how many threads torch and FAISS use."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from .config import ConfigError

__all__ = ["resolve_device", "limit_faiss_threads", "usable_cores", "torch_threads"]


def resolve_device(name: str) -> torch.device:
    """ "cpu", "cuda" or "auto" (cuda when available); ConfigError for cuda without a GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    return torch.device(name)


def limit_faiss_threads(threads: int) -> None:
    """OpenMP thread counts are per calling thread: set FAISS's in each searching thread
    itself (0 leaves OpenMP's default)."""
    if threads:
        import faiss

        faiss.omp_set_num_threads(threads)


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask (a container's share), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` until the block ends."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
