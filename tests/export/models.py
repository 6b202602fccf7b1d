"""Small PyTorch models for the export tests and the README's ``wcx export`` example.

Every function here is a zero-argument (or keyword-only) callable returning an ``nn.Module`` in
eval mode, so it can be named on the command line as ``tests.export.models:small_cnn``.
Inputs are (N, 1, 8, 8) images (scikit-learn's digits, scaled to [0, 1]), 10 classes.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

INPUT_SHAPE = (1, 8, 8)
NUM_CLASSES = 10
# Preprocessing used with these models (per channel, applied after scaling to [0, 1]).
MEAN = (0.30,)
STD = (0.38,)


class SmallCNN(nn.Module):
    """Conv3x3(8)-BN-ReLU, Conv3x3(16)-ReLU, MaxPool2, Conv3x3(32)-ReLU, global avg pool, Linear."""

    def __init__(self, width: int = 8, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def small_cnn(seed: int = 0, width: int = 8) -> nn.Module:
    """A randomly initialised (seeded) ``SmallCNN`` in eval mode."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = SmallCNN(width=width)
    finally:
        torch.random.set_rng_state(gen_state)
    return model.eval()


def wide_cnn() -> nn.Module:
    """A second, wider member (seed 1), so a two-member bundle has members of different cost."""
    return small_cnn(seed=1, width=12)


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``x`` float32 (1797, 1, 8, 8) in [0, 1] and ``y`` int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    return x, digits.target.astype(np.int64)


# The digits split used by the tests: train on the first 1000, the rest is held out.
TRAIN_SIZE = 1000


@functools.lru_cache(maxsize=4)
def _trained_state(seed: int, width: int, epochs: int) -> dict[str, torch.Tensor]:
    x, y = load_digits_arrays()
    xt = (torch.from_numpy(x[:TRAIN_SIZE]) - MEAN[0]) / STD[0]
    yt = torch.from_numpy(y[:TRAIN_SIZE])
    model = small_cnn(seed=seed, width=width).train()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: one thread is faster than two on a busy machine
    try:
        for _ in range(epochs):
            order = torch.randperm(TRAIN_SIZE, generator=gen)
            for start in range(0, TRAIN_SIZE, 100):
                idx = order[start : start + 100]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def digits_cnn(seed: int = 0, width: int = 8, epochs: int = 10) -> nn.Module:
    """A ``SmallCNN`` trained for a few seconds on the first 1000 digits (cached per process)."""
    model = small_cnn(seed=seed, width=width)
    model.load_state_dict(_trained_state(seed, width, epochs))
    return model.eval()


def digits_cnn_wide() -> nn.Module:
    """A second trained member (seed 1, width 12)."""
    return digits_cnn(seed=1, width=12)


class TracingDiverges(nn.Module):
    """Behaves differently while being exported: the ONNX graph adds 0.5 to every logit."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = small_cnn(seed=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            out = out + 0.5
        return out


def diverging_cnn() -> nn.Module:
    """A model whose exported graph differs from its eager forward (parity must refuse it)."""
    return TracingDiverges().eval()


def not_a_module() -> str:
    """A callable that does not return a module (the exporter must refuse it)."""
    return "not a module"
