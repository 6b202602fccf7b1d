"""The inputs the export checks feed to a member: scaling, preprocessing and random batches.

Members take *preprocessed* float32 inputs: raw pixels are first brought to [0, 1] (uint8 is
divided by 255, float32 is taken as already in [0, 1]; method.md section 5), then the bundle's
per-channel ``(x - mean) / std`` is applied. The checks run the runtime's own preprocessing
(:class:`wcx.core.preprocess.Preprocessor`), so they see exactly what a deployed member sees.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wcx.core.manifest import InputSection
from wcx.core.preprocess import Preprocessor
from wcx.errors import BadInputError


def channel_stats(
    mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
) -> tuple[list[float], list[float]]:
    """Expand and check per-channel mean/std (defaults 0 and 1; one value means every channel)."""
    mean_l = [0.0] * channels if mean is None else [float(v) for v in mean]
    std_l = [1.0] * channels if std is None else [float(v) for v in std]
    out = []
    for name, vals in (("mean", mean_l), ("std", std_l)):
        if len(vals) == 1:
            vals = vals * channels
        if len(vals) != channels:
            raise BadInputError(f"{name}: expected 1 or {channels} values (one per channel), got {len(vals)}")
        if not all(np.isfinite(vals)):
            raise BadInputError(f"{name}: values must be finite, got {vals}")
        out.append(vals)
    if any(s <= 0 for s in out[1]):
        raise BadInputError(f"std: values must be positive, got {out[1]}")
    return out[0], out[1]


def preprocess(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Scale ``x`` (N, C, H, W) to [0, 1] and apply per-channel ``(x - mean) / std`` (float32)."""
    section = InputSection(name="input", shape=tuple(int(d) for d in x.shape[1:]), mean=tuple(mean), std=tuple(std))
    out: np.ndarray = Preprocessor(section)(x)
    return out


def random_inputs(n: int, sample_shape: Sequence[int], *, seed: int) -> np.ndarray:
    """``n`` seeded uniform [0, 1] float32 samples of shape ``sample_shape`` (before preprocessing)."""
    rng = np.random.default_rng(seed)
    return rng.random((n, *sample_shape), dtype=np.float32)
