"""tools/gpu_bench.py --tiny: the GPU script validated on the CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "gpu_bench.py"


def test_gpu_bench_tiny_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    out = tmp_path / "bench.json"
    rc = mod.main(["--tiny", "--models", "b2", "--cascade-models", "b2", "--fractions", "0.25,0.5",
                   "--json", str(out)])
    assert rc == 0
    records = json.loads(out.read_text())["records"]
    configs = {r["config"] for r in records}
    assert {"b2 alone", "b2+b2 cascade 25%", "b2+b2 cascade 50%"} <= configs
    assert any("stream()" in c for c in configs)
    assert any(c.startswith("zoo parity") for c in configs)  # measured or skipped with a reason
    cascade = [r for r in records if r["config"] == "b2+b2 cascade 50%" and r["batch_size"] == 8]
    assert cascade and cascade[0]["stage2_padded"] == [4] and cascade[0]["floor_ms"] > 0
    printed = capsys.readouterr().out
    assert printed.rstrip().splitlines()[-1].startswith("zoo parity")  # the table comes last


@pytest.mark.gpu
def test_gpu_bench_runs_on_cuda(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    out = tmp_path / "bench.json"
    rc = mod.main(["--models", "b0", "--cascade-models", "b0", "--batch-sizes", "1,8", "--repeats", "3",
                   "--warmup", "1", "--fractions", "0.5", "--zoo-rows", "256", "--json", str(out)])
    assert rc == 0
    records = json.loads(out.read_text())["records"]
    cascade = [r for r in records if r["config"] == "b0+b0 cascade 50%" and r["batch_size"] == 8]
    assert cascade and cascade[0]["stage2_padded"] == [4] and cascade[0]["p50_ms"] > 0
    parity = [r for r in records if r["config"].startswith("zoo parity")]
    assert parity and parity[0]["top1_agreement"] >= 0.995
