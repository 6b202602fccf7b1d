"""FP16 graphs keep float32 I/O; INT8 graphs are symmetric, per-channel Q/DQ, with full-range
weights unless reduce_range asks for 7 bits, and activation ranges from the chosen method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, numpy_helper

from tests.bundle_factory import make_mlp_onnx
from wcx.errors import BadInputError
from wcx.export.precision import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_METHOD,
    WEIGHT_RANGES,
    RestartableReader,
    _as_ort_reader,
    check_calibration_method,
    quantize_int8,
)

SHAPE = (1, 16, 16)


def _weights(path: Path) -> list[np.ndarray]:
    """The int8 weight initializers of a Q/DQ graph (those a DequantizeLinear reads directly)."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    return [numpy_helper.to_array(inits[n.input[0]]) for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].data_type == TensorProto.INT8 and len(inits[n.input[0]].dims) > 1]


def _scale_of(path: Path, tensor: str) -> float:
    """The scale of the QuantizeLinear that quantizes ``tensor``."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    return float(inits[node.input[1]])


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mlp_onnx(tmp_path_factory.mktemp("mlp") / "mlp.onnx", sample_shape=SHAPE, hidden=24, num_classes=5)


@pytest.fixture(scope="module")
def calib_x() -> np.ndarray:
    return np.random.default_rng(0).random((100, *SHAPE), dtype=np.float32)


def test_fp16_graph_has_fp16_weights_and_fp32_io(fp16_bundle) -> None:
    model = onnx.load(str(fp16_bundle.bundle.member_path(0)))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    float_inits = [i for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert float_inits and all(i.data_type == TensorProto.FLOAT16 for i in float_inits)


def test_int8_graph_is_symmetric_per_channel_qdq_with_full_range_weights(int8_bundle) -> None:
    """The exporter's defaults: symmetric per-channel Q/DQ and weights beyond 7 bits."""
    path = int8_bundle.bundle.member_path(0)
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    # symmetric: every zero point is 0 (int8 activations and weights, int32 biases)
    assert zero_points and all(zp.dtype in (np.int8, np.int32) and not zp.any() for zp in zero_points)
    assert any(zp.dtype == np.int8 for zp in zero_points)
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    per_channel = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in conv_weights]
    assert per_channel and all(inits[n.input[1]].ndim == 1 and inits[n.input[1]].size > 1 for n in per_channel)
    weights = _weights(path)
    assert weights and all(np.abs(w.astype(np.int32)).max() == 127 for w in weights)


@pytest.mark.parametrize("reduce_range", [False, True])
def test_weight_range_follows_reduce_range(mlp: Path, calib_x: np.ndarray, tmp_path: Path,
                                           reduce_range: bool) -> None:
    """Full range: int8 weights reach +-127 (well beyond +-63); reduce_range: onnxruntime's
    "7-bit" range, which is [-64, 64], reached by every channel's largest weight."""
    out = tmp_path / "q.onnx"
    options = quantize_int8(mlp, out, calib_x, input_name="input", reduce_range=reduce_range)
    low, high = WEIGHT_RANGES[reduce_range]
    assert (low, high) == ((-64, 64) if reduce_range else (-127, 127))
    assert options["reduce_range"] is reduce_range and options["weight_range"] == [low, high]
    weights = _weights(out)
    assert len(weights) == 2  # both Gemm layers
    for w in weights:
        w32 = w.astype(np.int32)
        assert low <= w32.min() and w32.max() <= high
        assert np.abs(w32).max() == high  # per channel, the largest |weight| maps to the range's end
    if not reduce_range:
        assert any((np.abs(w.astype(np.int32)) > 64).mean() > 0.1 for w in weights)


def test_default_options(mlp: Path, calib_x: np.ndarray, tmp_path: Path) -> None:
    options = quantize_int8(mlp, tmp_path / "q.onnx", calib_x, input_name="input")
    assert options["reduce_range"] is False
    assert options["calibrate_method"] == CALIBRATION_METHODS[DEFAULT_CALIBRATION_METHOD]
    assert options["calibration_samples"] == len(calib_x)
    assert "CalibMaxIntermediateOutputs" not in options["extra_options"]


