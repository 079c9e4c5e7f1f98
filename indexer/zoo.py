"""The embedded ``demo-fashion`` model: a small ResNet for Fashion-MNIST with committed weights.

The weights (``weights/demo-fashion.pt``) are a plain state dict loaded with
``weights_only=True``; ``weights/demo-fashion.json`` records how they were trained
(``parasal train-demo``, see ``train_demo.py``) and their sha256.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .preprocessing import Preprocessing

__all__ = [
    "ARCHITECTURE",
    "DEMO_WIDTHS",
    "DEMO_BLOCKS",
    "BasicBlock",
    "FashionResNet",
    "DEMO_PREPROCESSING",
    "DEMO_WEIGHTS_PATH",
    "DEMO_METADATA_PATH",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "build_demo_model",
    "load_demo_model",
]

ARCHITECTURE = "demo-fashion"
# demo-fashion = FashionResNet(DEMO_WIDTHS, DEMO_BLOCKS): 8 convs, 672 filters, 0.31 M parameters.
DEMO_WIDTHS = (32, 64, 128)
DEMO_BLOCKS = (1, 1, 1)
DEMO_WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "demo-fashion.pt"
DEMO_METADATA_PATH = DEMO_WEIGHTS_PATH.with_suffix(".json")

# Pixel mean/std of the Fashion-MNIST train split in [0, 1] (all 60,000 x 784 pixels;
# recomputed and checked by tests/indexer/test_zoo.py).
FASHION_MNIST_MEAN = 0.2860405969887955
FASHION_MNIST_STD = 0.35302424451492254
DEMO_PREPROCESSING = Preprocessing(
    channels="L", mean=(FASHION_MNIST_MEAN,), std=(FASHION_MNIST_STD,), input_shape=(1, 28, 28)
)


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm; identity shortcut, or a 1x1 projection when the shape changes.

    ReLUs are functional and out-of-place so module hooks see unmodified tensors.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FashionResNet(nn.Module):
    """ResNet for ``(B, 1, 28, 28)`` inputs: 3x3 stem, three stages of BasicBlocks at
    28x28, 14x14 and 7x7 (stride-2 downsampling at the first block of stages 2 and 3),
    global average pool, linear classifier."""

    def __init__(
        self,
        widths: Sequence[int] = DEMO_WIDTHS,
        blocks: Sequence[int] = DEMO_BLOCKS,
        num_classes: int = 10,
        in_channels: int = 1,
    ):
        super().__init__()
        if len(widths) != 3 or len(blocks) != 3:
            raise ValueError("FashionResNet has exactly three stages: give three widths and three block counts")
        self.widths, self.blocks = tuple(widths), tuple(blocks)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        stages, channels = [], widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            layers = []
            for k in range(count):
                stride = 2 if stage > 0 and k == 0 else 1
                layers.append(BasicBlock(channels, width, stride))
                channels = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each block: every block starts as the identity.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, w0, 28, 28)
        x = self.layer1(x)  # (B, w0, 28, 28)
        x = self.layer2(x)  # (B, w1, 14, 14)
        x = self.layer3(x)  # (B, w2, 7, 7)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, w2)
        return self.fc(x)  # (B, num_classes)


def build_demo_model() -> FashionResNet:
    """The demo architecture, randomly initialised (what ``train_demo`` trains)."""
    return FashionResNet(widths=DEMO_WIDTHS, blocks=DEMO_BLOCKS)


def load_demo_model(path: str | Path | None = None, map_location: str | torch.device = "cpu") -> FashionResNet:
    """The demo model with its committed weights (or those at ``path``), in eval mode."""
    path = Path(path) if path is not None else DEMO_WEIGHTS_PATH
    if not path.is_file():
        raise FileNotFoundError(f"demo weights not found at {path}; train them with `parasal train-demo`")
    state = torch.load(path, map_location=map_location, weights_only=True)
    model = build_demo_model()
    model.load_state_dict(state)
    return model.eval()
