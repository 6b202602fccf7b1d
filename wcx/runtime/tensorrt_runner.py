"""The TensorRT backend: one member's engine on one CUDA GPU (TensorRT 10.3+ and 11), no torch.

``activate`` checks the engine record against this machine (TensorRT version, GPU compute
capability, the member ONNX's sha256: :func:`wcx.export.engine_compat.check_engine_compatible`),
reads the engine from the bundle's own file (hash-checked again), deserializes it with
``trt.Runtime(logger).deserialize_cuda_engine``, creates one execution context, finds the I/O
tensors by name and mode, and allocates once, for the profile's largest batch: device buffers for
every I/O tensor, page-locked host buffers for the input and the logits, and one CUDA stream.
Device memory, copies and the stream come from NVIDIA's CUDA binding (:mod:`wcx.cuda_runtime`),
so an edge device needs TensorRT, the binding and numpy.

``infer({input: x})`` takes a host float32 batch ``(n, C, H, W)`` and returns host float32
logits ``(n, K)``: a cascade on this backend runs the executor's host path (scores and row
selection in numpy, only the selected rows copied in). Per chunk of at most the profile's max
batch, padded to its shape bucket: the rows are written into the pinned input (converted to the
engine's input type, e.g. FP16), copied to the device, ``set_input_shape`` /
``set_tensor_address`` / ``execute_async_v3`` run on the runner's stream, the logits are copied
back, and the stream is synchronised before the host reads them.

One runner has one execution context and one stream, so it must not be used from two threads at
once (the cascade serialises its calls).
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
    array_library = "numpy"
    pads_to_buckets = True

    def __init__(self, bundle: Bundle, member_index: int, *, log_level: str = "warning",
                 device_index: int = 0) -> None:
        super().__init__(bundle, member_index)
        self.log_level = log_level
        self.device_index = device_index
        engines = bundle.engines
        self.record: EngineRecord | None = None if engines is None else engines.members.get(self.member.name)
        self.max_batch = None if self.record is None else self.record.max_batch
        self._cuda: Any = None
        self._facts: dict[str, str] = {}
        self._release: list[Any] = []  # what deactivate frees, in reverse order

    # -- facts -------------------------------------------------------------------------------
    def provenance(self) -> MemberProvenance:
        """The engine that runs: its file's hash, and the TensorRT and GPU it runs on (read from
        this machine where TensorRT and a GPU are present, else from the engine record)."""
        base = super().provenance()
        record = self.record
        try:
            version: str | None = str(import_tensorrt().__version__)
            capability: str | None = self._gpu_facts()["compute_capability"]
        except (MissingDependencyError, WorkFailedError):
            version = None if record is None else record.tensorrt_version
            capability = None if record is None else normalize_compute_capability(record.compute_capability)
        return MemberProvenance(base.name, base.precision, onnx_sha256=base.onnx_sha256, input=base.input,
                                engine_sha256=None if record is None else record.sha256,
                                tensorrt_version=version, compute_capability=capability)

    def info(self) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        try:
            facts["gpu_name"] = self._gpu_facts()["gpu_name"]
            facts["tensorrt"] = str(import_tensorrt().__version__)
        except (MissingDependencyError, WorkFailedError):
            pass
        return facts

    def _gpu_facts(self) -> dict[str, str]:
        if not self._facts:
            from wcx.cuda_runtime import Cuda

            self._facts = Cuda(self.device_index).facts()
        return self._facts

    # -- lifecycle -----------------------------------------------------------------------------
    def activate_impl(self) -> None:
        from wcx.cuda_runtime import Cuda
        from wcx.export.tensorrt_engine import get_trt_logger

        purpose = "The TensorRT backend"
        trt = import_tensorrt(purpose)
        cuda = Cuda(self.device_index, purpose=purpose)
        facts = cuda.facts()
        assert self.bundle is not None
        record = engine_record_for(self.bundle.manifest, self.member.name, bundle_path=self.bundle.path)
        check_engine_compatible(
            record, trt_version=str(trt.__version__), gpu_name=facts["gpu_name"],
            compute_capability=facts["compute_capability"], onnx_sha256=self.member.sha256,
            bundle_path=self.bundle.path,
        )
        path = self.bundle.file(record.file)  # refuses paths outside the bundle
        if not path.is_file():
            raise BadInputError(f"{self.bundle.path}: engine file {record.file} is missing; "
                                f"rebuild the engines: {rebuild_hint(self.bundle.path)}")
        plan = path.read_bytes()
        if hashlib.sha256(plan).hexdigest() != record.sha256:
            raise BadInputError(f"{self.bundle.path}: engine file {record.file} was altered; "
                                f"rebuild the engines: {rebuild_hint(self.bundle.path)}")
        runtime = trt.Runtime(get_trt_logger(trt, self.log_level))
        engine = runtime.deserialize_cuda_engine(plan)
        del plan
        if engine is None:
            raise BadInputError(
                f"TensorRT could not deserialize the engine of member {self.member.name!r} "
                f"({record.file}); rebuild the engines: {rebuild_hint(self.bundle.path)}"
            )
        io = self._discover(trt, engine, record)
        context = engine.create_execution_context()
        if context is None:
            raise WorkFailedError(f"TensorRT could not create an execution context for member "
                                  f"{self.member.name!r} (out of GPU memory?)")
        try:
            self._allocate(cuda, io)
        except BaseException:
            self._free()
            raise
        # the context is only valid while its engine and runtime live: keep all three
        self._runtime, self._engine, self._context, self._trt = runtime, engine, context, trt
        self._cuda, self._facts, self.record = cuda, facts, record
        log.debug("activated %s: TensorRT %s, max batch %d, %s", self.name, trt.__version__, record.max_batch, facts)

    def _discover(self, trt: Any, engine: Any, record: EngineRecord) -> dict[str, Any]:
        """The engine's I/O tensors by name and mode, checked against the manifest."""
        inputs: list[str] = []
        outputs: list[str] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
        in_name, out_name = self.member.input.name, self.member.output_name
        if inputs != [in_name] or out_name not in outputs:
            raise BadInputError(
                f"the engine of member {self.member.name!r} has inputs {inputs} and outputs {outputs}; the "
                f"manifest expects {in_name!r} -> {out_name!r}: rebuild the engines: {rebuild_hint(self.bundle_path)}"
            )
        engine_max = int(engine.get_tensor_profile_shape(in_name, 0)[2][0])
        if engine_max != record.max_batch:
            raise BadInputError(
                f"the engine of member {self.member.name!r} accepts batches up to {engine_max}, its manifest "
                f"record says {record.max_batch}; rebuild the engines: {rebuild_hint(self.bundle_path)}"
            )
        floats: dict[Any, np.dtype[Any]] = {trt.DataType.FLOAT: np.dtype(np.float32),
                                            trt.DataType.HALF: np.dtype(np.float16)}
        types: dict[str, np.dtype[Any] | None] = {name: floats.get(engine.get_tensor_dtype(name))
                                                  for name in [*inputs, *outputs]}
        if types[in_name] is None or types[out_name] is None:
            raise BadInputError(
                f"the engine of member {self.member.name!r} has I/O types {engine.get_tensor_dtype(in_name)} -> "
                f"{engine.get_tensor_dtype(out_name)}; wcx feeds float32 or float16"
            )
        out_shape = [int(d) for d in engine.get_tensor_shape(out_name)]
        if len(out_shape) != 2 or out_shape[1] != self.member.num_classes:
            raise BadInputError(
                f"the engine of member {self.member.name!r} outputs shape {out_shape}; the manifest expects "
                f"(batch, {self.member.num_classes}): rebuild the engines: {rebuild_hint(self.bundle_path)}"
            )
        shapes = {name: [engine_max if d < 0 else int(d) for d in engine.get_tensor_shape(name)] for name in outputs}
        shapes[in_name] = [engine_max, *self.member.sample_shape]
        # other outputs (if a graph has more) still need device memory; 8 bytes covers any type
        itemsize = {name: 8 if t is None else t.itemsize for name, t in types.items()}
        nbytes = {name: int(np.prod(shape)) * itemsize[name] for name, shape in shapes.items()}
        return {"input": in_name, "output": out_name, "types": types, "shapes": shapes, "nbytes": nbytes}

    def _allocate(self, cuda: Any, io: dict[str, Any]) -> None:
        """Device buffers for every I/O tensor and pinned host buffers for input and logits, all
        for the profile's largest batch, and the runner's stream."""
        self._io = io
        self._device_buffers = {}
        for name, nbytes in io["nbytes"].items():
            self._device_buffers[name] = buf = cuda.alloc(nbytes)
            self._release.append(buf)
        self._host_in = cuda.pinned(tuple(io["shapes"][io["input"]]), io["types"][io["input"]])
        self._release.append(self._host_in)
        self._host_out = cuda.pinned(tuple(io["shapes"][io["output"]]), io["types"][io["output"]])
        self._release.append(self._host_out)
        self._stream = cuda.stream()
        self._release.append(self._stream)

    def _free(self) -> None:
        errors = []
        for item in reversed(self._release):
            try:
                item.destroy() if hasattr(item, "destroy") else item.free()
            except WorkFailedError as exc:  # keep releasing the rest
                errors.append(exc)
        self._release = []
        if errors:
            log.warning("releasing CUDA resources of %s: %s", self.name, errors[0])

    def deactivate_impl(self) -> None:
        # The context goes before its engine and runtime; then the buffers and the stream.
        self._context = None
        self._engine = None
        self._runtime = None
        self._free()
        self._cuda = None

    @property
    def bundle_path(self) -> object:
        return None if self.bundle is None else self.bundle.path

    # -- inference -----------------------------------------------------------------------------
    def infer_impl(self, x: Any, rows: int) -> np.ndarray:
        io, cuda, context, stream = self._io, self._cuda, self._context, self._stream
        n = int(x.shape[0])
        host_in = self._host_in.array
        np.copyto(host_in[:n], np.asarray(x), casting="same_kind")  # float32 -> the engine's type
        if rows > n:  # pad to the shape bucket: few distinct shapes for TensorRT's kernels
            host_in[n:rows] = 0
        in_name, out_name = io["input"], io["output"]
        cuda.to_device(self._device_buffers[in_name], self._host_in, rows * host_in[0].nbytes, stream)
        shape = (rows, *self.member.sample_shape)
        if not context.set_input_shape(in_name, shape):
            raise WorkFailedError(f"runner {self.name}: TensorRT refused input shape {shape}")
        for name, buf in self._device_buffers.items():
            if not context.set_tensor_address(name, buf.ptr):
                raise WorkFailedError(f"runner {self.name}: TensorRT refused the address of tensor {name!r}")
        if not context.execute_async_v3(int(stream)):
            raise WorkFailedError(f"runner {self.name}: TensorRT failed to run a batch of {rows} "
                                  "(see the TensorRT log)")
        host_out = self._host_out.array
        cuda.to_host(self._host_out, self._device_buffers[out_name], rows * host_out[0].nbytes, stream)
        stream.synchronize()  # the logits are on the host only now
        logits: np.ndarray = host_out[:n].astype(np.float32)
        return logits
