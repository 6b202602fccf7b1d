#!/usr/bin/env python
"""Audit the risk guarantee of ``wcx calibrate`` on a labelled logits file.

Repeats random calibration/test splits of the held-out logits; on each split the whole fit
(windows, stage thresholds and tau) is redone on the calibration part, in empirical mode and in
guaranteed mode, and the selective risk of the fitted cascade is measured on the test part.
Prints, per mode, the fraction of splits whose test risk exceeds the target (the violation rate)
and the mean test coverage. Expected: about half for empirical, at most delta for guaranteed
(up to the noise of a finite test part).

    python tools/audit_guarantee.py LOGITS.npz --risk 0.05 --delta 0.1 --splits 500 --json out.json
    python tools/audit_guarantee.py --synthetic 4000 --splits 200

``LOGITS.npz`` holds ``logits`` (M, N, K) and ``y`` (N,). ``--json`` writes
``{"empirical": {"violation_rate", "mean_coverage", ...}, "guaranteed": {...}, "splits": n, ...}``.
Exit codes: 0 done, 2 bad input.
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
from wcx.calibration.window import DEFAULT_WIDTH_GRID
from wcx.errors import BadInputError, WcxError


def synthetic_logits(n: int, seed: int = 0, members: int = 2, classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic ensemble logits (the generator of the calibration tests)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    margin = 1.6 * rng.gamma(2.0, 1.0, n)[:, None] * np.eye(classes)[y]
    shared = rng.normal(size=(n, classes))
    return np.stack([margin + shared + 0.9 * rng.normal(size=(n, classes)) for _ in range(members)]), y


def audit(
    logits: np.ndarray,
    y: np.ndarray,
    *,
    risk: float = 0.05,
    delta: float = 0.1,
    splits: int = 500,
    test_fraction: float = 0.5,
    seed: int = 0,
    **calibrator_kwargs: Any,
) -> dict[str, Any]:
    """Run the audit; returns the JSON-ready summary."""
    if not 0.0 < test_fraction < 1.0:
        raise BadInputError(f"test fraction must be in (0, 1), got {test_fraction}")
    if splits < 1:
        raise BadInputError(f"splits must be >= 1, got {splits}")
    n = logits.shape[1]
    n_test = int(round(test_fraction * n))
    stats: dict[str, dict[str, list]] = {
        m: {"violated": [], "coverage": [], "risk": [], "certified": []} for m in ("empirical", "guaranteed")
    }
    for i in range(splits):
        perm = np.random.default_rng(seed + i).permutation(n)
        cal_idx, test_idx = perm[n_test:], perm[:n_test]
        for mode, d in (("empirical", None), ("guaranteed", delta)):
            cal = CascadeCalibrator(risk=risk, delta=d, seed=seed + i, **calibrator_kwargs)
            cal.fit(logits[:, cal_idx], y[cal_idx])
            res = cal.evaluate(logits[:, test_idx], y[test_idx])
            s = stats[mode]
            s["violated"].append(res["risk"] > risk)
            s["coverage"].append(res["coverage"])
            s["risk"].append(res["risk"])
            s["certified"].append(bool(cal.certified_))
    out: dict[str, Any] = {}
    for mode, s in stats.items():
        out[mode] = {
            "violation_rate": float(np.mean(s["violated"])),
            "mean_coverage": float(np.mean(s["coverage"])),
            "mean_risk": float(np.mean(s["risk"])),
        }
    out["guaranteed"]["uncertified_rate"] = 1.0 - float(np.mean(stats["guaranteed"]["certified"]))
    out.update(splits=splits, risk=risk, delta=delta, test_fraction=test_fraction, n=int(n), n_test=n_test, seed=seed)
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("logits", nargs="?", type=Path, help="npz with 'logits' (M, N, K) and 'y' (N,)")
    p.add_argument("--synthetic", type=int, metavar="N", help="use N synthetic inputs instead of a file")
    p.add_argument("--risk", type=float, default=0.05, help="target selective risk (default 0.05)")
    p.add_argument("--delta", type=float, default=0.1, help="guarantee failure probability (default 0.1)")
    p.add_argument("--splits", type=int, default=500, help="random calibration/test splits (default 500)")
    p.add_argument("--test-fraction", type=float, default=0.5, help="share of inputs in the test part (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first split (default 0)")
    p.add_argument("--score", default=None, help="score name (default msp)")
    p.add_argument("--policy", default="window", help="window, threshold, none or all (default window)")
    p.add_argument("--eps", type=float, default=0.005, help="width-search tolerance (default 0.005)")
    p.add_argument("--fit-fraction", type=float, default=0.3, help="guaranteed mode: window-fitting share (0.3)")
    p.add_argument("--width-grid", default=None, help="comma-separated widths to search (default: the library's)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the summary as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        if args.synthetic:
            logits, y = synthetic_logits(args.synthetic, seed=args.seed)
        elif args.logits is not None:
            try:
                with np.load(args.logits) as f:
                    logits, y = np.asarray(f["logits"]), np.asarray(f["y"])
            except (OSError, KeyError, ValueError) as exc:
                raise BadInputError(f"cannot read logits and y from {args.logits}: {exc}") from exc
        else:
            raise BadInputError("give a LOGITS.npz file or --synthetic N")
        grid = DEFAULT_WIDTH_GRID if args.width_grid is None else tuple(float(w) for w in args.width_grid.split(","))
        t0 = time.perf_counter()
        summary = audit(
            logits,
            y,
            risk=args.risk,
            delta=args.delta,
            splits=args.splits,
            test_fraction=args.test_fraction,
            seed=args.seed,
            score=args.score,
            policy=args.policy,
            eps=args.eps,
            fit_fraction=args.fit_fraction,
            width_grid=grid,
        )
        summary["seconds"] = round(time.perf_counter() - t0, 2)
    except WcxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(
        f"{summary['splits']} splits of {summary['n']} inputs ({summary['n_test']} test), "
        f"risk target {args.risk:g}, delta {args.delta:g}"
    )
    for mode in ("empirical", "guaranteed"):
        s = summary[mode]
        print(
            f"  {mode:<10}  violation rate {s['violation_rate']:.3f}   mean coverage {s['mean_coverage']:.3f}"
            f"   mean test risk {s['mean_risk']:.4f}"
        )
    print(f"  guaranteed fits without a certificate: {summary['guaranteed']['uncertified_rate']:.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
