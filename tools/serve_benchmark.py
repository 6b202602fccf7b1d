#!/usr/bin/env python
"""Throughput and latency of the zoo's b3 cascade served by ``wcx serve`` on loopback.

What it runs (ONNX Runtime, CPU; loopback only; stops by itself):

1. the zoo's b3 pair (``b3_s0 -> b3_s1``) cut from the shipped FP32 bundle and calibrated as
   ``tools/zoo_numbers.sh`` does (``--risk 0.05 --delta 0.1`` on ``calib.npz``); two copies of
   it with the policy replaced: ``all`` (the full ensemble, both members on every row) and
   ``none`` (the single member ``b3_s0``), both with the calibrated tau;
2. each of the three served in turn by ``wcx serve`` (the serving environment's interpreter,
   ``.venv-serve`` or ``--server-python``; default dynamic batching: ``--max-batch 256``,
   100 us queue delay), and driven by 1 and 4 closed-loop clients (``tritonclient.http``,
   one thread each, one request in flight per client) sending requests of 1 and 64 test images
   (float32 in [0, 1]) for ``--seconds`` each after a short warm-up; the cascade and the full
   ensemble are served a second time with ``--input-dtype uint8`` and sent the same images as
   raw pixels (uint8 in [0, 255]: what a camera sends, a quarter of the bytes);
3. with ``--null-model``, the same server answering without inference (``tools/serve_null_model.py``: PyTriton, the
   contract's checks, zeros for outputs), float32 and uint8, driven alike: the transport floor,
   what serving costs per request by itself on this machine;
4. the in-process cascade (``Cascade.load``) called in a loop on requests of the same sizes
   from the same rows in the same dtype (float32, and uint8 for the uint8 servers), one caller,
   for as long, before and after the served runs (their spread shows how much the shared
   machine drifted meanwhile).

Per cell: requests and rows per second, p50 and p99 request latency (the client's clock, from
send to answer). The two targets of the serving work are checked on 64-row requests, per input
dtype (like against like): served cascade throughput >= 0.8x the in-process cascade's on the same
rows in the same dtype (the faster of its two runs), and >= 1.5x the served full ensemble's.

Usage::

    python tools/serve_benchmark.py                  # writes docs/results/serve_benchmark.{md,json}
    python tools/serve_benchmark.py --seconds 1 --out /tmp/x
    python tools/serve_benchmark.py --null-model     # adds step 3

The build machine has 2 cores: clients and server share them (as does anything else running
there), so these are loopback figures of one small machine, not of a serving deployment. The
load averages before and after are recorded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine_facts import machine

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "wcx" / "zoo" / "data"
PAIR = ["b3_s0", "b3_s1"]
SIZES = (1, 64)
CLIENTS = (1, 4)
DTYPES = ("float32", "uint8")
#: the suffix of a configuration's name per input dtype
SUFFIX = {"float32": "", "uint8": ", uint8"}
MODEL = "wcx_cascade"
#: the server answering without inference (tools/serve_null_model.py): the transport floor
NULL = "served null model (no inference)"
WARMUP_SECONDS = 0.3
START_SECONDS = 60


def free_port(n: int = 4) -> int:
    """A loopback port p with p..p+n-1 free."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        try:
            for p in range(base, base + n):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free loopback ports")


def summary(latencies: list[float], rows: int, seconds: float) -> dict[str, Any]:
    lat = np.sort(np.asarray(latencies))
    return {"requests": len(lat), "rows": rows, "seconds": seconds, "requests_per_s": len(lat) / seconds,
            "rows_per_s": rows / seconds, "p50_ms": 1e3 * float(np.quantile(lat, 0.5)),
            "p99_ms": 1e3 * float(np.quantile(lat, 0.99))}


