#!/usr/bin/env python
"""Audit ``wcx plan`` on the zoo: its guarantee, its running time and what it plans.

Five parts, all on logits of the shipped FP32 zoo (computed once with ONNX Runtime and cached):

* ``audit``: the population design. The 10,000 ``calib`` + ``test`` images are the population;
  each draw takes a calibration set of ``--n`` images from it *with replacement* (an i.i.d.
  sample of the population's distribution), plans on it exactly as ``wcx plan`` does (split,
  search, Pareto Testing, the objective's pick), and measures the true selective risk of the
  chosen (cascade, tau), and of every certified one, on the whole population. The violation
  rate is the share of draws whose chosen plan has a true risk above the target (and, what Pareto
  Testing controls, whose certified set holds any such pair); it must be at most delta. Reported
  with its exact (Clopper-Pearson) 95% interval.
* ``timing``: ``plan_cascade`` on the full 15-member pool with the 5,000 ``calib`` images
  (search, certification and baselines), per objective, with the machine's load average.
* ``match``: for b2_s0, b3_s0 and b4_s0, ``--match`` planned on ``calib`` and measured on
  ``test`` (nothing fitted there): the plan's MACs and latency (batch 1, 32, 256) against the
  member's and both coverages, at their certified taus and, beside it, under the paper benchmark's
  empirical protocol (no certificate);
* ``front``: the planner's front against every baseline of the report, with bootstrap standard
  errors of the gaps;
* ``sensitivity``: the matches under other fit shares, candidate counts and selection methods.

    python tools/plan_audit.py all --out docs/results/plan_audit     # writes .json and .md
    python tools/plan_audit.py audit --draws 1000 --out /tmp/audit

Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine_facts import cpu_model

from wcx.calibration.planner import DEFAULT_CANDIDATES, cascade_outputs, pareto_front, plan_cascade
from wcx.core.policy import NonePolicy
from wcx.core.scores import COMBINES
from wcx.errors import WcxError

#: the reduced configuration of the audit (a small pool, a coarse grid)
AUDIT_POOL = ("b0_s0", "b0_s1", "b1_s0", "b1_s1", "b2_s0", "b2_s1")
AUDIT_MATCH = "b2_s0"
AUDIT_WIDTHS = (0.03, 0.1, 0.3, 1.0)
AUDIT_STAGES = 3
AUDIT_BEAM = 8
AUDIT_GRID = 300
RISK, DELTA = 0.05, 0.1


def zoo_population(cache_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Names, MACs, logits (15, 10000, K) and labels of the calib + test images."""
    from wcx.zoo.experiment import load_zoo_bundle, load_zoo_logits

    z = load_zoo_logits(load_zoo_bundle("fp32"), splits=("calib", "test"), threads=1, cache_dir=cache_dir)
    logits = np.concatenate([z.logits["calib"], z.logits["test"]], axis=1)
    labels = np.concatenate([z.labels["calib"], z.labels["test"]])  # type: ignore[list-item]
    return z.names, np.array([z.macs[n] for n in z.names]), logits, labels


def clopper_pearson(k: int, n: int, level: float = 0.95) -> list[float]:
    """Exact two-sided interval of a binomial rate."""
    from scipy.stats import beta

    a = (1.0 - level) / 2.0
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1.0 - a, k + 1, n - k))
    return [lo, hi]


