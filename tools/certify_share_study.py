#!/usr/bin/env python
"""What certifying a fixed policy's tau on every held-out row (instead of the 70% left after a
window-fitting part) gains, measured with the population design.

The 10,000 ``calib`` + ``test`` images of the zoo are the population. Each draw takes a
calibration set of ``--n`` images with replacement; a zoo member's tau is certified
(Learn-then-Test, ``--risk``, ``--delta``) once on the 70% a 30% fitting share leaves and once on
every row; the true coverage and risk of each tau are measured on the population. Reported per
member: mean true coverage of both, the mean gain and its standard error, and the violation rate
(true risk above the target) with its exact 95% interval.

    python tools/certify_share_study.py --members b3_s0 b4_s0 --draws 1000 --out docs/results/certify_share
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import beta as beta_dist

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wcx.atomic import write_text_atomic  # noqa: E402
from wcx.calibration.risk_control import fit_guaranteed_threshold  # noqa: E402
from wcx.export.parity import run_onnx  # noqa: E402
from wcx.zoo import ZOO_DIR, load_manifest, split_path  # noqa: E402


def population(member: str) -> tuple[np.ndarray, np.ndarray]:
    """Max-softmax scores and errors of ``member`` on the 10,000 calib + test images."""
    manifest = load_manifest()
    mean, std = float(manifest["preprocess"]["mean"][0]), float(manifest["preprocess"]["std"][0])
    xs, ys = [], []
    for split in ("calib", "test"):
        d = np.load(split_path(split))
        xs.append(((d["x"].astype(np.float32) / 255.0) - mean) / std)
        ys.append(d["y"])
    x, y = np.concatenate(xs), np.concatenate(ys)
    logits = run_onnx(ZOO_DIR / "bundles" / "fp32" / "members" / f"{member}.onnx", x)
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return p.max(1), (p.argmax(1) != y).astype(np.int8)


def interval(k: int, n: int) -> list[float]:
    lo = 0.0 if k == 0 else float(beta_dist.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(beta_dist.ppf(0.975, k + 1, n - k))
    return [lo, hi]


def study(member: str, *, n: int, draws: int, risk: float, delta: float, fit_share: float,
          seed: int) -> dict[str, Any]:
    s, e = population(member)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[float, float]]] = {"split": [], "all": []}
    for _ in range(draws):
        idx = rng.integers(0, len(s), n)
        cert = idx[rng.permutation(n)[int(round(fit_share * n)):]]
        for name, part in (("split", cert), ("all", idx)):
            t = fit_guaranteed_threshold(s[part], e[part], risk, delta)
            if not t.certified or t.tau is None:
                rows[name].append((0.0, 0.0))
                continue
            accepted = s >= t.tau
            rows[name].append((float(accepted.mean()), float(e[accepted].mean()) if accepted.any() else 0.0))
    out: dict[str, Any] = {"member": member}
    for name, values in rows.items():
        cov = np.array([c for c, _ in values])
        violations = int(sum(r > risk for _, r in values))
        out[name] = {"mean_true_coverage": float(cov.mean()), "violations": violations,
                     "violation_rate": violations / draws, "violation_interval_95": interval(violations, draws)}
    gain = np.array([a[0] - b[0] for a, b in zip(rows["all"], rows["split"], strict=True)])
    out["gain_points"] = {"mean": float(100 * gain.mean()), "se": float(100 * gain.std(ddof=1) / np.sqrt(draws))}
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Certifying a fixed policy on every held-out row",
        "",
        f"Made by `python tools/certify_share_study.py` ({result['seconds']:.0f} s, load average "
        f"{result['load_before']} before, {result['load_after']} after, on the 2-core build machine; "
        "the figures do not depend on the load). Population: the zoo's 10,000 `calib` + `test` images. "
        f"{result['draws']} calibration sets of {result['n']} drawn with replacement; tau certified by "
        f"Learn-then-Test at risk {result['risk']}, delta {result['delta']}, on the {1 - result['fit_share']:.0%} "
        "a fitting share leaves (`split`, what guaranteed mode did for `--policy none`/`all` before) or on "
        "every row (`all`, what it does now); true coverage and risk on the population.",
        "",
        "| member | mean true coverage, split | mean true coverage, all rows | gain (points, ± s.e.) | "
        "violations split | violations all rows [95% interval] |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in result["members"]:
        lo, hi = r["all"]["violation_interval_95"]
        lines.append(f"| {r['member']} | {r['split']['mean_true_coverage']:.2%} | {r['all']['mean_true_coverage']:.2%} "
                     f"| {r['gain_points']['mean']:+.2f} ± {r['gain_points']['se']:.2f} | "
                     f"{r['split']['violation_rate']:.1%} | {r['all']['violation_rate']:.1%} [{lo:.1%}, {hi:.1%}] |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", nargs="+", default=["b3_s0", "b4_s0"], help="zoo members (default b3_s0 b4_s0)")
    p.add_argument("--n", type=int, default=5000, help="calibration set size (default 5000)")
    p.add_argument("--draws", type=int, default=1000, help="calibration sets drawn (default 1000)")
    p.add_argument("--risk", type=float, default=0.05, help="target selective risk (default 0.05)")
    p.add_argument("--delta", type=float, default=0.1, help="guarantee failure probability (default 0.1)")
    p.add_argument("--fit-share", type=float, default=0.3, help="the window-fitting share of the split (0.3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    t0, load_before = time.perf_counter(), [round(v, 2) for v in os.getloadavg()]
    members = [study(m, n=args.n, draws=args.draws, risk=args.risk, delta=args.delta, fit_share=args.fit_share,
                     seed=args.seed) for m in args.members]
    result = {"tool": "tools/certify_share_study.py", "n": args.n, "draws": args.draws, "risk": args.risk,
              "delta": args.delta, "fit_share": args.fit_share, "seed": args.seed, "members": members,
              "seconds": round(time.perf_counter() - t0, 1), "load_before": load_before,
              "load_after": [round(v, 2) for v in os.getloadavg()]}
    text = markdown(result)
    print(text)
    if args.out is not None:
        write_text_atomic(args.out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
        write_text_atomic(args.out.with_suffix(".md"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
