#!/usr/bin/env python
"""What the risk guarantee costs a window cascade in coverage, and where the cost comes from,
measured with the population design.

The 10,000 ``calib`` + ``test`` images of the zoo are the population. Each draw takes a
calibration set of ``--n`` images with replacement and fits the two-member cascade on it in
several ways; the true coverage, risk and stage-2 pass fraction of each fit are measured on the
population:

* ``empirical``: windows and tau on every row, no guarantee (``wcx calibrate`` without
  ``--delta``): the reference the issue measures the guarantee's cost against;
* ``certified, fit share f``: guaranteed mode (``--delta``), windows on a share ``f`` of the rows
  and tau certified by Learn-then-Test on the rest, for each ``--fit-shares`` (0.3 is the default);
* ``certified, windows given``: the windows fixed before the data (those of an empirical fit on
  the whole population, which no user has) and tau certified on every row: the least any way of
  choosing windows can cost, i.e. the cost of the certificate itself at ``n`` rows;
* ``empirical, windows given``: the same windows, tau fitted empirically on every row.

The gap between the last two is the certificate's own price; the gap between ``certified,
windows given`` and ``certified, fit share f`` is what setting rows aside for the windows costs.
Paired differences (same draw) are reported with their standard errors.

    python tools/guarantee_cost_study.py --draws 1000 --out docs/results/guarantee_cost
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine_facts import machine
from plan_audit import zoo_population
from result_files import write_result
from scipy.stats import beta as beta_dist

from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.risk_control import fit_guaranteed_threshold
from wcx.calibration.simulator import simulate_from_stages
from wcx.calibration.targets import SelectiveRisk
from wcx.core.policy import Policy
from wcx.core.scores import stage_outputs

REFERENCE = "empirical"
GIVEN = "certified, windows given"
GIVEN_EMPIRICAL = "empirical, windows given"


def interval(k: int, n: int) -> list[float]:
    """Exact (Clopper-Pearson) 95% interval of k violations in n draws."""
    lo = 0.0 if k == 0 else float(beta_dist.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(beta_dist.ppf(0.975, k + 1, n - k))
    return [lo, hi]


def study(pair: list[str], *, n: int, draws: int, risk: float, delta: float, fit_shares: list[float],
          seed: int, cache_dir: Path) -> dict[str, Any]:
    names, _, logits, labels = zoo_population(cache_dir)
    z = logits[[names.index(m) for m in pair]]
    scores, preds = stage_outputs(z, "msp")

    def truth(policy: Policy, tau: float | None) -> tuple[float, float, float]:
        if tau is None or not np.isfinite(tau):
            return 0.0, 0.0, 0.0
        o = simulate_from_stages(scores, preds, policy)
        accepted = o.score >= tau
        risk_true = float((o.pred[accepted] != labels[accepted]).mean()) if accepted.any() else 0.0
        return float(accepted.mean()), risk_true, float(o.pass_fraction[1])

    given = CascadeCalibrator(risk=risk).fit(z, labels).result_.policy
    target = SelectiveRisk(risk)
    rng = np.random.default_rng(seed)
    configs = [REFERENCE, *(f"certified, fit share {f:g}" for f in fit_shares), GIVEN, GIVEN_EMPIRICAL]
    rows: dict[str, list[tuple[float, float, float]]] = {c: [] for c in configs}
    for d in range(draws):
        idx = rng.integers(0, z.shape[1], n)
        zd, yd = z[:, idx], labels[idx]
        fit = CascadeCalibrator(risk=risk).fit(zd, yd)
        rows[REFERENCE].append(truth(fit.result_.policy, fit.tau_))
        for f in fit_shares:
            cert = CascadeCalibrator(risk=risk, delta=delta, fit_fraction=f, seed=d).fit(zd, yd)
            rows[f"certified, fit share {f:g}"].append(truth(cert.result_.policy, cert.tau_))
        o = simulate_from_stages(scores[:, idx], preds[:, idx], given)
        t = fit_guaranteed_threshold(o.score, o.pred != yd, risk, delta)
        rows[GIVEN].append(truth(given, t.tau if t.certified else None))
        rows[GIVEN_EMPIRICAL].append(truth(given, target.fit_threshold(o.score, o.pred != yd, None, 1000).tau))
    ref = np.array([c for c, _, _ in rows[REFERENCE]])
    out: dict[str, Any] = {"pair": pair, "windows_given": given.to_dict(), "configs": {}}
    for name, values in rows.items():
        cov = np.array([c for c, _, _ in values])
        violations = int(sum(r > risk for _, r, _ in values))
        gap = 100 * (ref - cov)
        out["configs"][name] = {
            "mean_true_coverage": float(cov.mean()), "coverage_se": float(cov.std(ddof=1) / np.sqrt(draws)),
            "mean_pass_fraction": float(np.mean([p for _, _, p in values])),
            "violations": violations, "violation_rate": violations / draws,
            "violation_interval_95": interval(violations, draws),
            "gap_to_empirical_points": {"mean": float(gap.mean()), "se": float(gap.std(ddof=1) / np.sqrt(draws))},
        }
    own = 100 * (np.array([c for c, _, _ in rows[GIVEN_EMPIRICAL]]) - np.array([c for c, _, _ in rows[GIVEN]]))
    out["certificate_own_price_points"] = {"mean": float(own.mean()), "se": float(own.std(ddof=1) / np.sqrt(draws))}
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# What the guarantee costs a window cascade, and where the cost comes from",
        "",
        f"Made by `{result['command']}` ({result['seconds']:.0f} s on {result['machine']['cpu']}, "
        f"{result['machine']['cores']} cores; the figures do not depend on the load). Population: the zoo's 10,000 "
        f"`calib` + `test` images. {result['draws']} calibration sets of {result['n']} drawn with replacement; each "
        f"fitted at risk {result['risk']} (delta {result['delta']} where certified) in every way below; true "
        "coverage, risk and stage-2 pass fraction on the population. Gap: the empirical fit's coverage minus this "
        "one's, paired by draw (± standard error). `windows given`: the windows of an empirical fit on the whole "
        "population, fixed before the draw (no user has them: the floor for any way of choosing windows).",
        "",
    ]
    for r in result["pairs"]:
        lines += [f"## {' -> '.join(r['pair'])}", "",
                  "| fit | mean true coverage | gap to empirical (points) | stage-2 pass | violations [95% interval] |",
                  "| --- | ---: | ---: | ---: | --- |"]
        for name, c in r["configs"].items():
            lo, hi = c["violation_interval_95"]
            gap = c["gap_to_empirical_points"]
            gap_text = "-" if name == REFERENCE else f"{gap['mean']:.2f} ± {gap['se']:.2f}"
            lines.append(f"| {name} | {c['mean_true_coverage']:.2%} | {gap_text} | {c['mean_pass_fraction']:.3f} | "
                         f"{c['violation_rate']:.1%} [{lo:.1%}, {hi:.1%}] |")
        own = r["certificate_own_price_points"]
        lines += ["", f"The certificate's own price (empirical minus certified tau, both with the windows given): "
                  f"{own['mean']:.2f} ± {own['se']:.2f} points.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", nargs="+", default=["b3_s0,b3_s1"], help="zoo member pairs, stage 1 first "
                   "(default b3_s0,b3_s1)")
    p.add_argument("--n", type=int, default=5000, help="calibration set size (default 5000)")
    p.add_argument("--draws", type=int, default=1000, help="calibration sets drawn (default 1000)")
    p.add_argument("--risk", type=float, default=0.05, help="target selective risk (default 0.05)")
    p.add_argument("--delta", type=float, default=0.1, help="guarantee failure probability (default 0.1)")
    p.add_argument("--fit-shares", default="0.1,0.2,0.3", help="window-fitting shares to certify with "
                   "(default 0.1,0.2,0.3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "wcx" / "zoo-logits",
                   help="where the zoo's logits are cached (computed once with ONNX Runtime)")
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    shares = [float(f) for f in args.fit_shares.split(",")]
    t0, load_before = time.perf_counter(), [round(v, 2) for v in os.getloadavg()]
    pairs = [study(pair.split(","), n=args.n, draws=args.draws, risk=args.risk, delta=args.delta, fit_shares=shares,
                   seed=args.seed, cache_dir=args.cache_dir) for pair in args.pairs]
    command = "python tools/guarantee_cost_study.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"tool": "tools/guarantee_cost_study.py", "command": command.strip(), "n": args.n, "draws": args.draws,
              "risk": args.risk, "delta": args.delta, "fit_shares": shares, "seed": args.seed, "pairs": pairs,
              "machine": machine(), "seconds": round(time.perf_counter() - t0, 1), "load_before": load_before,
              "load_after": [round(v, 2) for v in os.getloadavg()]}
    write_result(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