def audit(names: list[str], macs: np.ndarray, logits: np.ndarray, labels: np.ndarray, *, draws: int, n: int,
          seed: int) -> dict[str, Any]:
    pool = [names.index(m) for m in AUDIT_POOL]
    z, costs, pool_names = logits[pool], macs[pool], list(AUDIT_POOL)
    chosen_viol = any_viol = no_plan = 0
    cover, plan_macs, ref_cover, risks = [], [], [], []
    t0 = time.perf_counter()
    for d in range(draws):
        idx = np.random.default_rng(seed + d).integers(0, labels.size, n)
        plan = plan_cascade(z[:, idx], labels[idx], costs, pool_names, risk=RISK, delta=DELTA, match=AUDIT_MATCH,
                            max_stages=AUDIT_STAGES, beam=AUDIT_BEAM, width_grid=AUDIT_WIDTHS, grid_size=AUDIT_GRID,
                            seed=d, baselines=False)
        violated_any = False
        if plan.reference is not None and plan.reference.certified:
            s, _, _ = cascade_outputs(z, labels, [pool_names.index(AUDIT_MATCH)], NonePolicy(), "msp")
            ref_cover.append(float(np.mean(s >= plan.reference.tau)))
        for i, cand in enumerate(plan.candidates):
            if not cand.threshold.certified:
                continue
            s, e, pf = cascade_outputs(z, labels, cand.cascade.members, cand.cascade.policy, "msp")
            acc = s >= cand.threshold.tau
            risk = float(e[acc].mean()) if acc.any() else 0.0
            violated_any |= risk > RISK
            if i == plan.chosen:
                chosen_viol += risk > RISK
                risks.append(risk)
                cover.append(float(acc.mean()))
                plan_macs.append(float(np.dot(pf, costs[list(cand.cascade.members)])))
        any_viol += violated_any
        no_plan += plan.chosen is None
    planned = draws - no_plan
    return {
        "pool": pool_names, "match": AUDIT_MATCH, "max_stages": AUDIT_STAGES, "beam": AUDIT_BEAM,
        "width_grid": list(AUDIT_WIDTHS), "grid_size": AUDIT_GRID,
        "n_candidates": DEFAULT_CANDIDATES, "selection": "bonferroni", "risk": RISK, "delta": DELTA,
        "draws": draws, "n": n, "population": int(labels.size), "seed": seed,
        "chosen_violations": int(chosen_viol), "chosen_violation_rate": chosen_viol / draws,
        "chosen_violation_ci95": clopper_pearson(int(chosen_viol), draws),
        "any_certified_violations": int(any_viol), "any_certified_violation_rate": any_viol / draws,
        "any_certified_violation_ci95": clopper_pearson(int(any_viol), draws),
        "draws_without_plan": int(no_plan),
        "mean_true_risk": float(np.mean(risks)) if risks else None,
        "mean_true_coverage": float(np.mean(cover)) if cover else None,
        "mean_true_coverage_of_matched_member": float(np.mean(ref_cover)) if ref_cover else None,
        "mean_plan_macs": float(np.mean(plan_macs)) if plan_macs else None,
        "matched_member_macs": float(costs[pool_names.index(AUDIT_MATCH)]),
        "planned_draws": planned, "seconds": time.perf_counter() - t0,
    }


def timing(names: list[str], macs: np.ndarray, logits: np.ndarray, labels: np.ndarray, *,
           repeats: int) -> dict[str, Any]:
    calib_z, calib_y = logits[:, :5000], labels[:5000]
    rows = []
    for objective in ({"match": "b3_s0"}, {"match": "b4_s0"}, {"max_cost": 1.0e6}):
        for r in range(repeats):
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            plan = plan_cascade(calib_z, calib_y, macs, names, risk=RISK, delta=DELTA, **objective)  # type: ignore[arg-type]
            rows.append({"objective": objective, "repeat": r, "seconds_total": time.perf_counter() - t0,
                         "seconds_search": plan.search.seconds, "evaluated": plan.search.evaluated,
                         "front_size": len(plan.search.front), "load_average_1min_before": load})
    return {"pool_size": len(names), "n": 5000, "max_stages": 4, "rows": rows,
            "max_seconds_total": max(r["seconds_total"] for r in rows)}


MATCH_MEMBERS = ("b2_s0", "b3_s0", "b4_s0")
LATENCY_BATCHES = (1, 32, 256)


#: paired bootstrap resamples of ``calib`` behind the noise-aware empirical pick
PICK_BOOT = 100


