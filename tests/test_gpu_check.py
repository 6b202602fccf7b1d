"""tools/gpu_check.py --cpu-dry-run: the GPU check's every step, on the CPU, with the fake CUDA
binding and TensorRT of tests/fakes (the real run needs a GPU: docs/results/gpu.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.py"


def test_cpu_dry_run_passes(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--cpu-dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu.json").read_text())
    steps = report["steps"]
    assert steps["pytest"]["skipped"] and not steps["pytest"]["ok"]
    for name in ("facts", "zoo_torch", "cuda", "tensorrt_cascade", "bench"):
        assert steps[name]["ok"], (name, steps[name]["error"])
    assert steps["zoo_torch"]["result"]["decision_agreement"] == 1.0
    assert steps["cuda"]["result"]["round_trip_equal"] is True
    for precision in ("fp32", "fp16"):
        assert steps["tensorrt_cascade"]["result"][precision]["decision_agreement"] == 1.0
    text = (tmp_path / "gpu.md").read_text()
    assert "dry run" in text and "TensorRT cascade (fake" in text
