"""export_bundle end to end: manifest contents, checks, failures, atomic writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from tests.export import models as M
from wcx.bundle import Bundle, sha256_file
from wcx.errors import BadInputError, MissingDependencyError, WorkFailedError
from wcx.export import exporter as exporter_module
from wcx.export.exporter import FP16_NOTE, Tolerances, export_bundle
from wcx.export.inputs import preprocess
from wcx.export.parity import run_onnx

ROOT = Path(__file__).resolve().parents[2]


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_manifest_records_everything(fp32_mixed) -> None:
    b, report = fp32_mixed.bundle, fp32_mixed.report
    assert [m.name for m in b.members] == ["digits_cnn", "traced_small", "wide"]  # order kept
    assert [r.kind for r in report.members] == ["callable", "torchscript", "onnx"]
    for m in b.members:
        assert m.input.shape == (1, 8, 8) and m.input.dtype == "float32" and m.precision == "fp32"
        assert m.num_classes == 10 and m.macs > 0
        assert (m.input.mean, m.input.std) == ((0.30,), (0.38,))
        assert m.export_report["checks"]["fp32"]["passed"] is True
    prov = b.manifest.export
    assert prov["torch"] == torch.__version__ and prov["onnx"] == onnx.__version__
    assert prov["wcx"] and prov["onnxruntime"]
    opts = prov["export_options"]
    assert opts["precision"] == "fp32" and opts["input_shape"] == [1, 8, 8] and opts["opset"] == 17
    assert opts["calib_data"]["n"] == 500 and opts["eval_data"]["n"] == 297
    json.dumps(report.to_dict())  # serialisable


def test_torch_source_only_for_callables_and_rebuilds(fp32_mixed, digits_files) -> None:
    from safetensors.torch import load_file

    b = fp32_mixed.bundle
    src = b.members[0].torch_source
    assert src is not None and src.callable == "tests.export.models:digits_cnn"
    assert src.file == "members/digits_cnn.safetensors"
    assert src.sha256 == sha256_file(b.file(src.file))
    assert b.members[1].torch_source is None and b.members[2].torch_source is None
    model = M.small_cnn()  # same architecture, other weights: the saved ones must take over
    model.load_state_dict(load_file(str(b.file(src.file))))
    x = preprocess(digits_files.x_eval[:50], M.MEAN, M.STD)
    with torch.no_grad():
        eager = model(torch.from_numpy(x)).numpy()
    assert np.abs(eager - run_onnx(b.member_path(0), x)).max() < 1e-4


def test_fp32_parity_is_within_1e4(fp32_mixed) -> None:
    for m in fp32_mixed.report.members[:2]:  # the torch members
        fp32 = m.checks["fp32"]
        assert fp32["max_abs_diff"] < 1e-4
        assert fp32["random"]["top1_agreement"] == 1.0 and fp32["data"]["top1_agreement"] == 1.0
    trained = fp32_mixed.report.members[0].checks["fp32"]["data"]
    assert trained["reference_accuracy"] > 0.85  # a real, trained model


def test_fp16_report_says_what_the_cpu_check_measures(fp16_bundle) -> None:
    check = fp16_bundle.report.members[0].checks["fp16"]
    assert check["passed"] and check["data"]["top1_agreement"] >= 0.99
    assert check["note"] == FP16_NOTE and "not FP16 arithmetic" in FP16_NOTE
    assert FP16_NOTE in fp16_bundle.report.notes
    assert fp16_bundle.bundle.members[0].precision == "fp16"


def test_int8_agreement_on_held_back_data(int8_bundle) -> None:
    for m in int8_bundle.report.members:
        check = m.checks["int8"]
        assert check["passed"] and check["eval"]["top1_agreement"] >= 0.98
        assert check["eval"]["n"] == 100 and check["range_samples"] == 400
        assert "held back" in check["eval_data"]
        assert check["eval"]["reference_accuracy"] is not None
        assert check["eval"]["candidate_accuracy"] is not None
        extra = check["quantization"]["extra_options"]
        assert {k: extra[k] for k in ("ActivationSymmetric", "WeightSymmetric", "QuantizeBias")} == {
            "ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
        }
        assert "CalibMaxIntermediateOutputs" not in extra  # it discards what was collected
    assert int8_bundle.report.members[0].checks["int8"]["eval"]["reference_accuracy"] > 0.85


def test_int8_graphs_have_no_qdq_pattern_tensorrt_rejects(int8_bundle) -> None:
    import onnx

    from wcx.export.engine_compat import trt_unsupported_qdq

    for i in range(len(int8_bundle.bundle.members)):
        model = onnx.load(str(int8_bundle.bundle.member_path(i)))
        assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
        assert trt_unsupported_qdq(model) == []


def test_int8_with_eval_data(tmp_path: Path, digits_files) -> None:
    report = export_bundle(["tests.export.models:small_cnn"], tmp_path / "b", input_shape=M.INPUT_SHAPE,
                           precision="int8", calib_data=digits_files.calib, eval_data=digits_files.eval,
                           mean=M.MEAN, std=M.STD)
    check = report.members[0].checks["int8"]
    assert check["eval"]["n"] == 297 and check["range_samples"] == 500
    assert str(digits_files.eval) in check["eval_data"]


def test_one_precision_per_member(tmp_path: Path, digits_files) -> None:
    """A pool holding one model at two precisions (for wcx plan): each member is built and
    checked at its own precision, the manifest and the provenance say which is which."""
    from wcx.bundle import Bundle

    report = export_bundle(["tests.export.models:small_cnn"] * 3, tmp_path / "b", input_shape=M.INPUT_SHAPE,
                           precision="fp32,int8,fp16", names=["cnn", "cnn_int8", "cnn_fp16"],
                           calib_data=digits_files.calib, mean=M.MEAN, std=M.STD)
    assert report.precision == "fp32,int8,fp16"
    assert [sorted(k for k in ("fp16", "int8") if k in m.checks) for m in report.members] == [[], ["int8"], ["fp16"]]
    bundle = Bundle.load(tmp_path / "b")
    assert [m.precision for m in bundle.members] == ["fp32", "int8", "fp16"]
    assert [m.quantization is not None for m in bundle.members] == [False, True, False]
    assert report.provenance["export_options"]["precision"] == ["fp32", "int8", "fp16"]
    assert report.provenance["export_options"]["int8_calibration"] is not None


@pytest.mark.parametrize("precision, message", [("fp32,int8", "one per model"), ("fp32,int4,fp16", "'int4'"),
                                                ("bf16", "'bf16'")])
def test_bad_precision_lists_are_refused_before_any_work(tmp_path: Path, precision: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        export_bundle(["tests.export.models:small_cnn"] * 3, tmp_path / "b", input_shape=M.INPUT_SHAPE,
                      precision=precision, names=["a", "b", "c"])
    assert not (tmp_path / "b").exists()


def test_parity_failure_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out" / "bundle"
    with pytest.raises(WorkFailedError, match="differs from PyTorch"):
        export_bundle(["tests.export.models:small_cnn", "tests.export.models:diverging_cnn"], out,
                      input_shape=M.INPUT_SHAPE)
    assert _leftovers(out.parent) == []


def test_altered_onnx_graph_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = exporter_module.export_onnx

    def export_then_alter(module, path, **kwargs):
        used = real(module, path, **kwargs)
        model = onnx.load(str(path))
        bias = next(i for i in model.graph.initializer if i.name.endswith("head.bias"))
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(1e-3), bias.name))
        onnx.save(model, str(path))
        return used

    monkeypatch.setattr(exporter_module, "export_onnx", export_then_alter)
    with pytest.raises(WorkFailedError, match="max abs diff 0.001"):
        export_bundle(["tests.export.models:small_cnn"], tmp_path / "b", input_shape=M.INPUT_SHAPE)
    assert not (tmp_path / "b").exists()


def test_interrupted_export_leaves_no_bundle_and_no_temp(tmp_path: Path, monkeypatch, digits_files) -> None:
    from wcx.export import float_fallback

    real = float_fallback.quantize_int8
    calls = []

    def fail_on_second_member(src, *args, **kwargs):
        calls.append(Path(src).name)
        if "wide_cnn" in Path(src).name:
            raise WorkFailedError("simulated failure in the INT8 step")
        return real(src, *args, **kwargs)

    # the default (int8_float_layers="auto") quantizes through the float-layer search
    monkeypatch.setattr(float_fallback, "quantize_int8", fail_on_second_member)
    out = tmp_path / "parent" / "bundle"
    with pytest.raises(WorkFailedError, match="simulated"):
        export_bundle(["tests.export.models:small_cnn", "tests.export.models:wide_cnn"], out,
                      input_shape=M.INPUT_SHAPE, precision="int8", calib_data=digits_files.calib)
    assert any("small_cnn" in c for c in calls) and "wide_cnn" in calls[-1]
    assert _leftovers(out.parent) == []


def test_existing_out_and_overwrite(tmp_path: Path, model_files) -> None:
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(BadInputError, match="already exists"):
        export_bundle([model_files["onnx"]], out, input_shape=M.INPUT_SHAPE)
    # overwrite replaces a wcx bundle only: a folder of other files is refused and left as it was
    with pytest.raises(BadInputError, match="not a valid wcx bundle"):
        export_bundle([model_files["onnx"]], out, input_shape=M.INPUT_SHAPE, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    export_bundle([model_files["onnx"]], tmp_path / "first", input_shape=M.INPUT_SHAPE, names=["old"])
    seen = []
    report = export_bundle([model_files["onnx"]], tmp_path / "first", input_shape=M.INPUT_SHAPE, overwrite=True,
                           progress=lambda done, name: seen.append((done, name)))
    assert Bundle.load(tmp_path / "first").members[0].name == "wide"
    assert seen == [(0, "wide"), (1, "")]
    assert report.members[0].exporter is None and report.members[0].checks["fp32"]["passed"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging leftovers"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "int4"}, "not one of"),
        ({"input_shape": (1, 8)}, "three positive integers"),
        ({"precision": "int8"}, "needs calib_data"),
        ({"names": ["a", "b"]}, "2 names for 1 models"),
        ({"names": ["../x"]}, "not a valid member name"),
        ({"mean": [0.1, 0.2]}, "expected 1 or 1 values"),
        ({"std": [0.0]}, "must be positive"),
        ({"opset": 9}, "too old"),
    ],
)
def test_bad_options(tmp_path: Path, model_files, kwargs, message) -> None:
    args = {"input_shape": M.INPUT_SHAPE, **kwargs}
    with pytest.raises(BadInputError, match=message):
        export_bundle([model_files["onnx"]], tmp_path / "b", **args)
    assert not (tmp_path / "b").exists()


def test_bad_tolerances() -> None:
    with pytest.raises(BadInputError):
        Tolerances(int8_min_agreement=1.5)
    with pytest.raises(BadInputError):
        Tolerances(fp32_max_abs_diff=0)


def test_bad_data_files(tmp_path: Path, model_files) -> None:
    onnx_model = model_files["onnx"]
    np.savez(tmp_path / "shape.npz", x=np.zeros((5, 1, 4, 4), np.float32))
    with pytest.raises(BadInputError, match="does not match"):
        export_bundle([onnx_model], tmp_path / "b", input_shape=M.INPUT_SHAPE, calib_data=tmp_path / "shape.npz")
    np.savez(tmp_path / "labels.npz", x=np.zeros((5, 1, 8, 8), np.float32), y=np.array([0, 1, 2, 3, 12]))
    with pytest.raises(BadInputError, match="label 12 is out of range for the models' 10 classes"):
        export_bundle([onnx_model], tmp_path / "b", input_shape=M.INPUT_SHAPE, eval_data=tmp_path / "labels.npz")
    np.savez(tmp_path / "small.npz", x=np.zeros((30, 1, 8, 8), np.float32))
    with pytest.raises(BadInputError, match="too few"):
        export_bundle([onnx_model], tmp_path / "b", input_shape=M.INPUT_SHAPE, precision="int8",
                      calib_data=tmp_path / "small.npz")
    assert not (tmp_path / "b").exists()


def test_uint8_data_and_onnx_int8_without_torch_model(tmp_path: Path, model_files) -> None:
    x = np.random.default_rng(0).integers(0, 256, (120, 1, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "u8.npz", x=x)
    report = export_bundle([model_files["onnx"]], tmp_path / "b", input_shape=M.INPUT_SHAPE,
                           precision="int8", calib_data=tmp_path / "u8.npz", names=["w"])
    assert report.members[0].checks["int8"]["eval"]["n"] == 24
    assert report.members[0].checks["int8"]["eval"]["reference_accuracy"] is None


def test_onnx_export_works_without_torch(tmp_path: Path, model_files) -> None:
    code = (
        "import sys\n"
        "for name in ('torch', 'safetensors'):\n"
        "    sys.modules[name] = None\n"
        "from wcx.export.exporter import export_bundle\n"
        "from wcx.errors import MissingDependencyError\n"
        f"r = export_bundle([{str(model_files['onnx'])!r}], {str(tmp_path / 'b')!r}, input_shape=(1, 8, 8),"
        " precision='fp16')\n"
        "assert r.provenance['torch'] is None and r.members[0].macs > 0\n"
        "try:\n"
        f"    export_bundle(['tests.export.models:small_cnn'], {str(tmp_path / 'c')!r}, input_shape=(1, 8, 8))\n"
        "except MissingDependencyError as exc:\n"
        "    print('missing:', exc)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "missing: exporting a PyTorch model needs 'torch'" in res.stdout
    assert 'pip install torch==2.13.0 -e ".[export]"' in res.stdout and "pip install wcx" not in res.stdout
    assert Bundle.load(tmp_path / "b").members[0].precision == "fp16"
    assert not (tmp_path / "c").exists()
    assert issubclass(MissingDependencyError, BadInputError)
