"""Reference rates (:mod:`wcx.calibration.reference`): what the calibration records for the
drift monitor, measured on the inputs the report's coverage is measured on, and their manifest
form (older calibrations without them still load)."""

from __future__ import annotations

import numpy as np
import pytest

from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.simulator import simulate_from_stages
from wcx.core.manifest import CalibrationSection, ReferenceRates
from wcx.core.scores import stage_outputs
from wcx.errors import BadInputError


def _logits(seed: int, n: int = 4000, members: int = 2, classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    base = rng.normal(0, 1, (n, classes))
    base[np.arange(n), y] += 2.5
    logits = np.stack([base + rng.normal(0, 1, (n, classes)) for _ in range(members)]).astype(np.float32)
    return logits, y


@pytest.mark.parametrize("delta", [None, 0.1])
def test_reference_counts_are_the_reported_figures_on_the_reference_inputs(delta: float | None) -> None:
    logits, y = _logits(0)
    cal = CascadeCalibrator(risk=0.1, delta=delta, n_boot=0).fit(logits, y)
    ref = cal.result_.reference
    assert ref is not None
    assert ref.independent is (delta is not None)
    assert ref.n == cal.n_certify_ == (4000 if delta is None else 2800)
    assert ref.pass_fraction == pytest.approx(tuple(cal.pass_fraction_))
    assert ref.accept_rate == pytest.approx(cal.coverage_)
    # stage-1 exits at or below each quantile, recomputed directly on the reference inputs
    fit_idx, cert_idx = cal._split(4000)
    scores, _ = stage_outputs(logits, "msp")
    out = simulate_from_stages(scores[:, cert_idx], stage_outputs(logits, "msp")[1][:, cert_idx], cal.policy_)
    expected_q = np.quantile(scores[0, fit_idx], ref.score_levels)
    assert ref.score_quantiles == pytest.approx(tuple(expected_q))
    for q, count in zip(ref.score_quantiles, ref.score_exit_count, strict=True):
        assert count == np.count_nonzero((out.exit_stage == 1) & (scores[0, cert_idx] <= q))
    # every reference input's stage-1 score, whatever stage it exits at
    assert ref.version == 2
    assert ref.score_count == tuple(int(np.count_nonzero(scores[0, cert_idx] <= q)) for q in ref.score_quantiles)
    assert ref.score_count[-1] > ref.score_exit_count[-1]  # rows that went on count too
    section = CalibrationSection.from_dict(cal.to_calibration_dict("onnxruntime", "fp32"), member_names=["a", "b"])
    assert section.reference == ref
    assert cal.report_dict()["reference"] == ref.to_dict()


def test_a_calibration_without_reference_loads_and_bad_ones_are_refused() -> None:
    logits, y = _logits(1)
    d = CascadeCalibrator(risk=0.1, n_boot=0).fit(logits, y).to_calibration_dict("onnxruntime", "fp32")
    old = dict(d)
    del old["reference"]
    assert CalibrationSection.from_dict(old, member_names=["a", "b"]).reference is None
    assert "reference" not in CalibrationSection.from_dict(old, member_names=["a", "b"]).to_dict()
    bad = {**d["reference"], "pass_count": [d["reference"]["n"], d["reference"]["n"] + 1]}
    with pytest.raises(BadInputError, match="pass_count"):
        ReferenceRates.from_dict(bad)
    with pytest.raises(BadInputError, match="accept_count"):
        ReferenceRates.from_dict({**d["reference"], "accept_count": -1})
