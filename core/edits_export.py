"""The edit of one evaluation row, applied to a copy of the model: what export hands out.

An evaluation row records everything its edit depends on: the kind (fine-tuning or
pruning), the selection, the exact filters (a random row's draw is recomputed from the
seed and the reference key, :func:`parasal.core.row_filters`), the step size, and the
reference (its input and label). :func:`apply_edit` replays it with the same operations
in the same order as the evaluation's bench, so on the same machine and thread settings
the edited parameters are bit-identical to those the row was measured with (tested).
On another machine, floating-point reductions may differ in the last bits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._bench import one
from ._edits import all_slices, apply_step, filter_slices, loss_grads, restricted_norm, scale
from ._state import as_batch, eval_copy
from .evaluation import SELECTIONS, WHOLE_NETWORK
from .interventions import prune_filters
from .layout import FilterLayout

__all__ = ["EDIT_KINDS", "apply_edit"]

#: What an edit is: a fine-tuning step or pruning.
EDIT_KINDS = ("finetune", "pruning")


def apply_edit(
    model: nn.Module,
    layout: FilterLayout,
    *,
    kind: str,
    selection: str,
    filters: Sequence[int] = (),
    reference_input: torch.Tensor,
    label: int | None = None,
    step_size: float = 1e-3,
    salient_filters: Sequence[int] | None = None,
) -> nn.Module:
    """An eval-mode copy of ``model`` with one evaluation row's edit applied (``model`` untouched).

    * ``kind="pruning"``: :func:`prune_filters` of ``filters``, BatchNorm consumers traced
      with ``reference_input`` (C, H, W) as the evaluation does.
    * ``kind="finetune"``: the loss gradient of the reference (``reference_input``,
      ``label``) at the model's weights; ``selection`` "most": ``θ ← θ − step_size·g`` on
      ``filters``; "random" / "least": ``g`` rescaled first to the norm of the gradient over
      ``salient_filters`` (the "most" set of the row's count, Levin et al. B.1);
      :data:`WHOLE_NETWORK`: a plain step on every parameter (``filters`` ignored).
    """
    if kind not in EDIT_KINDS:
        raise ValueError(f"kind must be one of {EDIT_KINDS}, got {kind!r}")
    if kind == "pruning":
        if selection not in SELECTIONS:
            raise ValueError(f"a pruning row's selection is one of {SELECTIONS}, got {selection!r}")
        return prune_filters(model, layout, filters, example_input=one(reference_input))
    if selection not in (*SELECTIONS, WHOLE_NETWORK):
        raise ValueError(f"selection must be one of {(*SELECTIONS, WHOLE_NETWORK)}, got {selection!r}")
    if label is None:
        raise ValueError("a fine-tuning edit needs the reference's label")
    if selection in ("random", "least") and salient_filters is None:
        raise ValueError(f"a {selection} fine-tuning edit is rescaled to the salient set: give salient_filters")
    edited = eval_copy(model)
    x, y = as_batch(edited, one(reference_input), [label])  # (1, C, H, W), (1,)
    grads = loss_grads(edited, x, y, list(edited.parameters()))  # all of them, as the evaluation takes them
    slices = all_slices(edited) if selection == WHOLE_NETWORK else filter_slices(edited, layout, filters)
    target = None
    if selection in ("random", "least"):
        target = restricted_norm(filter_slices(edited, layout, salient_filters), grads)
    factor = step_size * scale(restricted_norm(slices, grads), target)
    with torch.no_grad():
        apply_step(slices, grads, factor)
    return edited