def closed_loop(make_call: Any, requests: list[np.ndarray], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads, each sending the next request as soon as the last is answered with
    ``call(x)``, ``call = make_call()`` made in that thread (tritonclient's HTTP client is gevent's,
    which a thread may not share). Warm-up first, untimed."""
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    rows = [0] * clients
    errors: list[BaseException] = []

    def worker(c: int, timed: bool) -> None:
        i = c
        try:
            call = make_call()
            while not stop.is_set():
                x = requests[i % len(requests)]
                i += clients
                t0 = time.perf_counter()
                call(x)
                if timed:
                    latencies[c].append(time.perf_counter() - t0)
                    rows[c] += len(x)
        except BaseException as exc:  # reported after the run
            errors.append(exc)
            stop.set()

    for timed, duration in ((False, WARMUP_SECONDS), (True, seconds)):
        stop.clear()
        threads = [threading.Thread(target=worker, args=(c, timed)) for c in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(duration)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        if errors:
            raise errors[0]
    return summary([v for per in latencies for v in per], sum(rows), elapsed)


def in_process(cascade: Any, requests: dict[int, list[np.ndarray]], seconds: float) -> dict[str, Any]:
    """The cascade called in this process, one caller, on requests of each size."""
    return {f"1x{size}": closed_loop(lambda: cascade, requests[size], 1, seconds) for size in SIZES}


def start_server(python: str, bundle: Path, port: int, log: Path, dtype: str, *,
                 null: bool = False) -> subprocess.Popen[bytes]:
    """``wcx serve BUNDLE`` (or, ``null``, the same server answering without inference:
    ``tools/serve_null_model.py``) in the serving environment, once its model is ready."""
    import tritonclient.http as http

    sink = log.open("w")
    program = [str(ROOT / "tools" / "serve_null_model.py")] if null else ["-m", "wcx.cli", "serve"]
    proc = subprocess.Popen([python, *program, str(bundle), "--host", "127.0.0.1", "--port",
                             str(port), "--input-dtype", dtype], stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    client = http.InferenceServerClient(f"127.0.0.1:{port}")
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"wcx serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if client.is_model_ready(MODEL):
                return proc
        except Exception:  # not listening yet
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"wcx serve not ready after {START_SECONDS} s: {log.read_text()[-2000:]}")


def served(python: str, bundle: Path, port: int, log: Path, requests: dict[int, list[np.ndarray]],
           seconds: float, *, null: bool = False) -> dict[str, Any]:
    import tritonclient.http as http

    dtype = requests[SIZES[0]][0].dtype.name
    triton_dtype = {"float32": "FP32", "uint8": "UINT8"}[dtype]
    proc = start_server(python, bundle, port, log, dtype, null=null)
    try:
        out: dict[str, Any] = {}

        def make_call() -> Any:
            client = http.InferenceServerClient(f"127.0.0.1:{port}")

            def call(x: np.ndarray) -> None:
                inp = http.InferInput("x", list(x.shape), triton_dtype)
                inp.set_data_from_numpy(x)
                client.infer(MODEL, [inp])

            return call

        for clients in CLIENTS:
            for size in SIZES:
                out[f"{clients}x{size}"] = closed_loop(make_call, requests[size], clients, seconds)
        return out
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def variant(src: Path, dest: Path, kind: str) -> Path:
    """A copy of the calibrated bundle whose policy is ``kind`` ("all" or "none") with its tau."""
    from wcx.bundle import Bundle

    shutil.copytree(src, dest)
    bundle = Bundle.load(dest)
    assert bundle.policy is not None
    policy = {"kind": kind, "score": bundle.policy.score, "task": bundle.policy.task, "tau": bundle.policy.tau}
    bundle.update_sections(policy=policy, calibration=None)
    return dest


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        "# Serving the b3 cascade from Triton on loopback (`tools/serve_benchmark.py`)",
        "",
        f"Measured {res['date']} on the build machine: {m['cpu']}, **{m['cores']} cores, no GPU**, Python "
        f"{m['python']}, ONNX Runtime {m['onnxruntime']}. Server: `wcx serve` (PyTriton {res['pytriton']}, "
        f"Triton 2.51, dynamic batching up to 256 rows, 100 us queue delay) in its own environment; clients: "
        "`tritonclient.http`, one thread each, one request in flight per client. **Clients and server share the "
        "same 2 cores**, and other agents were running their own work on this machine while it was measured "
        f"(load average {res['load_before'][0]:.2f} before, {res['load_after'][0]:.2f} after): these are "
        "loopback figures of one small shared machine, not of a serving deployment.",
        "",
        f"Cascade: the zoo's b3 pair {' -> '.join(PAIR)}, calibrated at 5% risk with delta 0.1 (tau "
        f"{res['tau']:.4f}; {100 * res['pass_fraction'][1]:.1f}% of the test images reach stage 2). Full "
        "ensemble: both members on every row. Single: b3_s0 alone. Requests: test images, float32 in [0, 1] "
        "or, for the rows marked uint8 (the server started with `--input-dtype uint8`; the in-process cascade "
        "called on the same uint8 rows), raw pixels in [0, 255]; "
        f"{res['seconds']:g} s per cell after {WARMUP_SECONDS:g} s of warm-up.",
        "",
        "| configuration | clients | rows/request | requests/s | rows/s | p50 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for config in res["results"]:
        for key, cell in res["results"][config].items():
            clients, size = key.split("x")
            lines.append(f"| {config} | {clients} | {size} | {cell['requests_per_s']:.0f} | {cell['rows_per_s']:.0f} "
                         f"| {cell['p50_ms']:.2f} | {cell['p99_ms']:.2f} |")
    before, after = (res["results"][f"in-process cascade ({w})"]["1x64"]["rows_per_s"] for w in ("before", "after"))
    lines += ["", f"The in-process cascade ran {before:.0f} rows/s on 64-row requests before the served runs and "
              f"{after:.0f} after: the machine's drift over one run is of that order, so ratios between rows of "
              "this table carry it too. Serving adds work to every request (HTTP, copies, Triton's queue); "
              "with 4 clients Triton merges their 64-row requests into cascade calls of up to 256 rows, which cost "
              "less per row than the in-process caller's 64-row calls. The null model is the same server answering "
              "without running a member (`tools/serve_null_model.py`): what serving costs by itself here.", "",
              "Targets (64-row requests, each "
              "ratio between rows of the same input dtype):", ""]
    for t in res["targets"]:
        if t.get("overhead"):
            lines.append(f"- {t['what']}, {t['dtype']}: the served cascade's median {t['added_ms']:.2f} ms above the "
                         f"in-process {t['in_process_ms']:.2f} ms; the null model's median {t['transport_ms']:.2f} ms "
                         f"(serving alone); 0.8x of the in-process throughput allows {t['allowed_ms']:.2f} ms")
            continue
        verdict = "met" if t["met"] else "**not met**"
        lines.append(f"- {t['what']}, {t['dtype']}, {t['clients']} client(s): {t['ratio']:.2f}x (target >= "
                     f"{t['target']}x): {verdict}")
    lines += ["", f"Command: `{res['command']}` (the servers run in `.venv-serve`); wall time "
              f"{res['wall_seconds']:.0f} s, the calibration of the pair included.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results", help="folder for the .md and .json")
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per cell")
    p.add_argument("--null-model", action="store_true",
                   help="also serve the null model (tools/serve_null_model.py, no inference) and report what serving "
                        "adds per request: about 25 s more")
    p.add_argument("--server-python", default=str(ROOT / ".venv-serve" / "bin" / "python"),
                   help="interpreter of the serving environment (the serve extra)")
    args = p.parse_args(argv)
    from wcx.atomic import write_text_atomic
    from wcx.bundle import Bundle, select_members
    from wcx.runtime.cascade import Cascade
    from wcx.zoo.experiment import load_split, load_zoo_bundle

    pytriton = subprocess.run([args.server_python, "-c", "import pytriton; print(pytriton.__version__)"],
                              capture_output=True, text=True, check=True).stdout.strip()
    started = time.perf_counter()
    load_before = os.getloadavg()
    test = load_split("test")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(test.x))
    pixels = test.x[order]
    assert pixels.dtype == np.uint8
    images = pixels.astype(np.float32) / 255.0  # the same rows as float32 in [0, 1]
    requests = {dtype: {size: [rows[i:i + size] for i in range(0, len(rows) - size + 1, size)][:200]
                        for size in SIZES}
                for dtype, rows in (("float32", images), ("uint8", pixels))}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="wcx-serve-bench-") as tmp:
        cascade_dir = Path(tmp) / "cascade"
        select_members(load_zoo_bundle("fp32"), PAIR, cascade_dir)
        subprocess.run([sys.executable, "-m", "wcx.cli", "calibrate", str(cascade_dir), "--data",
                        str(DATA / "calib.npz"), "--risk", "0.05", "--delta", "0.1"], check=True, stdout=sys.stderr)
        full, single = variant(cascade_dir, Path(tmp) / "all", "all"), variant(cascade_dir, Path(tmp) / "none", "none")
        servers = [("served cascade", cascade_dir, "float32"), ("served full ensemble", full, "float32"),
                   ("served single", single, "float32"), ("served cascade, uint8", cascade_dir, "uint8"),
                   ("served full ensemble, uint8", full, "uint8")]
        if args.null_model:
            servers += [(NULL, cascade_dir, "float32"), (f"{NULL}, uint8", cascade_dir, "uint8")]
        with Cascade.load(Bundle.load(cascade_dir), "onnxruntime") as cascade:
            tau = float(cascade.tau or 0.0)
            pass_fraction = cascade.predict(images).pass_fraction
            # in-process before and after the served runs: the spread shows the machine's drift
            for dtype in DTYPES:
                results[f"in-process cascade{SUFFIX[dtype]} (before)"] = in_process(cascade, requests[dtype],
                                                                                   args.seconds)
            for config, bundle, dtype in servers:
                results[config] = served(args.server_python, bundle, free_port(), Path(tmp) / f"{config}.log",
                                         requests[dtype], args.seconds, null=config.startswith(NULL))
            for dtype in DTYPES:
                results[f"in-process cascade{SUFFIX[dtype]} (after)"] = in_process(cascade, requests[dtype],
                                                                                  args.seconds)
    load_after = os.getloadavg()
    targets = []
    for dtype in DTYPES:
        sfx = SUFFIX[dtype]
        for clients in CLIENTS:
            cell = results[f"served cascade{sfx}"][f"{clients}x64"]["rows_per_s"]
            # against the faster of the two in-process runs on the same rows: the stricter comparison
            local = max(results[f"in-process cascade{sfx} ({w})"]["1x64"]["rows_per_s"] for w in ("before", "after"))
            targets.append({"what": "served cascade / in-process cascade (the faster of its two runs)",
                            "dtype": dtype, "clients": clients, "target": 0.8, "ratio": cell / local})
            if args.null_model and clients == 1:
                # one request in flight: its transport and its inference follow each other, so the
                # served time is the in-process time plus what serving adds; 0.8x of the in-process
                # throughput allows serving to add a quarter of the in-process time
                local_ms = min(results[f"in-process cascade{sfx} ({w})"]["1x64"]["p50_ms"] for w in ("before", "after"))
                targets.append({"what": "serving overhead per 64-row request, one client", "dtype": dtype,
                                "clients": 1, "overhead": True,
                                "added_ms": results[f"served cascade{sfx}"]["1x64"]["p50_ms"] - local_ms,
                                "transport_ms": results[f"{NULL}{sfx}"]["1x64"]["p50_ms"],
                                "in_process_ms": local_ms, "allowed_ms": 0.25 * local_ms})
            targets.append({"what": "served cascade / served full ensemble", "dtype": dtype, "clients": clients,
                            "target": 1.5,
                            "ratio": cell / results[f"served full ensemble{sfx}"][f"{clients}x64"]["rows_per_s"]})
    for t in targets:
        if "ratio" in t:
            t["met"] = bool(t["ratio"] >= t["target"])
    command = ("python tools/serve_benchmark.py" + (f" --seconds {args.seconds:g}" if args.seconds != 1.0 else "")
               + (" --null-model" if args.null_model else ""))
    res = {"date": datetime.date.today().isoformat(), "command": command, "machine": machine(), "pytriton": pytriton,
           "load_before": list(load_before), "load_after": list(load_after), "seconds": args.seconds,
           "tau": tau, "pass_fraction": pass_fraction, "results": results, "targets": targets,
           "wall_seconds": time.perf_counter() - started,
           "note": "loopback on a shared 2-core machine: clients and server share the cores; other agents ran "
                   "their own work meanwhile"}
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "serve_benchmark.json", json.dumps(res, indent=2) + "\n")
    write_text_atomic(args.out / "serve_benchmark.md", render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
