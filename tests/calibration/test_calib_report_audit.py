"""Report plots and the audit tool (smoke tests: files written, JSON shape, exit codes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.report import write_report

ROOT = Path(__file__).resolve().parents[2]


def _logits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    margin = 1.6 * rng.gamma(2.0, 1.0, n)[:, None] * np.eye(4)[y]
    shared = rng.normal(size=(n, 4))
    return np.stack([margin + shared + 0.9 * rng.normal(size=(n, 4)) for _ in range(2)]), y


def test_report_writes_pngs(tmp_path: Path) -> None:
    z, y = _logits(1000)
    cal = CascadeCalibrator(risk=0.05).fit(z, y, member_costs=[1e6, 1e6])
    paths = write_report(cal, z, y, tmp_path / "report")
    assert sorted(p.name for p in paths) == ["cost_quality.png", "risk_coverage.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_audit_tool(tmp_path: Path) -> None:
    z, y = _logits(1200, seed=1)
    npz = tmp_path / "logits.npz"
    np.savez(npz, logits=z, y=y)
    out = tmp_path / "audit.json"
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "audit_guarantee.py"),
        str(npz),
        "--splits",
        "4",
        "--width-grid",
        "0,0.1,1",
        "--json",
        str(out),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "violation rate" in run.stdout
    summary = json.loads(out.read_text())
    assert summary["splits"] == 4
    for mode in ("empirical", "guaranteed"):
        assert set(summary[mode]) >= {"violation_rate", "mean_coverage"}
    bad = subprocess.run(cmd[:2] + [str(npz), "--risk", "2"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "risk must be in (0, 1)" in bad.stderr
