"""Reduced-precision ONNX graphs: FP16 by graph conversion, INT8 by symmetric Q/DQ.

TensorRT 11 builds every network strongly typed, with the precision the ONNX carries (method.md
section 6), so precision is decided here, in the graph:

* **FP16**: ONNX Runtime's own float16 converter (``onnxruntime.transformers.float16``) with
  ``keep_io_types=True``: weights and activations in float16, input and output stay float32.
* **INT8**: ``onnxruntime.quantization.quantize_static`` in QDQ format with *symmetric*
  activations and weights (zero point 0, what TensorRT wants), per-channel weight scales,
  MinMax ranges collected on held-out data ("INT8 calibration": activation ranges, not the
  cascade's thresholds, which live in ``wcx.calibration``).

  ``reduce_range`` (default on) keeps weights in 7 bits ([-63, 63]). Reason, measured here:
  ONNX Runtime's x86 INT8 convolution on CPUs without VNNI (AVX2 only, which is common)
  multiplies u8 x s8 pairs with VPMADDUBSW, whose int16 sums saturate with full-range s8
  weights. On a digits CNN that made ORT's INT8 output differ from the simulated Q/DQ
  arithmetic by up to 6 logits and dropped top-1 agreement with FP32 to 94% (83% for a wider
  CNN), while the same graph run without ORT's optimisations (simulated quantization) agreed
  100%. With 7-bit weights ORT's kernels and the simulation agree exactly (99 to 100%). A
  bundle meant only for TensorRT or VNNI CPUs can turn it off.

No torch here: both work on any ONNX file.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from wcx.errors import BadInputError, WorkFailedError

log = logging.getLogger(__name__)

# The ``quantize_static`` options wcx uses; recorded in the export report.
INT8_OPTIONS: dict[str, Any] = {
    "quant_format": "QDQ",
    "activation_type": "QInt8",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": True,
    "calibrate_method": "MinMax",
    # QuantizeBias off: TensorRT dequantizes only activation types, so an INT32 bias behind a
    # DequantizeLinear fails its parser (see wcx.export.engine_compat.trt_unsupported_qdq).
    "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
}


def convert_to_fp16(src: str | Path, dst: str | Path) -> None:
    """Write an FP16 copy of the ONNX graph ``src`` to ``dst`` (float32 input and output)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    try:
        converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    except Exception as exc:
        raise WorkFailedError(f"FP16 conversion failed: {type(exc).__name__}: {exc}") from None
    onnx.save(converted, str(dst))


class RestartableReader:
    """A ``CalibrationDataReader`` over an array that can be read again after ``rewind()``.

    ONNX Runtime's readers are one-shot iterators; the quantizer (and a second look at the
    data) need to start over, so this one keeps the array and an index.
    """

    def __init__(self, input_name: str, x: np.ndarray, *, batch_size: int = 32) -> None:
        if len(x) == 0:
            raise BadInputError("INT8 calibration needs at least one input")
        self.input_name = input_name
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.batch_size = int(batch_size)
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self.x):
            return None
        batch = self.x[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._pos = 0

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)


def _as_ort_reader(reader: RestartableReader) -> Any:
    """Wrap ``reader`` in a subclass of ORT's ``CalibrationDataReader`` (its type check wants one)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no stubs: the base is Any
        def get_next(self) -> dict[str, np.ndarray] | None:
            return reader.get_next()

        def rewind(self) -> None:
            reader.rewind()

        def __len__(self) -> int:
            return len(reader)

    return _Reader()


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    calib_x: np.ndarray,
    *,
    input_name: str,
    batch_size: int = 32,
    reduce_range: bool = True,
) -> dict[str, Any]:
    """Write a symmetric INT8 Q/DQ copy of ``src`` to ``dst``, ranges from ``calib_x``.

    ``calib_x`` is preprocessed float32 (N, C, H, W). The graph is first run through
    ``quant_pre_process`` (shape inference and ORT's graph optimisations, which fold
    BatchNorm and constants so fewer tensors need ranges); if that fails the original graph is
    quantized. Returns the options used (for the report).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    reader = RestartableReader(input_name, calib_x, batch_size=batch_size)
    options = dict(INT8_OPTIONS, reduce_range=reduce_range, calibration_samples=int(len(calib_x)))
    with tempfile.TemporaryDirectory(prefix="wcx-int8-") as tmp:
        source = Path(src)
        pre = Path(tmp) / "pre.onnx"
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
            source = pre
            options["pre_process"] = True
        except Exception as exc:  # pre-processing is an optimisation only
            log.info("quant_pre_process failed (%s); quantizing the graph as it is", exc)
            options["pre_process"] = False
        try:
            quantize_static(
                str(source),
                str(dst),
                _as_ort_reader(reader),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=reduce_range,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options=dict(INT8_OPTIONS["extra_options"]),
            )
        except Exception as exc:
            raise WorkFailedError(f"INT8 quantization failed: {type(exc).__name__}: {exc}") from None
    return options
