"""Tiny models and image folders for the indexer tests (importable as a factory spec:
``indexer_helpers:tiny_net``; subprocesses get this directory on PYTHONPATH via ``env_with_helpers``)."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

HERE = Path(__file__).resolve().parent
FACTORY = "indexer_helpers:tiny_net"
NUM_CLASSES = 3


class TinyNet(nn.Module):
    """(B, 1, 28, 28) -> (B, 3): three convs (4 + 6 + 8 = 18 filters), pooling, a linear head."""

    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, NUM_CLASSES)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))  # (B, 6, 14, 14)
        x = torch.relu(self.conv3(x))  # (B, 8, 7, 7)
        return self.fc(x.mean(dim=(2, 3)))


class FixedSizeNet(nn.Module):
    """Needs exactly 28x28 inputs (a linear layer over the flattened feature map)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 4, stride=4)  # (B, 4, 7, 7) for 28x28
        self.fc = nn.Linear(4 * 7 * 7, NUM_CLASSES)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def fixed_size_net() -> FixedSizeNet:
    torch.manual_seed(0)
    return FixedSizeNet()


def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


def tiny_net_rgb() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet(in_channels=3)


def save_weights(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save(TinyNet().state_dict(), path)
    return path


def make_image_folder(
    root: Path, per_class: int = 10, mode: str = "L", size: int = 28, seed: int = 0, classes=("a", "b", "c")
) -> Path:
    """``root/<class>/<k>.png`` random images with a class-dependent bright stripe (so the
    tiny net's profiles differ by class and ties between samples are vanishingly rare)."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            img = rng.integers(0, 160, size=(size, size), dtype=np.uint8)
            img[:, (c * 7) % size : (c * 7) % size + 5] = 255
            if mode == "RGB":
                img = np.stack([img, np.roll(img, 3, axis=0), img[::-1]], axis=-1)
            Image.fromarray(img, mode=None).convert(mode).save(d / f"{k:03d}.png")
    return root


def corrupt_file(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])  # a PNG header and nothing else


def env_with_helpers(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_hashes(bundle_root: Path) -> dict[str, str]:
    """sha256 of every file of the current generation except the manifest (timestamps)."""
    gen = bundle_root / (bundle_root / "CURRENT").read_text().strip()
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(gen.iterdir()) if p.name != "manifest.json"
    }


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """(size, mtime_ns, sha256) of every file under root, by relative path."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def tiny_net_named() -> TinyNet:
    """tiny_net carrying its own class names, in an order that is not the sorted one."""
    net = tiny_net()
    net.classes = ["c", "a", "b"]
    return net


class TinyDataset(torch.utils.data.Dataset):
    """``indexer_helpers:tiny_dataset``: 9 items of (image, label) in the forms a factory
    dataset may use: PIL images, uint8 arrays and float tensors in [0, 1]; item 8 is
    normalised (values outside [0, 1]), which the indexer must skip."""

    classes = ["x", "y", "z"]

    def __init__(self):
        rng = np.random.default_rng(3)
        self.arrays = [rng.integers(0, 160, size=(28, 28), dtype=np.uint8) for _ in range(9)]
        self.targets = [k % 3 for k in range(9)]

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        a = self.arrays[i]
        if i % 3 == 0:
            image = Image.fromarray(a)
        elif i % 3 == 1:
            image = a
        else:
            image = torch.from_numpy(a)[None].float() / 255  # (1, H, W)
        if i == 8:
            image = (image - 0.5) / 0.1
        return image, self.targets[i]


def tiny_dataset() -> TinyDataset:
    return TinyDataset()


def build_reference_bundle(out, *, limit: int = 300, reference_limit: int = 600, extra=()) -> Path:
    """A small demo-fashion bundle WITH reference data (surprise / expectation), through the CLI:
    the first ``limit`` Fashion-MNIST test images (ids 0..limit-1), statistics over a seeded
    stratified ``reference_limit`` of the training split. ~6 s on two cores for the defaults."""
    import subprocess
    import sys

    out = Path(out)
    cmd = [
        sys.executable,
        "-m",
        "parasal.indexer",
        "--model",
        "demo-fashion",
        "--data",
        "fashion-mnist:test",
        "--limit",
        str(limit),
        "--sample",
        "first",
        "--reference-data",
        "fashion-mnist:train",
        "--reference-limit",
        str(reference_limit),
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
        *extra,
    ]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"building the reference test bundle failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return out
