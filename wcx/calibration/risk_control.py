"""Fitting the final threshold tau for a risk target (method.md section 3, step 4).

Two modes:

* ``empirical``: the largest coverage whose empirical selective risk is ``<= alpha`` on the
  data (what papers report; the true risk exceeds the target in about half of deployments).
* ``guaranteed``: Learn-then-Test. On a grid of up to ``grid_size`` score quantiles (built from
  the scores alone, no labels), each candidate tau accepts ``n`` inputs with ``k`` errors; the
  exact one-sided binomial p-value ``P(Binom(n, alpha) <= k)`` tests the null "risk > alpha".
  The grid is tested from the most confident threshold downward (fixed-sequence testing),
  starting at the first tau with ``n >= n0 = ceil(2 ln(1/delta) / alpha)`` accepted inputs and
  stopping at the first failure; the lowest tau passed is returned, and
  ``P(selective risk <= alpha) >= 1 - delta`` over the draw of the certifying data (assuming it
  is exchangeable with the deployment data). The reported bound is Clopper-Pearson's
  ``BetaInv(1 - delta; k + 1, n - k)``.

OOD detection uses the same machinery with the in-distribution TPR as the target: the "error" is
an in-distribution input that is flagged (score ``< tau``), counted over *all* in-distribution
inputs, so no class labels are needed and the bound is a lower bound on the TPR.

Conventions: accept (keep) iff ``score >= tau``; ``tau = inf`` accepts nothing (no threshold
found). Everything here is a pure function of arrays; scipy is imported lazily.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from wcx.calibration.metrics import risk_coverage_curve, threshold_at_tpr
from wcx.errors import BadInputError

DEFAULT_GRID_SIZE = 1000


@dataclass(frozen=True)
class ThresholdResult:
    """A fitted threshold and what it does on the data it was fitted on.

    Attributes:
        tau: accept iff ``score >= tau``; ``inf`` when no threshold was found (accept nothing).
        mode: ``"empirical"`` or ``"guaranteed"``.
        alpha: the risk target (selective risk, or ``1 - TPR`` for OOD).
        delta: the allowed failure probability (guaranteed mode), else None.
        certified: True iff guaranteed mode found a threshold. Always False in empirical mode
            (no certificate is claimed there).
        risk_upper_bound: Clopper-Pearson upper bound on the risk at tau (guaranteed mode).
        n: inputs the threshold was fitted on.
        n_accepted: inputs with ``score >= tau``.
        errors: errors counted at tau (selective: wrong among accepted; OOD: flagged).
        risk: ``errors / n_accepted`` (selective) or ``errors / n`` (OOD); 0.0 when nothing is
            accepted.
        coverage: ``n_accepted / n`` (the TPR for OOD).
        n_needed: when guaranteed mode finds no threshold, the number of accepted inputs the
            observed error rate would need to pass the test (None if that rate is already
            ``>= alpha``, when no sample size suffices).
        n_min: the start rule ``ceil(2 ln(1/delta) / alpha)`` (guaranteed mode).
        task: ``"selective"`` or ``"ood"``.
    """

    tau: float
    mode: str
    alpha: float
    delta: float | None
    certified: bool
    risk_upper_bound: float | None
    n: int
    n_accepted: int
    errors: int
    risk: float
    coverage: float
    n_needed: int | None = None
    n_min: int | None = None
    task: str = "selective"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tau"] = self.tau if math.isfinite(self.tau) else None
        return d


def check_fraction(value: float, name: str) -> float:
    """``value`` as a float if it lies in the open interval (0, 1), else ``BadInputError``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise BadInputError(f"{name} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < v < 1.0:
        raise BadInputError(f"{name} must be in (0, 1), got {value!r}")
    return v


def min_certify_size(alpha: float, delta: float) -> int:
    """The start rule ``n0 = ceil(2 ln(1/delta) / alpha)``: the fewest accepted inputs at which
    fixed-sequence testing begins, and the smallest certifying set accepted.

    >>> min_certify_size(0.05, 0.1)
    93
    """
    alpha = check_fraction(alpha, "alpha")
    delta = check_fraction(delta, "delta")
    return math.ceil(2.0 * math.log(1.0 / delta) / alpha - 1e-9)


def binomial_p_value(k: np.ndarray | int, n: np.ndarray | int, alpha: float) -> np.ndarray:
    """Exact one-sided p-value ``P(Binom(n, alpha) <= k)`` of the null "risk > alpha"."""
    from scipy.stats import binom

    p_value: np.ndarray = binom.cdf(k, n, alpha)
    return p_value


def clopper_pearson_upper(k: int, n: int, delta: float) -> float:
    """One-sided ``1 - delta`` Clopper-Pearson upper bound on a rate with ``k`` of ``n``.

    ``BetaInv(1 - delta; k + 1, n - k)``; 1.0 when ``k >= n`` or ``n == 0``.

    >>> round(clopper_pearson_upper(0, 45, 0.1), 4)
    0.0499
    """
    if n <= 0 or k >= n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(1.0 - delta, k + 1, n - k))


