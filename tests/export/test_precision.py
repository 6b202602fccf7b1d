"""FP16 graphs keep float32 I/O; INT8 graphs are symmetric, per-channel Q/DQ."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from wcx.export.precision import RestartableReader, _as_ort_reader


def test_fp16_graph_has_fp16_weights_and_fp32_io(fp16_bundle) -> None:
    model = onnx.load(str(fp16_bundle.bundle.member_path(0)))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    float_inits = [i for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert float_inits and all(i.data_type == TensorProto.FLOAT16 for i in float_inits)


def test_int8_graph_is_symmetric_per_channel_qdq(int8_bundle) -> None:
    model = onnx.load(str(int8_bundle.bundle.member_path(0)))
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
    # reduce_range: weights in [-63, 63]
    weights = [inits[n.input[0]] for n in per_channel]
    assert all(np.abs(w.astype(np.int32)).max() <= 64 for w in weights)


def test_restartable_reader_rewinds() -> None:
    x = np.arange(10 * 1 * 2 * 2, dtype=np.float32).reshape(10, 1, 2, 2)
    reader = _as_ort_reader(RestartableReader("input", x, batch_size=4))
    first = [b["input"].shape[0] for b in iter(reader.get_next, None)]
    reader.rewind()
    second = [b["input"].shape[0] for b in iter(reader.get_next, None)]
    assert first == second == [4, 4, 2]
    assert len(reader) == 3
