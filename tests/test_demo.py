"""``wcx demo``: runs offline on the shipped zoo into a folder, and agrees with the benchmark.

The full run uses few benchmark repeats (a library option) so it stays well under a minute; it
is skipped, with the reason, where the zoo bundles are not built (tools/export_zoo.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from wcx.bundle import Bundle
from wcx.zoo.experiment import zoo_bundle_path

ZOO_MISSING = not (zoo_bundle_path("fp32") / "wcx.json").is_file()
needs_zoo = pytest.mark.skipif(ZOO_MISSING, reason="the zoo bundles are not built (run tools/export_zoo.py)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from wcx.demo import run_demo

    return run_demo(tmp_path_factory.mktemp("demo") / "out", repeats=2, warmup=1)


@needs_zoo
def test_demo_writes_bundle_plots_and_results(demo: Any) -> None:
    out: Path = demo.out_dir
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"demo", "calibration", "bench", "table"}

    cal = results["calibration"]
    assert cal["policy"] == "window" and cal["mode"] == "guaranteed" and cal["delta"] == 0.1
    assert cal["target_risk"] == 0.05 and cal["certified"] is True
    assert cal["risk_upper_bound"] <= 0.05
    assert cal["test"]["n"] == 5000 and 0.0 < cal["test"]["coverage"] <= 1.0
    assert cal["manifest_written"] is True and cal["backend"] == "onnxruntime"

    bundle = Bundle.load(out / "bundle")
    assert [m.name for m in bundle.members] == demo.members
    assert bundle.policy is not None and bundle.calibration is not None
    assert bundle.policy.policy.kind == "window" and bundle.calibration.certified is True
    assert bundle.calibration.backend == "onnxruntime" and bundle.calibration.precision == "fp32"

    configs = {(r["config"], r["batch_size"]) for r in results["bench"]}
    for b in (1, 256):
        assert ("cascade", b) in configs and ("ensemble", b) in configs
        assert all((f"member:{m}", b) in configs for m in demo.members)
        assert ("cascade:window_fixed", b) in configs
        assert all((f"single:{r['members'][0]}", b) in configs for r in results["table"][3:])
    for row in results["bench"]:
        assert row["p50_ms"] > 0 and row["backend"] == "onnxruntime"
        # every configuration in the same rounds: batch 1 on 1,000 different test images
        assert row["repeats"] == (1000 if row["batch_size"] == 1 else 4)
        assert row["distinct_rows"] == row["rows_timed"] == row["repeats"] * row["batch_size"]
        assert row["p50_ci_ms"][0] <= row["p50_ms"] <= row["p50_ci_ms"][1]

    table = results["table"]
    assert [r["config"] for r in table][:3] == ["window", "window_fixed", "ensemble"]
    assert all(r["config"] == "single" for r in table[3:])
    assert table[-1]["members"] == demo.members[:1]
    assert all(r["latency_ms"]["1"] and r["latency_ms"]["256"] for r in table)
    for r in table:
        for b in ("1", "256"):
            low, high = r["latency_ci_ms"][b]
            assert low <= r["latency_ms"][b] <= high
    claim = results["demo"]["claim"]
    for b in ("1", "256"):
        low, high = claim[f"latency_ratio_{b}_range"]
        assert low <= claim[f"latency_ratio_{b}"] <= high
    assert table[0]["coverage"] == cal["test"]["coverage"]
    assert table[0]["expected_macs"] < table[2]["expected_macs"]
    assert results["demo"]["claim"]["against"] == table[3]["members"][0]

    for name in ("risk_coverage.png", "cost_quality.png"):
        assert (out / "plots" / name).stat().st_size > 1000


@needs_zoo
def test_demo_matches_shared_experiment(demo: Any) -> None:
    """The cascade row equals what tools/paper_benchmark.py computes for that configuration."""
    from wcx.zoo.experiment import evaluate_selective, load_split, load_zoo_bundle, member_logits

    zoo = load_zoo_bundle("fp32")
    calib, test = load_split("calib"), load_split("test")
    fit = member_logits(zoo, demo.members, calib.x)
    tst = member_logits(zoo, demo.members, test.x)
    macs = [float(m.macs) for m in zoo.members if m.name in demo.members]
    for config, row in zip(("window", "window_fixed", "ensemble"), demo.rows, strict=False):
        ev = evaluate_selective(config, fit, calib.y, tst, test.y, macs, risk=0.05, delta=0.1)
        assert ev["coverage"] == pytest.approx(row["coverage"], abs=1e-12)
        assert ev["risk"] == pytest.approx(row["risk"], abs=1e-12)
        assert ev["risk_upper_bound"] == pytest.approx(row["risk_upper_bound"], abs=1e-12)
        assert ev["expected_macs"] == pytest.approx(row["expected_macs"])


def test_cli_demo_is_a_thin_layer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``wcx demo`` parses its options, makes one library call and renders the table."""
    import wcx.cli
    import wcx.demo
    from wcx.cli import app

    calls: list[tuple[Any, dict[str, Any]]] = []
    row = {"label": "window cascade b1_s0 -> b1_s1", "config": "window", "members": ["b1_s0", "b1_s1"],
           "coverage": 0.8, "risk": 0.04, "risk_upper_bound": 0.049, "certified": True,
           "expected_macs": 470000.0, "latency_ms": {"1": 0.3, "256": 10.0}, "pass_fraction": [1.0, 0.2]}

    def fake_run_demo(out_dir: Any, **kwargs: Any) -> Any:
        calls.append((out_dir, kwargs))
        return wcx.demo.DemoResult(
            out_dir=Path(out_dir), bundle=Path(out_dir) / "bundle", size="b1", members=row["members"],
            rows=[row, dict(row, label="single b2_s0", certified=False)], calibration={}, bench=[], plots=[],
            results=Path(out_dir) / "results.json", seconds=1.0,
            claim={"against": "b2_s0", "coverage_points": 0.5, "macs_ratio": 0.45, "latency_ratio_256": 0.5},
        )

    monkeypatch.setattr(wcx.demo, "run_demo", fake_run_demo)
    monkeypatch.setattr(wcx.cli, "out", Console(width=250))  # no wrapping of the table's cells
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--size", "b1", "--threads", "1",
                                      "--repeats", "3"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert calls == [(tmp_path / "d", {"size": "b1", "threads": 1, "repeats": 3, "progress": calls[0][1]["progress"]})]
    assert "window cascade b1_s0 -> b1_s1" in result.output
    assert "none" in result.output  # the uncertified row has no bound
    assert "45% of its MACs" in result.output


def test_cli_demo_without_zoo_is_bad_input(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import wcx.zoo.experiment as ex
    from wcx.cli import app

    monkeypatch.setattr(ex, "BUNDLES_DIR", tmp_path / "nowhere")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "export_zoo.py" in result.output
