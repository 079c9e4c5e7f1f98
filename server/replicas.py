"""Model replicas: copies of a bundle's model that calls borrow, one call per copy at a time.

The loaded model is kept pristine as the *master*: no call runs on it. Queries borrow one
of a few deep copies for the duration of a call, because the saliency engine temporarily
changes a model's state (forward hooks, ``requires_grad`` flags), so one copy serves one
call at a time. Evaluations receive the master and work on their own deep copy
(parasal.core's evaluations never modify the model they are given), which is safe because
nothing ever hooks the master.
"""

from __future__ import annotations

import contextlib
import copy
import queue
from collections.abc import Iterator

from torch import nn

__all__ = ["Replicas"]


class Replicas:
    """``count`` deep copies of ``master``; :meth:`borrow` waits for a free one."""

    def __init__(self, master: nn.Module, count: int):
        if count < 1:
            raise ValueError(f"at least one replica, got {count}")
        self._free: queue.Queue[nn.Module] = queue.Queue()
        for _ in range(count):
            self._free.put(copy.deepcopy(master))

    @contextlib.contextmanager
    def borrow(self) -> Iterator[nn.Module]:
        """A model copy for this thread alone until the block ends."""
        model = self._free.get()
        try:
            yield model
        finally:
            self._free.put(model)
