"""Planning from a pool bundle: run its members once, plan, write the calibrated sub-bundle.

What ``wcx plan POOL --data CALIB`` does: every pool member runs once on the held-out data
(:func:`wcx.calibration.held_out.run_members`: the deployment backend, the user logits cache),
:func:`wcx.calibration.planner.plan_cascade` picks and certifies a cascade, and a new bundle
holding the chosen members in stage order is written with its policy and calibration sections in
one atomic write (:func:`wcx.bundle.select_members`: files copied and re-hashed). The
calibration section is a guaranteed-mode record like ``wcx calibrate``'s, fitted on the certify
part, with the provenance of the chosen members' logits. Nothing is written when no cascade is
certified; the report says why. :func:`write_plan_plot` draws coverage against cost for the
plan, the search's front and the baselines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wcx.atomic import atomic_write
from wcx.bundle import Bundle, select_members
from wcx.calibration.held_out import HeldOutData, ProgressFn, latency_costs, run_members
from wcx.calibration.pareto_testing import SELECTION_METHODS, fit_certify_split
from wcx.calibration.planner import DEFAULT_CANDIDATES, Plan, check_objective, plan_cascade
from wcx.calibration.precision_flips import decision_flips, model_groups, reference_twins
from wcx.calibration.reference import measure_reference
from wcx.calibration.result import CalibrationResult, CalibrationSettings
from wcx.calibration.simulator import simulate_from_stages
from wcx.calibration.targets import SelectiveRisk
from wcx.core.manifest import ReferenceRates
from wcx.core.provenance import Provenance
from wcx.core.scores import check_combines, stage_outputs
from wcx.errors import BadInputError, WorkFailedError
from wcx.json_values import json_safe

__all__ = ["BundlePlan", "plan_bundle", "plan_result", "write_plan_plot"]


@dataclass
class BundlePlan:
    """What :func:`plan_bundle` produced: the plan, its report (``wcx plan --json``) and the
    written bundle (None when nothing was certified)."""

    plan: Plan
    report: dict[str, Any]
    bundle: Bundle | None

    def raise_if_failed(self) -> None:
        """``WorkFailedError`` (exit 1) when no cascade was certified for the objective."""
        if self.bundle is None:
            raise WorkFailedError(f"no plan: {self.report['reason']}")


def plan_result(plan: Plan, macs: Sequence[float], costs: Sequence[float], cost: str,
                n_classes: int, logits: np.ndarray | None = None) -> CalibrationResult:
    """The chosen cascade as a :class:`CalibrationResult` (guaranteed mode, figures on the
    certify part), from which the manifest sections come. With the pool's held-out ``logits``
    (those it was planned on) it carries the reference rates a drift monitor needs, measured on
    the certify part, the stage-1 score cuts taken on the fit part (which chose the members and
    windows), as ``wcx calibrate`` does."""
    pick = plan.plan
    if pick is None:
        raise WorkFailedError("no cascade was certified; nothing to write")
    idx = list(pick.cascade.members)
    policy = pick.cascade.policy
    member_macs = tuple(float(macs[i]) for i in idx)
    member_costs = tuple(float(costs[i]) for i in idx)
    settings = CalibrationSettings(target=SelectiveRisk(plan.risk), score=plan.score, policy=policy.kind,
                                   delta=plan.delta, eps=math.nan, n_boot=0, seed=plan.seed,
                                   fit_fraction=plan.fit_fraction, cost=cost, combine=pick.cascade.combine)
    pf = np.asarray(pick.pass_fraction)
    return CalibrationResult(
        settings=settings, n_members=len(idx), n_classes=n_classes, policy=policy, threshold=pick.threshold,
        search=None,
        pass_fraction=pick.pass_fraction, member_costs=member_costs, member_macs=member_macs,
        expected_cost=float(np.dot(pf, member_costs)), expected_macs=float(np.dot(pf, member_macs)),
        n_fit=plan.n_fit, n_certify=plan.n_certify, baselines={},
        reference=None if logits is None else _reference(plan, np.asarray(logits)),
    )


def _reference(plan: Plan, logits: np.ndarray) -> ReferenceRates | None:
    pick = plan.plan
    assert pick is not None and pick.threshold.tau is not None
    fit_idx, cert_idx = fit_certify_split(logits.shape[1], plan.fit_fraction, plan.seed)
    z = logits[list(pick.cascade.members)]
    scores, preds = stage_outputs(z, plan.score, pick.cascade.combine)
    outcome = simulate_from_stages(scores[:, cert_idx], preds[:, cert_idx], pick.cascade.policy)
    return measure_reference(outcome, pick.threshold.tau, scores[0, fit_idx], first_scores=scores[0, cert_idx],
                             independent=True)


def plan_bundle(
    pool: Bundle,
    data: HeldOutData,
    out: str | Path,
    *,
    risk: float = 0.05,
    delta: float = 0.1,
    match: str | None = None,
    max_cost: float | None = None,
    cost: str = "macs",
    bench: Sequence[Mapping[str, Any]] | None = None,
    max_stages: int = 4,
    score: str = "msp",
    fit_fraction: float = 0.3,
    seed: int = 0,
    n_candidates: int = DEFAULT_CANDIDATES,
    selection: str = "bonferroni",
    backend: str = "onnxruntime",
    threads: int | None = None,
    test: HeldOutData | None = None,
    overwrite: bool = False,
    data_key: str | None = None,
    progress: ProgressFn | None = None,
    combines: Sequence[str] = ("mean",),
) -> BundlePlan:
    """Plan the cheapest certified cascade of ``pool``'s members on held-out ``data`` and write
    it as a calibrated bundle at ``out`` (module docstring; the objective and the search:
    :func:`wcx.calibration.planner.plan_cascade`). ``cost`` is ``macs`` (the manifest's) or
    ``latency`` (``bench``: the rows of ``wcx bench --json`` on the target device, one
    ``member:<name>`` row per pool member). ``test`` adds test-set figures to the report. A
    ``max_cost`` is in the cost's unit (MACs, or milliseconds per input). ``combines``: the stage
    outputs searched (:data:`wcx.core.scores.COMBINES`; the mean of the members so far by
    default, ``last`` adds cascades whose stages keep their own member's output)."""
    if cost not in ("macs", "latency"):
        raise BadInputError(f"cost must be macs or latency, got {cost!r}")
    if selection not in SELECTION_METHODS:
        raise BadInputError(f"selection must be one of {', '.join(SELECTION_METHODS)}, got {selection!r}")
    check_combines(combines)  # before the members run
    out = Path(out)
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise BadInputError(f"{out} already exists (pass overwrite=True to replace it)")
    names = [m.name for m in pool.members]
    macs = [float(m) for m in pool.member_macs]
    check_objective(names, match=match, max_cost=max_cost)  # before any member runs
    if cost == "latency":
        if bench is None:
            raise BadInputError("cost='latency' needs bench (the rows of 'wcx bench --json')")
        costs = latency_costs(bench, names)
    else:
        costs = macs
    kw: dict[str, Any] = {"backend": backend, "threads": threads, "progress": progress}
    held = run_members(pool, data, data_key=data_key, **kw)
    if held.labels is None:
        raise BadInputError("planning needs labelled held-out data (labels 'y')")
    test_logits = test_labels = None
    if test is not None:
        tested = run_members(pool, test, **kw)
        if tested.labels is None:
            raise BadInputError("the test set needs labels 'y'")
        test_logits, test_labels = tested.logits, tested.labels
    groups = model_groups(pool.members)  # one model at several precisions runs once per cascade
    precisions = [m.precision for m in pool.members]
    plan = plan_cascade(held.logits, held.labels, costs, names, risk=risk, delta=delta, match=match,
                        max_cost=max_cost, max_stages=max_stages, score=score, fit_fraction=fit_fraction, seed=seed,
                        n_candidates=n_candidates, selection=selection, test_logits=test_logits,
                        test_labels=test_labels, groups=groups, combines=combines)
    report = plan.to_dict()
    report.update(pool_bundle=str(pool.path), backend=backend, cost=cost,
                  pool_macs=dict(zip(names, macs, strict=True)), pool_costs=dict(zip(names, costs, strict=True)),
                  pool_precisions=dict(zip(names, precisions, strict=True)))
    report["precision_flips"] = None
    twins = reference_twins(groups, precisions)
    if plan.plan is not None and plan.plan.threshold.tau is not None:
        pick = plan.plan
        flips = {part: decision_flips(z, pick.cascade.members, pick.cascade.policy, pick.threshold.tau, score,
                                      twins, names, combine=pick.cascade.combine)
                 for part, z in (("held_out", held.logits), ("test", test_logits)) if z is not None}
        if any(v is not None for v in flips.values()):
            report["precision_flips"] = flips
    written = None
    if plan.plan is None:
        report["reason"] = _no_plan_reason(plan)
    else:
        result = plan_result(plan, macs, costs, cost, pool.num_classes, logits=held.logits)
        idx = list(plan.plan.cascade.members)
        provenance = Provenance(held.provenance.backend, tuple(held.provenance.members[i] for i in idx),
                                dict(held.provenance.info))
        sections = {"policy": result.policy_section(), "calibration": result.calibration_section(provenance)}
        written = select_members(pool, plan.members, out, overwrite=overwrite, sections=sections)
        report.update(bundle=str(written.path), tau=plan.plan.threshold.tau, expected_macs=result.expected_macs,
                      members=plan.members)
    report["manifest_written"] = written is not None
    return BundlePlan(plan=plan, report=json_safe(report), bundle=written)


def _no_plan_reason(plan: Plan) -> str:
    target = f"risk {plan.risk:g} with delta {plan.delta:g} on {plan.n_certify} certifying inputs"
    match = plan.objective.get("match")
    if match is not None:
        if not plan.candidates:
            return (f"the search found no cascade cheaper than {match} with about its coverage; deploy {match} "
                    "alone (wcx calibrate)")
        ref = plan.reference
        cover = "" if ref is None or not ref.certified else f" ({100 * ref.coverage:.2f}% certified alone)"
        return (f"no certified cascade cheaper than {match} reaches its coverage{cover} at {target}; deploy "
                f"{match} alone (wcx calibrate)")
    return f"no cascade within the cost certifies {target}"


def write_plan_plot(report: Mapping[str, Any], out_dir: str | Path, *, part: str = "certify") -> Path:
    """``plan.png`` in ``out_dir``: coverage at the target risk against expected cost on
    ``part`` (``certify`` or ``test``) for every baseline, the search's front and the plan
    (threshold-free coverage, so every configuration is measured alike)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 5))
    styles = {"single": ("o", "single members"), "ensemble": ("^", "same-size ensembles"),
              "window_fixed": ("s", "same-size window, fixed +-10%"),
              "threshold_fixed": ("v", "same-size single-threshold"),
              "confidence_cascade": ("x", "confidence cascade (own confidence, 2 sizes)"),
              "agreement_deferral": ("D", "agreement deferral (2 + 2 members)")}
    for kind, (marker, label) in styles.items():
        rows = [r for r in report.get("baselines", []) if r["kind"] == kind and part in r]
        if rows:
            ax.plot([r[part]["expected_cost"] for r in rows], [100 * r[part]["coverage_at_risk"] for r in rows],
                    marker, ls="none", ms=6, alpha=0.8, label=label)
    front = [r for r in report.get("front", []) if part in r]
    if front:
        ax.plot([r[part]["expected_cost"] for r in front], [100 * r[part]["coverage_at_risk"] for r in front],
                ".-", color="tab:purple", lw=1, label="planner's front (fitted on the fit part)")
    figures = (report.get("figures") or {}).get(part)
    if figures:
        ax.plot([figures["expected_cost"]], [100 * figures["coverage_at_risk"]], "*", ms=16, color="black",
                label="plan")
    ax.set_xscale("log")
    ax.set_xlabel("expected cost per input (" + ("MACs" if report.get("cost", "macs") == "macs" else "ms") + ")")
    ax.set_ylabel(f"coverage at risk {report.get('risk', 0.05):g} (%)")
    ax.set_title(f"Coverage vs cost ({part} data)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out / ("plan.png" if part == "certify" else f"plan_{part}.png")
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path
