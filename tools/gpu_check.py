#!/usr/bin/env python
"""The GPU check: everything of wcx that only a GPU runs, in one script, with one report.

On a machine with an NVIDIA GPU (torch built for CUDA for the torch backend; NVIDIA's
``cuda-bindings`` for the TensorRT backend; TensorRT itself where it is installed)::

    python tools/gpu_check.py --out docs/results      # about 3-4 minutes on one GPU
    python tools/gpu_check.py --cpu-dry-run --out /tmp/gpu-check   # CI: the same steps on the CPU, < 60 s

Steps (each one is recorded; a failing step does not stop the others; each probes for what it
needs and says "skipped: ..." when it is missing):

1. ``facts``: GPU, torch and its CUDA, onnxruntime, numpy, the CUDA binding, TensorRT;
2. ``pytest``: ``pytest -m "gpu or tensorrt"`` (skipped in the dry run);
3. ``zoo_torch``: the zoo's b3 pair calibrated on the torch backend (FP16, CUDA graphs; FP32 on
   the CPU in the dry run) at 5% risk with a guarantee (delta 0.1), loaded with ``strict=True``,
   run on the 5,000 test images: coverage and risk, and agreement of top-1 and accept/reject with
   the ONNX Runtime cascade calibrated the same way (target >= 99.5% each);
4. ``cuda``: the CUDA layer of the TensorRT backend (:mod:`wcx.cuda_runtime`) on the real
   binding and device: allocations, pinned round trips on a stream, events, copy bandwidth (in the
   dry run: on the fake binding of tests/fakes);
5. ``tensorrt_cascade``: the zoo's b3 pair (FP32, and FP16 converted from it) as a TensorRT
   cascade through the real ``TensorRTRunner`` and CUDA layer: with the real TensorRT where it
   imports (engines built here, and the INT8 zoo's b2 pair too), otherwise with the fake TensorRT
   of tests/fakes on top of the real device buffers (or the fake binding in the dry run);
   decisions against ONNX Runtime's on the same bundle;
6. ``bench``: ``tools/gpu_bench.py`` (EfficientNets B0/B2/B4, cascades at forced pass fractions,
   pipelined streams, the executor's host path against its device path, torch-vs-ONNX Runtime
   parity; ``--tiny`` models on the CPU in the dry run).

Writes ``OUT/gpu.json`` (every figure) and ``OUT/gpu.md`` (the summary, naming the device) and
exits 1 when a step failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ZOO_PAIR = ["b3_s0", "b3_s1"]
INT8_PAIR = ["b2_s0", "b2_s1"]


class Skipped(Exception):
    """A step that cannot run here (its reason is recorded)."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def binding(dry_run: bool) -> Iterator[Any]:
    """The CUDA binding the TensorRT steps use: the fake one in the dry run, else the real one."""
    from wcx.cuda_runtime import import_binding, use_binding

    if dry_run:
        from tests.fakes.cudart import FakeCudart

        with use_binding(FakeCudart(name=b"Fake GPU (dry run)")) as fake:
            yield fake
    else:
        yield import_binding("The GPU check")


# ---------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------
def facts(dry_run: bool) -> dict[str, Any]:
    import onnxruntime

    out: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__,
                           "onnxruntime": onnxruntime.__version__, "dry_run": dry_run}
    if has("torch"):
        import torch

        out.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            out.update(gpu=torch.cuda.get_device_name(0), compute_capability=f"{major}.{minor}")
    out["cuda_bindings"] = _version("cuda-bindings")
    from wcx.export.engine_compat import tensorrt_available

    out["tensorrt"] = tensorrt_available()[1]
    return out


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def run_pytest(out_dir: Path, dry_run: bool) -> dict[str, Any]:
    if dry_run:
        raise Skipped("the dry run does not start pytest (CI runs the suite itself)")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "gpu or tensorrt", "-p", "no:cacheprovider",
           str(ROOT / "tests")]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    (out_dir / "pytest_gpu.log").write_text(res.stdout + res.stderr)
    summary = [line for line in res.stdout.splitlines() if " passed" in line or " failed" in line
               or " skipped" in line or "error" in line.lower()]
    if res.returncode not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"pytest exited {res.returncode}: {summary[-1] if summary else res.stdout[-300:]}")
    return {"returncode": res.returncode, "summary": summary[-1] if summary else ""}


def _zoo_splits(bundle: Any) -> tuple[Any, Any]:
    from wcx.calibration.held_out import load_dataset_for
    from wcx.zoo import split_path

    return (load_dataset_for(bundle, split_path("calib"), require_labels=True),
            load_dataset_for(bundle, split_path("test"), require_labels=True))


