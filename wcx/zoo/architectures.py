"""The zoo's CNN family for Fashion-MNIST (PyTorch; import only where torch is installed).

Five sizes ``b0`` .. ``b4``, scaled in width *and* depth like EfficientNet B0..B4 so that each
size costs about 2.5-3.3x the MACs of the one below (``b4`` is about 54x ``b0``). Every size has
the same plain layout, which exports cleanly to ONNX and quantizes with ONNX Runtime's QDQ
quantizer::

    stage 1 (28x28): depth[0] x (Conv3x3 -> BatchNorm -> ReLU), MaxPool 2
    stage 2 (14x14): depth[1] x (Conv3x3 -> BatchNorm -> ReLU), MaxPool 2
    stage 3 (7x7):   depth[2] x (Conv3x3 -> BatchNorm -> ReLU)
    global average pool -> Linear -> logits (no softmax)

Input: float32 (N, 1, 28, 28), pixels scaled to [0, 1] and then normalized with the mean/std in
``zoo.json`` (``preprocess``). The model does not normalize by itself.

Members (three seeds per size) are module-level zero-argument callables, so a runtime can
rebuild one from source + weights with the string ``"wcx.zoo.architectures:b2_s1"``::

    from wcx.zoo.architectures import b2_s1
    model = b2_s1()          # nn.Module in eval mode, weights loaded from weights/b2_s1.safetensors

``build(size)`` returns a randomly initialised model (for benchmarks and for training).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
NUM_CLASSES = 10
INPUT_SHAPE = (1, 28, 28)


@dataclass(frozen=True)
class SizeSpec:
    """Channel width and number of conv blocks of each of the three stages."""

    widths: tuple[int, int, int]
    depths: tuple[int, int, int]


# MACs per sample (conv + linear): b0 0.17M, b1 0.39M, b2 0.96M, b3 3.1M, b4 9.2M.
SIZES: dict[str, SizeSpec] = {
    "b0": SizeSpec(widths=(4, 8, 24), depths=(1, 1, 1)),
    "b1": SizeSpec(widths=(5, 10, 20), depths=(1, 1, 2)),
    "b2": SizeSpec(widths=(8, 16, 32), depths=(1, 1, 2)),
    "b3": SizeSpec(widths=(12, 24, 48), depths=(1, 2, 2)),
    "b4": SizeSpec(widths=(16, 32, 64), depths=(1, 3, 3)),
}
SEEDS: tuple[int, ...] = (0, 1, 2)
MEMBERS: tuple[str, ...] = tuple(f"{size}_s{seed}" for size in SIZES for seed in SEEDS)


class ZooCNN(nn.Module):
    """A plain Conv/BatchNorm/ReLU/MaxPool network ending in global average pooling and a Linear."""

    def __init__(self, spec: SizeSpec, num_classes: int = NUM_CLASSES, in_channels: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for stage, (width, depth) in enumerate(zip(spec.widths, spec.depths, strict=True)):
            for _ in range(depth):
                layers += [
                    nn.Conv2d(cin, width, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                cin = width
            if stage < len(spec.widths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(self.pool(x), 1)
        logits: torch.Tensor = self.classifier(x)
        return logits


def build(size: str) -> ZooCNN:
    """A randomly initialised model of one size (``"b0"`` .. ``"b4"``), in eval mode.

    Call ``.train()`` on it before training.
    """
    if size not in SIZES:
        raise ValueError(f"unknown zoo size {size!r}; valid sizes: {', '.join(SIZES)}")
    return ZooCNN(SIZES[size]).eval()


def member_size(name: str) -> str:
    """The size of a member name such as ``"b2_s1"`` (``"b2"``)."""
    if name not in MEMBERS:
        raise ValueError(f"unknown zoo member {name!r}; valid members: {', '.join(MEMBERS)}")
    return name.split("_", 1)[0]


def load_member(name: str, weights_dir: str | Path | None = None) -> ZooCNN:
    """Build member ``name`` and load its weights (safetensors, never pickle); eval mode."""
    from safetensors.torch import load_file

    model = ZooCNN(SIZES[member_size(name)])
    path = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    path = path / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no weights for zoo member {name!r} (regenerate with tools/train_zoo.py)")
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def _member_callable(name: str) -> Callable[[], ZooCNN]:
    def member() -> ZooCNN:
        return load_member(name)

    member.__name__ = member.__qualname__ = name
    member.__doc__ = f"Zoo member {name!r} ({member_size(name)}), eval mode, trained weights loaded."
    return member


# One zero-argument callable per member: wcx.zoo.architectures:b0_s0 ... b4_s2.
for _name in MEMBERS:
    globals()[_name] = _member_callable(_name)
del _name

__all__ = ["MEMBERS", "SEEDS", "SIZES", "SizeSpec", "ZooCNN", "build", "load_member", "member_size", *MEMBERS]
