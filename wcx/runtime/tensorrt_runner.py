"""The TensorRT backend: one member's engine on one CUDA GPU (TensorRT 10.3+ and 11).

``activate`` checks the engine record against this machine (TensorRT version, GPU compute
capability, the member ONNX's sha256: :func:`wcx.export.engine_compat.check_engine_compatible`),
reads the engine from the bundle's own file (hash-checked again), deserializes it with
``trt.Runtime(logger).deserialize_cuda_engine``, creates one execution context and finds the I/O
tensors by name and mode. Device memory is torch's: output buffers are torch CUDA tensors sized
from the profile's max batch, addresses are ``tensor.data_ptr()``, and ``execute_async_v3`` runs
on ``torch.cuda.current_stream()`` (as Torch-TensorRT's Python runtime does; no pycuda).

``infer({input: x})`` takes a float32 ``(n, C, H, W)`` batch, a host numpy array or a CUDA tensor,
and returns ``{"logits": (n, K) CUDA float32}``, enqueued on the current stream (no host
synchronisation). Batches larger than the profile's max run in chunks, each padded to its shape
bucket. An FP16 engine input (an ONNX whose input is float16) is fed a converted copy; FP16
outputs are converted to float32.

One runner has one execution context, so it must not be used from two threads or two streams at
once; make one runner per stream to overlap batches.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np

from wcx.bundle import Bundle
from wcx.core.manifest import EngineRecord
from wcx.core.provenance import MemberProvenance
from wcx.errors import BadInputError, MissingDependencyError, WorkFailedError
from wcx.export.engine_compat import (
    check_engine_compatible,
    cuda_gpu_facts,
    engine_record_for,
    import_tensorrt,
    normalize_compute_capability,
    rebuild_hint,
)
from wcx.runtime.runner import Runner

log = logging.getLogger(__name__)


class TensorRTRunner(Runner):
    """One bundle member as a TensorRT engine (built by ``wcx build-engines``)."""

    backend = "tensorrt"
    array_library = "torch"
    pads_to_buckets = True

    def __init__(self, bundle: Bundle, member_index: int, *, log_level: str = "warning") -> None:
        super().__init__(bundle, member_index)
        self.log_level = log_level
        engines = bundle.engines
        self.record: EngineRecord | None = None if engines is None else engines.members.get(self.member.name)
        self.max_batch = None if self.record is None else self.record.max_batch
        self._trt: Any = None
        self._torch: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._input_name = ""
        self._output_name = ""
        self._input_dtype: Any = None
        self._output_buffer: Any = None
        self._extra_outputs: dict[str, Any] = {}
        self._device: Any = None
        self._side_stream: Any = None

    # -- facts -------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return str(self._device) if self._device is not None else "cuda"

    def provenance(self) -> MemberProvenance:
        """The engine that runs: its file's hash, and the TensorRT and GPU it runs on (read from
        this machine where TensorRT and a GPU are present, else from the engine record)."""
        base = super().provenance()
        record = self.record
        try:
            version: str | None = str(import_tensorrt().__version__)
            capability: str | None = cuda_gpu_facts()["compute_capability"]
        except MissingDependencyError:
            version = None if record is None else record.tensorrt_version
            capability = None if record is None else normalize_compute_capability(record.compute_capability)
        return MemberProvenance(base.name, base.precision, onnx_sha256=base.onnx_sha256, input=base.input,
                                engine_sha256=None if record is None else record.sha256,
                                tensorrt_version=version, compute_capability=capability)

    def info(self) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        try:
            facts["gpu_name"] = cuda_gpu_facts()["gpu_name"]
            facts["tensorrt"] = str(import_tensorrt().__version__)
        except MissingDependencyError:
            pass
        return facts

    # -- lifecycle -----------------------------------------------------------------------------
    def activate_impl(self) -> None:
        from wcx.export.tensorrt_engine import get_trt_logger

        purpose = "The TensorRT backend"
        trt = import_tensorrt(purpose)
        facts = cuda_gpu_facts(purpose)
        import torch

        assert self.bundle is not None
        record = engine_record_for(self.bundle.manifest, self.member.name, bundle_path=self.bundle.path)
        check_engine_compatible(
            record, trt_version=str(trt.__version__), gpu_name=facts["gpu_name"],
            compute_capability=facts["compute_capability"], onnx_sha256=self.member.sha256,
            bundle_path=self.bundle.path,
        )
        max_batch = record.max_batch
        path = self.bundle.file(record.file)  # refuses paths outside the bundle
        if not path.is_file():
            raise BadInputError(f"{self.bundle.path}: engine file {record.file} is missing; "
                                f"rebuild the engines: {rebuild_hint(self.bundle.path)}")
        plan = path.read_bytes()
        if hashlib.sha256(plan).hexdigest() != record.sha256:
            raise BadInputError(f"{self.bundle.path}: engine file {record.file} was altered; "
                                f"rebuild the engines: {rebuild_hint(self.bundle.path)}")

        self._device = torch.device("cuda", torch.cuda.current_device())
        logger = get_trt_logger(trt, self.log_level)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(plan)
        del plan
        if engine is None:
            raise BadInputError(
                f"TensorRT could not deserialize the engine of member {self.member.name!r} "
                f"({record.file}); rebuild the engines: {rebuild_hint(self.bundle.path)}"
            )
        inputs: list[str] = []
        outputs: list[str] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
        if self.member.input.name not in inputs or self.member.output_name not in outputs:
            raise BadInputError(
                f"the engine of member {self.member.name!r} has inputs {inputs} and outputs {outputs}; "
                f"the manifest expects {self.member.input.name!r} -> {self.member.output_name!r}: "
                f"rebuild the engines: {rebuild_hint(self.bundle.path)}"
            )
        if len(inputs) != 1:
            raise BadInputError(f"the engine of member {self.member.name!r} has {len(inputs)} inputs; "
                                "wcx members take one")
        engine_max = int(engine.get_tensor_profile_shape(self.member.input.name, 0)[2][0])
        if engine_max != max_batch:
            raise BadInputError(
                f"the engine of member {self.member.name!r} accepts batches up to {engine_max}, its "
                f"manifest record says {max_batch}; rebuild the engines: {rebuild_hint(self.bundle.path)}"
            )
        dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                  trt.DataType.BF16: torch.bfloat16}
        input_dtype = dtypes.get(engine.get_tensor_dtype(self.member.input.name))
        output_dtype = dtypes.get(engine.get_tensor_dtype(self.member.output_name))
        if input_dtype is None or output_dtype is None:
            raise BadInputError(
                f"the engine of member {self.member.name!r} has I/O types "
                f"{engine.get_tensor_dtype(self.member.input.name)} -> "
                f"{engine.get_tensor_dtype(self.member.output_name)}; wcx feeds float32/float16/bfloat16"
            )
        num_classes = int(self.member.num_classes)
        out_shape = [int(d) for d in engine.get_tensor_shape(self.member.output_name)]
        if len(out_shape) != 2 or out_shape[1] != num_classes:
            raise BadInputError(
                f"the engine of member {self.member.name!r} outputs shape {out_shape}; the manifest "
                f"expects (batch, {num_classes}): rebuild the engines: {rebuild_hint(self.bundle.path)}"
            )
        context = engine.create_execution_context()
        if context is None:
            raise WorkFailedError(f"TensorRT could not create an execution context for member "
                                  f"{self.member.name!r} (out of GPU memory?)")
        output_buffer = torch.empty((max_batch, num_classes), dtype=output_dtype, device=self._device)
        # Other outputs (if a graph has more) still need an address: give them buffers too.
        extra: dict[str, Any] = {}
        for name in outputs:
            if name == self.member.output_name:
                continue
            shape = [max_batch if d < 0 else int(d) for d in engine.get_tensor_shape(name)]
            dtype = dtypes.get(engine.get_tensor_dtype(name), torch.float32)
            extra[name] = torch.empty(shape, dtype=dtype, device=self._device)
        self._extra_outputs, self._output_buffer = extra, output_buffer
        self._trt, self._torch = trt, torch
        # the context is only valid while its engine and runtime live: keep all three
        self._runtime, self._engine, self._context = runtime, engine, context
        self._input_name, self._output_name = self.member.input.name, self.member.output_name
        self._input_dtype = input_dtype
        self.record, self.max_batch = record, max_batch
        log.debug("activated %s: TensorRT %s, max batch %d, %s", self.name, trt.__version__, max_batch, facts)

    def deactivate_impl(self) -> None:
        # Release in reverse order of creation: context, engine, runtime; then the buffers.
        self._context = None
        self._engine = None
        self._runtime = None
        self._output_buffer = None
        self._extra_outputs = {}
        self._side_stream = None

    # -- inference -----------------------------------------------------------------------------
    def empty_logits(self) -> Any:
        return self._torch.zeros((0, int(self.member.num_classes)), dtype=self._torch.float32, device=self._device)

    def infer_impl(self, x: Any, rows: int) -> Any:
        torch = self._torch
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x)).to(self._device, non_blocking=True)
        elif not isinstance(x, torch.Tensor) or not x.is_cuda:
            raise BadInputError(f"runner {self.name} takes a numpy array or a torch CUDA tensor, "
                                f"got {type(x).__name__}")
        elif x.device != self._device:
            raise BadInputError(f"runner {self.name} runs on {self._device}, the input is on {x.device}")
        n = int(x.shape[0])
        if x.dtype != self._input_dtype:
            x = x.to(self._input_dtype)
        if rows > n:  # pad to the shape bucket: few distinct shapes for TensorRT's kernels
            x = torch.cat([x, x.new_zeros((rows - n, *x.shape[1:]))])
        x = x.contiguous()
        result = torch.empty((n, int(self.member.num_classes)), dtype=torch.float32, device=self._device)
        caller = torch.cuda.current_stream(self._device)
        # enqueueV3 on the legacy default stream costs extra synchronisation (TensorRT warns);
        # like Torch-TensorRT, run on a side stream ordered after and before the caller's work.
        on_default = caller == torch.cuda.default_stream(self._device)
        if on_default:
            if self._side_stream is None:
                self._side_stream = torch.cuda.Stream(device=self._device)
            stream = self._side_stream
            stream.wait_stream(caller)
        else:
            stream = caller
        with torch.cuda.stream(stream):
            self._enqueue(x, stream)
            result.copy_(self._output_buffer[:n])
        if on_default:
            caller.wait_stream(stream)
        return result

    def _enqueue(self, chunk: Any, stream: Any) -> None:
        context, k = self._context, int(chunk.shape[0])
        if not context.set_input_shape(self._input_name, tuple(chunk.shape)):
            raise WorkFailedError(f"runner {self.name}: TensorRT refused input shape {tuple(chunk.shape)}")
        addresses = {self._input_name: chunk.data_ptr(), self._output_name: self._output_buffer.data_ptr()}
        addresses.update({name: buf.data_ptr() for name, buf in self._extra_outputs.items()})
        for name, ptr in addresses.items():
            if not context.set_tensor_address(name, ptr):
                raise WorkFailedError(f"runner {self.name}: TensorRT refused the address of tensor {name!r}")
        if not context.execute_async_v3(stream.cuda_stream):
            raise WorkFailedError(f"runner {self.name}: TensorRT failed to run a batch of {k} "
                                  "(see the TensorRT log)")
