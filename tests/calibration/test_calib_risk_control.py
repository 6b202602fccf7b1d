"""Threshold fitting: empirical, Learn-then-Test (against a plain re-implementation), OOD."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta, binom

from wcx.calibration.risk_control import (
    accepted_needed,
    clopper_pearson_upper,
    fit_empirical_threshold,
    fit_guaranteed_threshold,
    fit_threshold,
    fit_tpr_threshold,
    min_certify_size,
    score_grid,
)
from wcx.errors import BadInputError


def test_sample_size_arithmetic_of_the_method() -> None:
    # method.md: alpha 0.05, delta 0.1 -> 45 with zero errors, 77 at half the risk, ~670 at 0.8
    assert min_certify_size(0.05, 0.1) == 93
    assert accepted_needed(0.0, 0.05, 0.1) == 45
    assert accepted_needed(0.025, 0.05, 0.1) == 77
    assert 650 <= accepted_needed(0.04, 0.05, 0.1) <= 690
    assert accepted_needed(0.05, 0.05, 0.1) is None
    assert binom.cdf(0, 45, 0.05) <= 0.1 < binom.cdf(0, 44, 0.05)


def test_clopper_pearson() -> None:
    assert clopper_pearson_upper(3, 100, 0.1) == pytest.approx(beta.ppf(0.9, 4, 97))
    assert clopper_pearson_upper(5, 5, 0.1) == 1.0
    assert clopper_pearson_upper(0, 0, 0.1) == 1.0


def test_empirical_hand_computed() -> None:
    r = fit_empirical_threshold(np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 1, 0, 1]), 0.4)
    assert (r.tau, r.n_accepted, r.errors, r.coverage) == (0.7, 3, 1, 0.75)
    assert not r.certified and r.risk_upper_bound is None and r.mode == "empirical"
    none = fit_empirical_threshold(np.array([0.9, 0.8]), np.array([1, 1]), 0.4)
    assert math.isinf(none.tau) and none.coverage == 0.0


def test_guaranteed_hand_computed() -> None:
    # 200 inputs, scores 199..0; the errors are the 20 least confident
    s = np.arange(200.0)[::-1]
    e = np.zeros(200, dtype=bool)
    e[-20:] = True
    r = fit_guaranteed_threshold(s, e, alpha=0.05, delta=0.1)
    # every tau down to score 20 accepts only correct inputs (n <= 180, k = 0 -> passes once
    # n >= 93); below, k grows by one per step: the last pass is the smallest n with
    # P(Binom(n, .05) <= n - 180) <= .1
    ok = [n for n in range(181, 201) if binom.cdf(n - 180, n, 0.05) <= 0.1]
    want_n = max([180] + [n for n in ok if all(binom.cdf(m - 180, m, 0.05) <= 0.1 for m in range(181, n + 1))])
    assert r.certified and r.n_accepted == want_n
    assert r.tau == 200 - want_n
    assert r.risk_upper_bound == pytest.approx(beta.ppf(0.9, r.errors + 1, r.n_accepted - r.errors))
    assert r.risk_upper_bound <= 0.05 + 1e-12 or r.errors > 0


def test_refuses_small_certifying_set() -> None:
    with pytest.raises(BadInputError, match="at least 93"):
        fit_guaranteed_threshold(np.arange(92.0), np.zeros(92), 0.05, 0.1)
    fit_guaranteed_threshold(np.arange(93.0), np.zeros(93), 0.05, 0.1)
    with pytest.raises(BadInputError, match=r"alpha must be in \(0, 1\)"):
        fit_threshold(np.arange(5.0), np.zeros(5), 1.5)
    with pytest.raises(BadInputError, match=r"delta must be in \(0, 1\)"):
        fit_threshold(np.arange(5.0), np.zeros(5), 0.1, delta=0.0)


def test_no_certificate_reports_size_needed() -> None:
    rng = np.random.default_rng(0)
    s = rng.permutation(300).astype(float)
    e = (s % 25) == 3  # 4% errors spread evenly over the ranking
    r = fit_guaranteed_threshold(s, e, 0.05, 0.1)
    assert not r.certified and math.isinf(r.tau) and r.n_accepted == 0
    # testing starts at the 93 most confident (3 errors) and fails there; n_needed is what that
    # observed rate would need
    assert r.n_needed == accepted_needed(3 / 93, 0.05, 0.1) > 93
    worse = fit_guaranteed_threshold(s, rng.random(300) < 0.5, 0.05, 0.1)
    assert not worse.certified and worse.n_needed is None


def _ltt_reference(s: np.ndarray, e: np.ndarray, alpha: float, delta: float) -> float:
    """Plain loop version of the method text, for cross-checking."""
    n0 = math.ceil(2 * math.log(1 / delta) / alpha)
    grid = sorted(set(np.quantile(s, np.linspace(0, 1, 1000), method="inverted_cdf").tolist()), reverse=True)
    best = math.inf
    started = False
    for tau in grid:
        acc = s >= tau
        n, k = int(acc.sum()), int(e[acc].sum())
        if not started and n < n0:
            continue
        started = True
        if binom.cdf(k, n, alpha) <= delta:
            best = tau
        else:
            break
    return best


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.05, 0.1, 0.2]), st.sampled_from([0.05, 0.1, 0.2]))
def test_guaranteed_matches_reference_loop(seed: int, alpha: float, delta: float) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(min_certify_size(alpha, delta), 600))
    s = np.round(rng.random(n), int(rng.integers(1, 4)))  # coarse rounding makes ties
    e = rng.random(n) < np.clip(1.2 * alpha * (1.5 - s), 0, 1)
    r = fit_guaranteed_threshold(s, e, alpha, delta)
    assert r.tau == _ltt_reference(s, e, alpha, delta)
    if r.certified:
        assert binom.cdf(r.errors, r.n_accepted, alpha) <= delta


def test_score_grid_is_label_free_and_bounded() -> None:
    s = np.random.default_rng(0).random(5000)
    g = score_grid(s, 1000)
    assert g.size <= 1000 and g[0] == s.min() and g[-1] == s.max()
    assert np.all(np.isin(g, s))


def test_tpr_threshold() -> None:
    s = np.arange(1.0, 201.0)
    emp = fit_tpr_threshold(s, 0.95)
    assert emp.tau == 11.0 and emp.coverage == 0.95 and emp.errors == 10
    g = fit_tpr_threshold(s, 0.95, delta=0.1)
    assert g.certified and g.coverage >= 0.95 and g.tau <= emp.tau
    # the certified flag count passes the exact test; the next one up would not
    assert binom.cdf(g.errors, 200, 0.05) <= 0.1 < binom.cdf(g.errors + 1, 200, 0.05)
    assert 1 - g.risk_upper_bound == pytest.approx(1 - beta.ppf(0.9, g.errors + 1, 200 - g.errors))
    with pytest.raises(BadInputError, match="at least"):
        fit_tpr_threshold(s[:30], 0.95, delta=0.1)
