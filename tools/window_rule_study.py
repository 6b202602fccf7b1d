#!/usr/bin/env python
"""Compare window policies on the zoo over many fit/certify splits (the search rule study).

For every zoo size and every split seed, fits a two-member cascade (``<size>_s0``, ``<size>_s1``)
on ``calib`` (5,000 images) at 5% risk in guaranteed mode (delta 0.1, 30% of ``calib`` fits the
windows) and measures it on ``test`` with the fitted thresholds. Policies compared:

* ``plain``: the width search with the plain rule (cheapest cascade with ``gap <= eps``);
* ``noise_aware``: the width search with wcx's default rule (``gap + gap_se <= eps``);
* ``fixed``: the reference method's +-10% band;
* ``single`` and ``ensemble``: the first member alone and both members on every input.

Prints, per size and policy, the mean (and minimum) test coverage at the fitted tau, the mean
test risk, the expected MACs over the first member's and the mean pass fraction of stage 2.
``--empirical`` fits in empirical mode instead (all of ``calib`` fits everything; the split
seed then only changes the bootstrap).

    python tools/window_rule_study.py --sizes b1,b2,b3 --splits 20 [--json out.json]

Logits come from the shipped FP32 zoo bundle on ONNX Runtime and are cached (``--cache-dir``,
default ``~/.cache/wcx/zoo-logits``). Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.window import REFERENCE_WIDTHS
from wcx.errors import WcxError
from wcx.zoo import experiment as ex

POLICIES: dict[str, dict[str, Any]] = {
    "plain": {"policy": "window", "n_boot": 0},
    "noise_aware": {"policy": "window"},
    "fixed": {"policy": "window", "widths": REFERENCE_WIDTHS},
    "single": {"policy": "none"},
    "ensemble": {"policy": "all"},
}


def study(sizes: list[str], splits: int, *, empirical: bool, cache_dir: Path) -> dict[str, Any]:
    """Fit and measure every policy on every size and split; returns the JSON-ready summary."""
    bundle = ex.load_zoo_bundle()
    summary: dict[str, Any] = {"splits": splits, "mode": "empirical" if empirical else "guaranteed", "sizes": {}}
    for size in sizes:
        names = [f"{size}_s0", f"{size}_s1"]
        zoo = ex.load_zoo_logits(bundle, names, splits=("calib", "test"), cache_dir=cache_dir)
        macs = zoo.costs(names)
        rows: dict[str, list[tuple[float, float, float, float]]] = {p: [] for p in POLICIES}
        for seed in range(splits):
            for name, kwargs in POLICIES.items():
                k = 1 if kwargs["policy"] == "none" else 2
                cal = CascadeCalibrator(risk=0.05, delta=None if empirical else 0.1, seed=seed, **kwargs)
                cal.fit(zoo.logits["calib"][:k], zoo.labels["calib"], member_costs=macs[:k])
                ev = cal.evaluate(zoo.logits["test"][:k], zoo.labels["test"])
                passed = ev["pass_fraction"][1] if k > 1 else 0.0
                rows[name].append((ev["coverage"], ev["risk"], ev["expected_macs"] / macs[0], passed))
        summary["sizes"][size] = {
            name: {
                "coverage_mean": float(np.mean([r[0] for r in rs])),
                "coverage_min": float(np.min([r[0] for r in rs])),
                "risk_mean": float(np.mean([r[1] for r in rs])),
                "macs_over_first": float(np.mean([r[2] for r in rs])),
                "pass_fraction": float(np.mean([r[3] for r in rs])),
            }
            for name, rs in rows.items()
        }
    return summary


def print_table(summary: dict[str, Any]) -> None:
    print(f"{summary['mode']} mode, {summary['splits']} splits, risk target 5%, measured on test")
    print(f"{'size':5} {'policy':12} {'coverage %':>10} {'min %':>7} {'risk %':>7} {'MACs/m1':>8} {'pass':>6}")
    for size, table in summary["sizes"].items():
        for name, r in table.items():
            print(f"{size:5} {name:12} {100 * r['coverage_mean']:10.2f} {100 * r['coverage_min']:7.2f} "
                  f"{100 * r['risk_mean']:7.2f} {r['macs_over_first']:8.3f} {r['pass_fraction']:6.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="b1,b2,b3", help="comma-separated zoo sizes (default b1,b2,b3)")
    ap.add_argument("--splits", type=int, default=20, help="fit/certify split seeds per size (default 20)")
    ap.add_argument("--empirical", action="store_true", help="empirical mode instead of guaranteed")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "wcx" / "zoo-logits",
                    help="where member logits are cached")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args(argv)
    if args.splits < 1:
        print("error: --splits must be >= 1", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        summary = study(args.sizes.split(","), args.splits, empirical=args.empirical, cache_dir=args.cache_dir)
    except WcxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    print_table(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
