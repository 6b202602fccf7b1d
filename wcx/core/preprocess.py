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

import math
from typing import Any

import numpy as np

from wcx.core.arrays import Array, is_torch
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