def empirical_match(names: list[str], macs: np.ndarray, calib_z: np.ndarray, calib_y: np.ndarray,
                    test_z: np.ndarray, test_y: np.ndarray, member: str, *,
                    noise_aware: bool = False) -> dict[str, Any]:
    """The paper's honest protocol, without a certificate: search on every ``calib`` row, take the
    cheapest front cascade whose ``calib`` coverage at the target risk reaches the member's, fit
    both taus empirically on ``calib`` (as ``wcx calibrate`` without ``--delta``), measure on
    ``test``: coverage and risk at that tau, and coverage at the target risk (threshold-free).

    ``noise_aware``: the pick must reach the member by one standard deviation of the paired
    difference over PICK_BOOT bootstrap resamples of ``calib`` (the rule the window search uses
    against the full ensemble), so a cascade measured too well by chance is not taken."""
    from wcx.calibration.metrics import coverage_at_risk, coverage_at_risk_weighted
    from wcx.calibration.planner import search_front
    from wcx.calibration.targets import SelectiveRisk

    target = SelectiveRisk(RISK)
    i = names.index(member)
    outcomes = [search_front(calib_z, calib_y, macs, risk=RISK, max_cost=float(macs[i]), combine=c)
                 for c in COMBINES]
    own = outcomes[0].singles[i]
    front = pareto_front([c for o in outcomes for c in o.front])
    eligible = [c for c in front if c.cost < own.cost and c.coverage >= own.coverage and c.members != (i,)]
    if noise_aware:
        weights = np.random.default_rng(0).multinomial(calib_y.size, np.full(calib_y.size, 1 / calib_y.size),
                                                       size=PICK_BOOT)
        ms, me, _ = cascade_outputs(calib_z, calib_y, [i], NonePolicy(), "msp")
        member_boot = coverage_at_risk_weighted(ms, me, RISK, weights)

        def reaches(c: Any) -> bool:
            cs, ce, _ = cascade_outputs(calib_z, calib_y, c.members, c.policy, "msp", c.combine)
            diff = coverage_at_risk_weighted(cs, ce, RISK, weights) - member_boot
            return bool(c.coverage - own.coverage - diff.std(ddof=1) >= 0)

        eligible = [c for c in eligible if reaches(c)]

    def measured(members: Any, policy: Any, combine: str = "mean") -> dict[str, Any]:
        s, e, _ = cascade_outputs(calib_z, calib_y, members, policy, "msp", combine)
        tau = target.fit_threshold(s, e, None, AUDIT_GRID * 10).tau
        st, et, pf = cascade_outputs(test_z, test_y, members, policy, "msp", combine)
        acc = st >= tau
        return {"tau": tau, "test_coverage": float(acc.mean()), "test_risk": float(et[acc].mean()) if acc.any()
                else 0.0, "test_coverage_at_risk": coverage_at_risk(st, et, RISK),
                "test_macs": float(np.dot(pf, macs[list(members)]))}

    row: dict[str, Any] = {"member": measured([i], NonePolicy()), "member_calib_coverage_at_risk": own.coverage,
                           "front_size": len(front), "plan": None}
    if eligible:
        pick = min(eligible, key=lambda c: (c.cost, -c.coverage))
        row.update(plan=pick.names(names), plan_policy=pick.policy.to_dict(), plan_combine=pick.combine,
                   plan_calib_coverage_at_risk=pick.coverage,
                   **{f"plan_{k}": v for k, v in measured(pick.members, pick.policy, pick.combine).items()})
        row["macs_ratio"] = row["plan_test_macs"] / float(macs[i])
    return row


def latency_ratios(zoo: Any, test_x: np.ndarray, plan_names: list[str], policy: dict[str, Any], member: str,
                   threads: int) -> dict[str, Any]:
    """Median latency of the plan and of the member alone at each of LATENCY_BATCHES, timed in the
    same rounds (``bench_cascade``)."""
    import tempfile

    from wcx.bundle import select_members
    from wcx.zoo.experiment import bench_cascade

    with tempfile.TemporaryDirectory(prefix="wcx-plan-") as tmp:
        planned = select_members(zoo, plan_names, Path(tmp) / "plan")
        bench = bench_cascade(planned, test_x, LATENCY_BATCHES, policy=policy, singles=(zoo, [member]),
                              threads=threads)
    out: dict[str, Any] = {}
    for b in LATENCY_BATCHES:
        ms = {r["config"]: float(r["p50_ms"]) for r in bench if int(r["batch_size"]) == b}
        out[str(b)] = {"plan_ms": ms["cascade"], "member_ms": ms[f"single:{member}"],
                       "ratio": ms["cascade"] / ms[f"single:{member}"]}
    return out


