"""Choosing among several candidate cascades without voiding the guarantee.

Choosing the best of many cascades on the data that also certifies one of them is selection on
the test data: the winner's risk bound no longer holds. Following Pareto Testing
(Laufer-Goldshtein et al., 2023, "Efficiently controlling multiple risks with Pareto Testing"),
the held-out data is split once, at random (:func:`fit_certify_split`): the candidates are
chosen on the **fit** part (the planner's cost/coverage front), and their thresholds are
certified on the **certify** part so that, with probability at least ``1 - delta``, *every*
certified (candidate, tau) pair has selective risk <= alpha at once. Any pair may then be picked
by cost and coverage (method.md, "Planning a cascade from a pool"). Two ways to certify them
together (:func:`certify_candidates`):

* ``bonferroni`` (the default): each of the F candidates runs its own Learn-then-Test
  (:func:`wcx.calibration.risk_control.fit_guaranteed_threshold`) at level ``delta / F``; the
  union bound gives the family-wise error. One candidate's failure does not stop another's.
* ``fixed_sequence`` (:func:`pareto_test`, Pareto Testing's own procedure): every hypothesis
  "candidate c with threshold tau has risk > alpha" gets a place in one test order fixed from the
  fit part, most promising first; they are tested in that order with the exact binomial p-value,
  each at the full ``delta``, stopping at the first that fails. More powerful when the fit part
  predicts the certify part well; on the zoo it does not (1,500 fit rows, candidates chosen as
  the best on them), and the first failure of any candidate cuts the others short: it found a
  certified cheaper match for fewer zoo members than ``bonferroni`` (docs/results/plan_audit.md).

Conventions (as :func:`wcx.calibration.risk_control.fit_guaranteed_threshold`, the case of one
candidate, which both methods reproduce exactly): the thresholds of a candidate are up to
``grid_size`` quantiles of its scores on the certify part (label-free), tested from the most
confident downward, starting at the first with ``n >= n0 = ceil(2 ln(1/level) / alpha)``
accepted inputs. In ``fixed_sequence`` the candidates' sequences are merged by a key computed on
the fit part: the p-value the certify part would give if its error rate at that threshold were
the fit part's, replaced by the smallest such key still to come in that candidate's sequence
(non-decreasing, so a candidate's thresholds keep their order, and its first thresholds are not
held back by their small counts).

Everything here is a pure function of arrays; scipy is imported lazily.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wcx.calibration.risk_control import (
    DEFAULT_GRID_SIZE,
    ThresholdResult,
    binomial_p_value,
    check_fraction,
    clopper_pearson_upper,
    min_certify_size,
    score_grid,
)
from wcx.errors import BadInputError

__all__ = ["SELECTION_METHODS", "ParetoTestResult", "bonferroni_test", "certify_candidates", "fit_certify_split",
           "pareto_test"]


def fit_certify_split(n: int, fit_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted row indices of the fit part and the certify part of ``n`` held-out rows.

    The split of guaranteed calibration (``CascadeCalibrator``): a permutation drawn from
    ``seed``, its first ``round(fit_fraction * n)`` rows fit.

    >>> fit, cert = fit_certify_split(10, 0.3, 0)
    >>> len(fit), len(cert), sorted(np.concatenate([fit, cert]).tolist()) == list(range(10))
    (3, 7, True)
    """
    fit_fraction = check_fraction(fit_fraction, "fit_fraction")
    n_fit = int(round(fit_fraction * n))
    if n_fit < 1 or n_fit >= n:
        raise BadInputError(f"fit_fraction {fit_fraction:g} of {n} held-out inputs leaves an empty part")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_fit]), np.sort(perm[n_fit:])


@dataclass(frozen=True)
class ParetoTestResult:
    """The outcome of :func:`pareto_test`.

    ``thresholds[c]`` is candidate c's certified threshold (its lowest passed tau, with what it
    accepts on the certify part), or an uncertified result (``tau = inf``) when none of its
    hypotheses passed. ``n_hypotheses`` is the length of the test order, ``n_tested`` how many
    were tested (the passed ones and the first failure), ``n_passed`` how many passed.
    """

    thresholds: tuple[ThresholdResult, ...]
    n_hypotheses: int
    n_tested: int
    n_passed: int
    alpha: float
    delta: float

    @property
    def certified(self) -> list[int]:
        """Indices of the candidates with at least one certified threshold."""
        return [i for i, t in enumerate(self.thresholds) if t.certified]


