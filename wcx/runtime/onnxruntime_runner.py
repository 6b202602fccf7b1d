"""``OnnxRuntimeRunner``: one member on ONNX Runtime's CPU execution provider.

The default backend and the one CI tests. Runs the exact batch it is given (no shape buckets:
padding on the CPU is pure waste); ``max_batch`` splits larger batches into chunks. Its default,
:data:`DEFAULT_MAX_BATCH` (512), bounds the memory of a call (ONNX Runtime's activations grow with
the rows of one run: a 20,000-row batch of a small CNN needs gigabytes) and equals the rows per
call that calibration uses, so the default batches rows exactly as calibration did.
``threads`` sets ``intra_op_num_threads`` (``None``: ONNX Runtime's default, one thread
per physical core). An FP16 or INT8 (Q/DQ) member graph keeps float32 inputs and outputs, so the
runner feeds float32 and returns float32 logits, and its precision is the graph's.

ONNX Runtime's ``InferenceSession.run`` is thread-safe, so one active runner may be shared; the
cascade still serialises its calls (see :class:`wcx.runtime.cascade.Cascade`).

An INT8 member with full-range (8-bit) weights loses accuracy on x86 CPUs without VNNI, where
ONNX Runtime's INT8 kernels saturate (:mod:`wcx.export.precision`): activating one there
warns once (:class:`Int8SaturationWarning`, :func:`int8_saturation_warning`).
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Collection
from typing import Any, ClassVar

import numpy as np

from wcx.bundle import Bundle
from wcx.core.manifest import MemberSection
from wcx.errors import BadInputError, WorkFailedError
from wcx.runtime.runner import Runner

_NP_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}
#: most rows per ONNX Runtime run unless ``max_batch`` says otherwise (the module docstring)
DEFAULT_MAX_BATCH = 512


#: CPU flags (Linux ``/proc/cpuinfo`` names) of the x86 instructions that let ONNX Runtime's
#: INT8 kernels accumulate u8 x s8 products in int32 without saturating
VNNI_FLAGS: frozenset[str] = frozenset({"avx512_vnni", "avx_vnni"})
_X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


class Int8SaturationWarning(UserWarning):
    """An INT8 member with full-range weights runs where ONNX Runtime's INT8 kernels saturate."""


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU's feature flags from ``path`` (Linux), or None where they cannot be read."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_description() -> str:
    """The CPU's architecture and the vector instruction sets that change kernel choices."""
    flags = cpu_flags() or frozenset()
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return " ".join([platform.machine(), *[f for f in wanted if f in flags]])


def int8_saturation_warning(member: MemberSection, *, flags: Collection[str] | None, machine: str,
                            where: str = "") -> str | None:
    """The warning for running ``member`` (of the bundle ``where``) on ONNX Runtime on a CPU
    with these ``flags`` and ``machine`` (``platform.machine()``), or None when there is
    nothing to warn about.

    It warns for an INT8 member quantized with full-range weights (``reduce_range`` false) on
    an x86 CPU whose flags name no VNNI. Not on other architectures, not when the flags are
    unknown (None), and not for a member whose quantization the manifest does not record.
    """
    q = member.quantization
    if member.precision != "int8" or q is None or q.reduce_range:
        return None
    if machine.lower() not in _X86_MACHINES or flags is None or VNNI_FLAGS & set(flags):
        return None
    prefix = f"{where}: " if where else ""
    return (f"{prefix}INT8 member {member.name!r} has full-range 8-bit weights, and this x86 CPU has no VNNI: ONNX "
            "Runtime's INT8 kernels can saturate here and lose accuracy; for this CPU re-export with "
            "int8_reduce_range=True (7-bit weights), or run on a CPU with VNNI or on TensorRT")


class OnnxRuntimeRunner(Runner):
    """A member's ONNX graph in an ``onnxruntime.InferenceSession`` (CPU provider)."""

    backend = "onnxruntime"
    pads_to_buckets = False

    #: bundles already warned about INT8 saturation: one line per bundle and process, naming
    #: its first such member
    _saturation_warned: ClassVar[set[str]] = set()

    def __init__(
        self, bundle: Bundle, member_index: int, *, threads: int | None = None, spin: bool = False,
        max_batch: int | None = None,
    ) -> None:
        super().__init__(bundle, member_index)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise BadInputError(f"threads must be a positive integer, got {threads!r}")
        if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
            raise BadInputError(f"max_batch must be a positive integer, got {max_batch!r}")
        self.spin = spin
        self.threads = threads
        self.max_batch = DEFAULT_MAX_BATCH if max_batch is None else max_batch
        self.session: Any = None

    def info(self) -> dict[str, Any]:
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__, "cpu": cpu_description()}

    def activate_impl(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.threads is not None:
            opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if not self.spin:
            # A cascade has one session per member; spinning pool threads of the member that just
            # ran would compete for the cores with the next member's threads.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        assert self.bundle is not None
        path = self.bundle.member_path(self.member_index)
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BadInputError(f"{path}: ONNX Runtime cannot load member {self.member.name!r} ({exc})") from None
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        if self.member.input.name not in inputs:
            raise BadInputError(
                f"{path}: the graph has no input {self.member.input.name!r} (it has {sorted(inputs)})"
            )
        if self.member.output_name not in outputs:
            raise BadInputError(
                f"{path}: the graph has no output {self.member.output_name!r} (it has {outputs})"
            )
        self._graph_dtype = _NP_DTYPES.get(self.member.input.dtype, np.float32)
        self.session = session
        self._warn_if_saturating()

    def _warn_if_saturating(self) -> None:
        assert self.bundle is not None
        where = str(self.bundle.path)
        if where in OnnxRuntimeRunner._saturation_warned:
            return
        message = int8_saturation_warning(self.member, flags=cpu_flags(), machine=platform.machine(), where=where)
        if message is not None:
            OnnxRuntimeRunner._saturation_warned.add(where)
            warnings.warn(message, Int8SaturationWarning, stacklevel=4)

    def infer_impl(self, x: Any, rows: int) -> np.ndarray:
        batch = np.ascontiguousarray(np.asarray(x), dtype=self._graph_dtype)
        try:
            (logits,) = self.session.run([self.member.output_name], {self.member.input.name: batch})
        except Exception as exc:  # the input was checked, so this is the backend failing
            raise WorkFailedError(f"ONNX Runtime failed on member {self.member.name!r} ({exc})") from None
        return np.asarray(logits, dtype=np.float32)

    def deactivate_impl(self) -> None:
        self.session = None
