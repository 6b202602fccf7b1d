"""The risk guarantee, measured: many fits on synthetic logits whose true selective risk at any
threshold is measured on a huge fresh sample from the same generator.

Guaranteed mode (Learn-then-Test on the certifying part, windows fitted on the other part) must
exceed the target risk in at most delta of the fits (plus sampling slack); empirical mode, which
fits tau on the same data it reports, exceeds it in about half of them.
"""

from __future__ import annotations

import numpy as np
import pytest

from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.simulator import simulate_from_stages
from wcx.core.scores import stage_outputs

RISK, DELTA = 0.05, 0.1
GRID = (0.0, 0.1, 0.3, 1.0)  # a small width grid keeps 1000 full fits fast


def synthetic_logits(rng: np.random.Generator, n: int, members: int = 2, classes: int = 5):
    """Logits ``(members, n, classes)`` and labels: a per-input difficulty scales the true
    class's margin, with noise shared by all members (the input) and per member (training)."""
    y = rng.integers(0, classes, n)
    margin = 1.6 * rng.gamma(2.0, 1.0, n)[:, None] * np.eye(classes)[y]
    shared = rng.normal(size=(n, classes))
    z = np.stack([margin + shared + 0.9 * rng.normal(size=(n, classes)) for _ in range(members)])
    return z, y


@pytest.fixture(scope="module")
def fresh() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, y = synthetic_logits(np.random.default_rng(2**31), 100_000)
    scores, preds = stage_outputs(z, "msp")
    return scores, preds, y


def true_risk(cal: CascadeCalibrator, fresh) -> tuple[float, float]:  # noqa: ANN001
    scores, preds, y = fresh
    out = simulate_from_stages(scores, preds, cal.policy_)
    accept = out.score >= cal.tau_
    if not accept.any():
        return 0.0, 0.0
    return float(np.mean(out.pred[accept] != y[accept])), float(accept.mean())


@pytest.mark.slow
def test_guaranteed_violation_rate_at_most_delta(fresh) -> None:  # noqa: ANN001
    n_fits, n_empirical = 500, 200
    violations = {"empirical": [], "guaranteed": []}
    coverage = {"empirical": [], "guaranteed": []}
    for seed in range(n_fits):
        z, y = synthetic_logits(np.random.default_rng(seed), 2000)
        modes = (("guaranteed", DELTA), ("empirical", None)) if seed < n_empirical else (("guaranteed", DELTA),)
        for mode, delta in modes:
            cal = CascadeCalibrator(risk=RISK, delta=delta, seed=seed, width_grid=GRID).fit(z, y)
            assert cal.certified_ or mode == "empirical"
            risk, cov = true_risk(cal, fresh)
            violations[mode].append(risk > RISK)
            coverage[mode].append(cov)
    rate_g = float(np.mean(violations["guaranteed"]))
    rate_e = float(np.mean(violations["empirical"]))
    print(
        f"\nviolation rate: guaranteed {rate_g:.3f} over {n_fits} fits (delta {DELTA}), "
        f"empirical {rate_e:.3f} over {n_empirical}; mean coverage guaranteed "
        f"{np.mean(coverage['guaranteed']):.3f}, empirical {np.mean(coverage['empirical']):.3f}"
    )
    assert rate_g <= DELTA + 0.02
    assert rate_e >= 0.3  # about half: the empirical threshold overshoots the target often
    assert np.mean(coverage["guaranteed"]) < np.mean(coverage["empirical"])