def test_calibration_method_reaches_onnxruntime(mlp: Path, tmp_path: Path) -> None:
    """One outlier among 131,072 input values: minmax's range covers it, the 99.999th
    percentile's does not, so percentile quantizes the input with a much finer scale."""
    x = np.random.default_rng(1).random((512, *SHAPE), dtype=np.float32)
    x[300, 0, 3, 3] = 50.0
    scales = {}
    for method in ("minmax", "percentile"):
        out = tmp_path / f"{method}.onnx"
        options = quantize_int8(mlp, out, x, input_name="input", calibration_method=method)
        assert options["calibrate_method"] == CALIBRATION_METHODS[method]
        scales[method] = _scale_of(out, "flat")
    assert scales["minmax"] == pytest.approx(50.0 / 127, rel=1e-6)
    assert scales["percentile"] < 1.01 / 127


@settings(max_examples=5, deadline=None)
@given(batch_size=st.integers(1, 40), n=st.integers(20, 90))
def test_minmax_ranges_do_not_depend_on_batching(batch_size: int, n: int) -> None:
    """Ranges are collected one batch at a time and merged: min/max merging is exact, so the
    scales equal those of the whole sample in one batch (and a short last batch is fine)."""
    import tempfile

    x = np.random.default_rng(n).normal(0.5, 0.3, (n, *SHAPE)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        src = make_mlp_onnx(Path(tmp) / "m.onnx", sample_shape=SHAPE, hidden=8, num_classes=3, seed=n)
        scales = []
        for b in (batch_size, n):
            out = Path(tmp) / f"q{b}.onnx"
            quantize_int8(src, out, x, input_name="input", batch_size=b, calibration_method="minmax")
            scales.append(_scale_of(out, "flat"))
    assert scales[0] == scales[1] == pytest.approx(float(np.abs(x).max()) / 127, rel=1e-6)


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_methods_take_a_short_last_batch(mlp: Path, tmp_path: Path, method: str) -> None:
    # 70 inputs in batches of 32: collected at once, onnxruntime's histograms cannot stack 32, 32, 6
    x = np.random.default_rng(2).random((70, *SHAPE), dtype=np.float32)
    options = quantize_int8(mlp, tmp_path / "q.onnx", x, input_name="input", calibration_method=method)
    assert options["calibration_samples"] == 70


def test_quantizer_chatter_stays_off_stdout(mlp: Path, calib_x: np.ndarray, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    quantize_int8(mlp, tmp_path / "q.onnx", calib_x, input_name="input", calibration_method="percentile")
    assert capsys.readouterr().out == ""


def test_unknown_calibration_method_lists_the_valid_ones(mlp: Path, calib_x: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="int8_calibration: 'kl' is not an INT8 calibration method "
                                            r"\(valid: minmax, percentile, entropy\)"):
        check_calibration_method("kl", name="int8_calibration")
    with pytest.raises(BadInputError, match="calibration_method: 'MinMax'"):
        quantize_int8(mlp, tmp_path / "q.onnx", calib_x, input_name="input", calibration_method="MinMax")


def test_restartable_reader_rewinds_and_reads_ranges() -> None:
    x = np.arange(10 * 1 * 2 * 2, dtype=np.float32).reshape(10, 1, 2, 2)
    reader = _as_ort_reader(RestartableReader("input", x, batch_size=4))
    first = [b["input"].shape[0] for b in iter(reader.get_next, None)]
    reader.rewind()
    second = [b["input"].shape[0] for b in iter(reader.get_next, None)]
    assert first == second == [4, 4, 2]
    assert len(reader) == 3
    reader.set_range(1, 2)  # batches are counted, as onnxruntime's strided collection does
    ranged = [b["input"] for b in iter(reader.get_next, None)]
    assert len(ranged) == 1 and np.array_equal(ranged[0], x[4:8])
    reader.set_range(2, 3)
    assert [b["input"].shape[0] for b in iter(reader.get_next, None)] == [2]
    reader.rewind()
    assert sum(b["input"].shape[0] for b in iter(reader.get_next, None)) == 10
