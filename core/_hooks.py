"""Ownership of temporary hooks and model state: one object holds them and always gives them back.

:class:`HookOwner` keeps every handle it registers (module forward hooks and tensor
gradient hooks) and removes them all in :meth:`HookOwner.release`, which also runs when
it is used as a context manager, whatever exception ends the block. :func:`frozen_eval`
puts a model in eval mode with no parameter requiring grad and restores each module's
``training`` flag and each parameter's ``requires_grad`` flag exactly as they were.
(Habit 3 in STYLE.md; compare pytorch-grad-cam ``activations_and_gradients.py`` and
Captum ``tests/attr/test_hook_removal.py``.)
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

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

    def __enter__(self) -> "HookOwner":
        return self

    def __exit__(self, *exc_info) -> bool:
        self.release()
        return False  # never swallow the exception that ended the block


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter for the block; both restored exactly.

    Freezing the parameters is what keeps autograd from computing (and accumulating) any
    batch weight gradient: the backward pass then only carries gradients with respect to
    activations, which is all the per-sample engine needs. Per-module flags are restored
    one by one, so a model with mixed modes (say a frozen BatchNorm in a training model)
    comes back exactly as it was.
    """
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    try:
        model.eval()
        for param, _ in flags:
            param.requires_grad_(False)
        yield model
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
        for module, training in modes:
            module.training = training
