"""A fake ``tensorrt`` module: the TensorRT 10.3 / 11 Python API that wcx uses, strict about its rules.

Builder side (``Builder``, ``OnnxParser``, configs, profiles, timing caches): only the
STRONGLY_TYPED network flag is accepted (TensorRT 11 removed EXPLICIT_BATCH and the precision
flags), the logger's base ``__init__`` must have run, ``set_timing_cache`` needs
``ignore_mismatch``. A built "plan" is a small header (I/O names, types, shapes, the profile)
followed by the member's ONNX.

Runtime side (``Runtime``, the engine, ``IExecutionContext``): an engine computes its outputs by
running that ONNX with ONNX Runtime, but behaves like device memory on a GPU. It reads its input
only through the CUDA binding (:func:`wcx.cuda_runtime.import_binding`: the fake of
``tests/fakes/cudart.py`` in CI, the real ``cuda-bindings`` on a GPU) from the address given with
``set_tensor_address``, and writes its output only to the output tensor's address, as an
asynchronous copy on the stream given to ``execute_async_v3``, so the result is visible only
after that stream is synchronised. It refuses to run unless the input shape was set (within the
profile) and every I/O tensor has an address. Method and parameter names are TensorRT's
(``set_input_shape(name, shape)``, ``set_tensor_address(name, memory)``,
``execute_async_v3(stream_handle)``, ...): ``tests/contract/test_tensorrt_api_contract.py``
checks them against TensorRT's pybind11 registrations.

``make_fake_tensorrt()`` returns a fresh module; ``events`` records builds and timing caches.
"""

from __future__ import annotations

import json
import struct
import types
from typing import Any

import numpy as np
import onnx

MAGIC = b"WCXFAKETRTPLAN1\n"
_ONNX_TYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}


class _Enum:
    def __init__(self, **members: Any) -> None:
        for k, v in members.items():
            setattr(self, k, v)


