"""The monitor's statistics (:mod:`wcx.runtime.drift_tests`): reference intervals against
independent implementations, the confidence sequence's time-uniform coverage, and the exact
two-sample test's looks and false-alarm rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from wcx.runtime.drift_tests import (
    clopper_pearson,
    confidence_interval,
    dkw_interval,
    fisher_log_p,
    log_evidence,
    look_alpha,
    look_index,
    look_input,
    prior_parameters,
    separation,
)


@pytest.mark.parametrize(("k", "n", "alpha"), [(0, 10, 0.05), (3, 10, 0.05), (10, 10, 0.1), (543, 3500, 0.001)])
def test_clopper_pearson_matches_scipy(k: int, n: int, alpha: float) -> None:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method="exact")
    assert clopper_pearson(k, n, alpha) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_dkw_interval_by_hand() -> None:
    eps = math.sqrt(math.log(2 / 0.01) / (2 * 400))
    assert dkw_interval(100, 400, 0.01) == pytest.approx((0.25 - eps, 0.25 + eps))
    assert dkw_interval(100, 400, 0.01, sides=2) == pytest.approx((0.25 - 2 * eps, 0.25 + 2 * eps))
    assert dkw_interval(0, 400, 0.01)[0] == 0.0


@settings(max_examples=60, deadline=None)
@given(t=st.integers(1, 5000), frac=st.floats(0, 1), center=st.floats(0, 1))
def test_the_sequence_always_holds_the_observed_rate(t: int, frac: float, center: float) -> None:
    """The mixture marginal never exceeds the maximum likelihood, so log M_t(S/t) <= 0 and the
    interval contains S/t at every level."""
    s = int(round(frac * t))
    a, b = prior_parameters(center)
    assert float(log_evidence(s, t, s / t, a, b)) <= 1e-9
    lo, hi = confidence_interval(s, t, 0.01, a, b)
    assert lo <= s / t <= hi


@settings(max_examples=40, deadline=None)
@given(t=st.integers(1, 3000), frac=st.floats(0, 1), lo=st.floats(0, 1), width=st.floats(0, 0.5),
       center=st.floats(0, 1))
def test_separation_is_the_minimum_over_the_reference_interval(t: int, frac: float, lo: float, width: float,
                                                               center: float) -> None:
    s = int(round(frac * t))
    hi = min(1.0, lo + width)
    a, b = prior_parameters(center)
    grid = np.linspace(lo, hi, 401)
    brute = float(np.min(log_evidence(s, t, grid, a, b)))
    got = float(separation(s, t, lo, hi, a, b))
    assert got <= brute + 1e-9  # the grid cannot beat the exact minimum of a convex function
    if math.isfinite(brute):
        assert got >= brute - max(1.0, abs(brute)) * 0.05


def test_coverage_holds_over_every_look_of_a_long_stream() -> None:
    """2,000 i.i.d. streams of 4,000 inputs at the true rate, looked at after every 8 inputs:
    the share that ever excludes the true rate stays within alpha (plus sampling noise); the
    same test on a stream whose rate moved by 5 points detects it in nearly every stream."""
    rng = np.random.default_rng(0)
    alpha, p, streams, length = 0.05, 0.2, 2000, 4000
    t = np.arange(8, length + 1, 8, dtype=np.float64)
    a, b = prior_parameters(p)

    def ever_excluded(rate: float) -> float:
        s = np.cumsum(rng.random((streams, length)) < rate, axis=1)[:, 7::8].astype(np.float64)
        evidence = separation(s, t, p, p, a, b)
        return float(np.mean(np.any(evidence >= math.log(1 / alpha), axis=1)))

    false_rate = ever_excluded(p)
    assert false_rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / streams)
    assert ever_excluded(p + 0.05) > 0.9


@settings(max_examples=60, deadline=None)
@given(t=st.integers(0, 200_000))
def test_look_index_is_the_last_look_due(t: int) -> None:
    j = look_index(t)
    assert j == -1 or look_input(j) <= t
    assert look_input(j + 1) > t
    assert look_input(j + 1) > look_input(j) if j >= 0 else True


@pytest.mark.parametrize(("k", "n", "s", "t"), [(350, 3500, 60, 576), (1750, 3500, 339, 576), (0, 50, 3, 40),
                                              (12, 40, 0, 64)])
def test_fisher_p_value_matches_scipy(k: int, n: int, s: int, t: int) -> None:
    table = [[s, t - s], [k, n - k]]
    expected = stats.fisher_exact(table, alternative="less").pvalue, stats.fisher_exact(table, "greater").pvalue
    got = float(np.exp(fisher_log_p(np.array([k]), n, np.array([s]), t))[0])
    assert got == pytest.approx(min(1.0, 2 * min(expected)), rel=1e-9)


@pytest.mark.parametrize("horizon", [None, 64, 2048, 10_000])
def test_look_shares_sum_to_at_most_alpha(horizon: int | None) -> None:
    shares = np.array([look_alpha(j, 1.0, horizon) for j in range(100_000)])
    assert np.all(shares > 0) and 0.999 < shares.sum() <= 1.0
    if horizon is not None:  # half of it evenly over the looks due by the horizon
        last = look_index(horizon)
        assert shares[: last + 1] == pytest.approx(0.5 / (last + 1)) and look_input(last) <= horizon


@pytest.mark.parametrize("horizon", [None, 2048])
def test_exact_looks_keep_false_alarms_below_alpha_over_a_long_stream(horizon: int | None) -> None:
    """Reference and stream drawn with one rate: the share of streams ever alarming at a look
    stays within alpha (a test at alpha per look would exceed it many times over)."""
    rng = np.random.default_rng(0)
    alpha, p, n_ref, streams, batch, length = 0.1, 0.3, 800, 2000, 64, 20_000
    k_ref = rng.binomial(n_ref, p, streams)
    s = np.zeros(streams, dtype=np.int64)
    spent = np.zeros(streams, dtype=bool)
    naive = np.zeros(streams, dtype=bool)
    done = -1
    for t in range(batch, length + 1, batch):
        s += rng.binomial(batch, p, streams)
        j = look_index(t)
        if j <= done:
            continue
        done = j
        log_p = fisher_log_p(k_ref, n_ref, s, t)
        spent |= log_p <= math.log(look_alpha(j, alpha, horizon))
        naive |= log_p <= math.log(alpha)
    assert spent.mean() <= alpha
    assert naive.mean() > 2 * alpha


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 400), t=st.integers(1, 400), kf=st.floats(0, 1), sf=st.floats(0, 1))
def test_fisher_p_value_is_never_below_twice_the_smaller_tail(n: int, t: int, kf: float, sf: float) -> None:
    """Taking the tail on the count's side of the mean is at least as large as the two-sided
    p-value from the smaller tail: the test can only be conservative."""
    k, s = round(kf * n), round(sf * t)
    table = [[s, t - s], [k, n - k]]
    smaller = min(stats.fisher_exact(table, alternative="less").pvalue,
                  stats.fisher_exact(table, alternative="greater").pvalue)
    got = float(np.exp(fisher_log_p(np.array([k]), n, np.array([s]), t))[0])
    assert got >= min(1.0, 2 * smaller) * (1 - 1e-9)
    assert got <= 1.0
