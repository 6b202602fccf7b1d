"""What a configuration of pool members does on held-out rows, and the baselines a plan is
compared with (``wcx plan --report``).

Every figure is measured from cached logits: the expected cost per input and the coverage at the
target risk, threshold-free (the best tau on the rows measured), so every configuration is
compared alike. Baselines are fitted on the fit part and measured on the certify part (and on a
test set, when given):

* ``single``: every member alone;
* per size (members of equal cost, pool order), with the first 2..``max_stages`` members:
  ``ensemble`` (all of them on every input), ``window_fixed`` (the reference method's window
  cascade with the fixed +-10% band) and ``threshold_fixed`` (the single-threshold cascade at that
  band's budget);
* ``confidence_cascade`` (heterogeneous confidence cascades, as Lebovitz et al., TMLR 2023): the
  first member of a smaller size, then that of a larger one; an input goes on when the *current
  model's own* max softmax probability is among the least confident ``budget`` share (fitted as
  a threshold on the fit part), and keeps the last model's own prediction and confidence; at
  budgets 0.1, 0.2, 0.3 and 0.5;
* ``agreement_deferral`` (ABC, Kolawole et al., TMLR 2025): a tier of two members of a smaller
  size runs on every input; where the two disagree on the top-1 class the input goes on to a tier
  of two members of a larger size; the exit tier's two-member ensemble gives the prediction and
  the confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from wcx.calibration.metrics import coverage_at_risk
from wcx.calibration.simulator import simulate_from_stages
from wcx.calibration.targets import SelectiveRisk
from wcx.calibration.window import (
    REFERENCE_WIDTHS,
    stage_operating_thresholds,
    thresholds_for_budget,
    windows_for_widths,
)
from wcx.core.policy import AllPolicy, NonePolicy, Policy, ThresholdPolicy
from wcx.core.scores import stage_outputs

#: pass-on budgets of the confidence cascades
CONFIDENCE_BUDGETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)

Parts = dict[str, tuple[np.ndarray, np.ndarray]]


def cascade_outputs(logits: np.ndarray, labels: np.ndarray, members: Sequence[int], policy: Policy,
                    score: str, combine: str = "mean") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exit scores, errors and pass fractions of ``members`` under ``policy`` on ``logits``
    (the cascade of method.md section 2; ``combine`` as :data:`wcx.core.scores.COMBINES`)."""
    s, p = stage_outputs(np.asarray(logits)[list(members)], score, combine)
    out = simulate_from_stages(s, p, policy)
    return out.score, out.pred != labels, out.pass_fraction


def measure_cascade(members: Sequence[int], policy: Policy, parts: Parts, costs: np.ndarray, risk: float,
                    score: str, tau: float | None = None, combine: str = "mean") -> dict[str, Any]:
    """Expected cost and coverage at ``risk`` (threshold-free) of a fitted cascade on each part;
    with ``tau``, also the coverage and risk that tau gives there."""
    out: dict[str, Any] = {}
    for part, (lz, ly) in parts.items():
        s, e, pf = cascade_outputs(lz, ly, members, policy, score, combine)
        fig: dict[str, Any] = {"expected_cost": float(np.dot(pf, costs[list(members)])),
                               "coverage_at_risk": coverage_at_risk(s, e, risk)}
        if tau is not None:
            acc = s >= tau
            fig.update(coverage=float(acc.mean()), risk=float(e[acc].mean()) if acc.any() else 0.0)
        out[part] = fig
    return out


def size_groups(costs: np.ndarray) -> list[list[int]]:
    """Pool members grouped by equal cost (same size), in pool order, cheapest group first."""
    groups: dict[float, list[int]] = {}
    for i, c in enumerate(np.asarray(costs).tolist()):
        groups.setdefault(c, []).append(i)
    return [groups[c] for c in sorted(groups)]


def own_outputs(logits: np.ndarray, members: Sequence[int], score: str) -> tuple[np.ndarray, np.ndarray]:
    """Each member's *own* score and prediction ``(M, N)`` (no running ensemble)."""
    pairs = [stage_outputs(np.asarray(logits)[[i]], score) for i in members]
    return np.concatenate([s for s, _ in pairs]), np.concatenate([p for _, p in pairs])


