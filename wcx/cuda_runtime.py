"""CUDA device memory, copies, streams and events through NVIDIA's CUDA Python binding.

The TensorRT backend needs a GPU to move bytes to and from, nothing more: this module gives it
that through ``cuda-bindings`` (``cuda.bindings.runtime``, the CUDA runtime API; older releases
expose it as ``cuda.cudart``), so an edge device needs TensorRT, the binding and numpy, no torch.

* :class:`Cuda`: one device; checks every call (a failing call raises ``WorkFailedError`` with
  CUDA's own message), reports the GPU's name and compute capability, and makes the objects below;
* :class:`DeviceBuffer`: device memory (``ptr`` is what TensorRT's ``set_tensor_address`` takes);
* :class:`PinnedArray`: page-locked host memory viewed as a numpy array, so copies can be
  asynchronous;
* :class:`Stream` and :class:`Event`: ordering and timing; ``int(stream)`` is the handle
  ``execute_async_v3`` takes.

Copies are asynchronous on a stream: their results are visible to the host only after the stream
(or an event recorded after them) is synchronised. The binding is imported when a :class:`Cuda`
is made, never at ``import wcx``; tests replace it with a fake that follows the same API
(:func:`use_binding`).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from wcx.errors import MissingDependencyError, WorkFailedError

#: how to get the binding, for error messages
INSTALL_HINT = (
    "pip install cuda-bindings (12.x for CUDA 12, e.g. JetPack 6; 13.x for CUDA 13), or NVIDIA's "
    "cuda-python that provides it"
)

_BINDINGS: list[Any] = []  # a binding installed by use_binding (tests) wins over the import


def import_binding(purpose: str = "The TensorRT backend") -> Any:
    """The CUDA runtime API module of ``cuda-bindings`` (or a binding set by :func:`use_binding`)."""
    if _BINDINGS:
        return _BINDINGS[-1]
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise MissingDependencyError(f"{purpose} needs NVIDIA's CUDA Python binding, which is not installed: "
                                 f"{INSTALL_HINT}")


@contextlib.contextmanager
def use_binding(binding: Any) -> Iterator[Any]:
    """Use ``binding`` (a module with the CUDA runtime API) instead of ``cuda-bindings`` inside
    the ``with`` block (tests run the TensorRT runtime against a fake GPU this way)."""
    _BINDINGS.append(binding)
    try:
        yield binding
    finally:
        _BINDINGS.remove(binding)


class DeviceBuffer:
    """``nbytes`` of device memory at ``ptr``; released by :meth:`free` (idempotent)."""

    def __init__(self, cuda: Cuda, ptr: int, nbytes: int) -> None:
        self.cuda, self.ptr, self.nbytes = cuda, int(ptr), int(nbytes)

    def free(self) -> None:
        if self.ptr:
            self.cuda.check("cudaFree", self.cuda.rt.cudaFree(self.ptr))
            self.ptr = 0


class PinnedArray:
    """A numpy array in page-locked host memory (``array``), at host address ``ptr``."""

    def __init__(self, cuda: Cuda, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.cuda = cuda
        self.nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        (ptr,) = cuda.check("cudaMallocHost", cuda.rt.cudaMallocHost(max(self.nbytes, 1)))
        self.ptr = int(ptr)
        raw = memoryview((ctypes.c_byte * max(self.nbytes, 1)).from_address(self.ptr)).cast("B")
        self.array: np.ndarray = np.frombuffer(raw, dtype=dtype, count=self.nbytes // dtype.itemsize).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = np.empty((0,), dtype=self.array.dtype)  # no view may outlive the memory
            self.cuda.check("cudaFreeHost", self.cuda.rt.cudaFreeHost(self.ptr))
            self.ptr = 0


class Stream:
    """A non-blocking CUDA stream; ``int(stream)`` is its handle."""

    def __init__(self, cuda: Cuda) -> None:
        self.cuda = cuda
        (self.handle,) = cuda.check("cudaStreamCreateWithFlags",
                                    cuda.rt.cudaStreamCreateWithFlags(cuda.rt.cudaStreamNonBlocking))

    def __int__(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        self.cuda.check("cudaStreamSynchronize", self.cuda.rt.cudaStreamSynchronize(self.handle))

    def destroy(self) -> None:
        if self.handle is not None:
            self.cuda.check("cudaStreamDestroy", self.cuda.rt.cudaStreamDestroy(self.handle))
            self.handle = None


class Event:
    """A CUDA event, for ordering and (with ``timing``) for device time between two events."""

    def __init__(self, cuda: Cuda, *, timing: bool = True) -> None:
        self.cuda = cuda
        flags = cuda.rt.cudaEventDefault if timing else cuda.rt.cudaEventDisableTiming
        (self.handle,) = cuda.check("cudaEventCreateWithFlags", cuda.rt.cudaEventCreateWithFlags(flags))

    def record(self, stream: Stream) -> None:
        self.cuda.check("cudaEventRecord", self.cuda.rt.cudaEventRecord(self.handle, stream.handle))

    def synchronize(self) -> None:
        self.cuda.check("cudaEventSynchronize", self.cuda.rt.cudaEventSynchronize(self.handle))

    def seconds_since(self, start: Event) -> float:
        (ms,) = self.cuda.check("cudaEventElapsedTime", self.cuda.rt.cudaEventElapsedTime(start.handle, self.handle))
        return float(ms) / 1000.0

    def destroy(self) -> None:
        if self.handle is not None:
            self.cuda.check("cudaEventDestroy", self.cuda.rt.cudaEventDestroy(self.handle))
            self.handle = None


class Cuda:
    """One CUDA device through the binding's runtime API (see the module docstring).

    Raises ``MissingDependencyError`` without the binding or without a usable GPU (the message
    says which and why), so that callers can fall back to another backend.
    """

    def __init__(self, device: int = 0, *, purpose: str = "The TensorRT backend", binding: Any = None) -> None:
        self.rt = binding if binding is not None else import_binding(purpose)
        err, count = self.rt.cudaGetDeviceCount()
        if err != self.rt.cudaError_t.cudaSuccess or count < 1:
            why = self.message(err) if err != self.rt.cudaError_t.cudaSuccess else "no CUDA device is visible"
            raise MissingDependencyError(f"{purpose} needs a CUDA GPU: {why}; '--backend onnxruntime' works "
                                         "without one")
        if not 0 <= device < count:
            raise MissingDependencyError(f"{purpose}: CUDA device {device} does not exist ({count} visible)")
        self.device = device
        self.check("cudaSetDevice", self.rt.cudaSetDevice(device))

    def message(self, err: Any) -> str:
        """CUDA's description of the error code ``err``."""
        try:
            _, text = self.rt.cudaGetErrorString(err)
            return text.decode() if isinstance(text, bytes) else str(text)
        except Exception:  # a binding without the call: the code itself says enough
            return str(err)

    def check(self, call: str, result: Any) -> tuple[Any, ...]:
        """The values a binding call returned after its error code; ``WorkFailedError`` if the
        code is not success."""
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise WorkFailedError(f"CUDA {call} failed: {self.message(err)}")
        return tuple(values)

    def facts(self) -> dict[str, str]:
        """``{"gpu_name", "compute_capability"}`` of this device (e.g. ``"8.7"`` for Orin)."""
        (props,) = self.check("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties(self.device))
        name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
        return {"gpu_name": name, "compute_capability": f"{int(props.major)}.{int(props.minor)}"}

    def alloc(self, nbytes: int) -> DeviceBuffer:
        (ptr,) = self.check("cudaMalloc", self.rt.cudaMalloc(max(int(nbytes), 1)))
        return DeviceBuffer(self, ptr, nbytes)

    def pinned(self, shape: tuple[int, ...], dtype: Any) -> PinnedArray:
        return PinnedArray(self, tuple(int(d) for d in shape), np.dtype(dtype))

    def stream(self) -> Stream:
        return Stream(self)

    def event(self, *, timing: bool = True) -> Event:
        return Event(self, timing=timing)

    def to_device(self, dst: DeviceBuffer, src: PinnedArray, nbytes: int, stream: Stream) -> None:
        """Copy the first ``nbytes`` of pinned ``src`` to ``dst`` on ``stream`` (asynchronous)."""
        self._copy(dst.ptr, src.ptr, nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream, dst, src)

    def to_host(self, dst: PinnedArray, src: DeviceBuffer, nbytes: int, stream: Stream) -> None:
        """Copy the first ``nbytes`` of ``src`` to pinned ``dst`` on ``stream`` (asynchronous)."""
        self._copy(dst.ptr, src.ptr, nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream, src, dst)

    def _copy(self, dst: int, src: int, nbytes: int, kind: Any, stream: Stream, a: Any, b: Any) -> None:
        if nbytes > min(a.nbytes, b.nbytes):
            raise WorkFailedError(f"a copy of {nbytes} bytes does not fit buffers of {a.nbytes} and {b.nbytes}")
        self.check("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream.handle))
