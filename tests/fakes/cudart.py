"""A fake of ``cuda.bindings.runtime`` (the CUDA runtime API of NVIDIA's ``cuda-bindings``):
host memory plays the GPU's, and it is as unforgiving as the real thing where wcx could go wrong.

What it enforces (each violation returns an error code, as the binding does, never an exception):

* every call returns a tuple whose first item is a ``cudaError_t``;
* device memory is only reachable through copies: ``cudaMemcpyAsync``/``cudaMemcpy`` check that
  the device side of a copy lies inside one live ``cudaMalloc`` allocation and that the direction
  (``cudaMemcpyKind``) matches which side is device memory; freeing twice, or something never
  allocated, is an error;
* asynchronous work (copies, memsets, event records) runs only when its stream is synchronised
  (``cudaStreamSynchronize``, or ``cudaEventSynchronize`` on an event recorded after it), in
  order; before that, the destination holds what it held: fresh allocations hold 0xFF bytes,
  NaN for float16/float32, so a result read too early is garbage;
* streams and events must exist (created and not destroyed).

``FakeCudart`` instances are modules in all but type: pass one to
:func:`wcx.cuda_runtime.use_binding`. ``calls`` records every call by name.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class cudaError_t(enum.IntEnum):  # noqa: N801 - the binding's names
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


@dataclass
class cudaDeviceProp:  # noqa: N801
    name: bytes
    major: int
    minor: int
    totalGlobalMem: int = 8 << 30  # noqa: N815


OK = cudaError_t.cudaSuccess
BAD = cudaError_t.cudaErrorInvalidValue


class FakeCudart:
    """One process's view of fake GPUs (see the module docstring)."""

    cudaError_t = cudaError_t
    cudaMemcpyKind = cudaMemcpyKind
    cudaStreamNonBlocking = 1
    cudaEventDefault = 0
    cudaEventDisableTiming = 2

    def __init__(self, devices: int = 1, name: bytes = b"Fake GPU", capability: tuple[int, int] = (8, 7)) -> None:
        self.devices, self.name, self.capability = devices, name, capability
        self.current = 0
        self.device_memory: dict[int, Any] = {}  # address -> ctypes buffer
        self.host_memory: dict[int, Any] = {}
        self.streams: dict[int, list[Callable[[], None]]] = {}
        self.events: dict[int, float | None] = {}
        self._handles = itertools.count(0x1000)
        self.calls: list[str] = []

    # -- devices -----------------------------------------------------------------------------
    def cudaGetDeviceCount(self) -> tuple[cudaError_t, int]:  # noqa: N802
        self.calls.append("cudaGetDeviceCount")
        if self.devices == 0:
            return cudaError_t.cudaErrorNoDevice, 0
        return OK, self.devices

    def cudaSetDevice(self, device: int) -> tuple[cudaError_t]:  # noqa: N802
        self.calls.append("cudaSetDevice")
        if not 0 <= device < self.devices:
            return (cudaError_t.cudaErrorInvalidDevice,)
        self.current = device
        return (OK,)

    def cudaGetDevice(self) -> tuple[cudaError_t, int]:  # noqa: N802
        return OK, self.current

    def cudaGetDeviceProperties(self, device: int) -> tuple[cudaError_t, Any]:  # noqa: N802
        self.calls.append("cudaGetDeviceProperties")
        if not 0 <= device < self.devices:
            return cudaError_t.cudaErrorInvalidDevice, None
        return OK, cudaDeviceProp(self.name + b"\0\0", *self.capability)

    def cudaGetErrorString(self, error: cudaError_t) -> tuple[cudaError_t, bytes]:  # noqa: N802
        return OK, f"fake CUDA error {cudaError_t(error).name}".encode()

    # -- memory ------------------------------------------------------------------------------
    def _alloc(self, table: dict[int, Any], size: int) -> tuple[cudaError_t, int]:
        if size < 1:
            return cudaError_t.cudaErrorInvalidValue, 0
        buf = (ctypes.c_ubyte * size)()
        ctypes.memset(buf, 0xFF, size)  # uninitialised memory: NaN if read as floats
        address = ctypes.addressof(buf)
        table[address] = buf
        return OK, address

    def cudaMalloc(self, size: int) -> tuple[cudaError_t, int]:  # noqa: N802
        self.calls.append("cudaMalloc")
        return self._alloc(self.device_memory, int(size))

    def cudaMallocHost(self, size: int) -> tuple[cudaError_t, int]:  # noqa: N802
        self.calls.append("cudaMallocHost")
        return self._alloc(self.host_memory, int(size))

    def cudaFree(self, ptr: int) -> tuple[cudaError_t]:  # noqa: N802
        self.calls.append("cudaFree")
        return (OK,) if self.device_memory.pop(int(ptr), None) is not None else (BAD,)

    def cudaFreeHost(self, ptr: int) -> tuple[cudaError_t]:  # noqa: N802
        self.calls.append("cudaFreeHost")
        return (OK,) if self.host_memory.pop(int(ptr), None) is not None else (BAD,)

    def _in_device(self, ptr: int, count: int) -> bool:
        return any(base <= ptr and ptr + count <= base + ctypes.sizeof(buf) for base, buf in self.device_memory.items())

    def _copy_ok(self, dst: int, src: int, count: int, kind: cudaMemcpyKind) -> bool:
        if count < 0:
            return False
        device_dst = kind in (cudaMemcpyKind.cudaMemcpyHostToDevice, cudaMemcpyKind.cudaMemcpyDeviceToDevice)
        device_src = kind in (cudaMemcpyKind.cudaMemcpyDeviceToHost, cudaMemcpyKind.cudaMemcpyDeviceToDevice)
        if kind not in (cudaMemcpyKind.cudaMemcpyHostToDevice, cudaMemcpyKind.cudaMemcpyDeviceToHost,
                        cudaMemcpyKind.cudaMemcpyDeviceToDevice):
            return False
        return (self._in_device(dst, count) == device_dst) and (self._in_device(src, count) == device_src)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: cudaMemcpyKind,  # noqa: N802
                        stream: int) -> tuple[cudaError_t]:
        self.calls.append("cudaMemcpyAsync")
        dst, src, count = int(dst), int(src), int(count)
        if int(stream) not in self.streams or not self._copy_ok(dst, src, count, cudaMemcpyKind(kind)):
            return (BAD,)
        self.streams[int(stream)].append(lambda: ctypes.memmove(dst, src, count))
        return (OK,)

    def cudaMemcpy(self, dst: int, src: int, count: int, kind: cudaMemcpyKind) -> tuple[cudaError_t]:  # noqa: N802
        """Synchronous: waits for every stream first, as the legacy default stream does."""
        self.calls.append("cudaMemcpy")
        dst, src, count = int(dst), int(src), int(count)
        if not self._copy_ok(dst, src, count, cudaMemcpyKind(kind)):
            return (BAD,)
        for handle in list(self.streams):
            self._drain(handle)
        ctypes.memmove(dst, src, count)
        return (OK,)

    def cudaMemsetAsync(self, ptr: int, value: int, count: int, stream: int) -> tuple[cudaError_t]:  # noqa: N802
        self.calls.append("cudaMemsetAsync")
        ptr, count = int(ptr), int(count)
        if int(stream) not in self.streams or not self._in_device(ptr, count):
            return (BAD,)
        self.streams[int(stream)].append(lambda: ctypes.memset(ptr, int(value), count))
        return (OK,)

    # -- streams and events ------------------------------------------------------------------
    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[cudaError_t, int]:  # noqa: N802
        self.calls.append("cudaStreamCreateWithFlags")
        handle = next(self._handles)
        self.streams[handle] = []
        return OK, handle

    def _drain(self, handle: int) -> None:
        ops = self.streams[handle]
        while ops:
            ops.pop(0)()

    def cudaStreamSynchronize(self, stream: int) -> tuple[cudaError_t]:  # noqa: N802
        self.calls.append("cudaStreamSynchronize")
        if int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self._drain(int(stream))
        return (OK,)

    def cudaStreamDestroy(self, stream: int) -> tuple[cudaError_t]:  # noqa: N802
        self.calls.append("cudaStreamDestroy")
        if int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self._drain(int(stream))  # pending work completes, as on a real device
        del self.streams[int(stream)]
        return (OK,)

    def cudaEventCreateWithFlags(self, flags: int) -> tuple[cudaError_t, int]:  # noqa: N802
        handle = next(self._handles)
        self.events[handle] = None
        return OK, handle

    def cudaEventRecord(self, event: int, stream: int) -> tuple[cudaError_t]:  # noqa: N802
        if int(event) not in self.events or int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self.events[int(event)] = None

        def mark() -> None:
            self.events[int(event)] = time.perf_counter()

        self.streams[int(stream)].append(mark)
        return (OK,)

    def cudaEventSynchronize(self, event: int) -> tuple[cudaError_t]:  # noqa: N802
        if int(event) not in self.events:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        for handle in list(self.streams):
            self._drain(handle)
        return (OK,)

    def cudaEventElapsedTime(self, start: int, end: int) -> tuple[cudaError_t, float]:  # noqa: N802
        a, b = self.events.get(int(start)), self.events.get(int(end))
        if a is None or b is None:
            return cudaError_t.cudaErrorInvalidResourceHandle, 0.0
        return OK, (b - a) * 1000.0

    def cudaEventDestroy(self, event: int) -> tuple[cudaError_t]:  # noqa: N802
        if int(event) not in self.events:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        del self.events[int(event)]
        return (OK,)

    # -- for tests ---------------------------------------------------------------------------
    def pending(self) -> int:
        """Operations queued on streams and not yet run."""
        return sum(len(ops) for ops in self.streams.values())

    def live_allocations(self) -> int:
        return len(self.device_memory) + len(self.host_memory)