def agreement_outputs(logits: np.ndarray, labels: np.ndarray, low: Sequence[int], high: Sequence[int],
                      score: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Exit scores, errors and the share of inputs deferred of an agreement-deferral cascade:
    tier ``low`` on every input, tier ``high`` where ``low``'s members disagree on the top-1."""
    z = np.asarray(logits)
    s_low, p_low = stage_outputs(z[list(low)], score)
    s_high, p_high = stage_outputs(z[list(high)], score)
    own = z[list(low)].argmax(axis=-1)
    defer = np.any(own != own[0], axis=0)
    score_out = np.where(defer, s_high[-1], s_low[-1])
    pred = np.where(defer, p_high[-1], p_low[-1])
    return score_out, pred != labels, float(defer.mean())


def baseline_figures(
    fit_logits: np.ndarray, fit_labels: np.ndarray, costs: np.ndarray, names: Sequence[str], parts: Parts, *,
    risk: float, score: str, max_stages: int,
) -> list[dict[str, Any]]:
    """The configurations a plan is compared with (module docstring), fitted on the fit part and
    measured on each of ``parts``: one row per configuration with its kind, members, policy and
    ``{part: {"expected_cost", "coverage_at_risk"}}``."""
    target = SelectiveRisk(risk)
    costs = np.asarray(costs, dtype=np.float64)
    rows: list[dict[str, Any]] = []

    def add(kind: str, members: list[int], policy: Policy) -> None:
        rows.append({"kind": kind, "members": [names[i] for i in members], "policy": policy.to_dict(),
                     **measure_cascade(members, policy, parts, costs, risk, score)})

    for i in range(len(names)):
        add("single", [i], NonePolicy())
    groups = size_groups(costs)
    for group in groups:
        for m in range(2, min(len(group), max_stages) + 1):
            members = group[:m]
            s, p = stage_outputs(fit_logits[members], score)
            taus = stage_operating_thresholds(s, target.errors(p, fit_labels), target)
            band = windows_for_widths(s, taus, [REFERENCE_WIDTHS] * (m - 1))
            budget = [float(f) for f in simulate_from_stages(s, p, band).pass_fraction[1:]]
            add("ensemble", members, AllPolicy())
            add("window_fixed", members, band)
            add("threshold_fixed", members, thresholds_for_budget(s, budget))
    for a in range(len(groups)):
        for b in range(a + 1, len(groups)):
            pair = [groups[a][0], groups[b][0]]
            fit_s, _ = own_outputs(fit_logits, pair, score)
            for share in CONFIDENCE_BUDGETS:
                policy = thresholds_for_budget(fit_s, [share])
                rows.append({"kind": "confidence_cascade", "members": [names[i] for i in pair],
                             "policy": policy.to_dict(), "budget": share,
                             **_measure_own(pair, policy, parts, costs, risk, score)})
            if len(groups[a]) >= 2 and len(groups[b]) >= 2:
                low, high = groups[a][:2], groups[b][:2]
                row: dict[str, Any] = {"kind": "agreement_deferral",
                                       "members": [names[i] for i in low + high], "policy": None}
                for part, (lz, ly) in parts.items():
                    s, e, deferred = agreement_outputs(lz, ly, low, high, score)
                    row[part] = {"expected_cost": float(costs[low].sum() + deferred * costs[high].sum()),
                                 "coverage_at_risk": coverage_at_risk(s, e, risk), "deferred": deferred}
                rows.append(row)
    return rows


def _measure_own(members: list[int], policy: ThresholdPolicy, parts: Parts, costs: np.ndarray, risk: float,
                 score: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part, (lz, ly) in parts.items():
        s, p = own_outputs(lz, members, score)
        o = simulate_from_stages(s, p, policy)
        out[part] = {"expected_cost": float(np.dot(o.pass_fraction, costs[members])),
                     "coverage_at_risk": coverage_at_risk(o.score, o.pred != ly, risk)}
    return out
