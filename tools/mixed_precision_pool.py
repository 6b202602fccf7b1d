#!/usr/bin/env python
"""A pool holding zoo members at two precisions, planned, and the decisions INT8 flips.

1. ``wcx.export_bundle`` exports the chosen zoo members (their FP32 ONNX files) twice each, at
   FP32 and at INT8 (default settings; ranges and the agreement gate on ``calib``), into one pool
   (``b1_s0`` and ``b1_s0_int8``, ...);
2. ``wcx plan`` (:func:`wcx.calibration.plan_bundle.plan_bundle`) plans on ``calib`` with
   ``--max-cost`` (MACs), measured on ``test``; the search runs each model once per cascade;
3. the report's ``precision_flips``: the planned cascade against the same cascade (windows, tau)
   with every INT8 stage replaced by its FP32 twin: accept decisions flipped overall, on the inputs
   the cascade passed on from stage 1 (inside its window) and on the others.

MACs count an INT8 member like its FP32 twin, so which copy a MACs plan takes is decided by
coverage alone; ``--cost latency`` with a ``wcx bench --json`` of the target device is how a
faster INT8 copy gets preferred.

    python tools/mixed_precision_pool.py --out docs/results/mixed_precision_pool
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine_facts import machine
from result_files import write_result

ROOT = Path(__file__).resolve().parents[1]


def run(members: list[str], max_cost: float, seed: int) -> dict[str, Any]:
    from wcx import export_bundle
    from wcx.bundle import Bundle
    from wcx.calibration.held_out import open_data_for
    from wcx.calibration.plan_bundle import plan_bundle
    from wcx.zoo import ZOO_DIR, load_manifest, split_path

    pre = load_manifest()["preprocess"]
    onnx = [str(ZOO_DIR / "bundles" / "fp32" / "members" / f"{m}.onnx") for m in members]
    with tempfile.TemporaryDirectory(prefix="wcx-mixed-") as tmp:
        pool_dir = Path(tmp) / "pool"
        export = export_bundle([p for p in onnx for _ in range(2)], pool_dir, input_shape=(1, 28, 28),
                               precision=["fp32", "int8"] * len(members),
                               names=[n for m in members for n in (m, f"{m}_int8")], mean=pre["mean"], std=pre["std"],
                               calib_data=split_path("calib"), seed=seed)
        pool = Bundle.load(pool_dir)
        done = plan_bundle(pool, open_data_for(pool, split_path("calib")), Path(tmp) / "plan", max_cost=max_cost,
                           test=open_data_for(pool, split_path("test")), seed=seed)
        agreement = {r.name: r.checks["int8"]["eval"]["top1_agreement"] for r in export.members
                     if r.precision == "int8"}
        report = done.report
        return {"members": members, "max_cost": max_cost, "int8_agreement": agreement,
                "plan": report.get("members"), "certified": report["certified"],
                "candidates": [c["members"] for c in report["candidates"]],
                "figures": report.get("figures"), "precision_flips": report["precision_flips"]}


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = ["# One model at two precisions in a pool: what INT8 flips in a planned cascade", "",
             f"Made by `{r['command']}` ({r['seconds']:.0f} s on {m['cpu']}, {m['cores']} cores). Pool: the zoo "
             f"members {', '.join(r['members'])}, each exported at FP32 and at INT8 "
             "(`wcx export --precision fp32,int8,...`; "
             "INT8 top-1 agreement with FP32 on 1,000 held-back `calib` images: " + ", ".join(
                 f"{k} {100 * v:.1f}%" for k, v in r["int8_agreement"].items()) + f"). Planned on `calib` with "
             f"`--max-cost {r['max_cost']:g}` (MACs, risk 0.05, delta 0.1), measured on `test`.", ""]
    if not r["certified"]:
        return "\n".join(lines + ["No cascade was certified.", ""])
    lines += [f"Plan: {' > '.join(r['plan'])}. Candidates certified together: " + "; ".join(
        " > ".join(c) for c in r["candidates"]) + " (no cascade runs a model and its own INT8 copy).", ""]
    flips = r["precision_flips"]
    if not flips:
        return "\n".join(lines + ["The plan has no INT8 stage, so nothing to compare.", ""])
    lines += ["Against the same cascade with every INT8 stage replaced by its FP32 twin (same windows, same tau):",
              "", "| data | accept decisions flipped | of the inputs passed on from stage 1 | of the others | "
              "exit stage changed | top-1 changed |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for part, f in flips.items():
        if f is None:
            continue
        w, o = f["in_window"], f["outside_window"]
        lines.append(f"| {part} | {f['flips']} / {f['n']} ({100 * f['flip_rate']:.2f}%) | {w['flips']} / {w['n']} "
                     f"({100 * w['flip_rate']:.2f}%) | {o['flips']} / {o['n']} ({100 * o['flip_rate']:.2f}%) | "
                     f"{f['exit_stage_changed']} | {f['prediction_flips']} |")
    lines += ["", "MACs count an INT8 member like its FP32 twin, so the copy a MACs plan takes is chosen by coverage "
              "alone; plan with `--cost latency` and a `wcx bench --json` of the target device to prefer a faster "
              "INT8 copy.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", default="b1_s0,b2_s0,b3_s0", help="zoo members, comma-separated (default "
                   "b1_s0,b2_s0,b3_s0)")
    p.add_argument("--max-cost", type=float, default=1.5e6, help="the plan's cost bound in MACs (default 1.5e6)")
    p.add_argument("--seed", type=int, default=0, help="seed of the export's samples and the plan's split")
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    result = run(args.members.split(","), args.max_cost, args.seed)
    result.update(command=" ".join(["python tools/mixed_precision_pool.py", *(argv if argv is not None
                                                                              else sys.argv[1:])]),
                  machine=machine(), seconds=time.perf_counter() - t0, load_after=list(os.getloadavg()))
    write_result(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
