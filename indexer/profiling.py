"""Images -> per-sample profiles: the preflight check and the per-shard computation.

For each sample: raw filter saliency (``parasal.core.filter_saliency``, float32), the
logits-derived prediction, softmax confidence of the true and the predicted class, and
the cross-entropy loss. Batches are fixed id ranges inside a shard (not "the next B
readable images"), so a shard's contents never depend on what ran before it.

:func:`preflight` runs before any work: it decodes the first readable image, applies the
preprocessing and a dry forward + saliency pass, and turns every way this can fail
(channels, size, output shape, class count) into an :class:`InputMismatch` naming the
mismatch. Unreadable images found later are skipped with their reason, not fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from parasal.core import RunningStats, filter_importance
from parasal.core.reference import per_sample_filter_saliency
from parasal.core.saliency import filter_saliency

from .datasets import CorruptSample
from .errors import DataSpecError, InputMismatch
from .models import LoadedModel
from .preprocessing import upsampling_warning
from .shards import Shard, ShardPlan, ShardResult

__all__ = ["ProfileEngine", "Preflight", "preflight", "compute_shard"]

log = logging.getLogger(__name__)

MAX_PROBE = 100  # unreadable images tolerated at the start before giving up


@dataclass(frozen=True)
class Preflight:
    input_shape: tuple[int, int, int]  # (C, H, W) every sample must have after preprocessing
    num_classes: int
    first_uri: str
    upsampling: str | None = None  # a warning when the preprocessing enlarges the first image > 2x


class ProfileEngine:
    """The model on its device, and the one call that profiles a batch."""

    def __init__(self, loaded: LoadedModel, device: str | torch.device = "cpu"):
        self.loaded = loaded
        self.device = torch.device(device)
        self.model = loaded.model.to(self.device).eval()
        self.layout = loaded.layout
        self.preprocessing = loaded.preprocessing
        self.use_reference = False  # set by preflight when the fast engine cannot handle this model
        self.reference_reason = ""  # one line for the output saying why, when it does
        #: (layer, method) of the filter importance α each batch also gets (bundles with reference data)
        self.importance_of: tuple[str, str] | None = None
        self.importance_n = 0  # filters of that layer

    def set_importance(self, layer: str, method: str) -> None:
        """Also compute α of ``layer`` (an nn.Conv2d's name; ValueError otherwise) by ``method``."""
        from parasal.core.importance import conv_module

        self.importance_n = int(conv_module(self.model, layer).out_channels)
        self.importance_of = (layer, method)

    def importance(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> np.ndarray:
        """(B, N) float32 α of ``importance_of``'s layer (core.filter_importance); ``seed``:
        the batch's first sample id, so the ``random`` method draws the same whatever the sharding."""
        layer, method = self.importance_of
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        alpha = filter_importance(self.model, x, y, layer=layer, method=method, seed=seed)
        return alpha.detach().float().cpu().numpy()

    def saliency(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(saliency (B, F), logits (B, K)); the fast engine's own forward pass gives the
        logits, the reference (one autograd pass per sample) needs another one."""
        if self.use_reference:
            sal = per_sample_filter_saliency(self.model, x, y, layout=self.layout)
            with torch.no_grad():
                return sal, self.model(x)
        return filter_saliency(self.model, x, y, layout=self.layout, return_logits=True)

    def run(self, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> dict[str, np.ndarray]:
        """``x`` (B, C, H, W) float32, ``y`` (B,) int64 -> per-sample arrays (numpy, CPU);
        with ``importance_of`` set also ``alpha`` (B, N), seeded by ``seed``."""
        extra = {} if self.importance_of is None else {"alpha": self.importance(x, y, seed)}
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        sal, logits = self.saliency(x, y)  # (B, F), (B, K)
        logits = logits.double()
        logp = F.log_softmax(logits, dim=1)  # (B, K)
        pred = logits.argmax(dim=1)
        rows = torch.arange(len(y), device=logits.device)
        return {
            "raw": sal.detach().float().cpu().numpy(),
            "predicted": pred.cpu().numpy().astype(np.int64),
            "true_confidence": logp[rows, y].exp().cpu().numpy(),
            "predicted_confidence": logp[rows, pred].exp().cpu().numpy(),
            "loss": (-logp[rows, y]).cpu().numpy(),
            **extra,
        }


def preflight(engine: ProfileEngine, ds, num_samples: int, indices=None) -> Preflight:
    """Check, before any work, that the data can feed the model (see module docstring).
    ``indices``: the dataset indices of the job's samples (None: 0..num_samples-1)."""
    pre = engine.preprocessing
    sample, index, errors = None, -1, []
    for index in range(min(num_samples, MAX_PROBE)):
        try:
            sample = ds[index if indices is None else int(indices[index])]
            break
        except CorruptSample as e:
            errors.append(e.reason)
    if sample is None:
        raise DataSpecError(
            f"none of the first {min(num_samples, MAX_PROBE)} images of {ds.spec!r} can be read"
            + (f" (e.g. {errors[0]})" if errors else "")
        )
    x = pre(sample.image)  # (C, H, W)
    shape = tuple(int(v) for v in x.shape)
    where = f"first image {sample.uri} (mode {sample.image.mode}, {sample.image.size[0]}x{sample.image.size[1]})"
    if pre.input_shape is not None and shape != tuple(pre.input_shape):
        raise InputMismatch(
            f"size mismatch: {where} preprocesses to {_chw(shape)} but the model expects "
            f"{_chw(pre.input_shape)}; adjust --resize/--crop/--channels"
        )
    first = dict(engine.model.named_modules())[engine.layout.layers[0].name]
    in_channels = int(first.weight.shape[1]) * int(getattr(first, "groups", 1))
    try:
        with torch.no_grad():
            logits = engine.model(x[None].to(engine.device))
    except Exception as e:
        detail = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        if in_channels != shape[0]:
            hint = {1: "pass --channels L", 3: "pass --channels RGB"}.get(
                in_channels, "no --channels setting gives that"
            )
            raise InputMismatch(
                f"channel mismatch: the model's first convolution ({engine.layout.layers[0].name}) takes "
                f"{in_channels} channel(s) but images are preprocessed to {shape[0]} (channels={pre.channels!r}; "
                f"{where}); {hint}"
            ) from e
        raise InputMismatch(
            f"size mismatch: the model cannot take images preprocessed to {_chw(shape)} "
            f"({where}): {detail}; use --resize/--crop to give it the size it expects"
        ) from e
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != 1:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputMismatch(f"the model must return logits of shape (batch, classes); it returned {got}")
    num_classes = int(logits.shape[1])
    classes = getattr(ds, "classes", None)
    if classes is not None and len(classes) > num_classes:
        raise InputMismatch(
            f"class mismatch: {ds.spec!r} has {len(classes)} classes but the model outputs {num_classes} logits"
        )
    label = int(sample.label)
    if not 0 <= label < num_classes:
        raise InputMismatch(f"class mismatch: {where} has label {label}, outside the model's {num_classes} classes")
    _check_saliency(engine, x[None], torch.tensor([label]))
    upsampling = upsampling_warning(pre, sample.image.size)
    return Preflight(input_shape=shape, num_classes=num_classes, first_uri=sample.uri, upsampling=upsampling)


def _check_saliency(engine: ProfileEngine, x: torch.Tensor, y: torch.Tensor) -> None:
    """Dry saliency pass. TorchScript models are also compared with the reference loop:
    the fast engine may rely on module hooks, which scripted modules do not run."""
    F_ = engine.layout.num_filters
    x, y = x.to(engine.device), y.to(engine.device)
    try:
        sal, _ = engine.saliency(x, y)
    except Exception as e:
        if not engine.loaded.is_torchscript:
            raise
        log.info("filter_saliency cannot handle this TorchScript model: %s", e)
        _use_reference(engine)
        return
    if tuple(sal.shape) != (1, F_):
        raise RuntimeError(f"filter_saliency returned shape {tuple(sal.shape)}, expected (1, {F_})")
    if engine.loaded.is_torchscript:
        ref = per_sample_filter_saliency(engine.model, x, y, layout=engine.layout)
        if not torch.allclose(sal.float().cpu(), ref.float().cpu(), rtol=1e-3, atol=1e-7):
            log.info("filter_saliency disagrees with the reference on this TorchScript model")
            _use_reference(engine)


def _use_reference(engine: ProfileEngine) -> None:
    engine.use_reference = True
    engine.reference_reason = (
        "slow path: TorchScript model, so saliency runs one backward pass per image (several times slower "
        "than batched): the batched engine hooks each nn.Conv2d module, and scripted modules run no Python "
        "hooks. For the fast path index the eager model (torchvision:<arch> or package.module:factory "
        "with --weights FILE)"
    )


def _chw(shape) -> str:
    return "x".join(str(v) for v in shape) + " (CxHxW)"


# ---------------------------------------------------------------------------------------
# One shard


class _Decoded(torch.utils.data.Dataset):
    """Position -> (position, tensor | None, label, skip reason | None); never raises for bad images."""

    def __init__(self, ds, preprocessing, input_shape, num_classes, indices=None):
        self.ds, self.pre, self.shape, self.num_classes = ds, preprocessing, tuple(input_shape), num_classes
        self.indices = indices  # position -> dataset index (None: the same)

    def __len__(self):
        return len(self.ds) if self.indices is None else len(self.indices)

    def __getitem__(self, i: int):
        try:
            sample = self.ds[i if self.indices is None else int(self.indices[i])]
        except CorruptSample as e:
            return i, None, -1, e.reason
        try:
            x = self.pre(sample.image)
        except Exception as e:  # noqa: BLE001 - a decodable but unusable image is skipped too
            return i, None, sample.label, f"preprocessing failed: {type(e).__name__}: {e}"
        if tuple(x.shape) != self.shape:
            return (
                i,
                None,
                sample.label,
                (
                    f"preprocessed to {_chw(tuple(x.shape))}, not {_chw(self.shape)}; "
                    "use --resize/--crop for images of mixed sizes"
                ),
            )
        if not 0 <= sample.label < self.num_classes:
            return i, None, sample.label, f"label {sample.label} outside the model's {self.num_classes} classes"
        return i, x, int(sample.label), None


def _collate(items):
    return items


def _batches(decoded: _Decoded, shard: Shard, batch_size: int, workers: int) -> Iterator[list]:
    groups = [list(range(a, min(a + batch_size, shard.stop))) for a in range(shard.start, shard.stop, batch_size)]
    if workers <= 0:
        for group in groups:
            yield [decoded[i] for i in group]
        return
    loader = torch.utils.data.DataLoader(decoded, batch_sampler=groups, num_workers=workers, collate_fn=_collate)
    yield from loader


def compute_shard(
    engine: ProfileEngine,
    ds,
    shard: Shard,
    plan: ShardPlan,
    check: Preflight,
    *,
    batch_size: int,
    workers: int = 0,
    on_samples: Callable[[int], None] | None = None,
) -> ShardResult:
    decoded = _Decoded(ds, engine.preprocessing, check.input_shape, check.num_classes, plan.indices)
    parts: list[dict[str, np.ndarray]] = []
    skipped: list[tuple[int, str]] = []
    for batch in _batches(decoded, shard, batch_size, workers):
        good = [(i, x, y) for i, x, y, reason in batch if reason is None]
        skipped += [(i, reason) for i, x, y, reason in batch if reason is not None]
        if good:
            index = np.array([i for i, _, _ in good], np.int64)
            x = torch.stack([x for _, x, _ in good])  # (B, C, H, W)
            y = torch.tensor([y for _, _, y in good], dtype=torch.int64)  # (B,)
            out = engine.run(x, y, seed=int(plan.ids_of(index[:1])[0]))
            finite = np.isfinite(out["raw"]).all(axis=1) & np.isfinite(out["loss"])
            if "alpha" in out:
                finite &= np.isfinite(out["alpha"]).all(axis=1)
            skipped += [(int(i), "non-finite saliency or loss") for i in index[~finite]]
            parts.append({"index": index[finite], "label": y.numpy()[finite], **{k: v[finite] for k, v in out.items()}})
        if on_samples is not None:
            on_samples(len(batch))
    F_ = engine.layout.num_filters
    cat = (
        {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if parts
        else {
            "index": np.zeros(0, np.int64),
            "raw": np.zeros((0, F_), np.float32),
            "label": np.zeros(0, np.int64),
            "predicted": np.zeros(0, np.int64),
            "true_confidence": np.zeros(0),
            "predicted_confidence": np.zeros(0),
            "loss": np.zeros(0),
            **({} if engine.importance_of is None else {"alpha": np.zeros((0, engine.importance_n), np.float32)}),
        }
    )
    skipped.sort()
    return ShardResult(
        shard=shard,
        ids=plan.ids_of(cat["index"]),
        raw=cat["raw"],
        label=cat["label"],
        predicted=cat["predicted"],
        true_confidence=cat["true_confidence"],
        predicted_confidence=cat["predicted_confidence"],
        loss=cat["loss"],
        stats=RunningStats.of(cat["raw"]) if len(cat["raw"]) else RunningStats.empty(F_),
        skipped_ids=plan.ids_of(np.array([i for i, _ in skipped], np.int64)),
        skipped_reasons=[r for _, r in skipped],
        alpha=cat.get("alpha"),
    )
