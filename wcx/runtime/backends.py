"""The backend names and the one place that turns a name into a runner.

``onnxruntime`` (CPU, the default), ``torch`` (PyTorch on CUDA) and ``tensorrt``. Each runner
module imports its heavy dependency lazily, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any

from wcx.bundle import Bundle
from wcx.errors import BadInputError
from wcx.runtime.runner import Runner

BACKENDS: tuple[str, ...] = ("onnxruntime", "torch", "tensorrt")


def create_runner(bundle: Bundle, member_index: int, backend: str, *, threads: int | None = None,
                  **options: Any) -> Runner:
    """A (not yet active) runner for member ``member_index`` of ``bundle`` on ``backend``.

    ``threads`` applies to ONNX Runtime; ``options`` go to the backend's runner class.
    """
    if backend == "onnxruntime":
        from wcx.runtime.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(bundle, member_index, threads=threads, **options)
    if backend == "torch":
        from wcx.runtime.torch_runner import TorchRunner

        return TorchRunner(bundle, member_index, **options)
    if backend == "tensorrt":
        from wcx.runtime.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(bundle, member_index, **options)
    raise BadInputError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