def match_table(names: list[str], macs: np.ndarray, logits: np.ndarray, labels: np.ndarray, *,
                latency: bool, threads: int, swap: bool = False) -> dict[str, Any]:
    """Match each of MATCH_MEMBERS, planned on calib and measured on test, under two protocols.

    ``certified``: ``--match`` as ``wcx plan`` does it; the member's own reference is its certified
    threshold in the plan's joint test and, beside it, its own single-model certificate
    (``wcx calibrate --policy none --delta``, same split). ``empirical``: :func:`empirical_match`.
    Latency of each plan and the member alone at batch 1, 32 and 256."""
    from wcx.calibration.calibrator import CascadeCalibrator
    from wcx.calibration.plan_bundle import plan_result
    from wcx.zoo.experiment import load_split, load_zoo_bundle

    zoo = load_zoo_bundle("fp32")
    test_x = load_split("test").x
    calib_z, calib_y, test_z, test_y = logits[:, :5000], labels[:5000], logits[:, 5000:], labels[5000:]
    if swap:  # the same protocol with the halves exchanged: planned on test, measured on calib
        calib_z, calib_y, test_z, test_y = test_z, test_y, calib_z, calib_y
        test_x = load_split("calib").x
    rows = []
    for member in MATCH_MEMBERS:
        plan = plan_cascade(calib_z, calib_y, macs, names, risk=RISK, delta=DELTA, match=member,
                            test_logits=test_z, test_labels=test_y, baselines=False)
        i = names.index(member)
        # the member's own certificate, as `wcx calibrate --policy none --delta` fits it on the same split
        own = CascadeCalibrator(policy="none", risk=RISK, delta=DELTA).fit(calib_z[[i]], calib_y)
        assert plan.reference is not None and own.tau_ == plan.reference.tau
        own_test = own.evaluate(test_z[[i]], test_y)
        row: dict[str, Any] = {"member": member, "member_macs": float(macs[i]),
                               "member_certified_coverage": plan.reference.coverage,
                               "member_test_coverage": own_test["coverage"], "member_test_risk": own_test["risk"],
                               "candidates": [c.to_dict(names) for c in plan.candidates]}
        pick = plan.plan
        if pick is None:
            row["plan"] = None
        else:
            s, e, pf = cascade_outputs(test_z, test_y, pick.cascade.members, pick.cascade.policy, "msp",
                                       pick.cascade.combine)
            acc = s >= pick.threshold.tau
            test_macs = float(np.dot(pf, macs[list(pick.cascade.members)]))
            row.update(plan=pick.cascade.names(names), plan_combine=pick.cascade.combine,
                       plan_certified_coverage=pick.threshold.coverage,
                       plan_risk_upper_bound=pick.threshold.risk_upper_bound, plan_test_coverage=float(acc.mean()),
                       plan_test_risk=float(e[acc].mean()), plan_test_macs=test_macs,
                       macs_ratio=test_macs / row["member_macs"])
            if latency:
                policy = plan_result(plan, macs.tolist(), macs.tolist(), "macs", 10).policy_section().to_dict()
                row.update(latency=latency_ratios(zoo, test_x, row["plan"], policy, member, threads),
                           threads=threads)
        for key, noise_aware in (("empirical", False), ("empirical_noise_aware", True)):
            emp = empirical_match(names, macs, calib_z, calib_y, test_z, test_y, member, noise_aware=noise_aware)
            if latency and emp["plan"] is not None:
                policy = {**emp["plan_policy"], "score": "msp", "task": "selective", "tau": emp["plan_tau"],
                          "combine": emp["plan_combine"]}
                emp["latency"] = latency_ratios(zoo, test_x, emp["plan"], policy, member, threads)
            row[key] = emp
        rows.append(row)
    return {"rows": rows, "latency_batches": list(LATENCY_BATCHES), "threads": threads,
            "planned_on": "test" if swap else "calib", "measured_on": "calib" if swap else "test"}


