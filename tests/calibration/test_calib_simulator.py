"""The cascade simulator: hand-made routing and invariants under hypothesis."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from wcx.calibration.simulator import route, simulate_cascade
from wcx.calibration.window import windows_for_widths
from wcx.core.policy import AllPolicy, NonePolicy, ThresholdPolicy, WindowPolicy
from wcx.core.scores import SCORES, stage_outputs
from wcx.errors import BadInputError


def test_routing_three_stages_by_hand() -> None:
    s = np.array(
        [
            [0.10, 0.50, 0.55, 0.95],  # stage 1
            [0.20, 0.60, 0.35, 0.90],  # stage 2
            [0.30, 0.70, 0.40, 0.99],  # stage 3
        ]
    )
    window = WindowPolicy([(0.4, 0.8), (0.5, 0.9)])
    assert route(s, window).tolist() == [1, 3, 2, 1]
    thresh = ThresholdPolicy([0.6, 0.5])
    assert route(s, thresh).tolist() == [3, 2, 3, 1]
    assert route(s, NonePolicy()).tolist() == [1] * 4
    assert route(s, AllPolicy()).tolist() == [3] * 4


def test_outcome_fields_and_cost() -> None:
    z = np.zeros((2, 4, 3))
    z[:, 0, 0] = 10.0  # confident at both stages
    z[1, 1, 2] = 10.0  # unsure at stage 1, confident at stage 2
    out = simulate_cascade(z, WindowPolicy([(0.0, 0.5)]), "msp", tau=0.9)
    assert out.exit_stage.tolist() == [1, 2, 2, 2]
    assert out.pred.tolist() == [0, 2, 0, 0]
    assert out.pass_fraction.tolist() == [1.0, 0.75]
    assert out.expected_cost([2.0, 4.0]) == pytest.approx(2.0 + 0.75 * 4.0)
    assert out.accept.tolist() == [True, False, False, False]
    # stage-2 msp of input 1: mean(1/3, 1) over the winning class = 2/3 -> rejected at 0.9
    assert out.score[1] == pytest.approx((1 / 3 + 1.0) / 2, rel=1e-4)
    assert out.accepted(0.6).tolist() == [True, True, False, False]
    single = simulate_cascade(z[:1], NonePolicy())
    assert single.pass_fraction.tolist() == [1.0]


def test_stage_count_is_checked() -> None:
    z = np.zeros((3, 2, 2))
    with pytest.raises(BadInputError, match="3 members"):
        simulate_cascade(z, WindowPolicy([(0.0, 1.0)]))
    with pytest.raises(BadInputError, match="1 members"):
        simulate_cascade(z[:1], ThresholdPolicy([0.5]))
    with pytest.raises(BadInputError):
        WindowPolicy([])
    with pytest.raises(BadInputError):
        ThresholdPolicy([float("nan")])


# ---------------------------------------------------------------------------------------------
# invariants (hypothesis)
# ---------------------------------------------------------------------------------------------


@st.composite
def logits_strategy(draw: st.DrawFn) -> np.ndarray:
    m = draw(st.integers(2, 4))
    n = draw(st.integers(1, 25))
    k = draw(st.integers(2, 4))
    return draw(arrays(np.float64, (m, n, k), elements=st.floats(-6, 6, allow_nan=False)))


def _same(a, b) -> None:  # noqa: ANN001
    np.testing.assert_array_equal(a.exit_stage, b.exit_stage)
    np.testing.assert_array_equal(a.pred, b.pred)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.pass_fraction, b.pass_fraction)


@settings(max_examples=60, deadline=None)
@given(logits_strategy(), st.sampled_from(SCORES), st.floats(0, 1))
def test_window_covering_all_scores_is_all(z: np.ndarray, score: str, margin: float) -> None:
    s, _ = stage_outputs(z, score)
    windows = [(s[m].min() - margin, s[m].max() + margin) for m in range(z.shape[0] - 1)]
    _same(simulate_cascade(z, WindowPolicy(windows), score), simulate_cascade(z, AllPolicy(), score))
    _same(
        simulate_cascade(z, WindowPolicy([(-math.inf, math.inf)] * (z.shape[0] - 1)), score),
        simulate_cascade(z, AllPolicy(), score),
    )


@settings(max_examples=40, deadline=None)
@given(logits_strategy(), st.sampled_from(SCORES))
def test_combine_last_with_an_infinite_window_is_the_last_member_alone(z: np.ndarray, score: str) -> None:
    everything = WindowPolicy([(-math.inf, math.inf)] * (z.shape[0] - 1))
    got, alone = simulate_cascade(z, everything, score, combine="last"), simulate_cascade(z[-1:], NonePolicy(), score)
    np.testing.assert_array_equal(got.exit_stage, z.shape[0])
    np.testing.assert_array_equal(got.pred, alone.pred)
    np.testing.assert_array_equal(got.score, alone.score)
    _same(simulate_cascade(z, NonePolicy(), score, combine="last"), simulate_cascade(z, NonePolicy(), score))


@settings(max_examples=60, deadline=None)
@given(logits_strategy(), st.sampled_from(SCORES), st.floats(-10, 10), st.floats(1e-6, 5))
def test_empty_window_is_none(z: np.ndarray, score: str, lo: float, gap: float) -> None:
    windows = [(lo, lo - gap)] * (z.shape[0] - 1)  # lo > hi: nothing continues
    _same(simulate_cascade(z, WindowPolicy(windows), score), simulate_cascade(z, NonePolicy(), score))


@settings(max_examples=60, deadline=None)
@given(
    logits_strategy(),
    st.sampled_from(SCORES),
    st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)), min_size=3, max_size=3),
    st.lists(st.floats(0.1, 100), min_size=4, max_size=4),
)
def test_cost_is_monotone_in_window_width(z, score, bounds, costs) -> None:  # noqa: ANN001
    m = z.shape[0]
    s, preds = stage_outputs(z, score)
    lo_all, hi_all = s.min(), s.max()
    narrow, wide = [], []
    for a, b, c, d in bounds[: m - 1]:
        # map to the score range; the wide window contains the narrow one
        mid = lo_all + (hi_all - lo_all) * a
        half = (hi_all - lo_all) * b
        narrow.append((mid - half, mid + half))
        wide.append((mid - half - c * (hi_all - lo_all + 1), mid + half + d * (hi_all - lo_all + 1)))
    on = simulate_cascade(z, WindowPolicy(narrow), score)
    ow = simulate_cascade(z, WindowPolicy(wide), score)
    assert np.all(ow.pass_fraction >= on.pass_fraction)
    c = np.array(costs[:m])
    assert ow.expected_cost(c) >= on.expected_cost(c) - 1e-12


@settings(max_examples=60, deadline=None)
@given(
    logits_strategy(),
    st.floats(0, 1),
    st.tuples(st.floats(0, 0.5), st.floats(0, 0.5)),
    st.tuples(st.floats(0, 0.5), st.floats(0, 0.5)),
)
def test_quantile_band_cost_monotone_in_widths(z, q, w1, extra) -> None:  # noqa: ANN001
    # two stages: widening (w_lo, w_hi) around one tau can only pass more inputs
    z = z[:2]
    s, _ = stage_outputs(z, "msp")
    tau = float(np.quantile(s[0], q))
    narrow = windows_for_widths(s, [tau], [w1])
    wide = windows_for_widths(s, [tau], [(w1[0] + extra[0], w1[1] + extra[1])])
    pn = simulate_cascade(z, narrow).pass_fraction[1]
    pw = simulate_cascade(z, wide).pass_fraction[1]
    assert pw >= pn
    full = windows_for_widths(s, [tau], [(1.0, 1.0)])
    assert simulate_cascade(z, full).pass_fraction[1] == 1.0
