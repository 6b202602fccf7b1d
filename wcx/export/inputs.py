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
from dataclasses import replace
from typing import Any

import numpy as np

from wcx.core.frames import frames_of
from wcx.core.manifest import CenterCrop, InputSection, Resize
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


def resize_spec(value: Any, interpolation: str = "bilinear") -> Resize | None:
    """A member's resize from an option: None, a :class:`Resize`, an int S (the shorter side
    becomes S) or (H, W) (exactly that size)."""
    if value is None or isinstance(value, Resize):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return Resize(shorter_side=int(value), interpolation=interpolation)
    if isinstance(value, Sequence) and len(value) == 2:
        return Resize(size=(int(value[0]), int(value[1])), interpolation=interpolation)
    raise BadInputError(f"resize: expected S (the shorter side) or (H, W), got {value!r}")


def crop_spec(value: Any) -> CenterCrop | None:
    """A member's center crop from an option: None, a :class:`CenterCrop`, an int S (S x S) or
    (H, W)."""
    if value is None or isinstance(value, CenterCrop):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return CenterCrop((int(value), int(value)))
    if isinstance(value, Sequence) and len(value) == 2:
        return CenterCrop((int(value[0]), int(value[1])))
    raise BadInputError(f"crop: expected S (S x S) or (H, W), got {value!r}")


def _per_member(value: Any, n: int, what: str, *, nested: bool) -> list[Any]:
    """``value`` for each of ``n`` members: a list (of ``nested`` sequences, for input_shape)
    gives one entry per member, anything else is the same for all."""
    per_member = isinstance(value, list) and (not nested or (bool(value) and all(
        isinstance(v, Sequence) and not isinstance(v, str) for v in value)))
    if not per_member:
        return [value] * n
    if len(value) != n:
        raise BadInputError(f"{what}: {len(value)} values for {n} members (give one for all, or one per member"
                            + ("" if nested else "; a tuple (H, W) is one value") + ")")
    return list(value)


def input_sections(n: int, input_shape: Any, mean: Sequence[float] | None, std: Sequence[float] | None,
                   value_range: Sequence[float] | None = None, *, resize: Any = None, crop: Any = None,
                   interpolation: str = "bilinear") -> list[InputSection]:
    """The input sections of ``n`` members: ``input_shape`` (C, H, W), ``resize`` and ``crop``
    each one value for all members or a list with one per member (members at different
    resolutions; :func:`resize_spec`, :func:`crop_spec`); mean/std and the range as in
    :func:`input_section`."""
    shapes = _per_member(input_shape, n, "input_shape", nested=True)
    resizes = _per_member(resize, n, "resize", nested=False)
    crops = _per_member(crop, n, "crop", nested=False)
    sections = []
    for shape, r, c in zip(shapes, resizes, crops, strict=True):
        sample_shape = tuple(int(d) for d in shape)
        if len(sample_shape) != 3 or any(d <= 0 for d in sample_shape):
            raise BadInputError(f"input_shape: expected three positive integers C,H,W, got {list(shape)}")
        section = input_section(sample_shape, mean, std, value_range)
        sections.append(replace(section, resize=resize_spec(r, interpolation), crop=crop_spec(c)))
    return sections


def prepare(x: np.ndarray, section: InputSection) -> np.ndarray:
    """``x`` (N, C, H, W) as a member of ``section`` takes it (the runtime's preprocessing): for
    a section that resizes, uint8 ``x`` are raw frames, resized and cropped; float ``x`` (the
    checks' random inputs) must already have the member's shape."""
    pre = Preprocessor(section)
    if section.prepares_frames and x.dtype == np.uint8:
        return pre.frames(frames_of(x))
    if section.prepares_frames and tuple(x.shape[1:]) != tuple(section.shape):
        raise BadInputError(f"data for members that resize must be uint8 frames (got {x.dtype} {tuple(x.shape)})")
    out: np.ndarray = pre(x)
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
