"""Model specs -> a loaded model, its preprocessing, a reloadable spec and a fingerprint.

Specs accepted by :func:`load_model`:

=============================  ====================================================
``demo-fashion``               the embedded Fashion-MNIST ResNet (``parasal.indexer.zoo``);
                               ``weights`` optionally replaces the committed weights
``torchvision:<arch>``         ``torchvision.models.get_model(arch)`` + ``weights`` (a state
                               dict; required: nothing is downloaded). ``num_classes`` is
                               read from the classifier weight's shape when possible
``torchscript:<path>``,        a TorchScript archive (``torch.jit.load``); one scripted or traced
``<path>.pt``                  from a torchvision classifier runs as its checked eager twin
                               (:func:`eager_twin`: the batched engine instead of the slow path)
``package.module:factory``     ``factory()`` returns an ``nn.Module``; ``weights`` optional
=============================  ====================================================

Weights files are loaded with ``torch.load(weights_only=True)``; checkpoints that wrap the
state dict (``{"state_dict": ...}`` or ``{"model": ...}``) and DDP ``module.`` prefixes are
unwrapped. Preprocessing defaults per kind: ImageNet (resize 256, crop 224, RGB) for
torchvision, ``DEMO_PREPROCESSING`` for demo-fashion, ``Preprocessing()`` (RGB, ImageNet
mean/std, no resizing) otherwise; any field can be overridden.

The *fingerprint* is a sha256 over the state dict (names, dtypes, shapes and bytes, in
sorted-name order), so two loads of the same weights agree however they were spelt, and
a bundle can refuse a model it was not built with.

Bundles travel: the indexer copies the weights file (or the TorchScript archive) into
each generation (``model.pt``, listed with its sha256), and :func:`load_model_from_manifest`
loads that copy, not the path the bundle was built from; ``weights=`` overrides it, and the
fingerprint still has to match. A factory's code cannot be copied: the manifest records
its module's file and the ``PYTHONPATH`` entry it was imported from, for the error message.

Class names travel with the model where the spec carries them (``LoadedModel.classes``):
demo-fashion's Fashion-MNIST names, a torchvision architecture's ImageNet categories (when
the classifier has 1000 outputs), or a ``classes`` list attribute on a factory's or a
TorchScript module.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parasal.core import FilterLayout, LayerSpan, filter_layout

from .errors import ModelMismatch, ModelSpecError
from .preprocessing import Preprocessing

log = logging.getLogger(__name__)

__all__ = [
    "LoadedModel",
    "load_model",
    "load_model_from_manifest",
    "model_display_name",
    "model_file_of",
    "with_model_file",
    "parse_model_spec",
    "default_preprocessing",
    "override_preprocessing",
    "state_dict_fingerprint",
    "model_layout",
    "IMAGENET_PREPROCESSING",
]

IMAGENET_PREPROCESSING = Preprocessing(
    channels="RGB",
    resize=256,
    crop=224,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    input_shape=(3, 224, 224),
)
_FINGERPRINT_DOMAIN = b"parasal-state-dict-fingerprint-v1\0"


@dataclass
class LoadedModel:
    """A model ready for saliency: eval mode, on CPU (move it yourself), plus what describes it."""

    model: nn.Module
    preprocessing: Preprocessing
    spec: dict  # JSON-able; load_model(spec) reloads the same model
    fingerprint: str  # state_dict_fingerprint(model)
    layout: FilterLayout | None = field(default=None, repr=False)
    classes: list[str] | None = None  # the model's own class names, when its spec carries them

    def __post_init__(self):
        if self.layout is None:
            self.layout = model_layout(self.model)

    @property
    def is_torchscript(self) -> bool:
        return isinstance(self.model, torch.jit.ScriptModule)

    @property
    def model_file(self) -> str | None:
        """The file the weights came from (state dict or TorchScript archive): what a bundle
        keeps a copy of; None for the embedded demo weights."""
        return model_file_of(self.spec)


def load_model(
    spec: str | Mapping[str, Any],
    weights: str | os.PathLike | None = None,
    preprocessing: Preprocessing | Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Load ``spec`` (a string, see module docstring, or a spec dict from a manifest).

    ``preprocessing`` replaces the kind's default when it is a :class:`Preprocessing`, or
    overrides some of its fields when it is a mapping (``{"resize": 64}``).
    """
    spec_dict = parse_model_spec(spec, weights)
    kind = spec_dict["kind"]
    if kind == "demo-fashion":
        model = _load_demo(spec_dict.get("weights"))
    elif kind == "torchvision":
        model = _load_torchvision(spec_dict)
    elif kind == "torchscript":
        model = _load_torchscript(spec_dict["path"])
    elif kind == "factory":
        model = _load_factory(spec_dict)
    else:  # parse_model_spec only returns the kinds above
        raise ModelSpecError(f"unknown model kind {kind!r}")
    model.eval()
    pre = default_preprocessing(kind)
    if isinstance(preprocessing, Preprocessing):
        pre = preprocessing
    elif preprocessing:
        pre = override_preprocessing(pre, **dict(preprocessing))
    return LoadedModel(
        model=model,
        preprocessing=pre,
        spec=spec_dict,
        fingerprint=state_dict_fingerprint(model),
        classes=_model_classes(kind, spec_dict, model),
    )


