"""`wcx plan`: a calibrated cascade bundle planned from a pool, its report and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wcx.bundle import Bundle, select_members
from wcx.cli import app
from wcx.runtime.cascade import Cascade
from wcx.zoo import ZOO_DIR, split_path

runner = CliRunner()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three of the zoo's small members as a pool."""
    zoo = Bundle.load(ZOO_DIR / "bundles" / "fp32")
    return select_members(zoo, ["b0_s0", "b1_s0", "b0_s1"], tmp_path_factory.mktemp("pool") / "pool").path


def plan(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["plan", *args])
    return result.exit_code, result.output


def test_plan_writes_a_certified_bundle_the_runtime_loads(pool: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "planned", tmp_path / "report"
    code, text = plan(str(pool), "--data", str(split_path("calib")), "--max-cost", "300000", "--max-stages", "3",
                      "--out", str(out), "--json", str(tmp_path / "plan.json"), "--report", str(report))
    assert code == 0, text
    r = json.loads((tmp_path / "plan.json").read_text())
    assert r["certified"] and r["manifest_written"] and r["plan"]["risk_upper_bound"] <= 0.05
    assert r["plan"]["expected_cost"] <= 300000 and r["reference"] is None
    bundle = Bundle.load(out)
    assert [m.name for m in bundle.members] == r["members"]
    assert bundle.calibration is not None and bundle.calibration.certified
    assert [m.name for m in bundle.calibration.provenance.members] == r["members"]
    assert bundle.policy is not None and bundle.policy.tau == pytest.approx(r["tau"])
    assert (report / "plan.png").stat().st_size > 0 and (report / "plan.json").is_file()
    x = np.load(split_path("test"))["x"][:64]
    with Cascade.load(out, strict=True) as cascade:  # the provenance it records is what it runs
        assert cascade(x).pred.shape == (64,)
    # a planned bundle can be monitored: reference rates on the certify part, cuts from the fit part
    from wcx.runtime.monitor import Monitor

    ref = bundle.calibration.reference
    assert ref is not None and ref.independent and ref.n == r["n_certify"]
    assert [c / ref.n for c in ref.pass_count] == pytest.approx(r["plan"]["pass_fraction"])
    assert ref.accept_count / ref.n == pytest.approx(r["plan"]["coverage"])
    assert Monitor.for_bundle(out).statistics


def test_a_plan_of_own_outputs_is_written_and_run_as_planned(pool: Path, tmp_path: Path) -> None:
    """--combine last: every stage keeps its own member's output; the bundle says so (manifest
    version 3) and the runtime's decisions on the calibration rows are the plan's."""
    out = tmp_path / "planned"
    code, text = plan(str(pool), "--data", str(split_path("calib")), "--max-cost", "300000", "--combine", "last",
                      "--out", str(out), "--json", str(tmp_path / "plan.json"))
    assert code == 0, text
    r = json.loads((tmp_path / "plan.json").read_text())
    assert r["objective"]["combines"] == ["last"]
    assert all(c["combine"] == "last" for c in r["candidates"] if len(c["members"]) > 1)
    bundle = Bundle.load(out)
    assert len(r["members"]) == 2 and bundle.policy is not None and bundle.policy.combine == "last"
    assert json.loads((out / "wcx.json").read_text())["schema_version"] == 3
    x = np.load(split_path("calib"))["x"][:500]
    with Cascade.load(out, strict=True) as cascade:
        got = cascade(x)
    zoo = Bundle.load(ZOO_DIR / "bundles" / "fp32")
    from wcx.calibration.held_out import open_data_for, run_members
    from wcx.calibration.simulator import simulate_cascade

    np.savez(tmp_path / "rows.npz", x=x, y=np.load(split_path("calib"))["y"][:500])
    sub = select_members(zoo, r["members"], tmp_path / "sub")
    held = run_members(sub, open_data_for(sub, tmp_path / "rows.npz"))
    sim = simulate_cascade(held.logits, bundle.policy.policy, "msp", tau=bundle.policy.tau,
                           combine=bundle.policy.combine)
    np.testing.assert_array_equal(got.exit_stage, sim.exit_stage)
    np.testing.assert_array_equal(got.accept, sim.accept)
    code, text = plan(str(pool), "--data", str(split_path("calib")), "--max-cost", "400000", "--combine", "max",
                      "--out", str(tmp_path / "x"))
    assert code == 2 and "combine must be one of mean, last" in text


def test_objectives_and_outputs_are_checked(pool: Path, tmp_path: Path) -> None:
    data = str(split_path("calib"))
    code, text = plan(str(pool), "--data", data, "--out", str(tmp_path / "a"))
    assert code == 2 and "--match MEMBER or --max-cost" in text
    code, text = plan(str(pool), "--data", data, "--out", str(tmp_path / "a"), "--match", "b4_s0")
    assert code == 2 and "no pool member named 'b4_s0'" in text
    code, text = plan(str(pool), "--data", data, "--out", str(pool), "--max-cost", "1e6")
    assert code == 2 and "already exists" in text
    code, text = plan(str(pool), "--data", data, "--out", str(tmp_path / "a"), "--max-cost", "1e6", "--cost",
                      "latency")
    assert code == 2 and "--bench" in text


def test_match_compares_with_the_members_own_certificate(pool: Path, tmp_path: Path) -> None:
    code, text = plan(str(pool), "--data", str(split_path("calib")), "--match", "b1_s0", "--out",
                      str(tmp_path / "m"), "--json", str(tmp_path / "m.json"))
    r = json.loads((tmp_path / "m.json").read_text())
    assert r["reference"]["member"] == "b1_s0" and r["reference"]["certified"]
    if code == 0:
        assert r["plan"]["coverage"] >= r["reference"]["coverage"]
        assert r["plan"]["expected_cost"] < r["reference"]["expected_cost"]
    else:
        assert code == 1 and "deploy b1_s0 alone" in " ".join(text.split()) and not (tmp_path / "m").exists()


def test_no_certificate_is_exit_1_with_the_json(pool: Path, tmp_path: Path) -> None:
    out = tmp_path / "none"
    code, text = plan(str(pool), "--data", str(split_path("calib")), "--max-cost", "1000",
                      "--out", str(out), "--json", str(tmp_path / "p.json"))
    assert code == 1 and "no plan" in text and "certifies" in " ".join(text.split())
    r = json.loads((tmp_path / "p.json").read_text())
    assert r["certified"] is False and r["manifest_written"] is False and r["reason"]
    assert not out.exists()


def test_plan_on_a_pool_of_the_users_own_members(mlp_bundle3: Bundle, tmp_path: Path) -> None:
    """Not only the zoo: three ONNX members exported elsewhere (tests/bundle_factory.py), labels
    that the first one gets right (the rest disagree with it often)."""
    from wcx.calibration.held_out import run_members
    from wcx.core.scores import stage_outputs

    rng = np.random.default_rng(3)
    x = rng.random((3000, *mlp_bundle3.sample_shape), dtype=np.float32)
    y = stage_outputs(run_members(mlp_bundle3, x, cache=False).logits, "msp")[1][0]
    np.savez(tmp_path / "val.npz", x=x, y=y)
    code, text = plan(str(mlp_bundle3.path), "--data", str(tmp_path / "val.npz"), "--max-cost", "1e9", "--out",
                      str(tmp_path / "planned"), "--json", str(tmp_path / "p.json"))
    assert code == 0, text
    r = json.loads((tmp_path / "p.json").read_text())
    assert set(r["members"]) <= {"m0", "m1", "m2"} and Bundle.load(tmp_path / "planned").calibration.certified


def test_latency_costs_come_from_a_bench_file(pool: Path, tmp_path: Path) -> None:
    rows = [{"config": f"member:{name}", "batch_size": 256, "p50_ms": ms}
            for name, ms in (("b0_s0", 3.0), ("b1_s0", 5.0), ("b0_s1", 3.0))]
    (tmp_path / "bench.json").write_text(json.dumps(rows))
    code, text = plan(str(pool), "--data", str(split_path("calib")), "--cost", "latency", "--bench",
                      str(tmp_path / "bench.json"), "--max-cost", "0.02", "--out", str(tmp_path / "lat"), "--json",
                      str(tmp_path / "lat.json"))
    assert code == 0, text
    r = json.loads((tmp_path / "lat.json").read_text())
    assert r["cost"] == "latency" and r["pool_costs"]["b1_s0"] == pytest.approx(5.0 / 256)
    assert r["plan"]["expected_cost"] <= 0.02
    assert Bundle.load(tmp_path / "lat").calibration.cost == "latency"
