"""INT8 export options: what the manifest records, the seeded range sample, and the refusal that
names every member's agreement and the remedies."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from tests.bundle_factory import make_mlp_onnx
from wcx.bundle import Bundle
from wcx.errors import BadInputError, WorkFailedError
from wcx.export.exporter import MemberReport, Tolerances, export_bundle, int8_refusal
from wcx.export.precision import CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def mlps(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """Two ONNX MLP members (no torch) and 200 random inputs for them."""
    root = tmp_path_factory.mktemp("int8_mlps")
    members = [str(make_mlp_onnx(root / f"m{i}.onnx", sample_shape=SHAPE, seed=i)) for i in range(2)]
    np.savez(root / "calib.npz", x=np.random.default_rng(0).random((200, *SHAPE), dtype=np.float32))
    return members, root / "calib.npz"


def _max_abs_weight(path: Path) -> int:
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    weights = [numpy_helper.to_array(inits[n.input[0]]) for n in model.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits
               and inits[n.input[0]].data_type == TensorProto.INT8 and len(inits[n.input[0]].dims) > 1]
    return max(int(np.abs(w.astype(np.int32)).max()) for w in weights)


def test_defaults_are_recorded_per_member(int8_bundle) -> None:
    for member in int8_bundle.bundle.members:
        q = member.quantization
        assert q is not None and q.reduce_range is False and q.calibration == DEFAULT_CALIBRATION_METHOD
        assert q.samples == 400
        assert member.export_report["checks"]["int8"]["quantization"]["reduce_range"] is False
    options = int8_bundle.bundle.manifest.export["export_options"]
    assert options["int8_reduce_range"] is False and options["int8_calibration"] == DEFAULT_CALIBRATION_METHOD
    assert options["max_calib_samples"] == 1024
    assert f"INT8 weights in 8 bits ([-127, 127]); activation ranges by {DEFAULT_CALIBRATION_METHOD} on 400 of " \
           "400 calibration inputs." in int8_bundle.report.notes


def test_reduce_range_and_method_are_recorded_and_applied(tmp_path: Path, mlps) -> None:
    members, calib = mlps
    export_bundle(members, tmp_path / "b", input_shape=SHAPE, precision="int8", calib_data=calib,
                  int8_reduce_range=True, int8_calibration="minmax", max_calib_samples=100,
                  tolerances=Tolerances(int8_min_agreement=0.0))
    bundle = Bundle.load(tmp_path / "b")
    for i, member in enumerate(bundle.members):
        assert member.quantization is not None
        assert (member.quantization.reduce_range, member.quantization.calibration) == (True, "minmax")
        assert member.quantization.samples == 100  # 160 not held back, capped at 100
        assert _max_abs_weight(bundle.member_path(i)) == 64
    # an fp32 bundle records no quantization
    export_bundle(members[:1], tmp_path / "f", input_shape=SHAPE)
    assert Bundle.load(tmp_path / "f").members[0].quantization is None


def test_range_sample_is_seeded(tmp_path: Path, mlps) -> None:
    """With eval_data nothing is held back: only the range sample depends on the seed."""
    members, calib = mlps

    def member_sha(seed: int, name: str) -> str:
        export_bundle(members[:1], tmp_path / name, input_shape=SHAPE, precision="int8", calib_data=calib,
                      eval_data=calib, max_calib_samples=30, seed=seed, int8_calibration="minmax",
                      tolerances=Tolerances(int8_min_agreement=0.0))
        return hashlib.sha256(Bundle.load(tmp_path / name).member_path(0).read_bytes()).hexdigest()

    first = member_sha(0, "a")
    assert member_sha(0, "b") == first
    assert member_sha(1, "c") != first


def test_refusal_names_every_member_and_the_remedies(tmp_path: Path, mlps) -> None:
    """An agreement no fully quantized member can be sure to reach: the export measures both
    members, then refuses in one line that lists each one's agreement and what to try (layers in
    float among them); nothing is written."""
    members, calib = mlps
    out = tmp_path / "b"
    with pytest.raises(WorkFailedError) as info:
        export_bundle(members, out, input_shape=SHAPE, precision="int8", calib_data=calib,
                      int8_float_layers="none", tolerances=Tolerances(int8_min_agreement=1.0))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("INT8 top-1 agreement with FP32 is below 100.00% for ")
    assert "'m0' " in message and "'m1' " in message and "(below)" in message
    others = [f"int8_calibration={m}" for m in CALIBRATION_METHODS if m != DEFAULT_CALIBRATION_METHOD]
    for remedy in (*others, "int8_float_layers=auto", "int8_reduce_range=True", "calib_data", "precision=fp16"):
        assert remedy in message
    assert f"int8_calibration={DEFAULT_CALIBRATION_METHOD}" not in message
    assert not out.exists()


def _report(name: str, agreement: float, n: int = 500) -> MemberReport:
    return MemberReport(name=name, source=name, kind="onnx", precision="int8", exporter=None, opset=17,
                        num_classes=10, macs=1, seconds=0.0,
                        checks={"int8": {"eval": {"n": n, "top1_agreement": agreement}}})


def test_refusal_offers_the_settings_not_used() -> None:
    reports = [_report("a", 0.971), _report("b", 0.982)]
    text = int8_refusal(reports, minimum=0.98, calibration="minmax", reduce_range=True, range_samples=1024,
                        calib_inputs=5000)
    assert "below 98.00% for 1 of 2 members on 500 held-out inputs: 'a' 97.10% (below), 'b' 98.20%;" in text
    assert "int8_calibration=percentile or int8_calibration=entropy; this export used minmax" in text
    assert "int8_reduce_range=False" in text and "int8_reduce_range=True" not in text
    assert "max_calib_samples=5000; 1024 of 5000 were used" in text
    assert text.endswith("or precision=fp16")


def test_bad_int8_options_are_refused_before_work(tmp_path: Path, mlps) -> None:
    members, calib = mlps
    with pytest.raises(BadInputError, match="int8_calibration: 'kl' is not an INT8 calibration method"):
        export_bundle(members, tmp_path / "b", input_shape=SHAPE, precision="int8", calib_data=calib,
                      int8_calibration="kl")
    with pytest.raises(BadInputError, match="max_calib_samples must be positive"):
        export_bundle(members, tmp_path / "b", input_shape=SHAPE, precision="int8", calib_data=calib,
                      max_calib_samples=0)
    assert not (tmp_path / "b").exists()
