"""Where the cascade executor keeps a batch: the host (numpy) or a torch device.

The executor (:mod:`wcx.runtime.executor`) is one loop; the little that differs between numpy
arrays on the host and torch tensors on a device lives here, behind :class:`ExecutionDevice`:

* uploading and preprocessing a raw batch (:meth:`~ExecutionDevice.prepare`);
* the CUDA stream of an in-flight batch (:meth:`~ExecutionDevice.stream`);
* turning "which rows continue" into the next subset without stalling the GPU
  (:meth:`~ExecutionDevice.select`): on CUDA the subset size is the one small device-to-host
  copy per stage, issued asynchronously and waited for only when the next stage needs it;
* timing a stage (host clock on the CPU, CUDA events on the GPU) and copying results back.

The math in between (scores, policies) is the core's, written once for numpy and torch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from wcx.core.arrays import Array, ArrayOps, numpy_ops, torch_ops
from wcx.core.preprocess import Preprocessor


class Count:
    """A number of rows that may still be on its way from the device."""

    def __init__(self, value: Any, event: Any = None) -> None:
        self._value = value
        self._event = event

    def wait(self) -> int:
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        return int(self._value)


class ExecutionDevice:
    """Host (numpy) execution; :class:`TorchDevice` overrides what differs on torch."""

    on_cuda = False

    def __init__(self) -> None:
        self.ops: ArrayOps = numpy_ops()
        #: dtype of the running sums and scores (float64 on the host)
        self.state_dtype: Any = np.float64

    def prepare(self, x: np.ndarray, preprocess: Preprocessor, *, dtype: Any, channels_last: bool,
                keep: list[Any]) -> Array:
        """The raw batch ``x``, preprocessed where the runners take it."""
        return preprocess(x)

    @contextlib.contextmanager
    def stream(self, slot: int) -> Iterator[None]:
        """The context one in-flight batch (``slot``) runs in."""
        yield

    def order_after_others(self, slot: int) -> None:
        """Make ``slot``'s next work wait for what other slots have issued (CUDA only)."""

    def select(self, rows: Array | None, mask: Array, n: int) -> tuple[Array, Count]:
        """The rows (of ``rows``, or of ``0..n-1`` when None) where ``mask`` holds, and their
        count. The first ``count`` entries of the returned index array are those rows, in order."""
        base = np.arange(n) if rows is None else rows
        chosen = base[mask]
        return chosen, Count(chosen.shape[0])

    def empty(self, n: int, dtype: Any) -> Array:
        return np.empty(n, dtype=dtype)

    def ones(self, n: int, dtype: Any) -> Array:
        return np.ones(n, dtype=dtype)

    def int64(self) -> Any:
        return np.int64

    def event(self) -> Any:
        return time.perf_counter()

    def seconds(self, start: Any, stop: Any) -> float:
        return float(stop - start)

    def to_host(self, arrays: list[Array], slot: int) -> list[np.ndarray]:
        return [np.asarray(a) for a in arrays]

    def synchronize(self, slot: int = 0) -> None:
        """Wait for the device work of ``slot`` (nothing to wait for on the host)."""


class TorchDevice(ExecutionDevice):
    """Execution on torch tensors on ``device`` (CUDA, or the CPU for tests)."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.on_cuda = self.device.type == "cuda"
        self.ops = torch_ops()
        # method.md: scores in float32 or better, even when the members run in FP16
        self.state_dtype = torch.float32 if self.on_cuda else torch.float64
        self._streams: dict[int, Any] = {}

    def _stream(self, slot: int) -> Any:
        if slot not in self._streams:
            cuda: Any = self.torch.cuda  # torch.cuda.Stream's constructor is unannotated
            self._streams[slot] = cuda.Stream(self.device)
        return self._streams[slot]

    @contextlib.contextmanager
    def stream(self, slot: int) -> Iterator[None]:
        ctx = self.torch.cuda.stream(self._stream(slot)) if self.on_cuda else contextlib.nullcontext()
        with ctx, self.torch.inference_mode():
            yield

    def order_after_others(self, slot: int) -> None:
        # Stage 1 of this batch goes after the work already issued for other in-flight batches
        # (their stage 1): a runner (e.g. one TensorRT context) is never used by two streams at
        # once, while this batch's stage 1 still overlaps their later stages.
        if not self.on_cuda:
            return
        mine = self._stream(slot)
        for other_slot, other in self._streams.items():
            if other_slot != slot:
                mine.wait_stream(other)

    def prepare(self, x: np.ndarray, preprocess: Preprocessor, *, dtype: Any, channels_last: bool,
                keep: list[Any]) -> Array:
        torch = self.torch
        if isinstance(x, np.ndarray):
            t = torch.from_numpy(x)
            if self.on_cuda:
                t = t.pin_memory()
                keep.append(t)  # the async copy reads it: it must outlive the call
                t = t.to(self.device, non_blocking=True)
            x = t
        elif x.device != self.device:
            x = x.to(self.device, non_blocking=True)
        return preprocess(x, dtype=dtype, channels_last=channels_last)

    def select(self, rows: Array | None, mask: Array, n: int) -> tuple[Array, Count]:
        torch = self.torch
        # Sorting (stable) puts the continuing rows first, in order, without asking the host
        # how many there are; the count follows asynchronously.
        order = torch.argsort((~mask).to(torch.uint8), stable=True)
        base = torch.arange(n, device=self.device) if rows is None else rows
        chosen = base.index_select(0, order)
        count = mask.sum()
        if not self.on_cuda:
            return chosen, Count(count)
        host = count.to("cpu", non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return chosen, Count(host, event)

    def empty(self, n: int, dtype: Any) -> Array:
        return self.torch.empty(n, dtype=dtype, device=self.device)

    def ones(self, n: int, dtype: Any) -> Array:
        return self.torch.ones(n, dtype=dtype, device=self.device)

    def int64(self) -> Any:
        return self.torch.int64

    def event(self) -> Any:
        if not self.on_cuda:
            return time.perf_counter()
        cuda: Any = self.torch.cuda  # torch.cuda.Event's constructor is unannotated
        ev = cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def seconds(self, start: Any, stop: Any) -> float:
        if not self.on_cuda:
            return float(stop - start)
        return float(start.elapsed_time(stop)) / 1000.0

    def to_host(self, arrays: list[Array], slot: int) -> list[np.ndarray]:
        host = [a.to("cpu", non_blocking=True) for a in arrays]
        if self.on_cuda:
            self._stream(slot).synchronize()
        return [h.numpy() for h in host]

    def synchronize(self, slot: int = 0) -> None:
        if self.on_cuda:
            self._stream(slot).synchronize()


def device_for(array_library: str, device: str) -> ExecutionDevice:
    """The execution device of runners returning ``array_library`` arrays on ``device``."""
    if array_library == "numpy":
        return ExecutionDevice()
    if array_library == "torch":
        return TorchDevice(device)
    raise ValueError(f"unknown array library {array_library!r} (numpy or torch)")
