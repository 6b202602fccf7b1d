"""Metrics against hand-computed examples, brute force and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score, roc_curve

from wcx.calibration.metrics import (
    accuracy,
    aurc,
    auroc,
    coverage_at_risk,
    coverage_at_risk_weighted,
    ece,
    fpr_at_tpr,
    nll,
    risk_at_coverage,
    risk_coverage_curve,
    threshold_at_tpr,
)
from wcx.errors import BadInputError

SCORES = np.array([0.9, 0.8, 0.7, 0.6])
ERRORS = np.array([0, 1, 0, 1])


def test_risk_coverage_hand_computed() -> None:
    cov, risk, thr = risk_coverage_curve(SCORES, ERRORS)
    np.testing.assert_allclose(cov, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0.0, 0.5, 1 / 3, 0.5])
    np.testing.assert_allclose(thr, [0.9, 0.8, 0.7, 0.6])
    # trapezoid with the first risk held down to coverage 0:
    # 0.25*(0+0)/2 + 0.25*(0+.5)/2 + 0.25*(.5+1/3)/2 + 0.25*(1/3+.5)/2
    assert aurc(SCORES, ERRORS) == pytest.approx(0.0625 + 0.25 * (5 / 6))
    assert coverage_at_risk(SCORES, ERRORS, 0.0) == 0.25
    assert coverage_at_risk(SCORES, ERRORS, 0.4) == 0.75
    assert coverage_at_risk(SCORES, ERRORS, 0.5) == 1.0
    assert risk_at_coverage(SCORES, ERRORS, 0.75) == pytest.approx(1 / 3)
    assert risk_at_coverage(SCORES, ERRORS, 0.6) == pytest.approx(1 / 3)


def test_ties_are_grouped() -> None:
    s = np.array([1.0, 1.0, 1.0, 0.5])
    e = np.array([1, 0, 0, 0])
    cov, risk, _ = risk_coverage_curve(s, e)
    np.testing.assert_allclose(cov, [0.75, 1.0])
    np.testing.assert_allclose(risk, [1 / 3, 0.25])
    # no threshold accepts only the error-free tied inputs
    assert coverage_at_risk(s, e, 0.3) == 1.0
    assert coverage_at_risk(s, e, 0.2) == 0.0
    assert risk_at_coverage(s, e, 0.25) == pytest.approx(1 / 3)
    # input order must not matter
    perm = np.array([3, 1, 0, 2])
    assert aurc(s[perm], e[perm]) == aurc(s, e)


def test_exact_fraction_risk_is_inside_target() -> None:
    s = np.arange(20.0)
    e = np.zeros(20, dtype=bool)
    e[0] = True  # 1 error in 20: risk exactly 0.05
    assert coverage_at_risk(s, e, 0.05) == 1.0


def _brute_force(s: np.ndarray, e: np.ndarray) -> tuple[list[float], list[float]]:
    cov, risk = [], []
    for t in sorted(set(s.tolist()), reverse=True):
        acc = s >= t
        cov.append(acc.mean())
        risk.append(e[acc].mean())
    return cov, risk


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=1, max_size=40),
    st.floats(0.0, 1.0),
)
def test_curve_matches_brute_force(data: list[tuple[int, bool]], r: float) -> None:
    s = np.array([d[0] for d in data], dtype=float)
    e = np.array([d[1] for d in data])
    cov, risk, _ = risk_coverage_curve(s, e)
    bc, br = _brute_force(s, e)
    np.testing.assert_allclose(cov, bc)
    np.testing.assert_allclose(risk, br)
    ok = [c for c, rr in zip(bc, br, strict=True) if rr <= r + 1e-9]
    assert coverage_at_risk(s, e, r) == pytest.approx(max(ok) if ok else 0.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=1, max_size=40),
    st.floats(0.0, 1.0),
    st.integers(0, 2**32 - 1),
)
def test_weighted_coverage_equals_coverage_on_the_resample(data: list[tuple[int, bool]], r: float, seed: int) -> None:
    # integer weights = a bootstrap resample: the weighted coverage must be the plain coverage
    # of the data with each input repeated that many times (ties grouped the same way)
    s = np.array([d[0] for d in data], dtype=float)
    e = np.array([d[1] for d in data])
    counts = np.random.default_rng(seed).multinomial(s.size, np.full(s.size, 1.0 / s.size), size=3)
    got = coverage_at_risk_weighted(s, e, r, np.vstack([np.ones(s.size, dtype=np.int64), counts]))
    assert got[0] == pytest.approx(coverage_at_risk(s, e, r))
    for row, w in zip(got[1:], counts, strict=True):
        idx = np.repeat(np.arange(s.size), w)
        assert row == pytest.approx(coverage_at_risk(s[idx], e[idx], r))
    # float weights give the same numbers as the integer counts
    np.testing.assert_allclose(coverage_at_risk_weighted(s, e, r, counts.astype(float)), got[1:])


def test_weighted_coverage_bad_weights() -> None:
    with pytest.raises(BadInputError, match="weights must be"):
        coverage_at_risk_weighted(SCORES, ERRORS, 0.4, np.ones(4))
    with pytest.raises(BadInputError, match="weights must be"):
        coverage_at_risk_weighted(SCORES, ERRORS, 0.4, np.ones((2, 3)))
    with pytest.raises(BadInputError, match="non-negative"):
        coverage_at_risk_weighted(SCORES, ERRORS, 0.4, -np.ones((1, 4), dtype=np.int64))
    assert coverage_at_risk_weighted(SCORES, ERRORS, 0.4, np.zeros((1, 4))).tolist() == [0.0]


def test_auroc_hand_computed() -> None:
    assert auroc(np.array([0.9, 0.5]), np.array([0.5, 0.1])) == 0.875
    assert auroc(np.array([1.0]), np.array([0.0])) == 1.0
    assert auroc(np.array([0.0]), np.array([1.0])) == 0.0
    assert auroc(np.array([0.3, 0.3]), np.array([0.3])) == 0.5


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 8), min_size=1, max_size=30),
    st.lists(st.integers(0, 8), min_size=1, max_size=30),
    st.sampled_from([0.5, 0.8, 0.9, 0.95, 1.0]),
)
def test_ood_metrics_match_sklearn(s_in: list[int], s_out: list[int], tpr: float) -> None:
    a, b = np.array(s_in, float), np.array(s_out, float)
    y = np.r_[np.ones(a.size), np.zeros(b.size)]
    s = np.r_[a, b]
    assert auroc(a, b) == pytest.approx(roc_auc_score(y, s))
    fpr, tprs, _ = roc_curve(y, s, drop_intermediate=False)
    i = int(np.argmax(tprs >= tpr - 1e-12))
    assert fpr_at_tpr(a, b, tpr) == pytest.approx(fpr[i])
    assert np.mean(a >= threshold_at_tpr(a, tpr)) >= tpr - 1e-12


def test_fpr95_hand_computed() -> None:
    s_in = np.arange(1.0, 21.0)  # 20 in-distribution scores: keeping 95% = 19 -> threshold 2
    s_out = np.array([0.5, 1.5, 2.0, 3.0])
    assert threshold_at_tpr(s_in, 0.95) == 2.0
    assert fpr_at_tpr(s_in, s_out) == 0.5


def test_classification_metrics() -> None:
    p = np.array([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    y = np.array([0, 1, 1, 0])
    assert accuracy(p, y) == 0.5 == accuracy_score(y, p.argmax(1))
    assert nll(p, y) == pytest.approx(log_loss(y, p, labels=[0, 1, 2]))
    assert nll(p, y) == pytest.approx(-np.mean(np.log([0.9, 0.3, 0.7, 0.1])))
    # bins of width 0.5: (0, .5] holds conf .4 (wrong); (.5, 1] holds .9 (right), .7 (right), .8 (wrong)
    want = 0.25 * 0.4 + 0.75 * abs(2 / 3 - (0.9 + 0.7 + 0.8) / 3)
    assert ece(p, y, n_bins=2) == pytest.approx(want)
    assert ece(np.array([[1.0, 0.0]]), np.array([0])) == 0.0
    assert nll(np.array([[1.0, 0.0]]), np.array([1])) < np.inf


def test_bad_inputs() -> None:
    with pytest.raises(BadInputError):
        risk_coverage_curve(np.array([1.0, 2.0]), np.array([True]))
    with pytest.raises(BadInputError):
        risk_coverage_curve(np.array([]), np.array([]))
    with pytest.raises(BadInputError):
        risk_at_coverage(SCORES, ERRORS, 0.0)
    with pytest.raises(BadInputError):
        accuracy(np.ones((2, 2)), np.array([0, 2]))
    with pytest.raises(BadInputError):
        auroc(np.array([1.0]), np.array([]))
