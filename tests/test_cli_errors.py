"""Errors: OS errors as one line with the right exit code and nothing half-written (faults are
injected: permissions do not stop root), tool logs summarised, no colour codes off a terminal,
one warning per condition, calibration JSON written when the data are too few, and a certified
calibration only replaced on request."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.bundle_factory import labelled_data
from tests.runtime.conftest import calibration_for, with_policy
from wcx.bundle import MANIFEST_NAME, Bundle
from wcx.cli import app, os_error_exit
from wcx.errors import WriteFailedError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def policy_bundle(mlp_bundle: Bundle, tmp_path: Path) -> Bundle:
    return with_policy(mlp_bundle, tmp_path / "policy_bundle")


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.random((120, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 4, 120))
    return tmp_path / "data.npz"


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# OS errors in the write path: exit 1, one line, nothing half-written
# ---------------------------------------------------------------------------------------------
def test_full_disk_while_writing_predictions(policy_bundle: Bundle, data_file: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def savez(fh: Any, **arrays: Any) -> None:
        fh.write(b"PK half an archive")
        raise _fail(errno.ENOSPC)

    monkeypatch.setattr(np, "savez", savez)
    out = tmp_path / "out" / "p.npz"
    res = runner.invoke(app, ["run", str(policy_bundle.path), "--data", str(data_file), "--out", str(out)])
    assert res.exit_code == 1
    line = _one_error_line(res.output)
    assert f"could not write {out}: No space left on device; nothing was written" in line
    assert not out.exists() and _hidden(out.parent) == []


def test_read_only_file_system_while_calibrating(policy_bundle: Bundle, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    data = labelled_data(policy_bundle, 400, 0)
    np.savez(tmp_path / "val.npz", x=data.x, y=data.y)
    manifest_before = (policy_bundle.path / MANIFEST_NAME).read_bytes()

    def mkstemp(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(kwargs.get("dir")))

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    res = runner.invoke(app, ["calibrate", str(policy_bundle.path), "--data", str(tmp_path / "val.npz"),
                              "--risk", "0.3", "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 1
    assert "Read-only file system; nothing was written" in _one_error_line(res.output)
    assert (policy_bundle.path / MANIFEST_NAME).read_bytes() == manifest_before
    assert not (tmp_path / "r.json").exists()


def test_permission_denied_while_writing_json(mlp_bundle: Bundle, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.replace

    def replace(a: Any, b: Any) -> None:
        if str(b).endswith("i.json"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(b))
        real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    res = runner.invoke(app, ["inspect", str(mlp_bundle.path), "--json", str(tmp_path / "i.json")])
    assert res.exit_code == 1
    assert "Permission denied; nothing was written" in _one_error_line(res.output)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_writing_a_bundle_leaves_nothing(mlp_bundle: Bundle, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from wcx.bundle import select_members

    real = shutil.copyfile

    def copyfile(src: Any, dst: Any, **kw: Any) -> Any:
        if str(src).endswith("m1.onnx"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, **kw)

    monkeypatch.setattr(shutil, "copyfile", copyfile)
    with pytest.raises(WriteFailedError, match="No space left on device") as exc:
        select_members(mlp_bundle, ["m0", "m1"], tmp_path / "b")
    assert exc.value.exit_code == 1 and exc.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# bad paths: exit 2 before any work
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["directory", "under-a-file"])
def test_run_out_that_cannot_be_a_file_is_exit_2(policy_bundle: Bundle, data_file: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    import wcx.runtime.cascade

    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    out = tmp_path / "dir" if where == "directory" else tmp_path / "file" / "p.npz"

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the cascade must not be loaded for a bad output path")

    monkeypatch.setattr(wcx.runtime.cascade.Cascade, "load", never)
    for args in (["run", str(policy_bundle.path), "--data", str(data_file), "--out", str(out)],
                 ["calibrate", str(policy_bundle.path), "--data", str(data_file), "--json", str(out)]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert "is a directory" in _one_error_line(res.output) or "is not a directory" in res.output


def test_unexpected_os_errors_are_one_line(policy_bundle: Bundle, data_file: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for error, code in ((FileNotFoundError(errno.ENOENT, "No such file or directory", "/gone"), 2),
                        (PermissionError(errno.EACCES, "Permission denied", "/locked"), 1)):
        def fail(*args: Any, _error: OSError = error, **kwargs: Any) -> Any:
            raise _error

        monkeypatch.setattr("wcx.runtime.cli_support.run_on_file", fail)
        res = runner.invoke(app, ["run", str(policy_bundle.path), "--data", str(data_file), "--out",
                                  str(tmp_path / "p.npz")])
        assert res.exit_code == code
        assert _one_error_line(res.output).startswith(f"error: {error.filename}: {error.strerror}")
    assert os_error_exit(IsADirectoryError(errno.EISDIR, "Is a directory", "d")) == ("d: Is a directory", 2)
    assert os_error_exit(OSError(errno.ENOSPC, "No space left on device")) == ("No space left on device", 1)


# ---------------------------------------------------------------------------------------------
# tool logs, colour codes, warnings
# ---------------------------------------------------------------------------------------------
def test_tool_output_is_captured_and_summarised(capfd: pytest.CaptureFixture[str],
                                                caplog: pytest.LogCaptureFixture) -> None:
    from wcx.export.onnx_export import captured_output

    with caplog.at_level("DEBUG", logger="wcx.export.onnx_export"), captured_output("a tool") as lines:
        os.write(2, b"\x1b[96mThis is step 1/3\x1b[0m of something\nW1127 noisy C++ warning\n")
        os.write(1, b"and a line on standard output\n")
    assert capfd.readouterr().err == ""
    assert lines == ["This is step 1/3 of something", "W1127 noisy C++ warning", "and a line on standard output"]
    infos = [r for r in caplog.records if r.levelname == "INFO"]
    assert len(infos) == 1 and "a tool wrote 3 log lines" in infos[0].getMessage()
    assert any(r.levelname == "DEBUG" and "noisy C++ warning" in r.getMessage() for r in caplog.records)


def test_bad_input_shape_for_the_model_is_one_plain_line_exit_2(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    res = subprocess.run([sys.executable, "-m", "wcx.cli", "export", "tests.export.models:small_cnn",
                          "--input-shape", "3,32,32", "--out", str(tmp_path / "b")],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "\x1b[" not in res.stderr and "Traceback" not in res.stderr
    assert "--input-shape 3,32,32 does not fit the model" in res.stderr
    assert not (tmp_path / "b").exists()


def test_one_warning_per_condition(policy_bundle: Bundle, data_file: Path, tmp_path: Path) -> None:
    policy_bundle.update_sections(calibration=calibration_for(policy_bundle, precision="fp16"))
    for args in (["run", str(policy_bundle.path), "--data", str(data_file), "--out", str(tmp_path / "p.npz")],
                 ["bench", str(policy_bundle.path), "--data", str(data_file), "--batch-size", "1,2,4",
                  "--repeats", "1", "--warmup", "0"]):
        res = subprocess.run([sys.executable, "-m", "wcx.cli", *args], capture_output=True, text=True, cwd=ROOT)
        assert res.returncode == 0, res.stderr
        warnings = [line for line in res.stderr.splitlines() if "warning" in line.lower()]
        assert len(warnings) == 1, res.stderr
        assert warnings[0].startswith("warning: ") and "precision fp16 -> fp32" in warnings[0]
        assert "\x1b[" not in res.stderr and "Cascade.load(" not in res.stderr  # no source line


# ---------------------------------------------------------------------------------------------
# calibration outcomes
# ---------------------------------------------------------------------------------------------
def test_too_few_inputs_for_a_certificate_writes_the_json(mlp_bundle: Bundle, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import wcx.calibration.held_out as held_out

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "small.npz", x=rng.random((20, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 4, 20))

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("members must not run when the data are too few")

    monkeypatch.setattr(held_out, "run_members", never)
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["calibrate", str(mlp_bundle.path), "--data", str(tmp_path / "small.npz"),
                              "--risk", "0.05", "--delta", "0.1", "--json", str(out)])
    assert res.exit_code == 2
    assert "at least 133 held-out inputs" in _one_error_line(res.output)
    report = json.loads(out.read_text())
    assert report["n_needed"] == 133 and report["n"] == 20 and report["certified"] is False
    assert report["reason"] == "too_few_inputs" and report["manifest_written"] is False
    assert "--fit-fraction" in report["error"]


def test_a_certified_calibration_is_replaced_only_on_request(mlp_bundle: Bundle, tmp_path: Path) -> None:
    b = Bundle.load(shutil.copytree(mlp_bundle.path, tmp_path / "b"))
    big = labelled_data(b, 2000, 1, flip=0.02)
    np.savez(tmp_path / "val.npz", x=big.x, y=big.y)
    np.savez(tmp_path / "tiny.npz", x=big.x[:20], y=big.y[:20])
    res = runner.invoke(app, ["calibrate", str(b.path), "--data", str(tmp_path / "val.npz"), "--risk", "0.2",
                              "--delta", "0.1"])
    assert res.exit_code == 0, res.output
    certified = (b.path / MANIFEST_NAME).read_bytes()
    assert json.loads(certified)["calibration"]["certified"] is True
    res = runner.invoke(app, ["calibrate", str(b.path), "--data", str(tmp_path / "tiny.npz"), "--risk", "0.2"])
    assert res.exit_code == 2
    assert "--replace-certified" in _one_error_line(res.output)
    assert (b.path / MANIFEST_NAME).read_bytes() == certified
    res = runner.invoke(app, ["calibrate", str(b.path), "--data", str(tmp_path / "tiny.npz"), "--risk", "0.2",
                              "--replace-certified"])
    assert res.exit_code == 0, res.output
    assert json.loads((b.path / MANIFEST_NAME).read_text())["calibration"]["mode"] == "empirical"
