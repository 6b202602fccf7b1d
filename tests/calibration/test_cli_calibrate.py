"""`wcx calibrate` from cached logits and from a bundle: outputs, manifest, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wcx.bundle import Bundle
from wcx.cli import app

runner = CliRunner()


def _synthetic_logits(n: int, seed: int, members: int = 2, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Members that share a per-input difficulty, so the ensemble is better than one member."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    margin = rng.gamma(2.0, 1.5, n)
    logits = rng.standard_normal((members, n, k)) * 1.2
    logits[:, np.arange(n), y] += margin
    return logits.astype(np.float32), y


@pytest.fixture
def logits_files(tmp_path: Path) -> tuple[Path, Path]:
    cal, cal_y = _synthetic_logits(4000, 0)
    test, test_y = _synthetic_logits(4000, 1)
    macs = np.array([100.0, 100.0])
    np.savez(tmp_path / "cal.npz", logits=cal, y=cal_y, macs=macs)
    np.savez(tmp_path / "test.npz", logits=test, y=test_y, macs=macs)
    return tmp_path / "cal.npz", tmp_path / "test.npz"


def test_calibrate_from_logits_writes_the_json(logits_files, tmp_path: Path) -> None:
    cal, test = logits_files
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["calibrate", "--logits", str(cal), "--test", str(test), "--risk", "0.1",
                              "--delta", "0.1", "--json", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    for key in ("tau", "windows", "pass_fraction", "expected_macs", "coverage", "risk", "risk_upper_bound",
                "certified", "test"):
        assert key in r
    assert r["certified"] is True
    assert r["risk_upper_bound"] <= 0.1
    assert r["pass_fraction"][0] == 1.0
    assert len(r["windows"]) == 1
    assert set(r["test"]) >= {"coverage", "risk", "pass_fraction"}
    assert r["expected_macs"] == pytest.approx(100 * sum(r["pass_fraction"]))
    assert r["n_boot"] == 100  # the noise-aware search is the default and is recorded
    chosen = r["search"]["chosen"]
    assert chosen["gap"] + chosen["gap_se"] <= r["eps"] + 1e-12


@pytest.mark.parametrize(
    "args, message",
    [
        (["--risk", "1.5"], "risk"),
        (["--risk", "0"], "risk"),
        (["--delta", "2"], "delta"),
        (["--policy", "bogus"], "policy"),
        (["--score", "bogus"], "score"),
        (["--n-boot", "-1"], "--n-boot must be"),  # the library's parameter name, shown as the option
    ],
)
def test_bad_options_exit_2(logits_files, args, message) -> None:
    cal, _ = logits_files
    res = runner.invoke(app, ["calibrate", "--logits", str(cal), *args])
    assert res.exit_code == 2
    assert message in res.output


def test_missing_labels_exit_2(tmp_path: Path) -> None:
    logits, _ = _synthetic_logits(500, 0)
    np.savez(tmp_path / "nolabels.npz", logits=logits)
    res = runner.invoke(app, ["calibrate", "--logits", str(tmp_path / "nolabels.npz")])
    assert res.exit_code == 2
    assert "labels" in res.output


def test_certifying_set_too_small_exit_2(tmp_path: Path) -> None:
    logits, y = _synthetic_logits(100, 0)
    np.savez(tmp_path / "small.npz", logits=logits, y=y)
    res = runner.invoke(app, ["calibrate", "--logits", str(tmp_path / "small.npz"), "--delta", "0.1"])
    assert res.exit_code == 2
    assert "need" in res.output


def test_no_certificate_exit_1_and_json_still_written(tmp_path: Path) -> None:
    # Labels unrelated to the logits: the error rate is ~80%, no threshold can be certified at 1%.
    logits, _ = _synthetic_logits(3000, 0)
    y = np.random.default_rng(5).integers(0, 5, 3000)
    np.savez(tmp_path / "noise.npz", logits=logits, y=y)
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["calibrate", "--logits", str(tmp_path / "noise.npz"), "--risk", "0.01",
                              "--delta", "0.1", "--json", str(out)])
    assert res.exit_code == 1
    assert "no certificate" in res.output
    assert json.loads(out.read_text())["certified"] is False


def test_calibrate_bundle_writes_policy_and_calibration(mlp_bundle: Bundle, copy_bundle, tmp_path: Path) -> None:
    b = copy_bundle(mlp_bundle)
    rng = np.random.default_rng(0)
    x = rng.random((3000, 1, 8, 8), dtype=np.float32)
    # Labels from the ensemble's own argmax with 10% noise: a learnable, imperfect task.
    from wcx.calibration.held_out import collect_logits

    logits = collect_logits(b, x, cache=False)
    y = logits.mean(axis=0).argmax(axis=1)
    flip = rng.random(3000) < 0.1
    y[flip] = rng.integers(0, 4, flip.sum())
    np.savez(tmp_path / "val.npz", x=x[:2000], y=y[:2000])
    np.savez(tmp_path / "test.npz", x=x[2000:], y=y[2000:])
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["calibrate", str(b.path), "--data", str(tmp_path / "val.npz"), "--test",
                              str(tmp_path / "test.npz"), "--risk", "0.1", "--json", str(out),
                              "--report", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    reloaded = Bundle.load(b.path)
    assert reloaded.policy is not None and reloaded.calibration is not None
    assert reloaded.policy.policy.kind == "window"
    assert reloaded.policy.tau == pytest.approx(json.loads(out.read_text())["tau"])
    assert reloaded.calibration.backend == "onnxruntime"
    assert reloaded.calibration.precision == "fp32"
    assert reloaded.calibration.provenance.members[0].onnx_sha256 == reloaded.members[0].sha256
    assert not (b.path / "cache").exists(), "nothing derived from the held-out data ships in the bundle"
    assert sorted(p.name for p in b.path.iterdir()) == ["members", "wcx.json"]
    from wcx.calibration.logits_cache import cache_dir

    assert list(cache_dir().glob("*.npz")), "held-out logits are cached in the user's cache folder"
    assert (tmp_path / "plots" / "risk_coverage.png").is_file()


def test_calibrate_bundle_data_with_wrong_shape_exit_2(mlp_bundle: Bundle, tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", x=np.zeros((10, 3, 8, 8), np.float32), y=np.zeros(10, np.int64))
    res = runner.invoke(app, ["calibrate", str(mlp_bundle.path), "--data", str(tmp_path / "bad.npz")])
    assert res.exit_code == 2
    assert "sample shape" in res.output
