"""torch -> ONNX with a dynamic batch, the member signature, and logit comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.bundle_factory import make_mlp_onnx
from tests.export import models as M
from wcx.errors import BadInputError
from wcx.export.onnx_export import export_onnx, read_signature
from wcx.export.parity import chunks, compare_logits, run_onnx, run_torch


def test_export_has_dynamic_batch_and_matches_torch(tmp_path: Path) -> None:
    model = M.small_cnn()
    path = tmp_path / "m.onnx"
    assert export_onnx(model, path, sample_shape=M.INPUT_SHAPE) == "torchscript"
    sig = read_signature(path, sample_shape=M.INPUT_SHAPE)
    assert (sig.input_name, sig.output_name, sig.sample_shape, sig.opset) == ("input", "logits", (1, 8, 8), 17)
    x = np.random.default_rng(0).random((37, 1, 8, 8), dtype=np.float32)
    for chunk in (1, 7, 64):  # different batch sizes through one graph
        diff = np.abs(run_onnx(path, x, chunk=chunk) - run_torch(model, x, chunk=chunk)).max()
        assert diff < 1e-5


def test_read_signature_refuses_fixed_batch_and_wrong_shape(tmp_path: Path) -> None:
    path = make_mlp_onnx(tmp_path / "mlp.onnx")
    with pytest.raises(BadInputError, match="does not match input_shape"):
        read_signature(path, sample_shape=(1, 4, 4))
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(path))
    with pytest.raises(BadInputError, match="batch dimension is fixed"):
        read_signature(path)


def test_read_signature_refuses_two_inputs_and_corrupt(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1, 2, 2]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 1, 2, 2])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "two.onnx"))
    with pytest.raises(BadInputError, match="exactly one input"):
        read_signature(tmp_path / "two.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(BadInputError, match="not a readable ONNX file"):
        read_signature(tmp_path / "bad.onnx")


def test_compare_logits_by_hand() -> None:
    ref = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 0.5]], dtype=np.float32)
    cand = np.array([[1.0, 2.5], [1.0, 2.0], [0.0, 0.5]], dtype=np.float32)
    a = compare_logits(ref, cand, np.array([1, 0, 0]))
    assert a.n == 3 and a.max_abs_diff == pytest.approx(3.0) and a.logit_scale == 3.0
    assert a.top1_agreement == pytest.approx(2 / 3)
    assert a.reference_accuracy == pytest.approx(2 / 3) and a.candidate_accuracy == pytest.approx(1 / 3)


def test_chunks_start_with_batch_one() -> None:
    assert [(s.start, s.stop) for s in chunks(10, 4)] == [(0, 1), (1, 5), (5, 9), (9, 10)]
    assert list(chunks(0, 4)) == []
