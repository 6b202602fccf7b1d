"""The statistics of the drift monitor, as pure functions on counts (method.md section 8).

A rate is the share of inputs with some label-free property (reaching stage 2, being
accepted, ...). The monitor compares a deployment's rate with a *reference* rate measured on
``n`` calibration inputs, so both sides are estimates:

* the reference side is a fixed-sample interval: Clopper-Pearson (exact for a binomial count)
  or, where the quantity was chosen on the same inputs (tau always is), the
  Dvoretzky-Kiefer-Wolfowitz-Massart band, which holds uniformly over every threshold;
* the deployment side is a *confidence sequence*: an interval for the rate that holds at every
  number of inputs at once, so the monitor may look after every batch of an unbounded stream.
  It is the set of rates ``p`` whose mixture likelihood ratio (Robbins' method of mixtures)

      M_t(p) = sum_j w_j B(a_j + S, b_j + t - S) / B(a_j, b_j) / (p^S (1 - p)^(t - S))

  is below ``1 / alpha``, after ``t`` inputs with ``S`` successes. For the true ``p`` of an
  i.i.d. Bernoulli stream ``M_t(p)`` is a non-negative martingale starting at 1 (a mixture of
  likelihood ratios over Beta priors), so by Ville's inequality
  ``P(exists t: M_t(p) >= 1/alpha) <= alpha``. The Beta priors are centred on the reference
  rate with several concentrations (``CONCENTRATIONS``, equal weights), which keeps the
  sequence tight both for large shifts seen within a few dozen inputs and for small shifts
  that need thousands.

A rate whose reference count is exactly binomial (measured on inputs nothing was chosen on) is
tested more sharply, as a two-sample problem: at look ``j`` (after about ``64 * 2^(j/3)``
inputs, :func:`look_index`) Fisher's conditional test of "stream and reference share one rate"
at level :func:`look_alpha` (:func:`fisher_log_p`). Given the total count the stream's count is
hypergeometric whatever the rate, so each look is exact, and the levels sum to ``alpha`` over an
unbounded stream (a union bound over the looks).

Since ``log M_t(p)`` is ``const - S log p - (t - S) log(1 - p)``, convex in ``p``, the sequence
is an interval around ``S / t``, and it misses a whole reference interval ``[lo, hi]`` exactly
when ``log M_t`` at the point of ``[lo, hi]`` nearest ``S / t`` reaches ``log(1/alpha)``
(:func:`separation`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, special, stats

#: concentrations ``a + b`` of the Beta priors mixed in :func:`log_evidence` (equal weights):
#: a prior of concentration c is tightest after about c inputs
CONCENTRATIONS: tuple[float, ...] = (16.0, 128.0, 1024.0, 8192.0)


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """Two-sided ``1 - alpha`` Clopper-Pearson interval for a binomial rate, ``k`` of ``n``.

    >>> lo, hi = clopper_pearson(0, 10, 0.05)
    >>> lo, round(hi, 4)
    (0.0, 0.3085)
    """
    lo = 0.0 if k <= 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k >= n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def dkw_interval(k: int, n: int, alpha: float, *, sides: int = 1) -> tuple[float, float]:
    """``1 - alpha`` interval ``k/n -+ sides * eps``, ``eps = sqrt(ln(2/alpha) / (2n))``: the
    Dvoretzky-Kiefer-Wolfowitz-Massart band, which bounds ``|F_n(x) - F(x)|`` at every ``x`` at
    once, so it also covers a rate at a threshold chosen on the same ``n`` inputs. ``sides``: how
    many thresholds the rate depends on (2 for the share of scores inside a window).

    >>> lo, hi = dkw_interval(50, 100, 0.05)
    >>> round(lo, 4), round(hi, 4)
    (0.3642, 0.6358)
    """
    eps = sides * math.sqrt(math.log(2.0 / alpha) / (2.0 * n))
    p = k / n
    return max(0.0, p - eps), min(1.0, p + eps)


def prior_parameters(center: float, concentrations: Sequence[float] = CONCENTRATIONS) -> tuple[np.ndarray, np.ndarray]:
    """The Beta priors ``(a, b)`` of :func:`log_evidence`, centred on ``center`` (half a count
    added to each side, so a reference rate of 0 or 1 still gives a proper prior)."""
    c = np.asarray(concentrations, dtype=np.float64)
    center = min(max(float(center), 0.0), 1.0)
    return center * c + 0.5, (1.0 - center) * c + 0.5


def log_marginal(successes: np.ndarray | float, trials: np.ndarray | float, a: np.ndarray,
                 b: np.ndarray) -> np.ndarray:
    """``log sum_j w_j B(a_j + S, b_j + t - S) / B(a_j, b_j)`` (equal weights), the part of
    ``log M_t(p)`` that does not depend on ``p``; vectorised over leading axes of ``S``/``t``."""
    s = np.asarray(successes, dtype=np.float64)[..., None]
    f = np.asarray(trials, dtype=np.float64)[..., None] - s
    terms = special.betaln(a + s, b + f) - special.betaln(a, b)
    top = terms.max(axis=-1)  # log-sum-exp by hand: scipy's costs 0.2 ms a call, the monitor's budget
    return np.asarray(top + np.log(np.exp(terms - top[..., None]).sum(axis=-1)) - math.log(len(a)))


def log_evidence(successes: np.ndarray | float, trials: np.ndarray | float, p: np.ndarray | float,
                 a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``log M_t(p)`` (module docstring) after ``trials`` inputs with ``successes``, at the
    rate ``p``, for Beta priors ``(a, b)`` (:func:`prior_parameters`). ``+inf`` where ``p`` is
    impossible (0 with a success, 1 with a failure)."""
    s = np.asarray(successes, dtype=np.float64)
    f = np.asarray(trials, dtype=np.float64) - s
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        likelihood = special.xlogy(s, p) + special.xlog1py(f, -p)
    return np.asarray(log_marginal(s, s + f, a, b) - likelihood)


