"""``wcx run`` and ``wcx bench`` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wcx.bundle import Bundle
from wcx.cli import app


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x=rng.random((120, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 4, 120))
    return path


def test_run_writes_predictions_and_metrics(policy_bundle: Bundle, data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.npz"
    summary = tmp_path / "summary.json"
    res = CliRunner().invoke(app, ["run", str(policy_bundle.path), "--data", str(data_file), "--out", str(out),
                                   "--batch-size", "50", "--json", str(summary)])
    assert res.exit_code == 0, res.output
    assert "coverage" in res.output and "risk" in res.output
    with np.load(out) as z:
        assert set(z.files) == {"pred", "score", "accept", "exit_stage", "first_score"}
        assert z["pred"].shape == (120,)
        first = z["exit_stage"] == 1
        assert np.array_equal(z["first_score"][first], z["score"][first])
        accept, pred = z["accept"], z["pred"]
    s = json.loads(summary.read_text())
    assert s["n"] == 120 and s["backend"] == "onnxruntime"
    with np.load(data_file) as d:
        y = d["y"]
    assert s["accuracy"] == pytest.approx(float(np.mean(pred == y)))
    assert s["coverage"] == pytest.approx(float(np.mean(accept)))


def test_run_calls_the_library_once(policy_bundle: Bundle, data_file: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake(bundle, data, out, **kw):  # type: ignore[no-untyped-def]
        calls.append((bundle, data, out, kw))
        return {"backend": "onnxruntime", "precision": "fp32", "n": 1, "pass_fraction": [1.0]}

    monkeypatch.setattr("wcx.runtime.cli_support.run_on_file", fake)
    res = CliRunner().invoke(app, ["run", str(policy_bundle.path), "--data", str(data_file), "--out",
                                   str(tmp_path / "p.npz"), "--backend", "onnxruntime", "--threads", "1",
                                   "--strict"])
    assert res.exit_code == 0, res.output
    assert calls == [(policy_bundle.path, data_file, tmp_path / "p.npz",
                      {"backend": "onnxruntime", "batch_size": 256, "threads": 1, "strict": True, "probs": False,
                       "monitor": False})]


def test_run_bad_input_exit_2(policy_bundle: Bundle, mlp_bundle: Bundle, tmp_path: Path, data_file: Path) -> None:
    from wcx.cli import main

    def invoke(args: list[str]) -> int:
        import sys

        argv = sys.argv
        sys.argv = ["wcx", *args]
        try:
            main()
        except SystemExit as exc:
            return int(exc.code or 0)
        finally:
            sys.argv = argv
        return 0

    out = str(tmp_path / "p.npz")
    assert invoke(["run", str(policy_bundle.path), "--data", str(tmp_path / "none.npz"), "--out", out]) == 2
    assert invoke(["run", str(mlp_bundle.path), "--data", str(data_file), "--out", out]) == 2  # no policy
    assert invoke(["run", str(policy_bundle.path), "--data", str(data_file), "--out", out,
                   "--backend", "gpu"]) == 2
    assert invoke(["bench", str(policy_bundle.path), "--data", str(data_file), "--batch-size", "0"]) == 2


def test_bench_json_rows(policy_bundle: Bundle, data_file: Path, tmp_path: Path) -> None:
    js = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", str(policy_bundle.path), "--data", str(data_file),
                                   "--batch-size", "1,64", "--repeats", "3", "--warmup", "1", "--rows", "200",
                                   "--threads", "1", "--json", str(js)])
    assert res.exit_code == 0, res.output
    assert "…" not in res.output and "member:m1" in res.output  # nothing cut on an 80-column terminal
    rows = json.loads(js.read_text())
    assert [(r["config"], r["batch_size"]) for r in rows] == [
        ("cascade", 1), ("ensemble", 1), ("member:m0", 1), ("member:m1", 1),
        ("cascade", 64), ("ensemble", 64), ("member:m0", 64), ("member:m1", 64),
    ]
    for r in rows:
        assert r["p50_ms"] > 0 and r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput"] > 0
        assert r["pass_fraction"][0] == 1.0
        assert r["p50_ci_ms"][0] <= r["p50_ms"] <= r["p50_ci_ms"][1] and r["mean_ms"] > 0
    cascade = rows[4]
    assert len(cascade["pass_fraction"]) == 2 and cascade["overhead"] > 0 and cascade["expected_ms"] > 0
    assert cascade["repeats"] == 4 and cascade["stage_rows"][0] == cascade["rows_timed"] == 256
    assert cascade["floor_ms"] > 0
    assert cascade["pass_fraction"][1] == cascade["stage_rows"][1] / 256
    assert rows[0]["repeats"] == 200 and rows[0]["distinct_rows"] == 120  # the data has 120 rows
    assert rows[5]["pass_fraction"] == [1.0, 1.0]
