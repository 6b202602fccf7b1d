"""CascadeCalibrator and the window search: fitting, evaluation without refitting, manifest
dicts, validation of bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.simulator import simulate_cascade
from wcx.calibration.targets import InDistributionTPR, SelectiveRisk
from wcx.calibration.window import (
    pareto_front,
    quantile_band,
    search_windows,
    thresholds_for_budget,
    windows_for_widths,
)
from wcx.core.policy import AllPolicy, WindowPolicy, policy_from_dict
from wcx.core.scores import stage_outputs
from wcx.errors import BadInputError, NotFittedError, WorkFailedError


def make_logits(seed: int, n: int, members: int = 2, classes: int = 5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    margin = 1.6 * rng.gamma(2.0, 1.0, n)[:, None] * np.eye(classes)[y]
    shared = rng.normal(size=(n, classes))
    return np.stack([margin + shared + 0.9 * rng.normal(size=(n, classes)) for _ in range(members)]), y


@pytest.fixture(scope="module")
def data():
    return make_logits(0, 3000)


def test_quantile_band_hand_computed() -> None:
    s = np.arange(1.0, 11.0)
    assert quantile_band(s, 5.0, 0.2, 0.1) == (3.0, 6.0)
    assert quantile_band(s, 5.0, 0.0, 0.0) == (5.0, 5.0)
    assert quantile_band(s, 5.0, 1.0, 1.0) == (1.0, 10.0)  # levels clamped to [0, 1]
    assert quantile_band(s, math.inf, 0.1, 0.1) == (9.0, 10.0)
    with pytest.raises(BadInputError):
        quantile_band(s, 5.0, -0.1, 0.1)


def test_reference_band_passes_about_twenty_percent(data) -> None:  # noqa: ANN001
    z, y = data
    s, p = stage_outputs(z)
    search = search_windows(s, p, y, target=SelectiveRisk(0.05), member_costs=[1.0, 1.0], fixed_widths=(0.1, 0.1))
    assert search.best == search.reference
    assert 0.19 <= search.reference.pass_fraction[1] <= 0.21
    assert search.best.expected_cost == pytest.approx(1.0 + search.best.pass_fraction[1])


def test_search_picks_cheapest_feasible_point(data) -> None:  # noqa: ANN001
    z, y = data
    s, p = stage_outputs(z)
    costs = np.array([3.0, 5.0])
    search = search_windows(s, p, y, target=SelectiveRisk(0.05), member_costs=costs, eps=0.005)
    feasible = [q for q in search.curve if q.feasible]
    assert search.best.feasible
    assert search.best.expected_cost == min(q.expected_cost for q in feasible)
    assert search.ensemble_quality - search.best.quality <= 0.005 + 1e-12
    assert len(search.curve) == 12 * 12  # every (w_lo, w_hi) of the default grid is kept
    front = pareto_front(search.curve)
    pairs = zip(front, front[1:], strict=False)
    assert all(a.expected_cost <= b.expected_cost and a.quality < b.quality for a, b in pairs)
    # the widest window is the full ensemble
    widest = [q for q in search.curve if q.widths == ((1.0, 1.0),)][0]
    assert widest.pass_fraction == (1.0, 1.0) and widest.gap == pytest.approx(0.0)
    # a looser tolerance can only make the cascade cheaper
    loose = search_windows(s, p, y, target=SelectiveRisk(0.05), member_costs=costs, eps=0.05)
    assert loose.best.expected_cost <= search.best.expected_cost


def test_noise_aware_rule_only_removes_points(data) -> None:  # noqa: ANN001
    # gap + gap_se <= eps can only shrink the feasible set, so the chosen two-member cascade
    # (exhaustive grid) costs at least as much as the plain rule's, and never breaks the rule
    z, y = data
    s, p = stage_outputs(z[:, :800])
    y = y[:800]
    plain = search_windows(s, p, y, target=SelectiveRisk(0.05), member_costs=[1, 1], n_boot=0)
    noisy = search_windows(s, p, y, target=SelectiveRisk(0.05), member_costs=[1, 1], n_boot=50, seed=3)
    assert all(q.gap_se == 0.0 for q in plain.curve)
    assert noisy.best.expected_cost >= plain.best.expected_cost
    assert noisy.best.gap + noisy.best.gap_se <= 0.005 + 1e-12
    assert {q.widths for q in noisy.curve if q.feasible} <= {q.widths for q in plain.curve if q.feasible}
    # some measured point has noise, the full ensemble has none (it is its own reference)
    assert any(q.gap_se > 0 for q in noisy.curve)
    assert [q.gap_se for q in noisy.curve if q.widths == ((1.0, 1.0),)] == [0.0]
    # same seed, same search
    again = search_windows(s, p, y, target=SelectiveRisk(0.05), member_costs=[1, 1], n_boot=50, seed=3)
    assert again.best == noisy.best
    with pytest.raises(BadInputError, match="n_boot"):
        search_windows(s, p, y, target=SelectiveRisk(0.05), member_costs=[1, 1], n_boot=-1)


def test_noise_aware_rule_ood() -> None:
    z, _ = make_logits(4, 1000)
    s, p = stage_outputs(z, "neg_energy")
    search = search_windows(s, p, None, target=InDistributionTPR(0.95), member_costs=[1, 1], eps=0.01, n_boot=50)
    assert search.best.feasible and search.best.gap + search.best.gap_se <= 0.01 + 1e-12
    assert any(q.gap_se > 0 for q in search.curve)


def test_three_stage_search_and_threshold_budget() -> None:
    z, y = make_logits(1, 2000, members=3)
    s, p = stage_outputs(z)
    search = search_windows(s, p, y, target=SelectiveRisk(0.05), member_costs=[1, 1, 1], eps=0.01)
    assert len(search.best.windows) == 2 and search.best.feasible
    pf = search.best.pass_fraction
    assert pf[0] == 1.0 and pf[0] >= pf[1] >= pf[2]
    pol = thresholds_for_budget(s, [0.3, 0.1])
    out = simulate_cascade(z, pol)
    assert out.pass_fraction[1] == pytest.approx(0.3, abs=0.002)
    assert out.pass_fraction[2] == pytest.approx(0.1, abs=0.002)
    assert simulate_cascade(z, thresholds_for_budget(s, 0.0)).pass_fraction.tolist() == [1.0, 0.0, 0.0]
    w = windows_for_widths(s, search.stage_taus, [(1.0, 1.0), (1.0, 1.0)])
    assert simulate_cascade(z, w).pass_fraction.tolist() == [1.0, 1.0, 1.0]


def test_empirical_fit_evaluate_and_dicts(data) -> None:  # noqa: ANN001
    z, y = data
    cal = CascadeCalibrator(risk=0.05).fit(z, y, member_costs=[1e6, 2e6])
    assert cal.n_fit_ == cal.n_certify_ == 3000 and cal.mode == "empirical"
    assert cal.risk_ <= 0.05 and not cal.certified_ and cal.risk_upper_bound_ is None
    assert cal.pass_fraction_[0] == 1.0 and len(cal.windows_) == 1
    assert cal.expected_macs_ == pytest.approx(1e6 + cal.pass_fraction_[1] * 2e6)
    # the fitted numbers are reproduced by simulating the policy on the same data
    out = simulate_cascade(z, WindowPolicy(cal.windows_), "msp", tau=cal.tau_)
    assert out.accept.mean() == pytest.approx(cal.coverage_)
    again = cal.evaluate(z, y)
    assert again["coverage"] == pytest.approx(cal.coverage_) and again["risk"] == pytest.approx(cal.risk_)
    # evaluation on a test split uses the fitted tau (no refit)
    zt, yt = make_logits(99, 2000)
    tau = cal.tau_
    test = cal.evaluate(zt, yt)
    assert cal.tau_ == tau and set(test) >= {"coverage", "risk", "pass_fraction", "expected_macs"}
    report = cal.report_dict(test=test)
    json.dumps(report, allow_nan=False)
    for key in (
        "tau",
        "windows",
        "pass_fraction",
        "expected_macs",
        "coverage",
        "risk",
        "risk_upper_bound",
        "certified",
        "test",
    ):
        assert key in report
    pol = cal.to_policy_dict()
    assert pol["kind"] == "window" and pol["tau"] == tau and len(pol["windows"]) == 1
    assert policy_from_dict(json.loads(json.dumps(pol))) == cal.policy_
    calib = cal.to_calibration_dict(backend="onnxruntime", precision="fp16")
    json.dumps(calib, allow_nan=False)
    assert calib["backend"] == "onnxruntime" and calib["precision"] == "fp16" and calib["risk"] == 0.05
    assert calib["mode"] == "empirical" and calib["delta"] is None


def test_guaranteed_fit_splits_and_certifies(data) -> None:  # noqa: ANN001
    z, y = data
    cal = CascadeCalibrator(risk=0.05, delta=0.1, seed=7).fit(z, y)
    assert cal.certified_ and cal.n_fit_ == 900 and cal.n_certify_ == 2100
    assert cal.risk_upper_bound_ <= 0.05 + 1e-12 or cal.threshold_.errors > 0
    assert cal.risk_upper_bound_ >= cal.risk_
    calib = cal.to_calibration_dict("onnxruntime", "fp32")
    assert calib["seed"] == 7 and calib["fit_fraction"] == 0.3 and calib["n_certify"] == 2100
    same = CascadeCalibrator(risk=0.05, delta=0.1, seed=7).fit(z, y)
    assert same.tau_ == cal.tau_ and same.windows_ == cal.windows_
    cal.raise_if_failed()


def test_threshold_policy_defaults_to_window_budget(data) -> None:  # noqa: ANN001
    z, y = data
    win = CascadeCalibrator(risk=0.05).fit(z, y)
    thr = CascadeCalibrator(risk=0.05, policy="threshold").fit(z, y)
    assert thr.thresholds_ is not None and thr.windows_ is None
    assert thr.pass_fraction_[1] == pytest.approx(win.pass_fraction_[1], abs=0.002)
    assert thr.to_policy_dict()["kind"] == "threshold"
    fixed = CascadeCalibrator(risk=0.05, policy="threshold", budget=0.5).fit(z, y)
    assert fixed.pass_fraction_[1] == pytest.approx(0.5, abs=0.002)
    for kind in ("none", "all"):
        base = CascadeCalibrator(risk=0.05, policy=kind).fit(z, y)
        assert base.to_policy_dict()["kind"] == kind
    single = CascadeCalibrator(risk=0.05, policy="none").fit(z[:1], y)
    assert single.pass_fraction_ == [1.0]


def test_no_certificate_is_a_result_then_work_failed() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 400)
    z = rng.normal(size=(2, 400, 3))  # chance-level members: risk ~ 2/3 everywhere
    cal = CascadeCalibrator(risk=0.05, delta=0.1).fit(z, y)
    assert not cal.certified_ and math.isinf(cal.tau_)
    report = cal.report_dict()
    assert report["certified"] is False and report["tau"] is None and report["risk_upper_bound"] is None
    json.dumps(report, allow_nan=False)
    with pytest.raises(WorkFailedError, match="no certificate"):
        cal.raise_if_failed()
    with pytest.raises(WorkFailedError):
        cal.to_policy_dict()


def test_ood_task(data) -> None:  # noqa: ANN001
    z, _ = data
    rng = np.random.default_rng(5)
    z_ood = 0.3 * rng.normal(size=(2, 1000, 5))  # no class signal, small logits: low energy
    cal = CascadeCalibrator(task="ood", tpr=0.95, delta=0.1).fit(z, None, ood_logits=z_ood)
    assert cal.score == "neg_energy" and cal.certified_
    assert cal.tpr_ >= 0.95 and cal.tpr_lower_bound_ >= 0.95 - 1e-12
    assert 0.0 <= cal.fpr_ < 0.5 and cal.auroc_ > 0.8
    rep = cal.report_dict(test=cal.evaluate(z, ood_logits=z_ood))
    for key in ("tpr", "tpr_lower_bound", "fpr", "auroc"):
        assert key in rep and rep[key] is not None
    assert rep["test"]["tpr"] >= 0.9
    emp = CascadeCalibrator(task="ood").fit(z)
    assert emp.tpr_ == pytest.approx(0.95, abs=1e-3) and emp.fpr_ is None
    assert emp.to_policy_dict()["task"] == "ood"


def test_validation_errors(data) -> None:  # noqa: ANN001
    z, y = data
    for kwargs, match in [
        ({"risk": 0.0}, r"risk must be in \(0, 1\)"),
        ({"risk": 1.5}, r"risk must be in \(0, 1\)"),
        ({"delta": 1.0}, r"delta must be in \(0, 1\)"),
        ({"task": "detect"}, "valid tasks: selective, ood"),
        ({"score": "entropy"}, "valid scores"),
        ({"policy": "greedy"}, "valid policies: window, threshold, none, all"),
        ({"cost": "flops"}, "valid costs: macs, latency"),
        ({"eps": -0.1}, "eps"),
        ({"fit_fraction": 1.0}, "fit_fraction"),
        ({"widths": (0.1, 2.0)}, "widths"),
    ]:
        with pytest.raises(BadInputError, match=match):
            CascadeCalibrator(**kwargs)
    cal = CascadeCalibrator(risk=0.05)
    with pytest.raises(NotFittedError):
        cal.report_dict()
    with pytest.raises(NotFittedError):
        cal.evaluate(z, y)
    with pytest.raises(BadInputError, match="needs class labels"):
        cal.fit(z, None)
    with pytest.raises(BadInputError, match="shape"):
        cal.fit(z, y[:10])
    with pytest.raises(BadInputError, match=r"labels must be in \[0, 5\)"):
        cal.fit(z, y + 5)
    with pytest.raises(BadInputError, match="one value per member"):
        cal.fit(z, y, member_costs=[1.0])
    with pytest.raises(BadInputError, match="at least 2 members"):
        cal.fit(z[:1], y)
    # certifying part too small: 30% of 120 fit, 84 certify < 93
    with pytest.raises(BadInputError, match="at least 93 are needed.*at least 133 held-out"):
        CascadeCalibrator(risk=0.05, delta=0.1).fit(z[:, :120], y[:120])
    fitted = CascadeCalibrator(risk=0.05).fit(z, y)
    with pytest.raises(BadInputError, match="3 members"):
        fitted.evaluate(np.concatenate([z, z[:1]]), y)
    assert isinstance(fitted.policy_, WindowPolicy) and not isinstance(fitted.policy_, AllPolicy)