def load_model_from_manifest(
    bundle_or_manifest, weights: str | os.PathLike | None = None, *, generation_dir: str | os.PathLike | None = None
) -> LoadedModel:
    """The model a bundle was built with, with its recorded preprocessing; raises
    :class:`ModelMismatch` if the weights no longer match the recorded fingerprint.

    Accepts a Bundle, its :class:`~parasal.indexer.Manifest`, or the manifest's JSON dict
    (the writer's side, before a Bundle exists: give ``generation_dir`` to find the
    bundle's copy of the weights). The weights come from ``weights`` (an explicit
    override: a state dict, or a TorchScript archive for TorchScript bundles), else the
    bundle's own copy, else (bundles without one) the path the bundle was built from."""
    manifest = getattr(bundle_or_manifest, "manifest", bundle_or_manifest)
    if isinstance(manifest, Mapping):
        entry = manifest["model"]
        spec, fingerprint = entry["spec"], entry["fingerprint"]
        preprocessing = Preprocessing.from_dict(manifest["preprocessing"])
        kept = entry.get("file") and generation_dir is not None and os.path.join(generation_dir, entry["file"])
    else:
        spec, fingerprint, preprocessing = manifest.model.spec, manifest.model.fingerprint, manifest.preprocessing
        kept = manifest.model.path
    source = _abs_file(weights, "weights") if weights is not None else kept or None
    if source and not os.path.isfile(source):
        raise ModelSpecError(f"cannot reload the bundle's model: its weights file {source} is missing")
    spec = with_model_file(spec, source) if source else dict(spec)
    try:
        loaded = load_model(spec, preprocessing=preprocessing)
    except ModelSpecError as e:
        raise ModelSpecError(f"cannot reload the bundle's model: {e}") from e
    if loaded.fingerprint != fingerprint:
        what = (
            "are not the ones the bundle was built with"
            if weights is not None
            else "has changed since the bundle was built"
        )
        raise ModelMismatch(
            f"the model at {_describe_spec(spec)} {what} "
            f"(weights fingerprint {loaded.fingerprint[:12]}… != recorded {fingerprint[:12]}…)"
        )
    return loaded


def model_file_of(spec: Mapping[str, Any]) -> str | None:
    """The file a spec's weights come from: the TorchScript archive, or the state dict."""
    return spec.get("path") if spec.get("kind") == "torchscript" else spec.get("weights")


def with_model_file(spec: Mapping[str, Any], path: str | os.PathLike) -> dict:
    """``spec`` loading its weights (or archive) from ``path`` instead."""
    out = dict(spec)
    out["path" if out.get("kind") == "torchscript" else "weights"] = str(path)
    return out