def sensitivity(names: list[str], macs: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The match table's plans under other settings: fit share, candidates, selection method."""
    import itertools

    calib_z, calib_y, test_z, test_y = logits[:, :5000], labels[:5000], logits[:, 5000:], labels[5000:]
    rows = []
    for ff, n_cand, sel in itertools.product((0.3, 0.5), (3, 6), ("bonferroni", "fixed_sequence")):
        for member in ("b2_s0", "b3_s0", "b4_s0"):
            plan = plan_cascade(calib_z, calib_y, macs, names, risk=RISK, delta=DELTA, match=member, fit_fraction=ff,
                                n_candidates=n_cand, selection=sel, baselines=False)
            row: dict[str, Any] = {"fit_fraction": ff, "n_candidates": n_cand, "selection": sel, "member": member,
                                   "member_certified_coverage": plan.reference.coverage if plan.reference else None,
                                   "plan": None}
            if plan.plan is not None:
                pick = plan.plan
                s, _, pf = cascade_outputs(test_z, test_y, pick.cascade.members, pick.cascade.policy, "msp",
                                           pick.cascade.combine)
                row.update(plan=pick.cascade.names(names), plan_test_coverage=float(np.mean(s >= pick.threshold.tau)),
                           macs_ratio=float(np.dot(pf, macs[list(pick.cascade.members)])) / float(
                               macs[names.index(member)]))
            rows.append(row)
    return {"rows": rows}


#: bootstrap resamples of the test rows behind each front comparison
BOOTSTRAP = 200


def _row_outputs(kind: str, members: list[int], policy: dict[str, Any] | None, z: np.ndarray,
                 y: np.ndarray, combine: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Per-row exit scores and errors of one configuration of the report on ``z``/``y``."""
    from wcx.calibration.plan_baselines import agreement_outputs, own_outputs
    from wcx.calibration.simulator import simulate_from_stages
    from wcx.core.policy import policy_from_dict

    if kind == "agreement_deferral":
        s, e, _ = agreement_outputs(z, y, members[:2], members[2:], "msp")
        return s, e
    assert policy is not None
    pol = policy_from_dict(policy)
    if kind == "confidence_cascade":
        st, pt = own_outputs(z, members, "msp")
        o = simulate_from_stages(st, pt, pol)
        return o.score, o.pred != y
    s, e, _ = cascade_outputs(z, y, members, pol, "msp", combine)
    return s, e


def front_vs_baselines(names: list[str], macs: np.ndarray, logits: np.ndarray, labels: np.ndarray,
                       combines: tuple[str, ...] = ("mean",)) -> dict[str, Any]:
    """The planner's front (searched on calib's fit part, up to b4_s0's cost) against every
    baseline on ``test``: per baseline kind, how many lie above the front's best coverage at or
    under their cost by more than one bootstrap standard error of that gap (BOOTSTRAP resamples of
    the test rows, both configurations measured on each), and the largest such gap."""
    from wcx.calibration.metrics import coverage_at_risk
    from wcx.core.policy import WindowPolicy, window_from_json

    calib_z, calib_y, test_z, test_y = logits[:, :5000], labels[:5000], logits[:, 5000:], labels[5000:]
    cap = float(macs[names.index("b4_s0")])
    plan = plan_cascade(calib_z, calib_y, macs, names, risk=RISK, delta=DELTA, max_cost=cap, test_logits=test_z,
                        test_labels=test_y, combines=combines)
    front = sorted(plan.front, key=lambda f: f["test"]["expected_cost"])
    rng = np.random.default_rng(0)
    boots = [rng.integers(0, test_y.size, test_y.size) for _ in range(BOOTSTRAP)]
    kinds: dict[str, dict[str, Any]] = {}
    for b in plan.baselines:
        cost, cov = b["test"]["expected_cost"], b["test"]["coverage_at_risk"]
        if cost > cap:
            continue
        within = [f for f in front if f["test"]["expected_cost"] <= cost]
        best = max(within, key=lambda f: f["test"]["coverage_at_risk"], default=None)
        best_cov = 0.0 if best is None else best["test"]["coverage_at_risk"]
        k = kinds.setdefault(b["kind"], {"n": 0, "above_front": 0, "above_front_raw": 0, "max_gap": 0.0,
                                         "worst": None})
        k["n"] += 1
        gap = cov - best_cov
        if gap <= 0:
            continue
        k["above_front_raw"] += 1
        bs, be = _row_outputs(b["kind"], [names.index(m) for m in b["members"]], b.get("policy"), test_z, test_y)
        if best is None:
            fs, fe = np.zeros_like(bs), np.ones_like(be)
        else:
            windows = [window_from_json(w) for w in best["windows"]]
            fs, fe = _row_outputs("front", [names.index(m) for m in best["members"]],
                                  WindowPolicy(windows).to_dict() if windows else {"kind": "none"}, test_z, test_y,
                                  best.get("combine", "mean"))
        gaps = [coverage_at_risk(bs[i], be[i], RISK) - coverage_at_risk(fs[i], fe[i], RISK) for i in boots]
        se = float(np.std(gaps, ddof=1))
        if gap > se:
            k["above_front"] += 1
            if gap > k["max_gap"]:
                k["max_gap"], k["worst"] = gap, {"members": b["members"], "cost": cost, "coverage": cov,
                                                 "front_coverage": best_cov, "se": se}
    return {"cap": cap, "front_size": len(front), "bootstrap": BOOTSTRAP, "combines": list(combines), "kinds": kinds}


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(default="unknown"), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__}


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = ["# `wcx plan`: guarantee audit, running time, matches", "",
             f"Measured with `{'`, then `'.join(r.get('commands') or [r.get('command', '')])}` on {m['cores']} "
             f"cores of an {m['cpu']} "
             f"(Python {m['python']}, numpy {m['numpy']}); other agents shared the machine, so timings carry "
             "their load (the 1-minute load average before each run is in the JSON). Every number here is in "
             "`plan_audit.json`, written by the same run.", ""]
    a = r.get("audit")
    if a:
        lines += [
            "## Guarantee audit (population design, reduced configuration)", "",
            f"Population: the {a['population']:,} zoo `calib` + `test` images. {a['draws']:,} calibration sets "
            f"of {a['n']:,} drawn with replacement; on each, the whole plan (fit/certify split 30/70, search, "
            f"the candidates certified together ({a['selection']}), the pick) at risk {a['risk']:g}, delta "
            f"{a['delta']:g}; true risk measured on the population.",
            f"Reduced configuration: pool {', '.join(a['pool'])}; objective `--match {a['match']}`; at most "
            f"{a['max_stages']} stages; beam {a['beam']}; window widths {a['width_grid']} per side; "
            f"{a['grid_size']} thresholds per candidate; {a['n_candidates']} candidates certified together.", "",
            "| | violations | rate | exact 95% interval |", "| --- | --- | --- | --- |",
            f"| chosen plan's true risk > {a['risk']:g} | {a['chosen_violations']} / {a['draws']} | "
            f"{100 * a['chosen_violation_rate']:.1f}% | {100 * a['chosen_violation_ci95'][0]:.1f}% - "
            f"{100 * a['chosen_violation_ci95'][1]:.1f}% |",
            f"| any certified (cascade, tau) with true risk > {a['risk']:g} | {a['any_certified_violations']} / "
            f"{a['draws']} | {100 * a['any_certified_violation_rate']:.1f}% | "
            f"{100 * a['any_certified_violation_ci95'][0]:.1f}% - {100 * a['any_certified_violation_ci95'][1]:.1f}% |",
            "",
            f"Target: at most delta = {100 * a['delta']:g}%. Draws without a plan (no certified cascade cheaper "
            f"than {a['match']} reached its own certificate): {a['draws_without_plan']}. Over the others: "
            f"mean true coverage of the plan {100 * (a['mean_true_coverage'] or 0):.2f}% (mean true risk "
            f"{100 * (a['mean_true_risk'] or 0):.2f}%) at {a['mean_plan_macs'] or 0:,.0f} MACs on average, against "
            f"{100 * (a['mean_true_coverage_of_matched_member'] or 0):.2f}% for {a['match']} alone at its own "
            f"certificate ({a['matched_member_macs']:,.0f} MACs; mean over every draw). {a['seconds']:.0f} s in "
            "all. Only the default (`bonferroni`) is audited here; `fixed_sequence` has a synthetic family-wise "
            "error check in tests/calibration/test_pareto_testing.py.", ""]
    t = r.get("timing")
    if t:
        lines += ["## Running time on the full zoo pool", "",
                  f"`plan_cascade` on all {t['pool_size']} members with the {t['n']:,} `calib` images, up to "
                  f"{t['max_stages']} stages, default search (beam 24, 6 widths per side), certification and "
                  "every baseline, one process (the logits already computed):", "",
                  "| objective | total s | search s | cascades measured | load before |",
                  "| --- | --- | --- | --- | --- |"]
        for row in t["rows"]:
            obj = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in row["objective"].items())
            lines.append(f"| {obj} | {row['seconds_total']:.1f} | {row['seconds_search']:.1f} | "
                         f"{row['evaluated']:,} | {row['load_average_1min_before']:.2f} |")
        lines += ["", f"Target: at most 60 s. Slowest: {t['max_seconds_total']:.1f} s. Running the 15 members on the "
                  "5,000 images once (ONNX Runtime, cached afterwards) comes on top.", ""]
    for mt in (r.get("match"), r.get("match_swapped")):
        if not mt:
            continue
        batches = mt.get("latency_batches", [256])
        lat_head = " | ".join(f"latency ratio @{b}" for b in batches)

        def lat_cells(lat: dict[str, Any] | None, batches: list[int] = batches) -> str:
            if not lat:
                return " | ".join("not measured" for _ in batches)
            return " | ".join(f"{lat[str(b)]['ratio']:.2f}x ({lat[str(b)]['plan_ms']:.2f} / "
                              f"{lat[str(b)]['member_ms']:.2f} ms)" for b in batches)

        fit_on, on = mt.get("planned_on", "calib"), mt.get("measured_on", "test")
        lines += [f"## Matching single models (planned on `{fit_on}`, measured on `{on}`)", "",
                  ("The same with the halves exchanged, a second look at how much the picks depend on the "
                   "split. " if fit_on == "test" else "")
                  + "Protocols. **Certified** (what `wcx plan --match` does): the plan's certified coverage must "
                  "reach the member's own single-model certificate (`wcx calibrate --policy none --delta 0.1`); "
                  "coverage at each one's certified tau. **Empirical** (the paper benchmark's honest protocol, no "
                  "guarantee): the search runs on every row planned on, the cheapest front cascade whose coverage "
                  "at 5% risk there reaches the member's is taken, both taus are fitted empirically there (as "
                  "`wcx calibrate` without `--delta`); coverage and realised risk at that tau on the rows measured "
                  "on, and coverage at 5% risk there with the best tau. **Noise-aware**: the pick must reach the "
                  "member by one standard deviation of the paired difference over 100 bootstrap resamples (the "
                  "window search's rule). MACs: expected MACs per input on the rows measured on. "
                  "Latency ratio: plan / member alone, ONNX Runtime on this CPU "
                  f"({mt.get('threads', 1)} intra-op thread), median over many different batches of `test` rows, "
                  "timed in the same rounds (`wcx.zoo.experiment.bench_cascade`). Targets (issue): <= 0.6x MACs "
                  "and <= 0.75x latency at batch 256.", "",
                  "| member | protocol | plan | MACs ratio | member test coverage (risk) | plan test coverage "
                  f"(risk) | cov@5% test: member / plan | {lat_head} |",
                  "| --- | --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in batches) + " |"]
        for row in mt["rows"]:
            m = row["member"]
            member_cov = f"{100 * row['member_test_coverage']:.2f}% ({100 * row['member_test_risk']:.2f}%)"
            if row.get("plan") is None:
                lines.append(f"| {m} | certified | none certified | | {member_cov} | | | "
                             + " | ".join("" for _ in batches) + " |")
            else:
                lat = row.get("latency") or ({"256": {"ratio": row["latency_ratio"], "plan_ms": row["plan_ms"],
                                                      "member_ms": row["member_ms"]}} if "plan_ms" in row else None)
                own = " (own outputs)" if row.get("plan_combine") == "last" else ""
                lines.append(f"| {m} | certified | {' > '.join(row['plan'])}{own} | {row['macs_ratio']:.2f}x | "
                             f"{member_cov} "
                             f"| {100 * row['plan_test_coverage']:.2f}% ({100 * row['plan_test_risk']:.2f}%) | | "
                             f"{lat_cells(lat)} |")
            for protocol, key in (("empirical", "empirical"), ("empirical, noise-aware pick", "empirical_noise_aware")):
                e = row.get(key)
                if not e:
                    continue
                em = e["member"]
                member_emp = f"{100 * em['test_coverage']:.2f}% ({100 * em['test_risk']:.2f}%)"
                if e["plan"] is None:
                    lines.append(f"| {m} | {protocol} | none on the front | | {member_emp} | | "
                                 f"{100 * em['test_coverage_at_risk']:.2f}% / | " + " | ".join("" for _ in batches)
                                 + " |")
                    continue
                own = " (own outputs)" if e.get("plan_combine") == "last" else ""
                lines.append(f"| {m} | {protocol} | {' > '.join(e['plan'])}{own} | {e['macs_ratio']:.2f}x | "
                             f"{member_emp} | {100 * e['plan_test_coverage']:.2f}% "
                             f"({100 * e['plan_test_risk']:.2f}%) | {100 * em['test_coverage_at_risk']:.2f}% / "
                             f"{100 * e['plan_test_coverage_at_risk']:.2f}% | {lat_cells(e.get('latency'))} |")
        lines.append("")
    for fb in (r.get("front"), r.get("front_mean_last")):
        if not fb:
            continue
        rule = (f"exceeds the front's best at or under its cost by more than one bootstrap standard error of that gap "
                f"({fb['bootstrap']} resamples of the `test` rows)" if "bootstrap" in fb else
                f"exceeds the front's best at or under its cost by more than {100 * fb.get('margin', 0):g} points")
        searched = " and ".join(fb.get("combines", ["mean"]))
        lines += [f"## The planner's front against the baselines (stage outputs searched: {searched}; searched on "
                  "`calib`, measured on `test`)", "",
                  f"Front of `plan_cascade(..., max_cost={fb['cap']:,.0f})` ({fb['front_size']} cascades, searched on "
                  "the 1,500-row fit part of `calib`); a baseline counts as above it when its coverage at risk 0.05 "
                  f"on `test` {rule}. Target: none above.", "",
                  "| baseline | configurations | above the front at all | above by more than 1 s.e. | largest such gap "
                  "(s.e.) | where |", "| --- | --- | --- | --- | --- | --- |"]
        for kind, k in fb["kinds"].items():
            w = k["worst"]
            where = "" if w is None else (f"{' > '.join(w['members'])} at {w['cost']:,.0f} MACs: "
                                         f"{100 * w['coverage']:.2f}% vs {100 * w['front_coverage']:.2f}%")
            se = "" if w is None or "se" not in w else f" ({100 * w['se']:.2f})"
            lines.append(f"| {kind} | {k['n']} | {k.get('above_front_raw', '')} | {k['above_front']} | "
                         f"{100 * k['max_gap']:.2f} points{se} | {where} |")
        lines.append("")
    sv = r.get("sensitivity")
    if sv:
        lines += ["## Sensitivity of the matches to the planner's settings (test coverage, MACs ratio)", "",
                  "Same protocol as above without latency; `bonferroni` / `fixed_sequence` is how the candidates are "
                  "certified together (method.md). The defaults are fit share 0.3, 6 candidates, bonferroni.", "",
                  "| fit share | candidates | selection | b2_s0 | b3_s0 | b4_s0 |",
                  "| --- | --- | --- | --- | --- | --- |"]
        keys = sorted({(row["fit_fraction"], row["n_candidates"], row["selection"]) for row in sv["rows"]})
        for key in keys:
            cells = []
            for member in ("b2_s0", "b3_s0", "b4_s0"):
                row = next(x for x in sv["rows"] if (x["fit_fraction"], x["n_candidates"], x["selection"]) == key
                           and x["member"] == member)
                cells.append("none certified" if row["plan"] is None else
                             f"{100 * row['plan_test_coverage']:.2f}% at {row['macs_ratio']:.2f}x")
            lines.append(f"| {key[0]:g} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=("audit", "timing", "match", "match-swapped", "sensitivity", "front", "all",
                                     "render"),
                    help="render: rewrite OUT.md from OUT.json")
    ap.add_argument("--draws", type=int, default=1000, help="audit: calibration sets drawn (default 1000)")
    ap.add_argument("--n", type=int, default=5000, help="audit: images per calibration set (default 5000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="timing: runs per objective (default 2)")
    ap.add_argument("--no-latency", action="store_true", help="match: skip the latency benchmark")
    ap.add_argument("--threads", type=int, default=1, help="match: ONNX Runtime threads for latency (default 1)")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "wcx" / "zoo-logits")
    ap.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = ap.parse_args(argv)
    if args.draws < 1 or args.n < 100:
        print("error: --draws must be >= 1 and --n >= 100", file=sys.stderr)
        return 2
    if args.part == "render":
        if args.out is None:
            print("error: render needs --out", file=sys.stderr)
            return 2
        import json

        from wcx.atomic import write_text_atomic

        write_text_atomic(args.out.with_suffix(".md"), markdown(json.loads(args.out.with_suffix(".json").read_text())))
        return 0
    try:
        names, macs, logits, labels = zoo_population(args.cache_dir)
        command = "python tools/plan_audit.py " + " ".join(sys.argv[1:] if argv is None else argv)
        result: dict[str, Any] = {"machine": machine(), "commands": [command]}
        if args.out is not None and args.out.with_suffix(".json").is_file():  # a part rerun updates the rest
            import json

            earlier = json.loads(args.out.with_suffix(".json").read_text())
            result = {**earlier, "machine": result["machine"],
                      "commands": [*earlier.get("commands", [earlier.get("command", "")]), command]}
        if args.part in ("match", "all"):
            result["match"] = match_table(names, macs, logits, labels, latency=not args.no_latency,
                                          threads=args.threads)
        if args.part == "match-swapped":
            result["match_swapped"] = match_table(names, macs, logits, labels, latency=not args.no_latency,
                                                  threads=args.threads, swap=True)
        if args.part in ("front", "all"):
            result["front"] = front_vs_baselines(names, macs, logits, labels)
            result["front_mean_last"] = front_vs_baselines(names, macs, logits, labels, combines=COMBINES)
        if args.part in ("sensitivity", "all"):
            result["sensitivity"] = sensitivity(names, macs, logits, labels)
        if args.part in ("timing", "all"):
            result["timing"] = timing(names, macs, logits, labels, repeats=args.repeats)
        if args.part in ("audit", "all"):
            result["audit"] = audit(names, macs, logits, labels, draws=args.draws, n=args.n, seed=args.seed)
    except WcxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    text = markdown(result)
    print(text)
    if args.out:
        from wcx.atomic import write_json_atomic, write_text_atomic

        write_json_atomic(args.out.with_suffix(".json"), result)
        write_text_atomic(args.out.with_suffix(".md"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
