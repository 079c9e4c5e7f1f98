"""Ownership of temporary hooks: one object holds them and always gives them back.

:class:`HookOwner` keeps every handle it registers (module forward hooks and tensor
gradient hooks) and removes them all in :meth:`HookOwner.release`, which also runs when
it is used as a context manager, whatever exception ends the block. (Habit 3 in
STYLE.md; compare pytorch-grad-cam ``activations_and_gradients.py`` and Captum
``tests/attr/test_hook_removal.py``.) Model mode and flags are :mod:`._state`'s.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class HookOwner:
    """Registers hooks and remembers their handles so that :meth:`release` removes every one."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def __len__(self) -> int:
        return len(self._handles)

    def forward_hook(self, module: nn.Module, hook: Callable) -> RemovableHandle:
        return self._keep(module.register_forward_hook(hook))

    def tensor_hook(self, tensor: torch.Tensor, hook: Callable) -> RemovableHandle:
        return self._keep(tensor.register_hook(hook))

    def _keep(self, handle: RemovableHandle) -> RemovableHandle:
        self._handles.append(handle)
        return handle

    def release(self) -> None:
        """Remove every hook registered so far; safe to call more than once."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def __enter__(self) -> HookOwner:
        return self

    def __exit__(self, *exc_info) -> bool:
        self.release()
        return False  # never swallow the exception that ended the block
