"""``wcx export``: options reach the library, results and errors are rendered, exit codes (0/1/2)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.bundle_factory import make_mlp_onnx
from wcx import cli
from wcx.bundle import Bundle
from wcx.export import exporter as exporter_module

runner = CliRunner()
SHAPE = "1,8,8"


@pytest.fixture
def mlp_onnx(tmp_path: Path) -> Path:
    """A small ONNX classifier on (1, 8, 8) inputs, 4 classes (no torch needed)."""
    return make_mlp_onnx(tmp_path / "mlp.onnx")


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args: list[str]) -> tuple[int, str]:
    """Run the real entry point (with its error boundary); return (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["wcx", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    return int(exc.value.code or 0), capsys.readouterr().err


def test_help_explains_every_option_and_warns_about_code() -> None:
    res = runner.invoke(cli.app, ["export", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    text = " ".join(res.output.replace("│", " ").split())
    for option in ("--input-shape", "--out", "--precision", "--calib-data", "--eval-data", "--names", "--opset",
                   "--max-batch", "--mean", "--std", "--fp32-atol", "--fp16-min-agreement",
                   "--int8-min-agreement", "--holdout", "--int8-reduce-range", "--int8-calibration",
                   "--int8-calib-samples", "--parity-samples", "--seed",
                   "--overwrite", "--json"):
        assert option in text, option
    assert "RUNS THAT CODE" in text and "not FP16 arithmetic" in text
    assert "[default: fp32]" in text and "[default: 0.98]" in text


def test_options_reach_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {}

    def fake_export(models, out, **kwargs):
        calls.update(models=models, out=out, **kwargs)
        return exporter_module.ExportReport(bundle=str(out), precision=kwargs["precision"], members=[],
                                            provenance={}, notes=["a note"], seconds=0.0)

    monkeypatch.setattr(exporter_module, "export_bundle", fake_export)
    res = runner.invoke(cli.app, [
        "export", "a.onnx", "pkg.mod:fn", "--input-shape", "3,32,32", "--out", str(tmp_path / "b"),
        "--precision", "int8", "--names", "s1, s2", "--mean", "0.4,0.5,0.6", "--std", "0.2",
        "--int8-min-agreement", "0.95", "--opset", "18", "--max-batch", "32", "--holdout", "0.3",
        "--int8-reduce-range", "--int8-calibration", "entropy", "--int8-calib-samples", "300",
        "--json", str(tmp_path / "r.json"),
    ])
    assert res.exit_code == 0, res.output
    assert calls["models"] == ["a.onnx", "pkg.mod:fn"] and calls["out"] == tmp_path / "b"
    assert calls["input_shape"] == [3, 32, 32] and calls["names"] == ["s1", "s2"]
    assert calls["mean"] == [0.4, 0.5, 0.6] and calls["std"] == [0.2]
    assert calls["tolerances"].int8_min_agreement == 0.95 and calls["tolerances"].fp32_max_abs_diff == 1e-4
    assert calls["opset"] == 18 and calls["max_batch"] == 32 and calls["holdout_fraction"] == 0.3
    assert calls["int8_reduce_range"] is True and calls["overwrite"] is False
    assert calls["int8_calibration"] == "entropy" and calls["max_calib_samples"] == 300
    assert "progress" not in calls  # no progress bar when stderr is not a terminal
    assert json.loads((tmp_path / "r.json").read_text())["notes"] == ["a note"]
    assert "a note" in res.output


def test_export_onnx_model_end_to_end(tmp_path: Path, mlp_onnx: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "eval.npz", x=rng.random((50, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 4, 50))
    out = tmp_path / "bundle"
    res = runner.invoke(cli.app, [
        "export", str(mlp_onnx), "--input-shape", SHAPE, "--out", str(out), "--precision", "fp16",
        "--eval-data", str(tmp_path / "eval.npz"), "--mean", "0.5", "--std", "0.25", "--json", str(tmp_path / "r.json"),
    ], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert Bundle.load(out).members[0].precision == "fp16"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["members"][0]["checks"]["fp16"]["passed"] is True
    assert "not FP16 arithmetic" in res.output


def test_bad_input_exits_2_with_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    code, err = _main(monkeypatch, capsys, ["export", str(tmp_path / "missing.onnx"), "--input-shape", SHAPE,
                                            "--out", str(tmp_path / "b")])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no such ONNX file" in err
    code, err = _main(monkeypatch, capsys, ["export", "x:y", "--input-shape", "1,8", "--out", str(tmp_path / "b")])
    assert code == 2 and "three positive integers" in err and "Traceback" not in err
    code, err = _main(monkeypatch, capsys, ["export", "x:y", "--input-shape", SHAPE, "--out", str(tmp_path / "b"),
                                            "--mean", "a,b"])
    assert code == 2 and "--mean" in err
    assert not (tmp_path / "b").exists()


def test_bad_data_exits_2(tmp_path: Path, monkeypatch, capsys, mlp_onnx: Path) -> None:
    import numpy as np

    np.savez(tmp_path / "nan.npz", x=np.full((4, 1, 8, 8), np.nan, np.float32))
    code, err = _main(monkeypatch, capsys, ["export", str(mlp_onnx), "--input-shape", SHAPE,
                                            "--out", str(tmp_path / "b"), "--calib-data", str(tmp_path / "nan.npz")])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "NaN" in err and "nan.npz" in err


def test_parity_failure_exits_1(tmp_path: Path, monkeypatch, capsys) -> None:
    code, err = _main(monkeypatch, capsys, ["export", "tests.export.models:diverging_cnn", "--input-shape", SHAPE,
                                            "--out", str(tmp_path / "b")])
    assert code == 1 and len(err.strip().splitlines()) == 1 and "differs from PyTorch" in err
    assert not (tmp_path / "b").exists()


def test_int8_defaults_are_the_library_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    calls = {}

    def fake_export(models, out, **kwargs):
        calls.update(kwargs)
        return exporter_module.ExportReport(bundle=str(out), precision="int8", members=[], provenance={}, notes=[],
                                            seconds=0.0)

    defaults = {k: v.default for k, v in inspect.signature(exporter_module.export_bundle).parameters.items()}
    monkeypatch.setattr(exporter_module, "export_bundle", fake_export)
    res = runner.invoke(cli.app, ["export", "a.onnx", "--input-shape", SHAPE, "--out", str(tmp_path / "b"),
                                  "--precision", "int8"])
    assert res.exit_code == 0, res.output
    for name in ("int8_reduce_range", "int8_calibration", "max_calib_samples"):
        assert calls[name] == defaults[name], name
    assert calls["int8_reduce_range"] is False


def test_int8_refusal_exits_1_and_names_remedies_as_options(tmp_path: Path, monkeypatch, capsys) -> None:
    import numpy as np

    members = [str(make_mlp_onnx(tmp_path / f"m{i}.onnx", seed=i)) for i in range(2)]
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((200, 1, 8, 8), dtype=np.float32))
    code, err = _main(monkeypatch, capsys, ["export", *members, "--input-shape", SHAPE, "--out", str(tmp_path / "b"),
                                            "--precision", "int8", "--calib-data", str(tmp_path / "calib.npz"),
                                            "--int8-min-agreement", "1.0", "--int8-reduce-range",
                                            "--int8-calibration", "percentile", "--int8-float-layers", "none"])
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "'m0' " in err and "'m1' " in err and "(below)" in err
    for flag in ("--int8-calibration minmax", "--int8-calibration entropy", "--no-int8-reduce-range",
                 "--int8-float-layers auto", "--calib-data", "--precision fp16"):
        assert flag in err, flag
    assert "int8_" not in err  # no library parameter names
    assert not (tmp_path / "b").exists()
