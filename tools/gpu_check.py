#!/usr/bin/env python
"""The GPU check: everything of wcx that only a CUDA GPU runs, in one script, with one report.

Run it on a machine with an NVIDIA GPU and torch built for CUDA (TensorRT is used where it is
installed, and its tests are skipped with the reason elsewhere)::

    python tools/gpu_check.py --out gpu-check            # about 3-5 minutes
    python tools/gpu_check.py --out /tmp/c --tiny        # the CPU, in seconds: checks the script

Steps (each one is recorded; a failing step does not stop the others):

1. ``facts``: GPU, driver-visible CUDA, torch, onnxruntime, numpy, TensorRT (if any);
2. ``pytest``: ``pytest -m "gpu or tensorrt"`` (the runner contract on CUDA, CUDA graphs against
   eager, calibrate-on-torch-then-strict-load, the simulator's decisions, streams, TensorRT
   engines against ONNX Runtime where TensorRT exists);
3. ``zoo``: the shipped zoo's b3 pair calibrated on the torch backend (FP16, CUDA graphs) at 5%
   risk with a guarantee (delta 0.1), loaded with ``strict=True`` (a provenance mismatch would
   refuse), run on the test split: coverage and risk there, agreement of its decisions with the
   ONNX Runtime cascade calibrated the same way, and throughput;
4. ``bench``: ``tools/gpu_bench.py`` (EfficientNets B0/B2/B4, cascades at forced pass fractions,
   pipelined streams, torch-vs-ONNX Runtime parity on a zoo member).

Writes ``OUT/gpu_check.json`` (every figure) and ``OUT/gpu_check.md`` (the summary), and exits 1
when a step failed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def facts() -> dict[str, Any]:
    import onnxruntime
    import torch

    out: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__,
                           "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                           "onnxruntime": onnxruntime.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        out.update(gpu=torch.cuda.get_device_name(0), compute_capability=f"{major}.{minor}")
    from wcx.export.engine_compat import tensorrt_available

    out["tensorrt"] = tensorrt_available()[1]
    return out


def run_pytest(out_dir: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "gpu or tensorrt", "-p", "no:cacheprovider",
           str(ROOT / "tests")]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    (out_dir / "pytest_gpu.log").write_text(res.stdout + res.stderr)
    summary = [line for line in res.stdout.splitlines() if " passed" in line or " failed" in line
               or " skipped" in line or "error" in line.lower()]
    if res.returncode not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"pytest exited {res.returncode}: {summary[-1] if summary else res.stdout[-300:]}")
    return {"returncode": res.returncode, "summary": summary[-1] if summary else ""}


def zoo_on_torch(tiny: bool) -> dict[str, Any]:
    import warnings

    from wcx.bundle import select_members
    from wcx.calibration.calibrator import CascadeCalibrator
    from wcx.calibration.held_out import calibrate_bundle, load_dataset_for
    from wcx.runtime.cascade import Cascade, prediction_metrics
    from wcx.zoo import split_path
    from wcx.zoo.experiment import load_zoo_bundle

    device = "cpu" if tiny else None
    zoo = load_zoo_bundle("fp32")
    out: dict[str, Any] = {"members": ["b3_s0", "b3_s1"], "risk": 0.05, "delta": 0.1}
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for backend in ("onnxruntime", "torch"):
            bundle = select_members(zoo, out["members"], Path(tmp) / backend)
            calib = load_dataset_for(bundle, split_path("calib"), require_labels=True)
            test = load_dataset_for(bundle, split_path("test"), require_labels=True)
            t0 = time.perf_counter()
            done = calibrate_bundle(bundle, calib, CascadeCalibrator(risk=0.05, delta=0.1), backend=backend,
                                    test=test, device=device)
            fit_s = time.perf_counter() - t0
            done.calibrator.raise_if_failed()
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # strict and silent: it runs what was calibrated
                cascade = Cascade.load(bundle.path, backend, strict=True, device=device)
            with cascade:
                cascade.predict(test.x[:512], batch_size=256)  # warm-up: graphs captured
                t0 = time.perf_counter()
                pred = cascade.predict(test.x, batch_size=256)
                run_s = time.perf_counter() - t0
                precision = cascade.precision
            assert test.y is not None
            metrics = prediction_metrics(pred, test.y)
            results[backend] = pred
            out[backend] = {
                "precision": precision, "tau": done.report["tau"], "windows": done.report["windows"],
                "certified": done.report["certified"], "risk_upper_bound": done.report["risk_upper_bound"],
                "test_coverage": metrics["coverage"], "test_risk": metrics["risk"],
                "test_pass_fraction": metrics["pass_fraction"],
                "simulated_test_coverage": done.report["test"]["coverage"],
                "calibrate_seconds": round(fit_s, 2), "images_per_second": round(len(test.x) / run_s, 1),
            }
        a, b = results["onnxruntime"], results["torch"]
        out["decision_agreement"] = float(np.mean(a.accept == b.accept))
        out["prediction_agreement"] = float(np.mean(a.pred == b.pred))
    return out


def bench(out_dir: Path, tiny: bool) -> dict[str, Any]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "tools" / "gpu_bench.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = out_dir / "gpu_bench.json"
    args = ["--tiny"] if tiny else ["--models", "b0,b2,b4", "--cascade-models", "b2", "--repeats", "30",
                                    "--warmup", "5"]
    status = mod.main([*args, "--json", str(path)])
    if status != 0:
        raise RuntimeError(f"gpu_bench exited {status}")
    records = json.loads(path.read_text())["records"]
    keep = [r for r in records if "cascade 25%" in r["config"] or "stream()" in r["config"]
            or r["config"].startswith("zoo parity")]
    return {"records": keep, "targets": [r for r in records if r.get("vs_b4") is not None and "25%" in r["config"]]}


def write_summary(out_dir: Path, report: dict[str, Any]) -> None:
    lines = ["# wcx GPU check", ""]
    f = report["steps"].get("facts", {}).get("result", {})
    lines.append(f"Device: {f.get('gpu', 'no GPU')} (compute capability {f.get('compute_capability', '-')}), "
                 f"torch {f.get('torch')} (CUDA {f.get('torch_cuda')}), onnxruntime {f.get('onnxruntime')}, "
                 f"numpy {f.get('numpy')}; TensorRT: {f.get('tensorrt')}.")
    lines.append("")
    for name, step in report["steps"].items():
        status = "ok" if step["ok"] else f"FAILED: {step['error']}"
        lines.append(f"- **{name}** ({step['seconds']:.0f} s): {status}")
    zoo = report["steps"].get("zoo", {}).get("result")
    if zoo:
        lines += ["", "| backend | precision | certified bound | test coverage | test risk | pass to stage 2 "
                      "| images/s |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for backend in ("onnxruntime", "torch"):
            z = zoo[backend]
            lines.append(f"| {backend} | {z['precision']} | {z['risk_upper_bound']:.4f} | {z['test_coverage']:.4f} | "
                         f"{z['test_risk']:.4f} | {z['test_pass_fraction'][1]:.3f} | {z['images_per_second']} |")
        lines.append("")
        lines.append(f"Accept decisions agree on {100 * zoo['decision_agreement']:.2f}% of the test images, "
                     f"predictions on {100 * zoo['prediction_agreement']:.2f}%.")
    (out_dir / "gpu_check.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json, gpu_check.md and logs")
    p.add_argument("--tiny", action="store_true", help="run on the CPU with tiny models (checks the script)")
    p.add_argument("--skip", default="", help="comma-separated steps to skip (facts, pytest, zoo, bench)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    skip = {s for s in args.skip.split(",") if s}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("facts", facts),
        ("pytest", lambda: run_pytest(args.out)),
        ("zoo", lambda: zoo_on_torch(args.tiny)),
        ("bench", lambda: bench(args.out, args.tiny)),
    ]
    report: dict[str, Any] = {"argv": sys.argv[1:], "steps": {}}
    failed = False
    for name, step in steps:
        if name in skip:
            continue
        log(f"[gpu_check] {name}")
        t0 = time.perf_counter()
        try:
            result, ok, error = step(), True, None
        except Exception as exc:  # keep going: the other steps still say something
            result, ok, error = None, False, f"{type(exc).__name__}: {exc}"
            log(traceback.format_exc())
            failed = True
        report["steps"][name] = {"ok": ok, "error": error, "seconds": time.perf_counter() - t0, "result": result}
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    write_summary(args.out, report)
    print((args.out / "gpu_check.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
