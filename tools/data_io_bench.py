#!/usr/bin/env python
"""Calibrating from IDX files, an image folder and an .npz in bounded memory, with equal results.

The calibration path (every member's logits on the held-out data, then a fit) runs over the
60,000 Fashion-MNIST training images, read

* ``idx``: from the IDX files as Debian's ``dataset-fashion-mnist`` installs them
  (``/usr/share/datasets/fashion-mnist/train-{images-idx3,labels-idx1}-ubyte.gz``);
* ``folder``: from the same images written as one PNG file per image under ``WORK/folder``
  (one sub-folder per class, named by the class; files named by their row in the IDX file);
* ``npz``: from the same images in an ``.npz`` (``x`` uint8 (N, 1, 28, 28), ``y``), written
  compressed as ``wcx.data.save_npz`` writes it (decompressed chunk by chunk as it is read);

each in a fresh process (``--child``), whose peak RSS (``VmHWM``) is the figure: the target is
below 1 GB each. A fourth child only loads the bundle and starts its runners, without data: what
the data path adds is the difference. The members are two zoo members (``--members``, default
``b0_s0,b0_s1``) on ONNX Runtime, with a fresh logits cache per child (so every child runs its
members), calibrated at 5% risk without a guarantee, with ``n_boot=0`` (the window search's
bootstrap draws rows by index, so only the plain rule gives a fit that does not depend on the
rows' order; an image folder lists its rows grouped by class, as torchvision does).

The parent then checks that the same images gave the same numbers: the folder's logits must equal
the IDX logits taken in the folder's order (rows grouped by class, the class folders named so that
their sorted order is the label order), bit for bit, and the npz's the IDX logits; tau and the
windows must be equal. Usage::

    python tools/data_io_bench.py --out docs/results/data_io       # writes data_io.json and .md

Linux only (``/proc``). Without the Debian package, ``--idx-dir`` names another folder of the
same four files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine_facts import machine, status_mib

ROOT = Path(__file__).resolve().parents[1]
IDX_DIR = Path("/usr/share/datasets/fashion-mnist")
#: the folder's class names: prefixed with the label, so that their sorted order (an image folder's
#: labels) is Fashion-MNIST's label order
CLASSES = [f"{i}_{name}" for i, name in enumerate(
    ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"])]
GIB = 2**30


# ---------------------------------------------------------------------------------------------
# one measurement, in its own process
# ---------------------------------------------------------------------------------------------
def child(kind: str, data: str, bundle_dir: str, logits_out: str) -> dict[str, Any]:
    """Open ``data``, run the members on it and fit; report times, peak RSS and the fit."""
    from wcx.bundle import Bundle
    from wcx.calibration.calibrator import CascadeCalibrator
    from wcx.calibration.held_out import calibrate_bundle, open_data_for
    from wcx.runtime.backends import create_runners

    t0 = time.perf_counter()
    bundle = Bundle.load(bundle_dir)
    if kind == "baseline":  # the bundle and its runners, no data
        runners = create_runners(bundle, "onnxruntime")
        for r in runners:
            r.activate()
        return {"kind": kind, "peak_rss_mib": status_mib("VmHWM"), "seconds": time.perf_counter() - t0}
    source = open_data_for(bundle, data, require_labels=True)
    opened = time.perf_counter()
    done = calibrate_bundle(bundle, source, CascadeCalibrator(risk=0.05, n_boot=0), write_manifest=False)
    finished = time.perf_counter()
    np.save(logits_out, done.logits)
    r = done.report
    return {
        "kind": kind, "data": data, "source": type(source).__name__, "n": int(done.logits.shape[1]),
        "peak_rss_mib": status_mib("VmHWM"), "open_seconds": opened - t0, "calibrate_seconds": finished - opened,
        "tau": r["tau"], "windows": r["windows"], "coverage": r["coverage"], "risk": r["risk"],
        "pass_fraction": r["pass_fraction"], "class_names": r.get("class_names"),
        "logits_sha256": hashlib.sha256(np.ascontiguousarray(done.logits).tobytes()).hexdigest(),
    }


def run_child(kind: str, data: Path | str, bundle: Path, work: Path) -> dict[str, Any]:
    cache = work / f"cache-{kind}"
    shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ, WCX_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, "--child", kind, str(data), str(bundle), str(work / f"logits-{kind}.npy")]
    started = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"child {kind} failed:\n{res.stderr}")
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall_seconds"] = time.perf_counter() - started
    return out


# ---------------------------------------------------------------------------------------------
# the data and the comparison
# ---------------------------------------------------------------------------------------------
def prepare(work: Path, idx_dir: Path, members: list[str]) -> dict[str, Any]:
    from wcx.bundle import Bundle, select_members
    from wcx.data import read_idx, save_image_folder, save_npz

    images = idx_dir / "train-images-idx3-ubyte.gz"
    labels = idx_dir / "train-labels-idx1-ubyte.gz"
    if not images.is_file():
        raise SystemExit(f"{images}: not found (apt-get install dataset-fashion-mnist, or --idx-dir)")
    bundle = work / "bundle"
    if not bundle.is_dir():
        select_members(Bundle.load(ROOT / "wcx" / "zoo" / "bundles" / "fp32"), members, bundle)
    x = read_idx(images)[:, None]
    y = read_idx(labels).astype(np.int64)
    timings = {}
    npz = work / "train.npz"
    if not npz.is_file():
        t = time.perf_counter()
        save_npz(npz, x, y)
        timings["write_npz_seconds"] = time.perf_counter() - t
    folder = work / "folder"
    if not folder.is_dir():
        t = time.perf_counter()
        save_image_folder(folder, x, y, class_names=CLASSES)
        timings["write_folder_seconds"] = time.perf_counter() - t
    files = sum(1 for _ in folder.rglob("*.png"))
    return {"bundle": bundle, "idx": images, "npz": npz, "folder": folder, "y": y, "n": len(y),
            "folder_files": files, "folder_bytes": sum(p.stat().st_size for p in folder.rglob("*.png")),
            "npz_bytes": npz.stat().st_size, "idx_bytes": images.stat().st_size + labels.stat().st_size, **timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=4, metavar=("KIND", "DATA", "BUNDLE", "LOGITS"), help=argparse.SUPPRESS)
    parser.add_argument("--idx-dir", type=Path, default=IDX_DIR)
    parser.add_argument("--work", type=Path, default=Path("/tmp/wcx-data-io"))
    parser.add_argument("--members", default="b0_s0,b0_s1")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    data = prepare(args.work, args.idx_dir, args.members.split(","))
    runs = {kind: run_child(kind, data[kind] if kind != "baseline" else "-", data["bundle"], args.work)
            for kind in ("baseline", "idx", "folder", "npz")}
    logits = {k: np.load(args.work / f"logits-{k}.npy") for k in ("idx", "folder", "npz")}
    order = np.argsort(data["y"], kind="stable")  # the folder's rows: grouped by class, in file-name order
    same = {
        "folder_logits_equal_idx_logits_in_folder_order": bool(
            np.array_equal(logits["folder"], logits["idx"][:, order])),
        "npz_logits_equal_idx_logits": bool(np.array_equal(logits["npz"], logits["idx"])),
        "tau_equal": len({runs[k]["tau"] for k in logits}) == 1,
        "windows_equal": len({json.dumps(runs[k]["windows"]) for k in logits}) == 1,
    }
    peak = {k: runs[k]["peak_rss_mib"] for k in runs}
    result = {
        "machine": machine(memory=True, pillow=True), "members": args.members.split(","), "n": data["n"],
        "files": {k: data[k] for k in ("folder_files", "folder_bytes", "npz_bytes", "idx_bytes")},
        "write_seconds": {k: data[k] for k in ("write_npz_seconds", "write_folder_seconds") if k in data},
        "runs": runs, "same_numbers": same,
        "target": "peak RSS below 1 GB (1024 MiB) for each of idx, folder, npz",
        "target_met": all(peak[k] < GIB / 2**20 for k in ("idx", "folder", "npz")),
        "logits_mib": float(logits["idx"].nbytes / 2**20),
        "data_in_memory_mib": {"uint8": data["n"] * 784 / 2**20, "float32_per_member": data["n"] * 784 * 4 / 2**20},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(render(result))


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    runs = r["runs"]
    lines = [
        "# Calibrating from IDX files, an image folder and an .npz",
        "",
        f"Measured with `python tools/data_io_bench.py --out docs/results/data_io` (the JSON next to this page holds "
        f"every number) on the build machine: {m['cores']} cores of {m['cpu']}, {m['memory_gib']} GiB, Python "
        f"{m['python']}, numpy {m['numpy']}, ONNX Runtime {m['onnxruntime']} (CPU), Pillow {m['pillow']}. Other "
        "work ran on the machine at the same time, so the times are indicative; the memory figures and the "
        "equalities are not affected.",
        "",
        f"The calibration path (members {' and '.join(r['members'])} of the zoo on every image, then a fit at 5% "
        f"risk, empirical, `n_boot=0`) over the {r['n']:,} Fashion-MNIST training images, each source in a fresh "
        "process with a fresh logits cache; peak RSS is the process's `VmHWM`.",
        "",
        "| data | read as | peak RSS | open s | members + fit s |",
        "| --- | --- | --- | --- | --- |",
        f"| (none: bundle and runners only) | - | {runs['baseline']['peak_rss_mib']:.1f} MiB | - | - |",
    ]
    names = {"idx": "IDX files (Debian's gz)", "folder": f"PNG folder ({r['files']['folder_files']:,} files)",
             "npz": ".npz (compressed)"}
    for k in ("idx", "folder", "npz"):
        run = runs[k]
        lines.append(f"| {names[k]} | {run['source']} | {run['peak_rss_mib']:.1f} MiB | {run['open_seconds']:.2f} | "
                     f"{run['calibrate_seconds']:.1f} |")
    s = r["same_numbers"]
    lines += [
        "",
        f"Target: below 1 GB each. {'Met' if r['target_met'] else 'NOT met'}. The logits themselves take "
        f"{r['logits_mib']:.1f} MiB (N x M x K float32); the images would take {r['data_in_memory_mib']['uint8']:.0f} "
        f"MiB as uint8 and {r['data_in_memory_mib']['float32_per_member']:.0f} MiB per member preprocessed, none of "
        "which is ever held whole: rows are read, decoded and preprocessed 512 at a time.",
        "",
        "Same images, same numbers: the folder's logits equal the IDX logits taken in the folder's order (rows "
        f"grouped by class), bit for bit: {s['folder_logits_equal_idx_logits_in_folder_order']}; the npz's equal "
        f"the IDX logits: {s['npz_logits_equal_idx_logits']}; "
        f"tau equal: {s['tau_equal']} (tau {runs['idx']['tau']:.6g}); windows equal: {s['windows_equal']} "
        f"({runs['idx']['windows']}); coverage {100 * runs['idx']['coverage']:.2f}% at risk "
        f"{100 * runs['idx']['risk']:.2f}%.",
        "",
        "The folder's open time includes listing its files; its members + fit time includes hashing every file "
        "(the logits cache's content key) and decoding every PNG with Pillow. The folder is written by "
        "`wcx.data.save_image_folder`"
        + (f" ({r['write_seconds']['write_folder_seconds']:.0f} s)" if "write_folder_seconds" in r["write_seconds"]
           else "") + f" and holds {r['files']['folder_bytes'] / 2**20:.1f} MiB of PNGs; the IDX files are "
        f"{r['files']['idx_bytes'] / 2**20:.1f} MiB, the npz {r['files']['npz_bytes'] / 2**20:.1f} MiB.",
        "",
    ]
    # prose wrapped at 100 columns, tables as they are
    return "\n".join(line if line.startswith("|") else textwrap.fill(line, 100, break_on_hyphens=False)
                     for line in lines)


if __name__ == "__main__":
    main()
