"""Input preprocessing (method.md section 5): a raw batch becomes what every member takes.

A batch ``x`` (N, C, H, W) is turned into a member's input as its input section says
(:class:`wcx.core.manifest.InputSection`):

1. ``uint8`` is divided by 255 into the section's ``value_range`` (``[0, 1]`` unless it says
   otherwise); a float batch is taken as already in that range;
2. then ``(x - mean) / std`` per channel, in float32.

One implementation serves numpy arrays (the CPU path and calibration) and torch tensors on any
device (the GPU path uploads the raw batch, so that uint8, 4x smaller than float32, crosses the
bus).

>>> from wcx.core.manifest import InputSection
>>> p = Preprocessor(InputSection(name="x", shape=(1, 1, 2), mean=(0.5,), std=(0.25,)))
>>> p(np.full((1, 1, 1, 2), 255, dtype=np.uint8)).ravel().tolist()
[2.0, 2.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wcx.core.arrays import Array, is_torch
from wcx.core.manifest import InputSection
from wcx.errors import BadInputError


class Preprocessor:
    """Scaling and per-channel normalisation of one input section."""

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

    def __call__(self, x: Array, *, dtype: Any = None, channels_last: bool = False) -> Array:
        """Preprocess a validated batch: a new float32 array (numpy, C-contiguous) or tensor on
        ``x``'s device. For tensors, ``dtype`` (e.g. float16) and ``channels_last`` shape the
        result; the arithmetic is float32 either way."""
        shape = tuple(x.shape)
        if len(shape) != 4 or shape[1] != self.channels:
            raise BadInputError(f"preprocess: expected (N, {self.channels}, H, W) inputs, got {shape}")
        mean, std = self._constants_for(x)
        if is_torch(x):
            import torch

            raw_uint8 = x.dtype == torch.uint8
            xf = x.to(torch.float32)
        else:
            raw_uint8 = x.dtype == np.uint8
            xf = x.astype(np.float32)
        if raw_uint8:
            xf = xf / 255.0
            if self._affine is not None:
                xf = xf * float(self._affine[0]) + float(self._affine[1])
        xf = (xf - mean) / std
        if not is_torch(xf):
            return np.ascontiguousarray(xf)
        if dtype is not None and dtype != xf.dtype:
            xf = xf.to(dtype)
        if channels_last:
            import torch

            xf = xf.contiguous(memory_format=torch.channels_last)
        return xf

    def _constants_for(self, x: Array) -> tuple[Any, Any]:
        if not is_torch(x):
            return self.mean, self.std
        key = x.device
        if key not in self._constants:
            import torch

            self._constants[key] = (torch.from_numpy(self.mean).to(x.device), torch.from_numpy(self.std).to(x.device))
        return self._constants[key]
