#!/usr/bin/env python
"""Reliability measurements of wcx on this machine (the README's "Reliability" figures).

Every measurement uses the shipped Fashion-MNIST zoo on ONNX Runtime (CPU):

* ``memory``: peak RSS a single cascade call adds, for 256 rows and for 20,000 rows, each in a
  fresh process, measured after the input array exists (``/proc/self/clear_refs`` resets the
  peak, ``VmHWM`` reads it). Target: the 20,000-row call adds at most 2x what the 256-row call
  adds, plus its own output arrays. Cascade: b3_s0 -> b3_s1 with policy ``all`` (every row runs
  both members: the most work per row).
* ``soak``: RSS over 2,000 calls of one calibrated cascade in a fresh process (batch sizes
  cycling 1, 7, 32, 256, 300), sampled along the way; the growth after the first 100 calls is
  what a leak would show.
* ``threads``: 8 threads calling one shared cascade (and 8 threads each with its own cascade)
  on different batches; every output must equal the single-threaded one, bit for bit.
* ``kill``: ``wcx export --overwrite`` and ``wcx calibrate`` killed with SIGKILL at random
  moments (50 kills with the atomic exchange, 10 more with the two-rename fallback forced);
  after each kill the bundle must load and verify (old or new, never partial); leftovers of the
  killed writers must be gone after the next write.
* ``input-check``: the input-range check's cost against a batch-256 cascade call (target <= 2%),
  for the cheapest zoo member alone and for the b3 cascade, on float32 input.

Usage::

    python tools/reliability_bench.py all --out docs/results/reliability.json
    python tools/reliability_bench.py memory            # one measurement
    python tools/reliability_bench.py memory --code OLD_CHECKOUT   # the same calls with older wcx code

Linux only (``/proc``). Prints one JSON document; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine_facts import machine, status_mib

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "wcx" / "zoo"
PAIR = ["b3_s0", "b3_s1"]


def _pair_bundle(work: Path, *, calibrated: bool) -> Path:
    from wcx.bundle import Bundle, select_members

    path = work / ("pair_cal" if calibrated else "pair")
    if (path / "wcx.json").is_file():
        return path
    select_members(Bundle.load(ZOO / "bundles" / "fp32"), PAIR, path)
    if calibrated:
        from wcx.calibration.calibrator import CascadeCalibrator
        from wcx.calibration.held_out import calibrate_bundle, load_dataset_for

        b = Bundle.load(path)
        calibrate_bundle(b, load_dataset_for(b, ZOO / "data" / "calib.npz", require_labels=True),
                         CascadeCalibrator(risk=0.05, delta=0.1)).calibrator.raise_if_failed()
    return path


def _test_images(n: int) -> np.ndarray:
    with np.load(ZOO / "data" / "test.npz") as z:
        x = z["x"]
    return (np.resize(x, (n, *x.shape[1:])).astype(np.float32) / np.float32(255.0)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# memory: one call of n rows in a fresh process
# ---------------------------------------------------------------------------------------------
def _memory_child(bundle: str, n: int, threads: int) -> dict[str, Any]:
    from wcx.runtime.cascade import Cascade

    cascade = Cascade.load(bundle, "onnxruntime", policy="all", threads=threads)
    x = _test_images(n)
    before = status_mib("VmRSS:")
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as fh:
        fh.write("5")  # reset the peak: what follows is what the call adds
    t0 = time.perf_counter()
    out = cascade(x)
    seconds = time.perf_counter() - t0
    peak = status_mib("VmHWM:")
    outputs = sum(a.nbytes for a in (out.pred, out.score, out.accept, out.exit_stage)) / 2**20
    row: dict[str, Any] = {"rows": n, "rss_before_mib": round(before, 1), "peak_mib": round(peak, 1),
                           "added_mib": round(peak - before, 1), "outputs_mib": round(outputs, 2),
                           "input_mib": round(x.nbytes / 2**20, 1), "seconds": round(seconds, 2)}
    if n <= 256:  # what the second call of that size adds (ONNX Runtime plans memory on the first)
        cascade(x)
        row["added_after_second_call_mib"] = round(status_mib("VmHWM:") - before, 1)
    return row


def memory(work: Path, threads: int, code: Path | None = None) -> dict[str, Any]:
    bundle = _pair_bundle(work, calibrated=False)
    rows = []
    env = dict(os.environ) if code is None else dict(os.environ, PYTHONPATH=str(code))
    for n in (256, 20000):
        res = subprocess.run([sys.executable, __file__, "_memory_child", str(bundle), str(n), str(threads)],
                             capture_output=True, text=True, check=True, cwd=ROOT, env=env)
        rows.append(json.loads(res.stdout))
    small, large = rows
    limit = 2 * small["added_mib"] + large["outputs_mib"]
    return {"cascade": "b3_s0 -> b3_s1, policy all, float32 input", "threads": threads,
            "code": "this checkout" if code is None else str(code), "calls": rows,
            "limit_mib": round(limit, 1), "ratio": round(large["added_mib"] / small["added_mib"], 2),
            "target_met": large["added_mib"] <= limit}


# ---------------------------------------------------------------------------------------------
# soak: 2,000 calls
# ---------------------------------------------------------------------------------------------
def _soak_child(bundle: str, threads: int, calls: int) -> dict[str, Any]:
    from wcx.runtime.cascade import Cascade

    cascade = Cascade.load(bundle, "onnxruntime", threads=threads)
    with np.load(ZOO / "data" / "test.npz") as z:
        x = z["x"]
    sizes = (1, 7, 32, 256, 300)
    samples: dict[int, float] = {0: status_mib("VmRSS:")}
    t0 = time.perf_counter()
    for i in range(1, calls + 1):
        b = sizes[i % len(sizes)]
        start = (i * 97) % (len(x) - b)
        cascade(x[start : start + b])
        if i in (100, 250, 500, 1000, 1500, 2000, 4000, 8000, 16000) or i == calls:
            samples[i] = status_mib("VmRSS:")
    seconds = time.perf_counter() - t0
    after_warmup = samples[min(100, calls)]
    return {"cascade": "b3_s0 -> b3_s1 calibrated (window), uint8 input", "calls": calls, "batch_sizes": sizes,
            "threads": threads, "rss_mib": {str(k): round(v, 1) for k, v in samples.items()},
            "growth_after_100_calls_mib": round(samples[calls] - after_warmup, 1),
            "peak_mib": round(status_mib("VmHWM:"), 1), "seconds": round(seconds, 1)}


def soak(work: Path, threads: int, calls: int = 2000) -> dict[str, Any]:
    bundle = _pair_bundle(work, calibrated=True)
    res = subprocess.run([sys.executable, __file__, "_soak_child", str(bundle), str(threads), str(calls)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    out: dict[str, Any] = json.loads(res.stdout)
    return out


# ---------------------------------------------------------------------------------------------
# threads: 8 threads, same answers
# ---------------------------------------------------------------------------------------------
def threads_equal(work: Path, n_threads: int = 8, calls: int = 25) -> dict[str, Any]:
    from wcx.runtime.cascade import Cascade

    bundle = _pair_bundle(work, calibrated=True)
    with np.load(ZOO / "data" / "test.npz") as z:
        x = z["x"]
    rng = np.random.default_rng(0)
    jobs = [[(int(s), int(b)) for s, b in zip(rng.integers(0, len(x) - 300, calls), rng.integers(1, 300, calls),
                                              strict=True)] for _ in range(n_threads)]
    reference = {}
    with Cascade.load(bundle, "onnxruntime", threads=1) as single:
        for job in jobs:
            for s, b in job:
                reference[(s, b)] = single(x[s : s + b])

    def same(out: Any, ref: Any) -> bool:
        return all(np.array_equal(getattr(out, k), getattr(ref, k)) for k in ("pred", "score", "accept", "exit_stage"))

    result: dict[str, Any] = {"threads": n_threads, "calls_per_thread": calls}
    for mode in ("shared", "one_per_thread"):
        shared = Cascade.load(bundle, "onnxruntime", threads=1) if mode == "shared" else None
        mismatches: list[int] = []
        errors: list[str] = []

        def work_on(job: list[tuple[int, int]], _shared: Any = shared, _bad: list[int] = mismatches,
                    _errors: list[str] = errors) -> None:
            try:
                cascade = _shared or Cascade.load(bundle, "onnxruntime", threads=1)
                _bad.append(sum(not same(cascade(x[s : s + b]), reference[(s, b)]) for s, b in job))
                if _shared is None:
                    cascade.close()
            except Exception as exc:  # reported, not raised: the measurement says what happened
                _errors.append(f"{type(exc).__name__}: {exc}")

        workers = [threading.Thread(target=work_on, args=(job,)) for job in jobs]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if shared is not None:
            shared.close()
        result[mode] = {"calls": n_threads * calls, "mismatches": int(sum(mismatches)), "errors": errors,
                        "all_equal": not errors and sum(mismatches) == 0}
    return result


# ---------------------------------------------------------------------------------------------
# kill -9 during export and calibrate
# ---------------------------------------------------------------------------------------------
_FALLBACK = ("import sys, wcx.atomic as a; a._RENAMEAT2 = None; from wcx.cli import main; "
             "sys.argv = ['wcx'] + sys.argv[1:]; main()")


def _command(args: list[str], fallback: bool) -> list[str]:
    return [sys.executable, "-c", _FALLBACK, *args] if fallback else [sys.executable, "-m", "wcx.cli", *args]


def _hidden(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def _kill_runs(args: list[str], bundle: Path, kills: int, duration: float, rng: random.Random, *,
               fallback: bool, check: Any, env: dict[str, str]) -> dict[str, Any]:
    """Start the command and SIGKILL it at a random moment of its usual run time until ``kills``
    runs were killed; after each, the bundle must load and verify."""
    from wcx.bundle import Bundle

    killed = finished = seen = 0
    failures: list[str] = []
    while killed < kills and killed + finished < 3 * kills:
        proc = subprocess.Popen(_command(args, fallback), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd=ROOT, env=env)
        time.sleep(rng.uniform(0.05, duration))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        else:
            finished += 1
        proc.wait()
        # staging copies a kill left (each run's write removes the ones before it)
        seen += len(_hidden(bundle.parent, bundle.name) + [p.name for p in bundle.glob(".*")])
        try:
            check(Bundle.load(bundle))  # verifies every file; recovers an interrupted replacement
        except Exception as exc:  # a partial bundle: recorded, the run goes on
            failures.append(f"{type(exc).__name__}: {exc}")
    subprocess.run(_command(args, fallback), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                   env=env, check=True)  # the next write cleans the leftovers of the killed ones
    leftovers = _hidden(bundle.parent, bundle.name) + [p.name for p in bundle.glob(".*")]
    return {"runs": killed + finished, "killed": killed, "finished_before_the_kill": finished,
            "load_failures": failures, "leftovers_left_by_kills": seen,
            "leftovers_after_next_write": leftovers}


def kill(work: Path, kills: int = 50, fallback_kills: int = 10) -> dict[str, Any]:
    rng = random.Random(0)
    env = dict(os.environ, WCX_CACHE_DIR=str(work / "kill-cache"))
    members = work / "members"
    members.mkdir(exist_ok=True)
    for name in ("b1_s0", "b1_s1"):
        shutil.copyfile(ZOO / "bundles" / "fp32" / "members" / f"{name}.onnx", members / f"{name}.onnx")
    calib = ZOO / "data" / "calib.npz"
    out: dict[str, Any] = {}

    export_dest = work / "exported"
    export_args = ["export", str(members / "b1_s0.onnx"), str(members / "b1_s1.onnx"), "--input-shape", "1,28,28",
                   "--out", str(export_dest), "--calib-data", str(calib), "--overwrite"]
    t0 = time.perf_counter()
    subprocess.run(_command(export_args, False), capture_output=True, check=True, cwd=ROOT, env=env)
    export_seconds = time.perf_counter() - t0

    def export_ok(b: Any) -> None:
        assert [m.name for m in b.members] == ["b1_s0", "b1_s1"]

    cal_dest = _pair_bundle(work, calibrated=False)
    cal_args = ["calibrate", str(cal_dest), "--data", str(calib), "--risk", "0.05", "--delta", "0.1",
                "--replace-certified"]
    subprocess.run(_command(cal_args, False), capture_output=True, check=True, cwd=ROOT, env=env)  # fills the cache
    t0 = time.perf_counter()
    subprocess.run(_command(cal_args, False), capture_output=True, check=True, cwd=ROOT, env=env)
    cal_seconds = time.perf_counter() - t0

    def cal_ok(b: Any) -> None:
        assert b.calibration is None or b.calibration.certified

    half = kills // 2
    out["export"] = {"seconds_per_run": round(export_seconds, 2),
                     **_kill_runs(export_args, export_dest, half, export_seconds, rng, fallback=False,
                                  check=export_ok, env=env)}
    out["calibrate"] = {"seconds_per_run": round(cal_seconds, 2),
                        **_kill_runs(cal_args, cal_dest, kills - half, cal_seconds, rng, fallback=False,
                                     check=cal_ok, env=env)}
    out["export_two_renames"] = _kill_runs(export_args, export_dest, fallback_kills, export_seconds, rng,
                                           fallback=True, check=export_ok, env=env)
    total = [out[k] for k in ("export", "calibrate", "export_two_renames")]
    out["killed"] = sum(r["killed"] for r in total)
    out["partial_bundles"] = sum(len(r["load_failures"]) for r in total)
    out["leftovers"] = sum(len(r["leftovers_after_next_write"]) for r in total)
    return out


# ---------------------------------------------------------------------------------------------
# the input check's cost
# ---------------------------------------------------------------------------------------------
def input_check(work: Path, threads: int, repeats: int = 200) -> dict[str, Any]:
    from wcx.bundle import Bundle, select_members
    from wcx.core.preprocess import Preprocessor
    from wcx.runtime.cascade import Cascade

    x = _test_images(256)
    single = work / "b0"
    if not (single / "wcx.json").is_file():
        select_members(Bundle.load(ZOO / "bundles" / "fp32"), ["b0_s0"], single)
    configs = {"b0_s0 alone (cheapest member)": (single, "none"),
               "b3_s0 -> b3_s1 calibrated": (_pair_bundle(work, calibrated=True), None)}
    out: dict[str, Any] = {"rows": 256, "input": "float32 in [0, 1]", "threads": threads, "repeats": repeats}
    for label, (bundle, policy) in configs.items():
        with Cascade.load(bundle, "onnxruntime", threads=threads, policy=policy) as cascade:
            for _ in range(10):
                cascade(x)
            call = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                cascade(x)
                call.append(time.perf_counter() - t0)
            pre = Preprocessor(cascade.input)
            check = []
            for _ in range(repeats * 5):
                t0 = time.perf_counter()
                pre.check_range(x)
                check.append(time.perf_counter() - t0)
        c, k = float(np.median(call)), float(np.median(check))
        out[label] = {"call_ms": round(1000 * c, 3), "check_ms": round(1000 * k, 4),
                      "check_share_percent": round(100 * k / c, 2), "target_met": k <= 0.02 * c}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["memory", "soak", "threads", "kill", "input-check", "all", "_memory_child",
                                         "_soak_child"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--calls", type=int, default=2000, help="soak: calls of the cascade")
    parser.add_argument("--code", type=Path, default=None,
                        help="memory: run the calls with the wcx package found here (e.g. an older checkout)")
    a = parser.parse_args()
    if a.what == "_memory_child":
        print(json.dumps(_memory_child(a.args[0], int(a.args[1]), int(a.args[2]))))
        return
    if a.what == "_soak_child":
        print(json.dumps(_soak_child(a.args[0], int(a.args[1]), int(a.args[2]))))
        return
    work = a.work or Path(tempfile.mkdtemp(prefix="wcx-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WCX_CACHE_DIR", str(work / "cache"))
    steps = {"memory": lambda: memory(work, a.threads, a.code), "soak": lambda: soak(work, a.threads, a.calls),
             "threads": lambda: threads_equal(work), "kill": lambda: kill(work),
             "input-check": lambda: input_check(work, a.threads)}
    chosen = list(steps) if a.what == "all" else [a.what]
    result: dict[str, Any] = {"machine": machine(memory=True), "command": " ".join(["python tools/reliability_bench.py",
                                                                          *sys.argv[1:]])}
    for name in chosen:
        t0 = time.perf_counter()
        result[name] = steps[name]()
        result[name]["wall_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: done in {result[name]['wall_seconds']} s", file=sys.stderr)
    text = json.dumps(result, indent=2)
    print(text)
    if a.out is not None:
        from wcx.atomic import write_text_atomic

        write_text_atomic(a.out, text + "\n")
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