def accepted_needed(rate: float, alpha: float, delta: float, n_cap: int = 10**9) -> int | None:
    """About how many accepted inputs an observed error ``rate`` needs to pass the test.

    The smallest n with ``P(Binom(n, alpha) <= floor(rate * n)) <= delta`` (exact up to about
    a million, then found by bisection). None if ``rate >= alpha`` or the answer
    exceeds ``n_cap``.

    >>> accepted_needed(0.0, 0.05, 0.1), accepted_needed(0.025, 0.05, 0.1), accepted_needed(0.04, 0.05, 0.1)
    (45, 77, 673)
    """
    if rate >= alpha:
        return None

    def passes(n: np.ndarray | int) -> np.ndarray:
        return binomial_p_value(np.floor(rate * np.asarray(n) + 1e-9), n, alpha) <= delta

    # floor() makes the test saw-toothed in n: find a passing n by doubling, then scan every
    # smaller n when that is cheap (exact), else bisect (approximate).
    hi = 1
    while not passes(hi):
        hi *= 2
        if hi > n_cap:
            return None
    if hi <= 2**20:
        ns = np.arange(1, hi + 1)
        return int(ns[np.argmax(passes(ns))])
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _scores_errors(scores: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    e = np.asarray(errors).astype(bool)
    if s.ndim != 1 or s.shape != e.shape:
        raise BadInputError(f"scores and errors must be 1-D of one length, got {s.shape} and {e.shape}")
    if s.size == 0:
        raise BadInputError("no inputs to fit a threshold on")
    if not np.all(np.isfinite(s)):
        raise BadInputError("scores contain NaN or infinite values")
    return s, e


def score_grid(scores: np.ndarray, grid_size: int = DEFAULT_GRID_SIZE) -> np.ndarray:
    """Label-free candidate thresholds: up to ``grid_size`` distinct score quantiles at evenly
    spaced levels in [0, 1] (values of the data, ascending; the first is the minimum score).

    >>> score_grid(np.array([3.0, 1.0, 2.0, 2.0]), 3).tolist()
    [1.0, 2.0, 3.0]
    """
    if grid_size < 2:
        raise BadInputError(f"grid_size must be >= 2, got {grid_size}")
    s = np.asarray(scores, dtype=np.float64)
    levels = np.linspace(0.0, 1.0, grid_size)
    return np.unique(np.quantile(s, levels, method="inverted_cdf"))


def fit_empirical_threshold(scores: np.ndarray, errors: np.ndarray, alpha: float) -> ThresholdResult:
    """Largest-coverage threshold whose empirical selective risk is ``<= alpha`` (ties grouped).

    >>> r = fit_empirical_threshold(np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 1, 0, 1]), 0.4)
    >>> r.tau, r.coverage, r.n_accepted, r.errors
    (0.7, 0.75, 3, 1)
    """
    alpha = check_fraction(alpha, "alpha")
    s, e = _scores_errors(scores, errors)
    cov, risk, thr = risk_coverage_curve(s, e)
    counts = np.rint(cov * s.size).astype(np.int64)
    errs = np.rint(risk * counts).astype(np.int64)
    ok = errs <= alpha * counts + 1e-9
    if not ok.any():
        return ThresholdResult(math.inf, "empirical", alpha, None, False, None, s.size, 0, 0, 0.0, 0.0)
    i = int(np.flatnonzero(ok)[-1])
    return ThresholdResult(
        tau=float(thr[i]),
        mode="empirical",
        alpha=alpha,
        delta=None,
        certified=False,
        risk_upper_bound=None,
        n=s.size,
        n_accepted=int(counts[i]),
        errors=int(errs[i]),
        risk=float(risk[i]),
        coverage=float(cov[i]),
    )


def _check_certify_size(n: int, alpha: float, delta: float, what: str) -> int:
    n0 = min_certify_size(alpha, delta)
    if n < n0:
        raise BadInputError(
            f"the certifying set has {n} {what}; at least {n0} are needed for risk {alpha:g} "
            f"and delta {delta:g} (n0 = ceil(2 ln(1/delta) / alpha))"
        )
    return n0


def _fixed_sequence(n: np.ndarray, k: np.ndarray, alpha: float, delta: float, n0: int) -> tuple[int, int]:
    """Indices ``(start, last_passed)`` of fixed-sequence testing over grid points given in test
    order; ``last_passed = -1`` when the first tested point fails (or none can be tested)."""
    startable = np.flatnonzero(n >= n0)
    if startable.size == 0:
        return -1, -1
    start = int(startable[0])
    passed = binomial_p_value(k[start:], n[start:], alpha) <= delta
    n_passed = int(np.argmin(passed)) if not passed.all() else passed.size
    return start, start + n_passed - 1


def _certified(
    tau: float, alpha: float, delta: float, *, n: int, n_accepted: int, errors: int, trials: int, n_min: int,
    task: str = "selective",
) -> ThresholdResult:
    """The result of a passed Learn-then-Test: ``errors`` out of ``trials`` binomial trials
    (selective: errors among the accepted inputs; ood: flagged among all in-distribution inputs)."""
    return ThresholdResult(
        tau=tau,
        mode="guaranteed",
        alpha=alpha,
        delta=delta,
        certified=True,
        risk_upper_bound=clopper_pearson_upper(errors, trials, delta),
        n=n,
        n_accepted=n_accepted,
        errors=errors,
        risk=errors / trials,
        coverage=n_accepted / n,
        n_min=n_min,
        task=task,
    )


def fit_guaranteed_threshold(
    scores: np.ndarray,
    errors: np.ndarray,
    alpha: float,
    delta: float,
    grid_size: int = DEFAULT_GRID_SIZE,
    grid: np.ndarray | None = None,
) -> ThresholdResult:
    """Learn-then-Test threshold with ``P(selective risk <= alpha) >= 1 - delta``.

    ``scores``/``errors`` are the certifying inputs (never used to choose anything else). The
    grid defaults to :func:`score_grid` of ``scores`` (label-free); pass ``grid`` to fix it from
    other data. Raises ``BadInputError`` when fewer than ``n0`` inputs are given. When no
    threshold passes, returns ``certified=False``, ``tau=inf`` and ``n_needed``.

    >>> s = np.linspace(0, 1, 400); e = s < 0.5  # errors only among the less confident half
    >>> r = fit_guaranteed_threshold(s, e, alpha=0.05, delta=0.1)
    >>> r.certified, r.errors <= 0.05 * r.n_accepted, round(r.coverage, 2)
    (True, True, 0.51)
    """
    alpha = check_fraction(alpha, "alpha")
    delta = check_fraction(delta, "delta")
    s, e = _scores_errors(scores, errors)
    n0 = _check_certify_size(s.size, alpha, delta, "inputs")
    taus = score_grid(s, grid_size) if grid is None else np.unique(np.asarray(grid, dtype=np.float64))
    taus = taus[::-1]  # most confident first: the order of fixed-sequence testing
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    cum_err = np.concatenate([[0], np.cumsum(e[order])])
    below = np.searchsorted(s_sorted, taus, side="left")  # inputs with score < tau
    n_acc = s.size - below
    k = cum_err[-1] - cum_err[below]
    start, last = _fixed_sequence(n_acc, k, alpha, delta, n0)
    if last < start or start < 0:
        n_needed = None
        if start >= 0:
            n_needed = accepted_needed(k[start] / n_acc[start], alpha, delta)
        return ThresholdResult(math.inf, "guaranteed", alpha, delta, False, None, s.size, 0, 0, 0.0, 0.0, n_needed, n0)
    n_i, k_i = int(n_acc[last]), int(k[last])
    return _certified(float(taus[last]), alpha, delta, n=s.size, n_accepted=n_i, errors=k_i, trials=n_i, n_min=n0)


def fit_threshold(
    scores: np.ndarray,
    errors: np.ndarray,
    alpha: float,
    delta: float | None = None,
    grid_size: int = DEFAULT_GRID_SIZE,
) -> ThresholdResult:
    """Selective-classification threshold: guaranteed mode when ``delta`` is given, else
    empirical."""
    if delta is None:
        return fit_empirical_threshold(scores, errors, alpha)
    return fit_guaranteed_threshold(scores, errors, alpha, delta, grid_size)


def fit_tpr_threshold(
    scores_in: np.ndarray,
    tpr: float = 0.95,
    delta: float | None = None,
    grid_size: int = DEFAULT_GRID_SIZE,
) -> ThresholdResult:
    """OOD threshold on in-distribution scores for a TPR target (in-distribution is positive).

    ``alpha = 1 - tpr`` is the target rate of flagged in-distribution inputs (score ``< tau``)
    among all of them. Empirical (``delta`` None): the largest tau keeping at least ``tpr`` of
    the inputs. Guaranteed: fixed-sequence testing of ``P(Binom(N, alpha) <= #flagged)`` from
    the lowest tau upward, so that ``P(TPR >= tpr) >= 1 - delta``; ``1 - risk_upper_bound`` is
    the TPR lower bound.

    >>> r = fit_tpr_threshold(np.arange(1.0, 21.0), 0.9)
    >>> r.tau, r.coverage, r.errors
    (3.0, 0.9, 2)
    """
    alpha = 1.0 - check_fraction(tpr, "tpr")
    s = np.asarray(scores_in, dtype=np.float64)
    s, _ = _scores_errors(s, np.zeros(s.shape, dtype=bool))
    s_sorted = np.sort(s)
    n = s.size
    if delta is None:
        tau = threshold_at_tpr(s, tpr)
        kept = int(n - np.searchsorted(s_sorted, tau, side="left"))
        return ThresholdResult(
            tau,
            "empirical",
            alpha,
            None,
            False,
            None,
            n,
            kept,
            n - kept,
            (n - kept) / n,
            kept / n,
            task="ood",
        )
    delta = check_fraction(delta, "delta")
    n0 = _check_certify_size(n, alpha, delta, "in-distribution inputs")
    taus = score_grid(s, grid_size)  # ascending: fewest flagged first
    flagged = np.searchsorted(s_sorted, taus, side="left")
    start, last = _fixed_sequence(np.full(taus.size, n), flagged, alpha, delta, n0)
    if last < start or start < 0:
        n_needed = accepted_needed(flagged[start] / n, alpha, delta) if start >= 0 else None
        return ThresholdResult(
            -math.inf, "guaranteed", alpha, delta, False, None, n, n, 0, 0.0, 1.0, n_needed, n0, "ood"
        )
    k = int(flagged[last])
    return _certified(float(taus[last]), alpha, delta, n=n, n_accepted=n - k, errors=k, trials=n, n_min=n0,
                      task="ood")