def make_fake_tensorrt(*, version: str = "10.3.0.30", fail_build_for: str | None = None,
                       fail_parse: bool = False) -> Any:
    """A fresh fake module (see the module docstring)."""
    trt: Any = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.events = []

    class ILogger:
        Severity = _Enum(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self) -> None:
            self._base_init = True

    trt.ILogger = ILogger
    trt.NetworkDefinitionCreationFlag = _Enum(STRONGLY_TYPED=1)
    trt.MemoryPoolType = _Enum(WORKSPACE=0)
    trt.DataType = _Enum(FLOAT="FLOAT", HALF="HALF", INT8="INT8", INT32="INT32", BOOL="BOOL", BF16="BF16")
    trt.TensorIOMode = _Enum(NONE="NONE", INPUT="INPUT", OUTPUT="OUTPUT")
    dtype_of = {"float32": trt.DataType.FLOAT, "float16": trt.DataType.HALF}

    def check_logger(logger: Any) -> None:
        if not getattr(logger, "_base_init", False):
            raise AssertionError("ILogger.__init__ was not called")

    # -- builder -------------------------------------------------------------------------------
    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...] | None, dtype: str = "float32") -> None:
            self.name, self.shape, self.dtype = name, shape, dtype

    class Network:
        def __init__(self, flags: int) -> None:
            if flags != 1 << 1:
                raise AssertionError(f"network flags {flags}: only STRONGLY_TYPED may be set")
            self.inputs: list[Tensor] = []
            self.outputs: list[Tensor] = []
            self.onnx = b""

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

        def get_output(self, i: int) -> Tensor:
            return self.outputs[i]

    class ParserError:
        def desc(self) -> str:
            return "Unsupported operator Foo"

        def node(self) -> int:
            return 3

    def dims(vi: Any) -> tuple[int, ...]:
        return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            check_logger(logger)
            self.network, self.errors = network, []

        def parse(self, model: bytes, path: str | None = None) -> bool:
            if fail_parse:
                self.errors.append(ParserError())
                return False
            self.network.onnx = bytes(model)
            graph = onnx.load_from_string(bytes(model)).graph
            for vi in graph.input:
                self.network.inputs.append(Tensor(vi.name, dims(vi), _ONNX_TYPES[vi.type.tensor_type.elem_type]))
            self.network.outputs = [Tensor(vo.name, dims(vo), _ONNX_TYPES.get(vo.type.tensor_type.elem_type, "float32"))
                                    for vo in graph.output]
            return True

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, index: int) -> ParserError:
            return self.errors[index]

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = bytes(blob)

        def serialize(self) -> bytes:
            return self.blob + b"+"

    class Config:
        def __init__(self) -> None:
            self.profiles: list[Any] = []
            self.pool: Any = None
            self.cache: Any = None

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            self.pool = (pool, pool_size)

        def add_optimization_profile(self, profile: Any) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache: bytes) -> TimingCache:
            trt.events.append(("create_timing_cache", bytes(serialized_timing_cache)))
            return TimingCache(serialized_timing_cache)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

    class Profile:
        def set_shape(self, input: Any, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - TensorRT's names
            self.shape = (input, tuple(min), tuple(opt), tuple(max))

    class Builder:
        def __init__(self, logger: Any) -> None:
            check_logger(logger)
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> memoryview | None:
            trt.events.append(("build", config.profiles[0].shape, config.pool))
            if fail_build_for is not None and len([e for e in trt.events if e[0] == "build"]) == 2:
                self.logger.log(ILogger.Severity.ERROR, "out of memory while building")
                return None
            _, mn, opt, mx = config.profiles[0].shape
            header = {
                "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape or ())} for t in network.inputs],
                "outputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape or ())} for t in network.outputs],
                "profile": {"min": list(mn), "opt": list(opt), "max": list(mx)},
            }
            text = json.dumps(header).encode()
            return memoryview(MAGIC + struct.pack("<I", len(text)) + text + network.onnx)

    trt.OnnxParser, trt.Builder = OnnxParser, Builder

    # -- runtime -------------------------------------------------------------------------------
    class Engine:
        def __init__(self, header: dict[str, Any], model: bytes) -> None:
            import onnxruntime as ort

            self.header = header
            self.tensors = {t["name"]: ("INPUT", t) for t in header["inputs"]}
            self.tensors.update({t["name"]: ("OUTPUT", t) for t in header["outputs"]})
            self.order = [t["name"] for t in header["inputs"]] + [t["name"] for t in header["outputs"]]
            self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])

        @property
        def num_io_tensors(self) -> int:
            return len(self.order)

        def get_tensor_name(self, index: int) -> str:
            return self.order[index]

        def get_tensor_mode(self, name: str) -> Any:
            return trt.TensorIOMode.INPUT if self.tensors[name][0] == "INPUT" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return dtype_of[self.tensors[name][1]["dtype"]]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return tuple(self.tensors[name][1]["shape"])

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
            if profile_index != 0 or self.tensors[name][0] != "INPUT":
                raise AssertionError(f"no profile {profile_index} for tensor {name!r}")
            p = self.header["profile"]
            return [tuple(p["min"]), tuple(p["opt"]), tuple(p["max"])]

        def create_execution_context(self) -> Context:
            return Context(self)

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}
            self.keep: list[np.ndarray] = []  # host arrays that pending copies read
            self.runs = 0

        def set_input_shape(self, name: str, shape: Any) -> bool:
            mode, spec = self.engine.tensors.get(name, (None, None))
            if mode != "INPUT":
                return False
            shape = tuple(int(d) for d in shape)
            p = self.engine.header["profile"]
            if len(shape) != len(p["max"]) or any(not lo <= d <= hi for d, lo, hi in zip(shape, p["min"], p["max"],
                                                                                        strict=True)):
                return False
            self.shapes[name] = shape
            return True

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if name not in self.engine.tensors or not isinstance(memory, int) or memory == 0:
                return False
            self.addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            from wcx.cuda_runtime import import_binding

            rt = import_binding()
            missing = [n for n in self.engine.order if n not in self.addresses]
            inputs = [t["name"] for t in self.engine.header["inputs"]]
            if missing or any(n not in self.shapes for n in inputs) or not isinstance(stream_handle, int):
                return False
            ok = rt.cudaError_t.cudaSuccess
            # the input copies issued before this call on the stream land first
            if rt.cudaStreamSynchronize(stream_handle)[0] != ok:
                return False
            feeds = {}
            for name in inputs:
                spec = self.engine.tensors[name][1]
                host = np.empty(self.shapes[name], dtype=spec["dtype"])
                if rt.cudaMemcpy(host.ctypes.data, self.addresses[name], host.nbytes,
                                 rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)[0] != ok:
                    return False
                feeds[name] = host
            outputs = self.engine.session.run(None, feeds)
            self.keep = []
            for spec, value in zip(self.engine.header["outputs"], outputs, strict=True):
                host = np.ascontiguousarray(value, dtype=spec["dtype"])
                self.keep.append(host)
                if rt.cudaMemcpyAsync(self.addresses[spec["name"]], host.ctypes.data, host.nbytes,
                                      rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream_handle)[0] != ok:
                    return False
            self.runs += 1
            return True

    class Runtime:
        def __init__(self, logger: Any) -> None:
            check_logger(logger)

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> Engine | None:
            data = bytes(serialized_engine)
            if not data.startswith(MAGIC):
                return None
            (size,) = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])
            start = len(MAGIC) + 4
            header = json.loads(data[start:start + size])
            return Engine(header, data[start + size:])

    trt.Runtime = Runtime
    return trt
