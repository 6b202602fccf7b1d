"""The planner: search over member orders and windows, selection with a certificate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.metrics import coverage_at_risk
from wcx.calibration.pareto_testing import fit_certify_split
from wcx.calibration.planner import (
    PlannedCascade,
    cascade_outputs,
    pareto_front,
    pareto_layers,
    plan_cascade,
    search_front,
    size_groups,
)
from wcx.core.policy import NonePolicy
from wcx.errors import BadInputError


def pool_logits(seed: int, n: int, skills: tuple[float, ...], k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Members that share a per-input difficulty; a larger skill is a better (costlier) member."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    difficulty = rng.gamma(2.0, 1.0, n)
    logits = np.stack([rng.standard_normal((n, k)) * 1.3 for _ in skills])
    for i, skill in enumerate(skills):
        logits[i, np.arange(n), y] += skill * difficulty
    return logits.astype(np.float32), y


SKILLS = (0.8, 0.85, 1.3, 1.35, 2.0)
COSTS = np.array([1.0, 1.0, 3.0, 3.0, 10.0])
NAMES = ["s0", "s1", "m0", "m1", "l0"]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), member=st.integers(0, 4), score=st.sampled_from(["msp", "neg_entropy"]))
def test_a_pool_of_one_member_is_that_members_own_calibration(seed: int, member: int, score: str) -> None:
    z, y = pool_logits(seed, 1500, SKILLS)
    plan = plan_cascade(z[[member]], y, [5.0], ["only"], max_cost=5.0, score=score, seed=seed, baselines=False)
    # the plan certifies on its certify part: the member's own certificate on those rows
    _, cert = fit_certify_split(len(y), plan.fit_fraction, seed)
    cal = CascadeCalibrator(policy="none", delta=0.1, risk=0.05, score=score, seed=seed).fit(
        z[[member]][:, cert], y[cert])
    own = cal.threshold_
    assert plan.members == (["only"] if own.certified else [])
    if own.certified:
        got = plan.plan.threshold
        assert (got.tau, got.n_accepted, got.errors) == (own.tau, own.n_accepted, own.errors)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), stages=st.integers(1, 4), score=st.sampled_from(["msp", "neg_energy", "agreement"]))
def test_the_search_measures_each_cascade_as_the_simulator_does(seed: int, stages: int, score: str) -> None:
    z, y = pool_logits(seed, 600, SKILLS)
    outcome = search_front(z, y, COSTS, max_stages=stages, beam=6, score=score)
    assert outcome.front and outcome.evaluated >= len(SKILLS)
    for cas in outcome.front:
        assert 1 <= len(cas.members) <= stages and len(set(cas.members)) == len(cas.members)
        s, e, pf = cascade_outputs(z, y, cas.members, cas.policy, score)
        assert cas.coverage == pytest.approx(coverage_at_risk(s, e, 0.05))
        assert cas.pass_fraction == pytest.approx(tuple(pf))
        assert cas.cost == pytest.approx(float(np.dot(pf, COSTS[list(cas.members)])))
    costs = [c.cost for c in outcome.front]
    covs = [c.coverage for c in outcome.front]
    assert costs == sorted(costs) and covs == sorted(covs)


def test_the_cost_bound_prunes() -> None:
    z, y = pool_logits(0, 800, SKILLS)
    outcome = search_front(z, y, COSTS, max_cost=4.0, beam=8)
    assert all(c.cost <= 4.0 for c in outcome.front)
    assert all(c.members[0] != 4 for c in outcome.front)  # alone, the costly member never fits
    assert outcome.singles[4].cost == 10.0  # still measured, for the report


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000), cap=st.floats(1.5, 12.0))
def test_a_max_cost_plan_is_certified_and_within_the_cost(seed: int, cap: float) -> None:
    z, y = pool_logits(seed, 3000, SKILLS)
    plan = plan_cascade(z, y, COSTS, NAMES, max_cost=cap, max_stages=3, beam=8, seed=seed, baselines=False)
    if plan.plan is not None:
        assert plan.plan.threshold.certified
        assert plan.plan.threshold.risk_upper_bound <= 0.05 + 1e-9
        assert plan.plan.cost <= cap
        best = max(c.threshold.coverage for c in plan.candidates if c.threshold.certified and c.cost <= cap)
        assert plan.plan.threshold.coverage == best


@pytest.mark.parametrize("selection", ["bonferroni", "fixed_sequence"])
def test_a_match_plan_reaches_the_members_own_certificate_at_less_cost(selection: str) -> None:
    z, y = pool_logits(3, 4000, SKILLS)
    test_z, test_y = pool_logits(4, 2000, SKILLS)
    plan = plan_cascade(z, y, COSTS, NAMES, match="l0", max_stages=3, beam=8, selection=selection,
                        test_logits=test_z, test_labels=test_y)
    own = CascadeCalibrator(policy="none", delta=0.1, risk=0.05).fit(z[[4]], y)
    assert plan.reference is not None and plan.reference.tau == own.tau_
    assert plan.candidates and all(c.cascade.cost < COSTS[4] for c in plan.candidates)
    assert plan.plan is not None  # this pool's small members, cascaded, do reach the large one
    # the plan is compared with the member's tau on the certify part, where candidates are measured
    _, cert = fit_certify_split(len(y), plan.fit_fraction, plan.seed)
    member_scores, _, _ = cascade_outputs(z[:, cert], y[cert], [4], NonePolicy(), "msp")
    assert plan.reference_coverage == pytest.approx(float(np.mean(member_scores >= own.tau_)))
    assert plan.plan.threshold.coverage >= plan.reference_coverage
    assert plan.plan.cost < COSTS[4]
    d = plan.to_dict()
    assert d["plan"]["members"] == plan.members and d["selection"]["method"] == selection
    assert d["reference"]["member"] == "l0" and d["reference"]["coverage"] == own.coverage_
    assert all("test" in b and "certify" in b for b in d["baselines"])
    assert set(d["figures"]) == {"certify", "test"}


def test_bad_objectives_are_refused() -> None:
    z, y = pool_logits(0, 500, SKILLS)
    with pytest.raises(BadInputError, match="exactly one objective"):
        plan_cascade(z, y, COSTS, NAMES)
    with pytest.raises(BadInputError, match="exactly one objective"):
        plan_cascade(z, y, COSTS, NAMES, match="s0", max_cost=3.0)
    with pytest.raises(BadInputError, match="no pool member named 'zz'"):
        plan_cascade(z, y, COSTS, NAMES, match="zz")
    with pytest.raises(BadInputError, match="positive"):
        plan_cascade(z, y, COSTS, NAMES, max_cost=0.0)
    with pytest.raises(BadInputError, match="one name per pool member"):
        plan_cascade(z, y, COSTS, NAMES[:2], match="s0")


def _cascade(cost: float, coverage: float) -> PlannedCascade:
    return PlannedCascade((0,), (), (), cost, coverage, (1.0,))


def test_front_and_layers() -> None:
    a, b, c, d = _cascade(1, 0.5), _cascade(2, 0.7), _cascade(2, 0.6), _cascade(3, 0.65)
    assert pareto_front([d, c, b, a]) == [a, b]
    assert pareto_layers([d, c, b, a], keep=3) == [a, b, c]
    assert size_groups(np.array([3.0, 1.0, 3.0, 1.0])) == [[1, 3], [0, 2]]


def test_agreement_deferral_defers_exactly_where_the_first_tier_disagrees() -> None:
    from wcx.calibration.plan_baselines import agreement_outputs

    z = np.zeros((4, 3, 2))
    z[0, :, 0] = 2.0  # member 0: class 0 everywhere
    z[1, :2, 0] = 2.0  # member 1: class 0 on rows 0, 1
    z[1, 2, 1] = 2.0  # ... class 1 on row 2: the tier disagrees there
    z[2:, :, 1] = 3.0  # the second tier: class 1 everywhere, confidently
    score, errors, deferred = agreement_outputs(z, np.array([0, 0, 1]), [0, 1], [2, 3], "msp")
    assert deferred == pytest.approx(1 / 3)
    assert errors.tolist() == [False, False, False]
    assert score[2] == pytest.approx(float(np.exp(3) / (1 + np.exp(3))))


def test_the_report_holds_every_baseline_kind() -> None:
    z, y = pool_logits(5, 1500, (0.8, 0.85, 1.3, 1.35))
    plan = plan_cascade(z, y, COSTS[:4], NAMES[:4], max_cost=5.0, max_stages=2, beam=4)
    kinds = {b["kind"] for b in plan.baselines}
    assert kinds == {"single", "ensemble", "window_fixed", "threshold_fixed", "confidence_cascade",
                     "agreement_deferral"}
    agreement = next(b for b in plan.baselines if b["kind"] == "agreement_deferral")
    assert agreement["members"] == ["s0", "s1", "m0", "m1"]
    assert 2.0 <= agreement["certify"]["expected_cost"] <= 8.0