def _calibrated_cascade(bundle: Any, calib: Any, test: Any, backend: str,
                        **options: Any) -> tuple[Any, dict[str, Any]]:
    """Calibrate ``bundle`` on ``backend`` (5% risk, delta 0.1), load it strictly (a provenance
    mismatch would refuse) and run it on ``test``."""
    from wcx.calibration.calibrator import CascadeCalibrator
    from wcx.calibration.held_out import calibrate_bundle
    from wcx.runtime.cascade import Cascade, prediction_metrics

    t0 = time.perf_counter()
    done = calibrate_bundle(bundle, calib, CascadeCalibrator(risk=0.05, delta=0.1), backend=backend, **options)
    fit_s = time.perf_counter() - t0
    done.calibrator.raise_if_failed()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cascade = Cascade.load(bundle.path, backend, strict=True, **options)
    with cascade:
        cascade.predict(test.x[:512], batch_size=256)  # warm-up (graphs, engines)
        t0 = time.perf_counter()
        pred = cascade.predict(test.x, batch_size=256)
        run_s = time.perf_counter() - t0
        precision = cascade.precision
    m = prediction_metrics(pred, test.y)
    figures = {
        "precision": precision, "tau": done.report["tau"], "windows": done.report["windows"],
        "certified": done.report["certified"], "risk_upper_bound": done.report["risk_upper_bound"],
        "test_coverage": m["coverage"], "test_risk": m["risk"], "test_pass_fraction": m["pass_fraction"],
        "calibrate_seconds": round(fit_s, 2), "images_per_second": round(len(test.x) / run_s, 1),
    }
    return pred, figures


def zoo_torch(dry_run: bool) -> dict[str, Any]:
    if not has("torch"):
        raise Skipped("torch is not installed")
    import torch

    if not dry_run and not torch.cuda.is_available():
        raise Skipped("torch sees no CUDA GPU")
    from wcx.bundle import select_members
    from wcx.zoo.experiment import load_zoo_bundle

    device = {"device": "cpu"} if dry_run else {}
    zoo = load_zoo_bundle("fp32")
    out: dict[str, Any] = {"members": ZOO_PAIR}
    with tempfile.TemporaryDirectory() as tmp:
        preds = {}
        for backend, options in (("onnxruntime", {}), ("torch", device)):
            bundle = select_members(zoo, ZOO_PAIR, Path(tmp) / backend)
            calib, test = _zoo_splits(bundle)
            preds[backend], out[backend] = _calibrated_cascade(bundle, calib, test, backend, **options)
    a, b = preds["onnxruntime"], preds["torch"]
    out["top1_agreement"] = float(np.mean(a.pred == b.pred))
    out["decision_agreement"] = float(np.mean(a.accept == b.accept))
    if min(out["top1_agreement"], out["decision_agreement"]) < 0.995:
        raise RuntimeError(f"torch and onnxruntime agree on only {out['top1_agreement']:.4f} (top-1) and "
                           f"{out['decision_agreement']:.4f} (accept/reject) of the test images")
    return out