def model_display_name(spec: Mapping[str, Any]) -> str:
    """A model spec dict as the string users wrote ("demo-fashion", "torchvision:resnet50",
    "torchscript:/abs/model.pt", "package.module:factory")."""
    kind = spec.get("kind")
    if kind == "torchvision":
        return f"torchvision:{spec.get('arch')}"
    if kind == "torchscript":
        return f"torchscript:{spec.get('path')}"
    if kind == "factory":
        return str(spec.get("factory"))
    return str(kind)


def parse_model_spec(spec: str | Mapping[str, Any], weights: str | os.PathLike | None = None) -> dict:
    """A spec string (+ weights path) -> the canonical JSON-able spec dict (absolute paths)."""
    if isinstance(spec, Mapping):
        out = dict(spec)
        if weights is not None:
            out["weights"] = _abs_file(weights, "weights")
        if out.get("kind") not in ("demo-fashion", "torchvision", "torchscript", "factory"):
            raise ModelSpecError(f"unknown model spec {dict(spec)!r}")
        return out
    spec = str(spec).strip()
    w = _abs_file(weights, "weights") if weights is not None else None
    if spec == "demo-fashion":
        return {"kind": "demo-fashion", **({"weights": w} if w else {})}
    if spec.startswith("torchvision:"):
        arch = spec.split(":", 1)[1]
        if not arch:
            raise ModelSpecError("torchvision spec needs an architecture, e.g. torchvision:resnet50")
        if w is None:
            raise ModelSpecError(
                f"{spec} needs --weights FILE (a state dict); parasal never downloads pretrained weights"
            )
        return {"kind": "torchvision", "arch": arch, "weights": w}
    if spec.startswith("torchscript:") or (spec.endswith((".pt", ".pth", ".ts")) and ":" not in spec):
        path = spec.split(":", 1)[1] if spec.startswith("torchscript:") else spec
        if w is not None:
            raise ModelSpecError("a TorchScript archive carries its own weights; drop --weights")
        return {"kind": "torchscript", "path": _abs_file(path, "TorchScript file")}
    module, sep, attr = spec.partition(":")
    if sep and module and attr and all(part.isidentifier() for part in module.split(".") + attr.split(".")):
        return {"kind": "factory", "factory": spec, **({"weights": w} if w else {})}
    raise ModelSpecError(
        f"unknown model spec {spec!r}: use demo-fashion, torchvision:<arch> --weights FILE, "
        "a TorchScript file (torchscript:PATH or *.pt), or package.module:factory [--weights FILE]"
    )


def default_preprocessing(kind: str) -> Preprocessing:
    if kind == "demo-fashion":
        from .zoo import DEMO_PREPROCESSING

        return DEMO_PREPROCESSING
    if kind == "torchvision":
        return IMAGENET_PREPROCESSING
    return Preprocessing()


def override_preprocessing(base: Preprocessing, **changes: Any) -> Preprocessing:
    """``base`` with some fields replaced (None values are ignored).

    Changing channels, resize or crop invalidates the base's ``input_shape``, so it is
    dropped unless given; changing channels without mean/std only works when the
    counts still fit (1 channel <-> 1 value), otherwise it is an error saying so.
    """
    changes = {k: v for k, v in changes.items() if v is not None}
    unknown = set(changes) - {"channels", "resize", "crop", "mean", "std", "input_shape"}
    if unknown:
        raise ModelSpecError(f"unknown preprocessing option(s): {sorted(unknown)}")
    for key in ("mean", "std"):
        if key in changes:
            changes[key] = tuple(float(v) for v in changes[key])
    for key in ("resize", "crop"):
        if key in changes:
            changes[key] = int(changes[key]) or None
    if any(k in changes for k in ("channels", "resize", "crop")) and "input_shape" not in changes:
        changes["input_shape"] = None
    channels = changes.get("channels", base.channels)
    n = 1 if channels == "L" else 3
    for key in ("mean", "std"):
        if key not in changes and len(getattr(base, key)) != n:
            raise ModelSpecError(
                f"--channels {channels} needs --{key} with {n} value(s) "
                f"(the default {key} {list(getattr(base, key))} has {len(getattr(base, key))})"
            )
    try:
        return replace(base, **changes)
    except ValueError as e:
        raise ModelSpecError(f"invalid preprocessing: {e}") from e


