"""Windows around the stages' operating thresholds and the search over their widths
(method.md section 3, steps 2 and 3).

For every non-final stage m:

1. ``tau_m`` is the stage-m ensemble's operating threshold on the fitting data (selective: the
   empirical threshold of the risk target; OOD: the threshold keeping the target TPR).
2. The window is a *quantile band* of the stage-m scores of the inputs that reach stage m
   (all inputs for m = 1): with ``q = F_m(tau_m)`` (empirical CDF, ``mean(s <= tau_m)``),
   ``[lo_m, hi_m] = [Q_m(q - w_lo), Q_m(q + w_hi)]`` with the levels clamped to [0, 1] and
   ``Q_m`` the empirical quantile function (``inverted_cdf``: ``Q(0)`` is the minimum, ``Q(1)``
   the maximum, and every bound is a score of the data).

The reference method fixes ``w_lo = w_hi = 0.10``. :func:`search_windows` instead evaluates a
grid of widths and picks the **cheapest** cascade (expected cost per input, from per-member
costs: MACs or latency) whose quality on the fitting data stays within ``eps`` of the full
ensemble's:

* selective: empirical coverage at the target risk ``>= ensemble's - eps``;
* OOD: the fraction of in-distribution inputs whose flag (at the cascade's own target-TPR
  threshold) differs from the full ensemble's flag is ``<= eps``. OOD data is never used to fit
  (method.md: it only reports FPR and AUROC), so agreement with the full ensemble's decision is
  the label-free quality measure.

**Noise-aware feasibility** (wcx's addition to the reference method). Picking the cheapest of
~150 cascades whose *measured* gap is within ``eps`` favours the ones whose gap happens to be
measured too small (winner's curse): with the 1,500 fitting inputs of guaranteed mode the plain
rule chose windows passing 2-5% of the inputs that lost 1-1.5 points of test coverage. So a
cascade is feasible iff ``gap + gap_se <= eps``, where ``gap_se`` is the standard deviation of
the gap over ``n_boot`` paired bootstrap resamples of the fitting data (the same resamples for
every cascade and the full ensemble; the windows stay those fitted on all of it): the
"one-standard-error rule" of model selection. ``n_boot=0`` gives the plain rule.

Search: for M = 2 every ``(w_lo, w_hi)`` pair of the grid. For M > 2 first the same pair at every
stage (grid^2 cascades), then coordinate-wise refinement: stage by stage, every pair for that
stage with the others fixed, keeping a change when it is feasible and cheaper (two sweeps). Every
cascade evaluated is kept in the curve, so a user can pick another cost/quality point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wcx.calibration.simulator import expected_cost, simulate_from_stages
from wcx.calibration.targets import Target
from wcx.core.policy import EMPTY, AllPolicy, NonePolicy, Policy, ThresholdPolicy, WindowPolicy, window_to_json
from wcx.errors import BadInputError

#: the reference method's fixed band (+-10%, about 20% of the inputs pass)
REFERENCE_WIDTHS: tuple[float, float] = (0.10, 0.10)
#: default grid of lower/upper widths (quantile levels); 1.0 makes a window cover everything
DEFAULT_WIDTH_GRID: tuple[float, ...] = (0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
#: paired bootstrap resamples that measure the noise of each cascade's gap
DEFAULT_N_BOOT: int = 100
#: the window of a stage no fitting input reaches (no input continues from it)
EMPTY_WINDOW: tuple[float, float] = EMPTY


def _quantile_sorted(sorted_scores: np.ndarray, level: float) -> float:
    # inverted_cdf: the smallest score x with F(x) >= level (level clamped to [0, 1]).
    n = sorted_scores.size
    level = min(max(level, 0.0), 1.0)
    return float(sorted_scores[max(math.ceil(level * n - 1e-12) - 1, 0)])


def quantile_band(scores: np.ndarray, tau: float, w_lo: float, w_hi: float) -> tuple[float, float]:
    """``[Q(q - w_lo), Q(q + w_hi)]`` with ``q = mean(scores <= tau)``, levels clamped.

    >>> quantile_band(np.arange(1.0, 11.0), 5.0, 0.2, 0.1)
    (3.0, 6.0)
    """
    if w_lo < 0 or w_hi < 0:
        raise BadInputError(f"window widths must be >= 0, got ({w_lo}, {w_hi})")
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if s.size == 0:
        return EMPTY_WINDOW
    q = np.searchsorted(s, tau, side="right") / s.size
    return _quantile_sorted(s, q - w_lo), _quantile_sorted(s, q + w_hi)


def stage_operating_thresholds(scores: np.ndarray, errors: np.ndarray | None, target: Target) -> list[float]:
    """``tau_m`` of every non-final stage-m ensemble, on all the given inputs.

    ``scores`` and ``errors`` are ``(M, N)`` (``errors`` None for a label-free target); each
    threshold is the target's operating threshold of that stage alone (selective: the empirical
    threshold of the risk target, ``inf`` when none meets it; OOD: the target TPR's threshold).
    """
    return [target.stage_threshold(scores[m], None if errors is None else errors[m])
            for m in range(scores.shape[0] - 1)]


def windows_for_widths(
    scores: np.ndarray, stage_taus: Sequence[float], widths: Sequence[tuple[float, float]]
) -> WindowPolicy:
    """Quantile-band windows for per-stage widths ``[(w_lo, w_hi), ...]`` (M - 1 entries).

    Stage m's band is taken over the inputs that reach stage m through the earlier windows.
    """
    m_total, n = scores.shape
    if len(widths) != m_total - 1 or len(stage_taus) != m_total - 1:
        raise BadInputError(f"need {m_total - 1} widths and stage thresholds, got {len(widths)}")
    reach = np.ones(n, dtype=bool)
    windows = []
    for m, ((w_lo, w_hi), tau) in enumerate(zip(widths, stage_taus, strict=True)):
        if not reach.any():
            windows.append(EMPTY_WINDOW)
            continue
        lo, hi = quantile_band(scores[m][reach], tau, w_lo, w_hi)
        windows.append((lo, hi))
        reach &= (scores[m] >= lo) & (scores[m] <= hi)
    return WindowPolicy(windows)


def thresholds_for_budget(scores: np.ndarray, budget: float | Sequence[float]) -> ThresholdPolicy:
    """Single-threshold policy passing on the least confident inputs within a budget.

    ``budget`` is the target ``pass_fraction`` of stages 2..M (fractions of *all* inputs), one
    per non-final stage; a single number ``b`` means ``[b, b**2, ...]`` (every stage passes on the
    fraction ``b`` of the inputs that reach it). Stage m's threshold is the score of the
    ``round(b_m N)``-th least confident input that reached it (ties may pass a few more);
    ``-inf`` when the budget passes nothing.
    """
    m_total, n = scores.shape
    if np.ndim(budget) == 0:
        b = float(budget)  # type: ignore[arg-type]
        fractions = [b ** (i + 1) for i in range(m_total - 1)]
    else:
        fractions = [float(b) for b in budget]  # type: ignore[union-attr]
    if len(fractions) != m_total - 1:
        raise BadInputError(f"budget needs {m_total - 1} pass fractions (one per later stage), got {len(fractions)}")
    if any(not 0.0 <= f <= 1.0 for f in fractions):
        raise BadInputError(f"budget fractions must be in [0, 1], got {fractions}")
    reach = np.ones(n, dtype=bool)
    thresholds = []
    for m, frac in enumerate(fractions):
        s = np.sort(scores[m][reach])
        count = min(int(round(frac * n)), s.size)
        t = float(s[count - 1]) if count > 0 else -math.inf
        thresholds.append(t)
        reach &= scores[m] <= t
    return ThresholdPolicy(thresholds)


@dataclass(frozen=True)
class SearchPoint:
    """One evaluated cascade of the width search (all figures on the fitting data).

    ``quality`` is the coverage at the target risk (selective) or the flag agreement with the
    full ensemble (OOD); ``gap`` how far it falls short of the full ensemble and ``gap_se`` the
    bootstrap standard deviation of that gap (0 without bootstrap, and not measured where
    ``gap > eps`` already makes the point infeasible); feasible iff
    ``gap + gap_se <= eps``.
    """

    widths: tuple[tuple[float, float], ...]
    windows: tuple[tuple[float, float], ...]
    pass_fraction: tuple[float, ...]
    expected_cost: float
    quality: float
    gap: float
    feasible: bool
    gap_se: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "widths": [list(w) for w in self.widths],
            "windows": [window_to_json(w) for w in self.windows],
            "pass_fraction": list(self.pass_fraction),
            "expected_cost": self.expected_cost,
            "quality": self.quality,
            "gap": self.gap,
            "gap_se": self.gap_se,
            "feasible": self.feasible,
        }


@dataclass
class WindowSearch:
    """Result of :func:`search_windows`: the chosen point, the reference band, the baselines
    and every evaluated cascade (``curve``)."""

    best: SearchPoint
    reference: SearchPoint
    curve: list[SearchPoint]
    stage_taus: list[float]
    ensemble_quality: float
    single_quality: float
    ensemble_cost: float
    single_cost: float
    eps: float
    extra: dict[str, Any] = field(default_factory=dict)


class CascadeQuality:
    """Quality of cascades on fitting data with precomputed stage scores/predictions ``(M, N)``.

    ``target`` decides what quality is (selective: coverage at the target risk, with labels
    ``y``; OOD: agreement with the full ensemble's flags). ``n_boot`` paired bootstrap
    resamples (drawn once from ``seed``) measure each gap's noise.
    """

    def __init__(
        self,
        scores: np.ndarray,
        preds: np.ndarray,
        y: np.ndarray | None,
        *,
        target: Target,
        member_costs: Sequence[float] | np.ndarray,
        n_boot: int = DEFAULT_N_BOOT,
        seed: int = 0,
    ) -> None:
        self.scores = np.asarray(scores, dtype=np.float64)
        self.preds = np.asarray(preds)
        self.target = target
        self.costs = np.asarray(member_costs, dtype=np.float64)
        m_total, _ = self.scores.shape
        if self.costs.shape != (m_total,):
            raise BadInputError(f"need {m_total} member costs, got {self.costs.size}")
        self.errors = target.errors(self.preds, y)
        if n_boot < 0:
            raise BadInputError(f"n_boot must be >= 0, got {n_boot}")
        n = self.scores.shape[1]
        # multinomial counts = resampling the fitting inputs with replacement, as weights
        counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot)
        self.boot_weights = counts.astype(np.uint16)  # counts are tiny; 4x less memory than int64
        full = simulate_from_stages(self.scores, self.preds, AllPolicy())
        self.reference = target.reference(full.score)
        self.ensemble_quality = self.quality_of(full.exit_stage, full.score)
        self.ensemble_boot = self.boot_quality_of(full.exit_stage, full.score)

    def _exit_errors(self, exit_stage: np.ndarray) -> np.ndarray | None:
        return None if self.errors is None else self.errors[exit_stage - 1, np.arange(exit_stage.size)]

    def quality_of(self, exit_stage: np.ndarray, score: np.ndarray) -> float:
        return self.target.quality(score, self._exit_errors(exit_stage), self.reference)

    def boot_quality_of(self, exit_stage: np.ndarray, score: np.ndarray) -> np.ndarray:
        """``quality_of`` on every bootstrap resample, ``(n_boot,)``."""
        if self.boot_weights.shape[0] == 0:
            return np.zeros(0)
        return self.target.boot_quality(score, self._exit_errors(exit_stage), self.reference, self.boot_weights)

    def evaluate(self, policy: Policy, widths: tuple[tuple[float, float], ...], eps: float) -> SearchPoint:
        out = simulate_from_stages(self.scores, self.preds, policy)
        quality = self.quality_of(out.exit_stage, out.score)
        gap = self.ensemble_quality - quality
        gap_se = 0.0
        if gap <= eps + 1e-12 and self.boot_weights.shape[0] > 1:  # else infeasible whatever the noise
            boot_gap = self.ensemble_boot - self.boot_quality_of(out.exit_stage, out.score)
            gap_se = float(np.std(boot_gap))
        windows = policy.windows if isinstance(policy, WindowPolicy) else ()
        return SearchPoint(
            widths=widths,
            windows=tuple(windows),
            pass_fraction=tuple(float(p) for p in out.pass_fraction),
            expected_cost=expected_cost(out.pass_fraction, self.costs),
            quality=float(quality),
            gap=float(gap),
            feasible=bool(gap + gap_se <= eps + 1e-12),
            gap_se=gap_se,
        )


def _cheapest(points: Sequence[SearchPoint]) -> SearchPoint | None:
    feasible = [p for p in points if p.feasible]
    if not feasible:
        return None
    # cheapest first; among equal cost the better quality, then the narrower window
    return min(feasible, key=lambda p: (p.expected_cost, -p.quality, sum(a + b for a, b in p.widths)))


def search_windows(
    scores: np.ndarray,
    preds: np.ndarray,
    y: np.ndarray | None,
    *,
    target: Target,
    member_costs: Sequence[float] | np.ndarray,
    eps: float = 0.005,
    width_grid: Sequence[float] = DEFAULT_WIDTH_GRID,
    fixed_widths: tuple[float, float] | None = None,
    sweeps: int = 2,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> WindowSearch:
    """Search window widths on fitting data (stage scores and predictions ``(M, N)``, M >= 2).

    ``target`` says what quality is (:mod:`wcx.calibration.targets`). With ``fixed_widths`` the same
    ``(w_lo, w_hi)`` is used at every stage and no search is made (``best`` is that point).
    The widest grid point (1.0, 1.0) reproduces the full ensemble on the fitting data (gap 0 on
    every resample), so a feasible point always exists when the grid contains 1.0. ``n_boot``
    and ``seed``: the bootstrap of the noise-aware rule (module docstring; 0 = plain rule).
    """
    scores = np.asarray(scores, dtype=np.float64)
    m_total = scores.shape[0]
    if m_total < 2:
        raise BadInputError("a window cascade needs at least 2 members")
    if eps < 0:
        raise BadInputError(f"eps must be >= 0, got {eps}")
    grid = sorted({float(w) for w in width_grid})
    if not grid or grid[0] < 0:
        raise BadInputError(f"width grid must be non-empty with widths >= 0, got {list(width_grid)}")
    cq = CascadeQuality(scores, preds, y, target=target, member_costs=member_costs,
                        n_boot=0 if fixed_widths is not None else n_boot, seed=seed)
    stage_taus = stage_operating_thresholds(scores, cq.errors, target)
    cache: dict[tuple[tuple[float, float], ...], SearchPoint] = {}

    def point(widths: tuple[tuple[float, float], ...]) -> SearchPoint:
        if widths not in cache:
            cache[widths] = cq.evaluate(windows_for_widths(scores, stage_taus, widths), widths, eps)
        return cache[widths]

    stages = m_total - 1
    reference = point((REFERENCE_WIDTHS,) * stages)
    if fixed_widths is not None:
        best = point((tuple(float(w) for w in fixed_widths),) * stages)
    else:
        pairs = [(lo, hi) for lo in grid for hi in grid]
        for pair in pairs:
            point((pair,) * stages)
        cheapest = _cheapest(list(cache.values()))
        if cheapest is None:  # the grid lacks a wide enough band: fall back to the full ensemble
            cheapest = point(((1.0, 1.0),) * stages)
        best = cheapest
        for _ in range(sweeps if stages > 1 else 0):
            improved = False
            for m in range(stages):
                for pair in pairs:
                    widths = best.widths[:m] + (pair,) + best.widths[m + 1 :]
                    p = point(widths)
                    if p.feasible and p.expected_cost < best.expected_cost - 1e-12:
                        best, improved = p, True
            if not improved:
                break
    single = simulate_from_stages(scores, preds, NonePolicy())
    return WindowSearch(
        best=best,
        reference=reference,
        curve=sorted(cache.values(), key=lambda p: (p.expected_cost, -p.quality)),
        stage_taus=stage_taus,
        ensemble_quality=cq.ensemble_quality,
        single_quality=cq.quality_of(single.exit_stage, single.score),
        ensemble_cost=float(cq.costs.sum()),
        single_cost=float(cq.costs[0]),
        eps=eps,
    )


def pareto_front(curve: Sequence[SearchPoint]) -> list[SearchPoint]:
    """The points of ``curve`` that no other point beats on both cost (lower) and quality
    (higher), sorted by cost."""
    front: list[SearchPoint] = []
    for p in sorted(curve, key=lambda p: (p.expected_cost, -p.quality)):
        if not front or p.quality > front[-1].quality:
            front.append(p)
    return front
