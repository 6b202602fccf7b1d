"""Input preprocessing (method.md section 5): a raw batch becomes what every member takes.

A batch ``x`` (N, C, H, W) is turned into a member's input as its input section says
(:class:`wcx.core.manifest.InputSection`):

1. ``uint8`` is divided by 255 into the section's ``value_range`` (``[0, 1]`` unless it says
   otherwise); a float batch must already lie in that range (the *input contract*): one outside
   it is refused with a ``BadInputError`` naming its observed min/max and the likely cause
   (floats in 0..255 from ``x.astype(np.float32)``, or data normalised twice), because a cascade
   fed the wrong scale still returns confident answers and its risk guarantee silently fails;
2. then ``(x - mean) / std`` per channel, in float32.

A section with ``normalized`` set takes data that arrives already normalised: floats only, in
its own ``value_range``, passed on unchanged (no scaling, no mean/std).

A section that resizes or crops takes *raw frames* (uint8 images of any size,
:mod:`wcx.core.frames`): :meth:`Preprocessor.frames` resizes and crops them to the member's
(C, H, W) first, then applies the two steps above. :class:`MemberInputs` prepares one raw batch
for every member of a bundle, once per distinct input section (members at different
resolutions each get their own input from the same frames).

The range check is one min/max pass over the batch (on torch it runs on the tensor's device,
one small copy to the host); a slack of :data:`RANGE_SLACK` of the range's width lets through the
rounding of a user's own scaling (``x / 255`` and the like).

One implementation serves numpy arrays (the CPU path and calibration) and torch tensors on any
device (the GPU path uploads the raw batch, so that uint8, 4x smaller than float32, crosses the
bus).

>>> from wcx.core.manifest import InputSection
>>> p = Preprocessor(InputSection(name="x", shape=(1, 1, 2), mean=(0.5,), std=(0.25,)))
>>> p(np.full((1, 1, 1, 2), 255, dtype=np.uint8)).ravel().tolist()
[2.0, 2.0]
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from wcx.core.arrays import Array, is_torch
from wcx.core.frames import frames_of, frames_to_input
from wcx.core.manifest import InputSection
from wcx.errors import BadInputError

#: how far outside the declared range a float input may lie, as a share of the range's width
RANGE_SLACK = 1e-4


class Preprocessor:
    """The input contract, scaling and per-channel normalisation of one input section."""

    def __init__(self, section: InputSection) -> None:
        self.section = section
        channels = section.channels
        mean = np.asarray(section.mean, dtype=np.float32)
        std = np.asarray(section.std, dtype=np.float32)
        self.mean = np.broadcast_to(mean, (channels,)).reshape(1, channels, 1, 1).copy()
        self.std = np.broadcast_to(std, (channels,)).reshape(1, channels, 1, 1).copy()
        lo, hi = section.value_range
        self._affine = None if (lo, hi) == (0.0, 1.0) else (np.float32(hi - lo), np.float32(lo))
        self._constants: dict[Any, tuple[Any, Any]] = {}

    @property
    def channels(self) -> int:
        return self.section.channels

    def __call__(self, x: Array, *, dtype: Any = None, channels_last: bool = False, where: str = "input") -> Array:
        """Check and preprocess a batch: a new float32 array (numpy, C-contiguous) or tensor on
        ``x``'s device. For tensors, ``dtype`` (e.g. float16) and ``channels_last`` shape the
        result; the arithmetic is float32 either way. A float batch outside the input range
        (or with NaN/inf) is a ``BadInputError`` naming ``where``."""
        shape = tuple(x.shape)
        if len(shape) != 4 or shape[1] != self.channels:
            raise BadInputError(f"preprocess: expected (N, {self.channels}, H, W) inputs, got {shape}")
        float32: Any = np.float32
        if is_torch(x):
            import torch

            raw_uint8 = x.dtype == torch.uint8
            float32 = torch.float32
        else:
            raw_uint8 = x.dtype == np.uint8
        if raw_uint8 and self.section.normalized:
            lo, hi = self.section.value_range
            raise BadInputError(f"{where}: this bundle takes already-normalised float inputs in [{lo:g}, {hi:g}] "
                                "(declared at export), not uint8")
        if not raw_uint8:
            self.check_range(x, where=where)
        mean, std = self._constants_for(x)
        xf = x.to(float32) if is_torch(x) else x.astype(float32)
        if raw_uint8:
            xf = xf / 255.0
            if self._affine is not None:
                xf = xf * float(self._affine[0]) + float(self._affine[1])
        if not self.section.normalized:
            xf = (xf - mean) / std
        if not is_torch(xf):
            return np.ascontiguousarray(xf)
        if dtype is not None and dtype != xf.dtype:
            xf = xf.to(dtype)
        if channels_last:
            import torch

            xf = xf.contiguous(memory_format=torch.channels_last)
        return xf

    def frames(self, frames: Iterable[Any], *, where: str = "input", names: Sequence[str] | None = None,
               channel_order: str = "RGB") -> np.ndarray:
        """Raw frames (uint8 (H, W[, C]) images, :mod:`wcx.core.frames`) resized and cropped as
        the section says, then preprocessed: float32 (N, C, H, W) on the host."""
        x = frames_to_input(self.section, frames, where=where, names=names, channel_order=channel_order)
        out: np.ndarray = self(x, where=where)
        return out

    def check_range(self, x: Array, *, where: str = "input") -> None:
        """Refuse a float batch outside the section's value range (the input contract), naming
        the observed min/max and the likely cause."""
        if int(np.prod(tuple(x.shape))) == 0:
            return
        if is_torch(x):
            import torch

            found = torch.aminmax(x)
            low, high = (float(v) for v in torch.stack([found.min, found.max]).float().tolist())
        else:
            low, high = float(x.min()), float(x.max())
        lo, hi = self.section.value_range
        if not (math.isfinite(low) and math.isfinite(high)):
            raise BadInputError(f"{where}: the batch holds NaN or infinite values")
        slack = RANGE_SLACK * (hi - lo)
        if lo - slack <= low and high <= hi + slack:
            return
        raise BadInputError(f"{where}: float values in [{low:.4g}, {high:.4g}] lie outside the input range "
                            f"[{lo:g}, {hi:g}] the members expect: {self._likely_cause(low, high)}")

    def _likely_cause(self, low: float, high: float) -> str:
        lo, hi = self.section.value_range
        pixels = low >= lo - RANGE_SLACK * (hi - lo) and 1.5 * hi < high <= 255.0 + 1e-3
        if self.section.normalized:
            if pixels:
                return "looks like raw 0..255 pixels: normalise them as the bundle's members were trained"
            return ("this bundle takes already-normalised data in that range (declared at export); check the "
                    "normalisation")
        if pixels:
            return "looks like 0..255 floats: divide by 255 or pass uint8"
        if low < lo and (lo, hi) == (0.0, 1.0):
            return ("negative values look like data already normalised with a mean/std: pass the raw [0, 1] "
                    "floats or uint8 (the bundle applies its own mean/std), or export for normalised data with "
                    "input_range")
        return f"scale float inputs into [{lo:g}, {hi:g}] or pass uint8"

    def _constants_for(self, x: Array) -> tuple[Any, Any]:
        if not is_torch(x):
            return self.mean, self.std
        key = x.device
        if key not in self._constants:
            import torch

            self._constants[key] = (torch.from_numpy(self.mean).to(x.device), torch.from_numpy(self.std).to(x.device))
        return self._constants[key]


def section_key(section: InputSection) -> str:
    """A key equal for input sections that give the same numbers (all but name and dtype)."""
    return json.dumps(section.preprocessing(), sort_keys=True)


class MemberInputs:
    """Every member's input from one raw batch, on the host (calibration, the export checks).

    ``sections`` are the members' input sections in stage order. A raw batch is an (N, C, H, W)
    array, or a list of frames (:mod:`wcx.core.frames`). When no section resizes or crops and
    the batch is an array, it is preprocessed once for all members (they share one section);
    otherwise each distinct section prepares its own input from the frames (an array batch is
    then N uint8 frames). Members with equal sections get the same array object.
    """

    def __init__(self, sections: Sequence[InputSection]) -> None:
        if not sections:
            raise BadInputError("no input sections")
        self.sections = list(sections)
        self.takes_frames = any(s.prepares_frames for s in self.sections)
        self._keys = [section_key(s) for s in self.sections]
        self._pre = {k: Preprocessor(s) for k, s in zip(self._keys, self.sections, strict=True)}

    def __call__(self, x: np.ndarray | Sequence[Any], *, where: str = "input",
                 names: Sequence[str] | None = None) -> list[np.ndarray]:
        """One float32 (N, C, H, W) input per member (``names`` name the frames in errors)."""
        frames: Any
        if isinstance(x, np.ndarray) and not self.takes_frames:
            prepared = {k: pre(x, where=where) for k, pre in self._pre.items()}
        else:
            frames = frames_of(x) if isinstance(x, np.ndarray) and x.ndim == 4 else x
            prepared = {k: pre.frames(frames, where=where, names=names) for k, pre in self._pre.items()}
        return [prepared[k] for k in self._keys]
