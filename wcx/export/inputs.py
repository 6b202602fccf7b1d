"""The inputs the export checks feed to a member: scaling, preprocessing and random batches.

Members take *preprocessed* float32 inputs: raw pixels are first brought to [0, 1] (uint8 is
divided by 255, float32 must already lie in [0, 1]; method.md section 5), then the bundle's
per-channel ``(x - mean) / std`` is applied. Members exported for already-normalised data
(``input_range``) take float inputs in that range as they are. The checks run the runtime's own
preprocessing (:class:`wcx.core.preprocess.Preprocessor`), so they see exactly what a deployed
member sees, and refuse data outside the input range as the runtime does.
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


def input_range(value: Sequence[float] | None) -> tuple[float, float] | None:
    """Check a declared range of already-normalised inputs: ``[low, high]``, finite, low < high."""
    if value is None:
        return None
    values = [float(v) for v in value]
    if len(values) != 2 or not all(np.isfinite(values)) or not values[0] < values[1]:
        raise BadInputError(f"input_range: expected two finite numbers LOW,HIGH with LOW < HIGH, got {list(value)}")
    return values[0], values[1]


def input_section(sample_shape: Sequence[int], mean: Sequence[float] | None, std: Sequence[float] | None,
                  value_range: Sequence[float] | None = None, *, name: str = "input") -> InputSection:
    """The members' input section: per-channel mean/std after scaling to [0, 1] (defaults 0 and
    1), or, with ``value_range``, already-normalised float inputs in that range (no mean/std)."""
    channels = int(sample_shape[0])
    declared = input_range(value_range)
    if declared is not None:
        if mean is not None or std is not None:
            raise BadInputError("input_range declares inputs that arrive already normalised, which take no mean/std: "
                                "drop mean and std")
        return InputSection(name=name, shape=tuple(int(d) for d in sample_shape), mean=(0.0,) * channels,
                            std=(1.0,) * channels, value_range=declared, normalized=True)
    mean_l, std_l = channel_stats(mean, std, channels)
    return InputSection(name=name, shape=tuple(int(d) for d in sample_shape), mean=tuple(mean_l), std=tuple(std_l))


def prepare(x: np.ndarray, section: InputSection) -> np.ndarray:
    """``x`` (N, C, H, W) as a member of ``section`` takes it (the runtime's preprocessing)."""
    out: np.ndarray = Preprocessor(section)(x)
    return out


def preprocess(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Scale ``x`` (N, C, H, W) to [0, 1] and apply per-channel ``(x - mean) / std`` (float32)."""
    section = InputSection(name="input", shape=tuple(int(d) for d in x.shape[1:]), mean=tuple(mean), std=tuple(std))
    return prepare(x, section)


def random_inputs(n: int, sample_shape: Sequence[int], *, seed: int,
                  value_range: Sequence[float] = (0.0, 1.0)) -> np.ndarray:
    """``n`` seeded uniform float32 samples of shape ``sample_shape`` in ``value_range`` (before
    preprocessing; [0, 1] by default)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, *sample_shape), dtype=np.float32)
    lo, hi = (float(v) for v in value_range)
    if (lo, hi) != (0.0, 1.0):
        x = (np.float32(lo) + np.float32(hi - lo) * x).astype(np.float32)
        np.clip(x, lo, hi, out=x)
    return x