def _counts(scores: np.ndarray, errors: np.ndarray, taus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accepted inputs (score >= tau) and errors among them, for every tau."""
    order = np.argsort(scores, kind="stable")
    s_sorted = scores[order]
    cum_err = np.concatenate([[0], np.cumsum(errors[order])])
    below = np.searchsorted(s_sorted, taus, side="left")
    return scores.size - below, cum_err[-1] - cum_err[below]


def _check(scores: np.ndarray, errors: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    e = np.asarray(errors).astype(bool)
    if s.ndim != 1 or s.shape != e.shape or s.size == 0:
        raise BadInputError(f"{what}: scores and errors must be 1-D, non-empty and of one length")
    if not np.all(np.isfinite(s)):
        raise BadInputError(f"{what}: scores contain NaN or infinite values")
    return s, e


def pareto_test(
    fit: Sequence[tuple[np.ndarray, np.ndarray]],
    certify: Sequence[tuple[np.ndarray, np.ndarray]],
    alpha: float,
    delta: float,
    grid_size: int = DEFAULT_GRID_SIZE,
) -> ParetoTestResult:
    """Certify thresholds of several candidates with one fixed-sequence test (module docstring).

    ``fit[c]`` and ``certify[c]`` are candidate c's ``(scores, errors)`` on the fit and the
    certify part (the same rows for every candidate). The candidates themselves must have been
    chosen without the certify part's labels. Raises ``BadInputError`` when the certify part
    has fewer than ``n0`` inputs.
    """
    alpha = check_fraction(alpha, "alpha")
    delta = check_fraction(delta, "delta")
    if len(fit) != len(certify):
        raise BadInputError(f"need fit and certify data for every candidate, got {len(fit)} and {len(certify)}")
    if not certify:
        return ParetoTestResult((), 0, 0, 0, alpha, delta)
    n0 = min_certify_size(alpha, delta)
    n_cert = np.asarray(certify[0][0]).size
    if n_cert < n0:
        raise BadInputError(f"the certifying set has {n_cert} inputs; at least {n0} are needed for risk {alpha:g} "
                            f"and delta {delta:g} (n0 = ceil(2 ln(1/delta) / alpha))")
    keys, owners, steps, n_list, k_list, tau_list = [], [], [], [], [], []
    for c, ((fs, fe), (cs, ce)) in enumerate(zip(fit, certify, strict=True)):
        fs, fe = _check(fs, fe, f"candidate {c} fit part")
        cs, ce = _check(cs, ce, f"candidate {c} certify part")
        if cs.size != n_cert:
            raise BadInputError(f"candidate {c}: {cs.size} certify inputs, the others have {n_cert}")
        taus = score_grid(cs, grid_size)[::-1]  # most confident first
        n2, k2 = _counts(cs, ce, taus)
        startable = np.flatnonzero(n2 >= n0)
        if startable.size == 0:
            continue
        start = int(startable[0])
        taus, n2, k2 = taus[start:], n2[start:], k2[start:]
        n1, k1 = _counts(fs, fe, taus)
        rate = np.divide(k1, n1, out=np.ones(taus.size), where=n1 > 0)
        predicted = binomial_p_value(np.floor(rate * n2 + 1e-9), n2, alpha)
        keys.append(np.minimum.accumulate(predicted[::-1])[::-1])  # the smallest key still to come
        owners.append(np.full(taus.size, c))
        steps.append(np.arange(taus.size))
        n_list.append(n2)
        k_list.append(k2)
        tau_list.append(taus)
    thresholds = [_uncertified(alpha, delta, n_cert, n0) for _ in certify]
    if not keys:
        return ParetoTestResult(tuple(thresholds), 0, 0, 0, alpha, delta)
    key, owner, step = np.concatenate(keys), np.concatenate(owners), np.concatenate(steps)
    n_all, k_all, tau_all = np.concatenate(n_list), np.concatenate(k_list), np.concatenate(tau_list)
    order = np.lexsort((step, owner, key))  # by key, then candidate, then its own order
    passed = binomial_p_value(k_all[order], n_all[order], alpha) <= delta
    n_passed = int(np.argmin(passed)) if not passed.all() else passed.size
    for i in order[:n_passed]:  # each candidate's passed hypotheses come in its own order
        c, n_i, k_i = int(owner[i]), int(n_all[i]), int(k_all[i])
        thresholds[c] = ThresholdResult(
            tau=float(tau_all[i]), mode="guaranteed", alpha=alpha, delta=delta, certified=True,
            risk_upper_bound=clopper_pearson_upper(k_i, n_i, delta), n=n_cert, n_accepted=n_i, errors=k_i,
            risk=k_i / n_i, coverage=n_i / n_cert, n_min=n0,
        )
    return ParetoTestResult(tuple(thresholds), int(order.size), min(n_passed + 1, int(order.size)), n_passed,
                            alpha, delta)


def bonferroni_test(
    certify: Sequence[tuple[np.ndarray, np.ndarray]],
    alpha: float,
    delta: float,
    grid_size: int = DEFAULT_GRID_SIZE,
) -> ParetoTestResult:
    """Certify each of ``F`` candidates by its own Learn-then-Test at level ``delta / F``.

    The union bound makes the family-wise error at most ``delta``: with probability at least
    ``1 - delta`` every certified candidate holds its risk at the same time, so any of them may
    be picked afterwards. No candidate's failure stops another's test (in the fixed sequence
    of :func:`pareto_test` the first failure of any candidate stops all), at the price of the
    stricter level. A candidate whose certify part is too small for ``delta / F`` is uncertified.
    ``n_hypotheses`` counts every candidate's thresholds from its start, ``n_tested`` and
    ``n_passed`` sum over the candidates.
    """
    alpha = check_fraction(alpha, "alpha")
    delta = check_fraction(delta, "delta")
    if not certify:
        return ParetoTestResult((), 0, 0, 0, alpha, delta)
    level = delta / len(certify)
    n0 = min_certify_size(alpha, level)
    thresholds, hyps, tested, passed = [], 0, 0, 0
    for c, (cs, ce) in enumerate(certify):
        cs, ce = _check(cs, ce, f"candidate {c} certify part")
        if cs.size < n0:
            thresholds.append(_uncertified(alpha, level, cs.size, n0))
            continue
        taus = score_grid(cs, grid_size)[::-1]
        n2, k2 = _counts(cs, ce, taus)
        startable = np.flatnonzero(n2 >= n0)
        if startable.size == 0:
            thresholds.append(_uncertified(alpha, level, cs.size, n0))
            continue
        start = int(startable[0])
        ok = binomial_p_value(k2[start:], n2[start:], alpha) <= level
        n_ok = int(np.argmin(ok)) if not ok.all() else ok.size
        hyps, tested, passed = hyps + ok.size, tested + min(n_ok + 1, ok.size), passed + n_ok
        if n_ok == 0:
            thresholds.append(_uncertified(alpha, level, cs.size, n0))
            continue
        last = start + n_ok - 1  # as fit_guaranteed_threshold at delta / F
        n_i, k_i = int(n2[last]), int(k2[last])
        thresholds.append(ThresholdResult(
            tau=float(taus[last]), mode="guaranteed", alpha=alpha, delta=level, certified=True,
            risk_upper_bound=clopper_pearson_upper(k_i, n_i, level), n=cs.size, n_accepted=n_i, errors=k_i,
            risk=k_i / n_i, coverage=n_i / cs.size, n_min=n0))
    return ParetoTestResult(tuple(thresholds), hyps, tested, passed, alpha, delta)


#: how the candidates' thresholds are certified together: ``bonferroni`` (each candidate's own
#: Learn-then-Test at delta / F, the default by measurement) or ``fixed_sequence`` (one
#: fixed-sequence test over every candidate's thresholds, ordered on the fit part)
SELECTION_METHODS: tuple[str, ...] = ("bonferroni", "fixed_sequence")


def certify_candidates(
    fit: Sequence[tuple[np.ndarray, np.ndarray]],
    certify: Sequence[tuple[np.ndarray, np.ndarray]],
    alpha: float,
    delta: float,
    grid_size: int = DEFAULT_GRID_SIZE,
    method: str = "bonferroni",
) -> ParetoTestResult:
    """Certify the candidates' thresholds with ``method`` (:data:`SELECTION_METHODS`)."""
    if method == "bonferroni":
        return bonferroni_test(certify, alpha, delta, grid_size)
    if method == "fixed_sequence":
        return pareto_test(fit, certify, alpha, delta, grid_size)
    raise BadInputError(f"unknown selection method {method!r}; valid: {', '.join(SELECTION_METHODS)}")


def _uncertified(alpha: float, delta: float, n: int, n0: int) -> ThresholdResult:
    return ThresholdResult(math.inf, "guaranteed", alpha, delta, False, None, n, 0, 0, 0.0, 0.0, None, n0)