def state_dict_fingerprint(model: nn.Module) -> str:
    """sha256 over (name, dtype, shape, bytes) of every state-dict entry, sorted by name."""
    h = hashlib.sha256(_FINGERPRINT_DOMAIN)
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(name.encode() + b"\0" + str(t.dtype).encode() + b"\0" + repr(tuple(t.shape)).encode() + b"\0")
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_layout(model: nn.Module) -> FilterLayout:
    """``filter_layout(model)``, also for TorchScript modules (whose submodules are not
    ``nn.Conv2d`` instances but remember their ``original_name``)."""
    if not isinstance(model, torch.jit.ScriptModule):
        return filter_layout(model)
    spans, offset = [], 0
    for name, module in model.named_modules():
        if getattr(module, "original_name", None) == "Conv2d":
            filters = int(module.weight.shape[0])
            spans.append(LayerSpan(name, "conv2d", filters, offset))
            offset += filters
    if not spans:
        raise ModelSpecError("the TorchScript model has no Conv2d layers")
    return FilterLayout(tuple(spans))


# ---------------------------------------------------------------------------------------


def _abs_file(path: str | os.PathLike, what: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelSpecError(f"{what} not found: {p}")
    return str(p.resolve())


def _describe_spec(spec: Mapping[str, Any]) -> str:
    """The spec and the file its weights come from, for error messages."""
    if spec.get("kind") == "torchscript":
        return spec["path"]
    return f"{model_display_name(spec)} {spec.get('weights') or '(embedded weights)'}"


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelSpecError(f"cannot read weights {path} as a state dict: {str(e).splitlines()[0]}") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelSpecError(f"{path} is not a state dict (a mapping of names to tensors)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise ModelSpecError(f"weights {path} do not fit the model: {' '.join(lines[1:3])[:400]}") from e


def _load_demo(weights: str | None) -> nn.Module:
    from .zoo import DEMO_WEIGHTS_PATH, load_demo_model

    try:
        return load_demo_model(weights)
    except FileNotFoundError as e:
        raise ModelSpecError(str(e)) from e
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise ModelSpecError(
            f"weights {weights or DEMO_WEIGHTS_PATH} do not fit demo-fashion: {' '.join(lines[1:3])[:300]}"
        ) from e


def _infer_num_classes(state: Mapping[str, torch.Tensor]) -> int | None:
    """Output size of the classifier: the last 2-D ``*.weight`` in the state dict (torchvision
    registers the classifier last: ``fc``, ``classifier.N``, ``heads.head``)."""
    for name in reversed(list(state)):
        if name.endswith("weight") and state[name].ndim == 2:
            return int(state[name].shape[0])
    return None


def _load_torchvision(spec: dict) -> nn.Module:
    import torchvision

    arch = spec["arch"]
    if arch not in torchvision.models.list_models():
        raise ModelSpecError(f"unknown torchvision architecture {arch!r}")
    state = _read_state_dict(spec["weights"])
    num_classes = spec.get("num_classes") or _infer_num_classes(state) or 1000
    spec["num_classes"] = num_classes
    kwargs = {"weights": None, "num_classes": num_classes}
    if arch.startswith("inception") or arch.startswith("googlenet"):
        kwargs.update(aux_logits=any(k.startswith("Aux") or k.startswith("aux") for k in state), init_weights=False)
    model = torchvision.models.get_model(arch, **kwargs)
    _load_state(model, state, spec["weights"])
    return model


def _load_torchscript(path: str) -> nn.Module:
    """The archive's module, or its eager torchvision twin when it has one (see eager_twin)."""
    try:
        with warnings.catch_warnings():  # torch 2.9+ marks TorchScript deprecated; archives still load
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.load(path, map_location="cpu")
    except Exception as e:
        raise ModelSpecError(
            f"{path} is not a TorchScript archive ({str(e).splitlines()[0][:200]}); for a state dict use "
            "torchvision:<arch> or package.module:factory with --weights"
        ) from e
    twin = eager_twin(scripted)
    return scripted if twin is None else twin


def eager_twin(scripted: torch.jit.ScriptModule) -> nn.Module | None:
    """An eager torchvision module computing what ``scripted`` computes, else None.

    Scripted (or traced) modules run no Python hooks, so the batched saliency engine cannot
    see inside them and indexing falls back to one backward pass per image. A TorchScript
    archive made from a torchvision classifier has a twin: the architecture whose module
    defines a class of the archive's root ``original_name`` (``ResNet``) and whose state
    dict has exactly the archive's names and shapes (checked on the meta device, so no
    weights are allocated), loaded with the archive's own state dict. The twin is accepted
    only when both give the same logits on a fixed random batch; any other archive (a
    custom model, a changed forward) stays scripted. Same state dict, so the same
    fingerprint and filter layout as the archive itself."""
    root = getattr(scripted, "original_name", None)
    try:
        import torchvision
    except ImportError:
        return None
    state = scripted.state_dict()
    shapes = {name: tuple(t.shape) for name, t in state.items()}
    convs = [t for t in state.values() if t.ndim == 4]
    if not root or not convs:
        return None
    kwargs = {"weights": None, "num_classes": _infer_num_classes(state) or 1000}
    for arch in torchvision.models.list_models(module=torchvision.models):
        builder = torchvision.models.get_model_builder(arch)
        if not isinstance(getattr(_module_of(builder), root, None), type):
            continue  # this architecture's module defines no class of that name: not a candidate
        try:
            with torch.device("meta"):
                candidate = builder(**kwargs)
        except Exception:  # noqa: BLE001 - an architecture that cannot take these arguments
            continue
        if type(candidate).__name__ != root or {n: tuple(t.shape) for n, t in candidate.state_dict().items()} != shapes:
            continue
        twin = builder(**kwargs).eval()
        twin.load_state_dict(state, strict=True)
        if _same_function(scripted, twin, in_channels=int(convs[0].shape[1])):
            log.info("TorchScript archive runs as torchvision's %s (same state dict, same logits): batched", arch)
            return twin
    return None


def _module_of(builder):
    return sys.modules.get(getattr(builder, "__module__", ""), None)


def _same_function(scripted: nn.Module, eager: nn.Module, in_channels: int) -> bool:
    """Both give the same logits for a fixed random batch (2, C, 224, 224) in eval mode."""
    x = torch.randn((2, in_channels, 224, 224), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            a, b = scripted.eval()(x), eager(x)
    except Exception:  # noqa: BLE001 - e.g. an input size the archive does not take
        return False
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def _model_classes(kind: str, spec: Mapping[str, Any], model: nn.Module) -> list[str] | None:
    """The class names the model's spec carries (see module docstring), else None."""
    if kind == "demo-fashion":
        from .datasets import FASHION_MNIST_CLASSES

        return list(FASHION_MNIST_CLASSES)
    if kind == "torchvision":
        try:
            import torchvision

            categories = torchvision.models.get_model_weights(spec["arch"]).DEFAULT.meta.get("categories")
        except (ValueError, KeyError, AttributeError):  # an architecture without published weights
            return None
        return list(categories) if categories and len(categories) == spec.get("num_classes") else None
    names = getattr(model, "classes", None)
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def _load_factory(spec: dict) -> nn.Module:
    from .imports import ImportFailed, import_object, module_location

    try:
        obj = import_object(spec["factory"], recorded=spec.get("module"))
    except ImportFailed as e:
        raise ModelSpecError(str(e)) from e
    spec.setdefault("module", module_location(spec["factory"]))  # where it came from: for the hint elsewhere
    try:
        model = obj()
    except Exception as e:
        raise ModelSpecError(f"{spec['factory']}() failed: {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"{spec['factory']}() returned {type(model).__name__}, not an nn.Module")
    if spec.get("weights"):
        _load_state(model, _read_state_dict(spec["weights"]), spec["weights"])
    return model
