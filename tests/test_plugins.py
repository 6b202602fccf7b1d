"""Extending wcx without editing it: a toy score and a toy backend (tests/plugin_toy.py),
registered through the public API, run a calibrated cascade; registered through entry points,
another process (the ``wcx`` command line) finds them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.bundle_factory import labelled_data
from tests.plugin_toy import TOY_BACKEND, MarginScore
from wcx.bundle import Bundle
from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.held_out import calibrate_bundle, run_members
from wcx.calibration.simulator import simulate_cascade
from wcx.core.scores import SCORE_REGISTRY, register_score
from wcx.runtime.backends import BACKEND_REGISTRY, register_backend
from wcx.runtime.cascade import Cascade

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def registered() -> Iterator[None]:
    register_score(MarginScore())
    register_backend(TOY_BACKEND)
    try:
        yield
    finally:
        SCORE_REGISTRY.unregister("margin")
        BACKEND_REGISTRY.unregister("numpy_mlp")


def test_toy_score_and_backend_run_a_calibrated_cascade(registered, mlp_bundle: Bundle, copy_bundle) -> None:
    b = copy_bundle(mlp_bundle)
    calib, test = labelled_data(b, 3000, 0), labelled_data(b, 500, 1)
    done = calibrate_bundle(b, calib, CascadeCalibrator(score="margin", risk=0.2), backend="numpy_mlp",
                            test=test)
    assert done.report["manifest_written"]
    reloaded = Bundle.load(b.path)
    assert reloaded.policy is not None and reloaded.policy.score == "margin"
    assert reloaded.calibration is not None and reloaded.calibration.backend == "numpy_mlp"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it runs what was calibrated: no mismatch warning
        cascade = Cascade.load(reloaded, strict=True)  # "auto" picks the calibrated toy backend
    with cascade:
        assert cascade.backend == "numpy_mlp" and cascade.score_name == "margin"
        out = cascade(test.x)
    z = run_members(reloaded, test.x, backend="numpy_mlp", cache=False).logits
    sim = simulate_cascade(z, reloaded.policy.policy, "margin", tau=reloaded.policy.tau)
    np.testing.assert_array_equal(out.exit_stage, sim.exit_stage)
    np.testing.assert_array_equal(out.accept, sim.accept)
    assert 0.0 < out.pass_fraction[1] < 1.0
    # the toy backend computes what ONNX Runtime computes, so the logits agree
    np.testing.assert_allclose(z, run_members(reloaded, test.x, cache=False).logits, rtol=1e-4, atol=1e-4)


def test_registration_errors(registered) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_score(type("Other", (MarginScore,), {})())
    with pytest.raises(TypeError):
        register_backend("numpy_mlp")  # type: ignore[arg-type]


def test_entry_points_reach_the_command_line(mlp_bundle: Bundle, copy_bundle, tmp_path: Path) -> None:
    # An installed distribution that declares the toy score and backend as entry points.
    dist = tmp_path / "site" / "toy_wcx_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-wcx-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[wcx.scores]\nmargin = tests.plugin_toy:MarginScore\n\n"
        "[wcx.backends]\nnumpy_mlp = tests.plugin_toy:TOY_BACKEND\n"
    )
    b = copy_bundle(mlp_bundle)
    data = labelled_data(b, 3000, 2)
    np.savez(tmp_path / "calib.npz", x=data.x, y=data.y)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)])}
    cmd = [sys.executable, "-m", "wcx.cli", "calibrate", str(b.path), "--data", str(tmp_path / "calib.npz"),
           "--backend", "numpy_mlp", "--score", "margin", "--risk", "0.2", "--json", str(tmp_path / "r.json")]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["score"] == "margin" and report["backend"] == "numpy_mlp"
    helped = subprocess.run([sys.executable, "-m", "wcx.cli", "run", "--help"], capture_output=True, text=True,
                            env={**env, "COLUMNS": "200"}, cwd=tmp_path)
    assert "numpy_mlp" in helped.stdout
