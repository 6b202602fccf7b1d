"""``wcx monitor``, ``wcx run --monitor`` and ``wcx calibrate --recertify`` on a small real
bundle: the library calls behind them, their reports, exit codes and what they write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import wcx
from tests.bundle_factory import labelled_data
from wcx.bundle import Bundle
from wcx.cli import app


@pytest.fixture
def calibrated(mlp_bundle: Bundle, tmp_path: Path) -> Bundle:
    b = Bundle.load(shutil.copytree(mlp_bundle.path, tmp_path / "b"))
    ds = labelled_data(b, 2000, 0)
    np.savez(tmp_path / "val.npz", x=ds.x, y=ds.y)
    wcx.calibrate(b, tmp_path / "val.npz", risk=0.3, delta=0.2, n_boot=0)
    return Bundle.load(b.path)


def _stream(bundle: Bundle, path: Path, *, seed: int, n: int = 2000, power: float = 1.0) -> Path:
    ds = labelled_data(bundle, n, seed)
    np.savez(path, x=(ds.x ** power).astype(np.float32), y=ds.y)
    return path


def test_monitor_is_quiet_on_a_stream_like_the_calibration_data(calibrated: Bundle, tmp_path: Path) -> None:
    stream = _stream(calibrated, tmp_path / "s.npz", seed=7)
    res = CliRunner().invoke(app, ["monitor", str(calibrated.path), "--data", str(stream), "--json",
                                   str(tmp_path / "m.json"), "--state", str(tmp_path / "state.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["n_seen"] == 2000 and report["alarms"] == [] and report["first_alarm_at"] is None
    assert report["selective_risk"]["labelled_accepted"] > 0  # labels in the file are matched
    assert "no alarm" in res.output
    # resumed from the state file, the count goes on
    res = CliRunner().invoke(app, ["monitor", str(calibrated.path), "--data", str(stream), "--state",
                                   str(tmp_path / "state.json"), "--json", str(tmp_path / "m2.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "m2.json").read_text())["n_seen"] == 4000


def test_monitor_alarms_on_a_shifted_stream_and_run_reports_it(calibrated: Bundle, tmp_path: Path) -> None:
    stream = _stream(calibrated, tmp_path / "s.npz", seed=8, power=3.0)  # darker inputs
    res = CliRunner().invoke(app, ["monitor", str(calibrated.path), "--data", str(stream), "--batch-size", "32",
                                   "--json", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["alarmed"] and report["first_alarm_at"] <= 1000
    assert "drift:" in res.output and "--recertify" in res.output.replace("\n", " ")
    res = CliRunner().invoke(app, ["run", str(calibrated.path), "--data", str(stream), "--out", str(tmp_path / "o.npz"),
                                   "--monitor", "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["monitor"]["alarmed"] and summary["monitor"]["n_seen"] == 2000


def test_monitor_refuses_a_calibration_without_reference_rates(calibrated: Bundle, tmp_path: Path) -> None:
    manifest = json.loads((calibrated.path / "wcx.json").read_text())
    del manifest["calibration"]["reference"]
    (calibrated.path / "wcx.json").write_text(json.dumps(manifest))
    stream = _stream(calibrated, tmp_path / "s.npz", seed=7, n=100)
    res = CliRunner().invoke(app, ["monitor", str(calibrated.path), "--data", str(stream)])
    assert res.exit_code == 2 and "re-calibrate" in res.output


def test_recertify_keeps_the_windows_and_the_history(calibrated: Bundle, tmp_path: Path) -> None:
    before = Bundle.load(calibrated.path)
    assert before.policy is not None and before.calibration is not None
    new = _stream(calibrated, tmp_path / "new.npz", seed=21)  # a seed the noisy toy certifies on
    res = CliRunner().invoke(app, ["calibrate", str(calibrated.path), "--recertify", "--data", str(new),
                                   "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    after = Bundle.load(calibrated.path)
    assert after.policy is not None and after.calibration is not None
    assert after.policy.policy.to_dict() == before.policy.policy.to_dict()  # the same windows
    assert after.calibration.certified and after.calibration.n_certify == 2000
    (entry,) = after.calibration.history
    assert entry["policy"]["tau"] == before.policy.tau
    assert entry["calibration"]["n_certify"] == before.calibration.n_certify
    assert after.calibration.reference is not None and after.calibration.reference.n == 2000
    assert json.loads((tmp_path / "r.json").read_text())["previous_tau"] == before.policy.tau


def test_recertify_that_certifies_nothing_exits_1_and_changes_nothing(calibrated: Bundle, tmp_path: Path) -> None:
    ds = labelled_data(calibrated, 1500, 9, flip=0.6)  # far above the 30% target
    np.savez(tmp_path / "bad.npz", x=ds.x, y=ds.y)
    manifest = (calibrated.path / "wcx.json").read_bytes()
    res = CliRunner().invoke(app, ["calibrate", str(calibrated.path), "--recertify", "--data",
                                   str(tmp_path / "bad.npz"), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 1, res.output
    assert "unchanged" in res.output
    assert (calibrated.path / "wcx.json").read_bytes() == manifest
    assert json.loads((tmp_path / "r.json").read_text())["manifest_written"] is False


def test_the_cli_horizon_default_is_the_monitors() -> None:
    """The CLI spells the default out (importing the monitor at start-up would load scipy)."""
    import typer

    from wcx.cli import app
    from wcx.runtime.monitor import DEFAULT_HORIZON

    params = {p.name: p.default for p in typer.main.get_command(app).commands["monitor"].params}
    assert params["horizon"] == DEFAULT_HORIZON
