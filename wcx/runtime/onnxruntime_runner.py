"""``OnnxRuntimeRunner``: one member on ONNX Runtime's CPU execution provider.

The default backend and the one CI tests. Runs the exact batch it is given (no shape buckets:
padding on the CPU is pure waste). ``threads`` sets ``intra_op_num_threads`` (``None``: ONNX
Runtime's default, one thread per physical core). An FP16 or INT8 (Q/DQ) member graph keeps
float32 inputs and outputs, so the runner always feeds float32 and returns float32 logits.

ONNX Runtime's ``InferenceSession.run`` is thread-safe, so one active runner may be shared; the
cascade still serialises its calls (see :class:`wcx.runtime.cascade.Cascade`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wcx.bundle import Bundle
from wcx.errors import BadInputError
from wcx.runtime.runner import LOGITS, Runner

_NP_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}


class OnnxRuntimeRunner(Runner):
    """A member's ONNX graph in an ``onnxruntime.InferenceSession`` (CPU provider)."""

    backend = "onnxruntime"
    pads_to_buckets = False

    def __init__(
        self, bundle: Bundle, member_index: int, *, threads: int | None = None, spin: bool = False
    ) -> None:
        super().__init__(bundle, member_index)
        self.spin = spin
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise BadInputError(f"threads must be a positive integer, got {threads!r}")
        self.threads = threads
        self.session: Any = None
        #: rows this runner was given and rows it ran (equal here: no padding); for tests/benchmarks
        self.rows_received = 0
        self.rows_run = 0
        self.calls = 0

    @property
    def precision(self) -> str:
        return self.member.precision

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
        path = self.bundle.member_path(self.member_index)
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BadInputError(f"{path}: ONNX Runtime cannot load member {self.member.name!r} ({exc})") from None
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        if self.member.input_name not in inputs:
            raise BadInputError(
                f"{path}: the graph has no input {self.member.input_name!r} (it has {sorted(inputs)})"
            )
        if self.member.output_name not in outputs:
            raise BadInputError(
                f"{path}: the graph has no output {self.member.output_name!r} (it has {outputs})"
            )
        self._input_dtype = _NP_DTYPES.get(self.member.input_dtype, np.float32)
        self.session = session

    def infer_impl(self, feed: dict[str, Any]) -> dict[str, Any]:
        x = np.ascontiguousarray(feed[self.member.input_name], dtype=self._input_dtype)
        (logits,) = self.session.run([self.member.output_name], {self.member.input_name: x})
        n = int(x.shape[0])
        self.rows_received += n
        self.rows_run += n
        self.calls += 1
        return {LOGITS: np.asarray(logits, dtype=np.float32)}

    def deactivate_impl(self) -> None:
        self.session = None