def cuda_layer(dry_run: bool) -> dict[str, Any]:
    if not dry_run and not (has("cuda.bindings") or has("cuda.cudart")):
        raise Skipped("no CUDA binding (pip install cuda-bindings)")
    from wcx.cuda_runtime import Cuda

    with binding(dry_run):
        cuda = Cuda(purpose="The GPU check")
        out: dict[str, Any] = {**cuda.facts()}
        stream = cuda.stream()
        start, stop = cuda.event(), cuda.event()
        nbytes = (8 << 20) if dry_run else (256 << 20)
        src = cuda.pinned((nbytes // 4,), np.float32)
        dst = cuda.pinned((nbytes // 4,), np.float32)
        dev = cuda.alloc(nbytes)
        src.array[:] = np.arange(src.array.size, dtype=np.float32)
        timings = {}
        for name, copy in (("h2d", lambda: cuda.to_device(dev, src, nbytes, stream)),
                           ("d2h", lambda: cuda.to_host(dst, dev, nbytes, stream))):
            copy()  # warm-up
            stream.synchronize()
            start.record(stream)
            for _ in range(5):
                copy()
            stop.record(stream)
            stop.synchronize()
            timings[name] = stop.seconds_since(start) / 5
        stream.synchronize()
        out["round_trip_equal"] = bool(np.array_equal(src.array, dst.array))
        out["h2d_gb_per_s"] = round(nbytes / max(timings["h2d"], 1e-12) / 1e9, 2)
        out["d2h_gb_per_s"] = round(nbytes / max(timings["d2h"], 1e-12) / 1e9, 2)
        for item in (dev, src, dst):
            item.free()
        start.destroy()
        stop.destroy()
        stream.destroy()
    if not out["round_trip_equal"]:
        raise RuntimeError("a pinned round trip through device memory changed the data")
    return out


def tensorrt_cascade(dry_run: bool) -> dict[str, Any]:
    from wcx.bundle import Bundle, select_members
    from wcx.export.engine_compat import tensorrt_available
    from wcx.export.tensorrt_engine import build_engines
    from wcx.runtime.cascade import Cascade
    from wcx.zoo.experiment import load_zoo_bundle

    real = not dry_run and tensorrt_available()[0]
    if not real and not dry_run and not (has("cuda.bindings") or has("cuda.cudart")):
        raise Skipped("neither TensorRT nor the CUDA binding is installed")
    out: dict[str, Any] = {"tensorrt": "real" if real else "fake (tests/fakes/tensorrt.py)"}
    saved = sys.modules.get("tensorrt")
    if not real:
        from tests.fakes.tensorrt import make_fake_tensorrt

        sys.modules["tensorrt"] = make_fake_tensorrt()
    try:
        with binding(dry_run), tempfile.TemporaryDirectory() as tmp:
            pairs = [("fp32", ZOO_PAIR), ("fp16", ZOO_PAIR)] + ([("int8", INT8_PAIR)] if real else [])
            for precision, names in pairs:
                if precision == "fp16":  # the zoo ships no FP16 bundle: convert its FP32 members
                    bundle = _fp16_bundle(load_zoo_bundle("fp32"), names, Path(tmp) / precision)
                else:
                    bundle = select_members(load_zoo_bundle(precision), names, Path(tmp) / precision)
                calib, test = _zoo_splits(bundle)
                ort, figures_ort = _calibrated_cascade(bundle, calib, test, "onnxruntime")
                t0 = time.perf_counter()
                build_engines(bundle, opt_batch=32, max_batch=256)
                build_s = time.perf_counter() - t0
                bundle = Bundle.load(bundle.path)
                assert bundle.policy is not None
                with Cascade.load(bundle, "tensorrt", policy=bundle.policy) as cascade:
                    cascade.predict(test.x[:512])
                    t0 = time.perf_counter()
                    trt = cascade.predict(test.x, batch_size=256)
                    run_s = time.perf_counter() - t0
                out[precision] = {
                    "members": names, "build_seconds": round(build_s, 2),
                    "decision_agreement": float(np.mean(ort.accept == trt.accept)),
                    "exit_stage_agreement": float(np.mean(ort.exit_stage == trt.exit_stage)),
                    "top1_agreement": float(np.mean(ort.pred == trt.pred)),
                    "images_per_second": round(len(test.x) / run_s, 1), "onnxruntime": figures_ort,
                }
    finally:
        if saved is None:
            sys.modules.pop("tensorrt", None)
        else:
            sys.modules["tensorrt"] = saved
    worst = min(v["decision_agreement"] for k, v in out.items() if isinstance(v, dict))
    if worst < (0.995 if real else 1.0):
        raise RuntimeError(f"TensorRT and onnxruntime cascades agree on only {worst:.4f} of the decisions")
    return out


def _fp16_bundle(zoo: Any, names: list[str], out: Path) -> Any:
    """An FP16 bundle of zoo members, exported from their FP32 ONNX (checked against it)."""
    from wcx.bundle import Bundle
    from wcx.export.exporter import export_bundle

    indices = zoo.member_indices(names)
    export_bundle([zoo.member_path(i) for i in indices], out, input_shape=zoo.sample_shape, precision="fp16",
                  mean=zoo.input.mean, std=zoo.input.std, names=names)
    return Bundle.load(out)


def bench(out_dir: Path, dry_run: bool) -> dict[str, Any]:
    if not has("torch"):
        raise Skipped("torch is not installed")
    import torch

    if not dry_run and not (torch.cuda.is_available() and has("torchvision")):
        raise Skipped("needs a CUDA GPU and torchvision")
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "tools" / "gpu_bench.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = out_dir / "gpu_bench.json"
    args = ["--tiny"] if dry_run else ["--models", "b0,b2,b4", "--cascade-models", "b2", "--repeats", "30",
                                       "--warmup", "5"]
    status = mod.main([*args, "--json", str(path)])
    if status != 0:
        raise RuntimeError(f"gpu_bench exited {status}")
    records = json.loads(path.read_text())["records"]
    keep = [r for r in records if "cascade 25%" in r["config"] or "stream()" in r["config"]
            or " path" in r["config"] or r["config"].startswith("zoo parity")]
    return {"records": keep}


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def write_summary(out_dir: Path, report: dict[str, Any]) -> str:
    steps = report["steps"]
    f = steps.get("facts", {}).get("result") or {}
    device = f.get("gpu", "no GPU (dry run on the CPU)" if f.get("dry_run") else "no GPU")
    lines = ["# wcx GPU check", "",
             f"Device: {device} (compute capability {f.get('compute_capability', '-')}); torch {f.get('torch')} "
             f"(CUDA {f.get('torch_cuda')}), onnxruntime {f.get('onnxruntime')}, numpy {f.get('numpy')}, "
             f"cuda-bindings {f.get('cuda_bindings')}; TensorRT: {f.get('tensorrt')}", ""]
    for name, step in steps.items():
        status = "ok" if step["ok"] else ("skipped: " + step["error"] if step.get("skipped") else
                                          "FAILED: " + str(step["error"]))
        lines.append(f"- **{name}** ({step['seconds']:.0f} s): {status}")
    zoo = steps.get("zoo_torch", {}).get("result")
    if zoo:
        lines += ["", "Zoo b3 pair, risk 5%, delta 0.1, calibrated and run on each backend:", "",
                  "| backend | precision | certified bound | test coverage | test risk | pass to stage 2 "
                  "| images/s |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for backend in ("onnxruntime", "torch"):
            z = zoo[backend]
            lines.append(f"| {backend} | {z['precision']} | {_pct(z['risk_upper_bound'])} | "
                         f"{_pct(z['test_coverage'])} | {_pct(z['test_risk'])} | {z['test_pass_fraction'][1]:.3f} | "
                         f"{z['images_per_second']} |")
        lines += ["", f"Agreement with ONNX Runtime: top-1 {_pct(zoo['top1_agreement'])}, accept/reject "
                      f"{_pct(zoo['decision_agreement'])}."]
    cuda = steps.get("cuda", {}).get("result")
    if cuda:
        lines += ["", f"CUDA layer ({cuda['gpu_name']}, compute capability {cuda['compute_capability']}): pinned "
                      f"round trip equal: {cuda['round_trip_equal']}; host-to-device {cuda['h2d_gb_per_s']} GB/s, "
                      f"device-to-host {cuda['d2h_gb_per_s']} GB/s."]
    trt = steps.get("tensorrt_cascade", {}).get("result")
    if trt:
        for precision in ("fp32", "fp16", "int8"):
            if precision in trt:
                t = trt[precision]
                lines += ["", f"TensorRT cascade ({trt['tensorrt']}), {precision} {'+'.join(t['members'])}: "
                              f"accept/reject agreement with ONNX Runtime {_pct(t['decision_agreement'])}, exit stages "
                              f"{_pct(t['exit_stage_agreement'])}, top-1 {_pct(t['top1_agreement'])}; "
                              f"{t['images_per_second']} images/s."]
    bench_result = steps.get("bench", {}).get("result")
    if bench_result:
        lines += ["", "| benchmark | batch | p50 ms | vs B4 | overhead | host/device |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in bench_result["records"]:
            if "p50_ms" not in r:
                continue
            lines.append(f"| {r['config']} | {r['batch_size']} | {r['p50_ms']:.2f} | "
                         f"{'-' if r.get('vs_b4') is None else format(r['vs_b4'], '.3f')} | "
                         f"{'-' if r.get('overhead') is None else format(r['overhead'], '.3f')} | "
                         f"{'-' if r.get('host_over_device') is None else format(r['host_over_device'], '.2f')} |")
    text = "\n".join(lines) + "\n"
    (out_dir / "gpu.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results",
                   help="folder for gpu.json, gpu.md and logs (default docs/results)")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="run every step on the CPU (fake CUDA binding and TensorRT, tiny models): checks the script")
    p.add_argument("--skip", default="", help="comma-separated steps to skip")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    dry = args.cpu_dry_run
    skip = {s for s in args.skip.split(",") if s}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("facts", lambda: facts(dry)),
        ("pytest", lambda: run_pytest(args.out, dry)),
        ("zoo_torch", lambda: zoo_torch(dry)),
        ("cuda", lambda: cuda_layer(dry)),
        ("tensorrt_cascade", lambda: tensorrt_cascade(dry)),
        ("bench", lambda: bench(args.out, dry)),
    ]
    report: dict[str, Any] = {"argv": sys.argv[1:] if argv is None else argv, "steps": {}}
    failed = False
    for name, step in steps:
        if name in skip:
            continue
        log(f"[gpu_check] {name}")
        t0 = time.perf_counter()
        result, ok, error, skipped = None, False, None, False
        try:
            result, ok = step(), True
        except Skipped as exc:
            error, skipped = str(exc), True
        except Exception as exc:  # keep going: the other steps still say something
            error = f"{type(exc).__name__}: {exc}"
            log(traceback.format_exc())
            failed = True
        report["steps"][name] = {"ok": ok, "skipped": skipped, "error": error,
                                 "seconds": time.perf_counter() - t0, "result": result}
        (args.out / "gpu.json").write_text(json.dumps(report, indent=1, default=str))
    print(write_summary(args.out, report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