def separation(successes: np.ndarray | float, trials: np.ndarray | float, lo: np.ndarray | float,
               hi: np.ndarray | float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``min over p in [lo, hi] of log M_t(p)``: the stream's evidence against every rate the
    reference allows. The confidence sequence at level ``alpha`` misses ``[lo, hi]`` iff this
    is ``>= log(1/alpha)``. Vectorised (broadcast) over its arguments' leading axes."""
    s = np.asarray(successes, dtype=np.float64)
    t = np.asarray(trials, dtype=np.float64)
    rate = np.divide(s, t, out=np.zeros(np.broadcast(s, t).shape), where=t > 0)
    nearest = np.clip(rate, lo, hi)
    return np.where(t > 0, log_evidence(s, t, nearest, a, b), 0.0)


def confidence_interval(successes: int, trials: int, alpha: float, a: np.ndarray,
                        b: np.ndarray) -> tuple[float, float]:
    """The confidence sequence's interval ``{p: log M_t(p) < log(1/alpha)}`` at this time
    (``(0, 1)`` before any input); for reports: the alarm itself uses :func:`separation`."""
    if trials <= 0:
        return 0.0, 1.0
    level = math.log(1.0 / alpha)
    rate = successes / trials

    def excess(p: float) -> float:
        return float(log_evidence(successes, trials, p, a, b)) - level

    edge = 1e-12  # log M_t is infinite at 0 (1) once a success (failure) is seen
    lo = 0.0 if rate <= edge or excess(edge) < 0 else float(optimize.brentq(excess, edge, rate))
    hi = 1.0 if rate >= 1 - edge or excess(1 - edge) < 0 else float(optimize.brentq(excess, rate, 1 - edge))
    return lo, hi


# ---------------------------------------------------------------------------------------------
# exactly binomial rates: a conditional two-sample test at looks on a geometric grid
# ---------------------------------------------------------------------------------------------
#: the looks of :func:`look_index`: after ``LOOK_START * 2 ** (j / LOOKS_PER_DOUBLING)`` inputs
LOOK_START = 64
LOOKS_PER_DOUBLING = 3


def look_input(j: int) -> int:
    """The number of inputs at which look ``j`` (0-based) falls due.

    >>> [look_input(j) for j in range(5)]
    [64, 81, 102, 128, 162]
    """
    return int(math.ceil(LOOK_START * 2.0 ** (j / LOOKS_PER_DOUBLING) - 1e-9))


def look_index(trials: int) -> int:
    """The last look due after ``trials`` inputs (-1 before the first).

    >>> look_index(63), look_index(64), look_index(127), look_index(128)
    (-1, 0, 2, 3)
    """
    if trials < LOOK_START:
        return -1
    j = max(0, int(LOOKS_PER_DOUBLING * math.log2(trials / LOOK_START)) - 1)
    while look_input(j + 1) <= trials:
        j += 1
    return j


def look_alpha(j: int, alpha: float | np.ndarray, horizon: int | None = None) -> float | np.ndarray:
    """Look ``j``'s share of ``alpha``; the shares sum to ``alpha`` over an unbounded stream.

    Without a ``horizon``: ``alpha / ((j + 1) (j + 2))`` (half at the first look). With one (in
    inputs): half of ``alpha`` in equal shares over the looks up to the last one due by the
    horizon (``J + 1`` of them), the other half after it as ``alpha / (2 (j - J) (j - J + 1))``:
    moderate shifts, which need hundreds to thousands of inputs, get more of the budget where
    they become visible, and the stream stays covered however long it runs.
    """
    if horizon is None:
        return alpha / ((j + 1.0) * (j + 2.0))
    last = max(look_index(int(horizon)), 0)
    if j <= last:
        return alpha / (2.0 * (last + 1))
    return alpha / (2.0 * (j - last) * (j - last + 1.0))


def fisher_log_p(k_ref: np.ndarray, n_ref: int, successes: np.ndarray, trials: int) -> np.ndarray:
    """log of the two-sided conditional (Fisher) p-value that ``successes`` of ``trials`` stream
    inputs and ``k_ref`` of ``n_ref`` reference inputs share one binomial rate: given the total
    count, the stream's is hypergeometric whatever the rate, and the p-value is twice the tail
    on the side of its mean the count lies (the smaller tail, or near the mean a larger one:
    conservative), at most 1. Vectorised over ``k_ref``/``successes``.

    >>> round(float(np.exp(fisher_log_p(np.array([50]), 100, np.array([50]), 100))[0]), 6)
    1.0
    """
    k = np.asarray(k_ref, dtype=np.int64)
    s = np.asarray(successes, dtype=np.int64)
    total = n_ref + trials
    drawn = k + s
    below = s * total <= drawn * trials
    # P(S >= s) is P(trials - S <= trials - s), the failures' lower tail: one cdf call for both
    # sides (not the log: scipy's generic logcdf costs ten times more, and the levels tested are
    # far above the smallest double)
    tail = stats.hypergeom.cdf(np.where(below, s, trials - s), total, np.where(below, drawn, total - drawn), trials)
    with np.errstate(divide="ignore"):
        return np.asarray(np.minimum(0.0, np.log(tail) + math.log(2.0)))
