"""Pareto Testing: one fixed-sequence test over several candidates' thresholds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.pareto_testing import bonferroni_test, certify_candidates, fit_certify_split, pareto_test
from wcx.calibration.risk_control import fit_guaranteed_threshold
from wcx.errors import BadInputError


def scored(rng: np.random.Generator, n: int, skill: float) -> tuple[np.ndarray, np.ndarray]:
    """Scores in (0, 1) and errors that become rarer as the score grows (``skill`` sharpens)."""
    s = rng.uniform(0.2, 1.0, n)
    errors = rng.uniform(size=n) < np.clip(0.6 * (1.0 - s) ** skill, 0.0, 1.0)
    return s, errors


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(200, 1500), skill=st.floats(0.8, 3.0))
def test_one_candidate_is_learn_then_test_on_the_certify_part(seed: int, n: int, skill: float) -> None:
    rng = np.random.default_rng(seed)
    fit, cert = scored(rng, n // 2, skill), scored(rng, n, skill)
    result = pareto_test([fit], [cert], 0.1, 0.1, grid_size=300).thresholds[0]
    single = fit_guaranteed_threshold(cert[0], cert[1], 0.1, 0.1, grid_size=300)
    assert result.certified == single.certified
    if single.certified:
        assert (result.tau, result.n_accepted, result.errors) == (single.tau, single.n_accepted, single.errors)
        assert result.risk_upper_bound == pytest.approx(single.risk_upper_bound)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(200, 1500), skill=st.floats(0.8, 3.0))
def test_bonferroni_splits_delta_over_the_candidates(seed: int, n: int, skill: float) -> None:
    rng = np.random.default_rng(seed)
    certs = [scored(rng, n, skill) for _ in range(3)]
    result = bonferroni_test(certs, 0.1, 0.1, grid_size=300)
    for cert, got in zip(certs, result.thresholds, strict=True):
        own = fit_guaranteed_threshold(cert[0], cert[1], 0.1, 0.1 / 3, grid_size=300)
        assert (got.certified, got.tau) == (own.certified, own.tau)
    one = bonferroni_test(certs[:1], 0.1, 0.1, grid_size=300).thresholds[0]
    assert one.tau == fit_guaranteed_threshold(certs[0][0], certs[0][1], 0.1, 0.1, grid_size=300).tau


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 5), alpha=st.sampled_from([0.05, 0.1, 0.2]),
       method=st.sampled_from(["bonferroni", "fixed_sequence"]))
def test_every_certified_threshold_has_its_bound_at_or_below_the_target(seed: int, k: int, alpha: float,
                                                                          method: str) -> None:
    rng = np.random.default_rng(seed)
    skills = rng.uniform(0.5, 3.0, k)
    fit = [scored(rng, 400, s) for s in skills]
    cert = [scored(rng, 1000, s) for s in skills]
    result = certify_candidates(fit, cert, alpha, 0.1, grid_size=200, method=method)
    assert result.n_passed <= result.n_tested <= result.n_hypotheses
    for i in result.certified:
        t = result.thresholds[i]
        assert t.risk_upper_bound <= alpha + 1e-9
        accepted = cert[i][0] >= t.tau
        assert (int(accepted.sum()), int(cert[i][1][accepted].sum())) == (t.n_accepted, t.errors)


@pytest.mark.parametrize("method", ["bonferroni", "fixed_sequence"])
def test_the_family_wise_error_stays_below_delta(method: str) -> None:
    """Several candidates with known true risk curves: over many draws, the share in which any
    certified threshold has a true risk above the target stays within delta (binomial noise)."""
    alpha, delta, draws = 0.1, 0.1, 200
    skills = (0.7, 1.0, 1.6)
    grid = np.linspace(0.2, 1.0, 4001)

    def true_risk(tau: float, skill: float) -> float:  # selective risk of s >= tau, s ~ U(0.2, 1)
        s = grid[grid >= tau]
        return float(np.mean(np.clip(0.6 * (1.0 - s) ** skill, 0, 1))) if s.size else 0.0

    rng = np.random.default_rng(7)
    violations = 0
    for _ in range(draws):
        fit = [scored(rng, 300, s) for s in skills]
        cert = [scored(rng, 700, s) for s in skills]
        result = certify_candidates(fit, cert, alpha, delta, grid_size=100, method=method)
        violations += any(true_risk(result.thresholds[i].tau, skills[i]) > alpha for i in result.certified)
    # 200 draws at a true rate of 0.1: P(more than 32 violations) < 0.5%
    assert violations / draws <= 0.16


def test_the_split_is_the_calibrators() -> None:
    cal = CascadeCalibrator(delta=0.1, fit_fraction=0.3, seed=5)
    fit, cert = fit_certify_split(1000, 0.3, 5)
    ref_fit, ref_cert = cal._split(1000)
    assert np.array_equal(fit, ref_fit) and np.array_equal(cert, ref_cert)


def test_bad_inputs_are_refused() -> None:
    rng = np.random.default_rng(0)
    a = scored(rng, 300, 1.0)
    with pytest.raises(BadInputError, match="at least 93"):
        pareto_test([a], [scored(rng, 50, 1.0)], 0.05, 0.1)
    with pytest.raises(BadInputError, match="every candidate"):
        pareto_test([a, a], [a], 0.05, 0.1)
    with pytest.raises(BadInputError, match="certify inputs"):
        pareto_test([a, a], [a, scored(rng, 200, 1.0)], 0.05, 0.1)
    with pytest.raises(BadInputError, match="empty part"):
        fit_certify_split(10, 0.01, 0)
    with pytest.raises(BadInputError, match="unknown selection method"):
        certify_candidates([a], [a], 0.05, 0.1, method="holm")


def test_nothing_certified_when_every_candidate_is_bad() -> None:
    rng = np.random.default_rng(1)
    bad = (rng.uniform(size=500), rng.uniform(size=500) < 0.5)  # 50% errors everywhere
    result = pareto_test([bad, bad], [bad, bad], 0.05, 0.1)
    assert result.certified == [] and result.n_passed == 0
    assert pareto_test([], [], 0.05, 0.1).n_hypotheses == 0


def test_the_docstring_examples() -> None:
    import doctest

    import wcx.calibration.pareto_testing as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
