"""Scores of the stage-m ensembles (wcx.core.scores): hand-computed values, independent
references, stability, and one implementation on numpy and torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from wcx.core.scores import (
    SCORES,
    Score,
    ScoreState,
    get_score,
    member_statistics,
    stage_outputs,
    stage_probs,
    stage_scores,
)
from wcx.errors import BadInputError


def reference_scores(logits: np.ndarray, score: str) -> tuple[np.ndarray, np.ndarray]:
    """Stage scores (M, N) and predictions straight from the definitions (method.md table)."""
    z = logits.astype(np.float64)
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    out_s, out_p = [], []
    for m in range(1, z.shape[0] + 1):
        p = probs[:m].mean(0)
        out_p.append(p.argmax(-1))
        if score == "msp":
            out_s.append(p.max(-1))
        elif score == "neg_entropy":
            out_s.append(np.array([sum(q * np.log(q) for q in row if q > 0) for row in p]))
        elif score == "neg_energy":
            out_s.append(np.log(np.exp(z[:m]).sum(-1)).mean(0))
        elif score == "agreement":  # share of members whose own top-1 is the ensemble's
            out_s.append((z[:m].argmax(-1) == p.argmax(-1)[None, :]).mean(0))
        else:
            out_s.append(z[:m].max(-1).mean(0))
    return np.array(out_s), np.array(out_p)


def test_hand_computed_two_members() -> None:
    # member 1: [0, 0] -> [1/2, 1/2]; member 2: [0, ln 3] -> [1/4, 3/4]; mean [3/8, 5/8]
    z = np.array([[[0.0, 0.0]], [[0.0, np.log(3.0)]]])
    np.testing.assert_allclose(stage_probs(z)[:, 0], [[0.5, 0.5], [0.375, 0.625]])
    np.testing.assert_allclose(stage_scores(z, "msp")[:, 0], [0.5, 0.625])
    ent2 = 0.375 * np.log(0.375) + 0.625 * np.log(0.625)
    np.testing.assert_allclose(stage_scores(z, "neg_entropy")[:, 0], [np.log(0.5), ent2])
    np.testing.assert_allclose(stage_scores(z, "neg_energy")[:, 0], [np.log(2.0), (np.log(2.0) + np.log(4.0)) / 2])
    np.testing.assert_allclose(stage_scores(z, "max_logit")[:, 0], [0.0, np.log(3.0) / 2])


@pytest.mark.parametrize("score", SCORES)
def test_matches_scipy_and_is_float64(score: str) -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(scale=4.0, size=(3, 50, 7)).astype(np.float16)
    got = stage_scores(z, score)
    assert got.dtype == np.float64 and got.shape == (3, 50)
    z64 = z.astype(np.float64)
    p = np.cumsum(softmax(z64, axis=-1), axis=0) / np.arange(1, 4)[:, None, None]
    want = {
        "msp": p.max(-1),
        "neg_entropy": np.sum(p * np.log(p), -1),
        "neg_energy": np.cumsum(logsumexp(z64, axis=-1), 0) / np.arange(1, 4)[:, None],
        "max_logit": np.cumsum(z64.max(-1), 0) / np.arange(1, 4)[:, None],
        "agreement": np.stack([(z64[:m].argmax(-1) == p[m - 1].argmax(-1)).mean(0) for m in range(1, 4)]),
    }[score]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_agreement_by_hand() -> None:
    # members' top-1: row 0 votes 0, 1, 0; row 1 votes 1, 1, 2 while the mean probabilities end
    # on class 2 (one vote of three); stage 2 of row 0 ties P_2 between classes 0 and 1 (first wins)
    z = np.array([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 2.0, 0.0], [0.0, 1.0, 0.0]],
                  [[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]])
    s, p = stage_outputs(z, "agreement")
    np.testing.assert_allclose(s, [[1.0, 1.0], [0.5, 1.0], [2 / 3, 1 / 3]])
    np.testing.assert_array_equal(p, [[0, 1], [0, 1], [0, 2]])
    assert get_score("agreement").bounds(3) == (0.0, 1.0)


@pytest.mark.parametrize("score", SCORES)
def test_combine_last_is_each_member_alone(score: str) -> None:
    """``last``: stage m's score and prediction are member m's own, on every row and on subsets."""
    rng = np.random.default_rng(6)
    z = (rng.standard_normal((3, 30, 5)) * 3).astype(np.float32)
    s, p = stage_outputs(z, score, "last")
    for m in range(3):
        alone_s, alone_p = stage_outputs(z[[m]], score)
        np.testing.assert_allclose(s[m], alone_s[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(p[m], alone_p[0])
    np.testing.assert_allclose(stage_probs(z, "last"), softmax(z.astype(np.float64), axis=-1), rtol=1e-12)
    st = ScoreState(score, 30, 5, combine="last")
    st.add(None, z[0])
    rows = np.array([2, 7, 11])
    st.add(rows, z[1][rows])
    got, pred = st.score(rows, 2)
    np.testing.assert_allclose(got, s[1][rows], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(pred, p[1][rows])
    untouched, _ = st.score(np.array([0, 1]), 1)  # rows that stopped keep member 1's output
    np.testing.assert_allclose(untouched, s[0][[0, 1]], rtol=1e-12, atol=1e-12)
    with pytest.raises(BadInputError, match="combine"):
        ScoreState(score, 1, 5, combine="max")


def test_extreme_logits_are_stable() -> None:
    z = np.array([[[1000.0, -1000.0, 0.0]], [[-5000.0, 5000.0, 0.0]]])
    for score in SCORES:
        assert np.all(np.isfinite(stage_scores(z, score)))
    np.testing.assert_allclose(stage_probs(z)[1, 0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(stage_scores(z, "neg_entropy")[0, 0], 0.0, atol=1e-300)
    st = ScoreState("neg_energy", 1, 3)
    st.add(None, np.array([[1000.0, 999.0, -1000.0]]))
    s, p = st.score(None, 1)
    assert p[0] == 0 and s[0] == pytest.approx(1000.0 + np.log1p(np.exp(-1.0)))


@pytest.mark.parametrize("score", SCORES)
def test_running_state_on_subsets_matches_reference(score: str) -> None:
    # what the runtime does: running sums per row, later members on shrinking subsets
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((3, 50, 5)) * 3).astype(np.float32)
    ref_s, ref_p = reference_scores(logits, score)
    st = ScoreState(score, 50, 5)
    st.add(None, logits[0])
    s, p = st.score(None, 1)
    np.testing.assert_allclose(s, ref_s[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(p, ref_p[0])
    rows = np.sort(rng.choice(50, 20, replace=False))
    st.add(rows, logits[1][rows])
    s, p = st.score(rows, 2)
    np.testing.assert_allclose(s, ref_s[1][rows], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(p, ref_p[1][rows])
    rows3 = rows[::2]
    st.add(rows3, logits[2][rows3])
    s, _ = st.score(rows3, 3)
    np.testing.assert_allclose(s, ref_s[2][rows3], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("score", SCORES)
def test_torch_runs_the_same_code(score: str) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    logits = (rng.standard_normal((2, 40, 6)) * 4).astype(np.float32)
    st_np = ScoreState(score, 40, 6)
    st_t = ScoreState(score, 40, 6, dtype=torch.float64, like=torch.zeros(1))
    rows_np = np.array([1, 5, 7, 30])
    for state, rows, lib in ((st_np, rows_np, np.asarray), (st_t, torch.from_numpy(rows_np), torch.from_numpy)):
        state.add(None, lib(logits[0]))
        state.add(rows, lib(logits[1][rows_np]))
    s_np, p_np = st_np.score(rows_np, 2)
    s_t, p_t = st_t.score(torch.from_numpy(rows_np), 2)
    np.testing.assert_allclose(s_t.numpy(), s_np, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(p_t.numpy(), p_np)
    # float32 sums (what CUDA uses) stay within float32 rounding of the float64 reference
    st32 = ScoreState(score, 40, 6, dtype=torch.float32, like=torch.zeros(1))
    st32.add(None, torch.from_numpy(logits[0]).half())  # fp16 logits are accepted
    s32, _ = st32.score(None, 1)
    ref, _ = reference_scores(logits[:1].astype(np.float16).astype(np.float32), score)
    np.testing.assert_allclose(s32.numpy(), ref[0], rtol=1e-5, atol=1e-5)


def test_member_statistics_match_scipy() -> None:
    z = np.random.default_rng(5).normal(size=(7, 4)) * 10
    st = member_statistics(z)
    np.testing.assert_allclose(st.probs, softmax(z, -1), rtol=1e-12)
    np.testing.assert_allclose(st.lse, logsumexp(z, -1), rtol=1e-12)
    np.testing.assert_array_equal(st.max_logit, z.max(-1))


def test_bounds_and_registry() -> None:
    assert get_score("msp").bounds(10) == (0.1, 1.0)
    lo, hi = get_score("neg_entropy").bounds(4)
    assert lo == pytest.approx(-np.log(4)) and hi == 0.0
    assert get_score("neg_energy").bounds(4) == (-np.inf, np.inf)
    rng = np.random.default_rng(6)
    for name in ("msp", "neg_entropy"):
        s = stage_scores(rng.normal(size=(2, 100, 4)) * 5, name)
        lo, hi = get_score(name).bounds(4)
        assert s.min() >= lo - 1e-12 and s.max() <= hi + 1e-12
    assert isinstance(get_score("msp"), Score) and get_score(get_score("msp")) is get_score("msp")


def test_predictions_and_errors() -> None:
    z = np.array([[[2.0, 0.0]], [[0.0, 5.0]]])
    _, preds = stage_outputs(z)
    assert preds[:, 0].tolist() == [0, 1]
    with pytest.raises(BadInputError, match="valid scores"):
        stage_scores(z, "entropy")
    with pytest.raises(BadInputError, match="valid scores"):
        ScoreState("entropy", 1, 2)
    with pytest.raises(BadInputError, match="shape"):
        stage_scores(z[0], "msp")
    with pytest.raises(BadInputError, match="NaN"):
        stage_scores(np.full((1, 2, 2), np.nan))


def test_import_is_light() -> None:
    # the runtime on an edge device has no scipy, matplotlib or torch: the core must not need them
    code = (
        "import sys, wcx.core, wcx.calibration, wcx.runtime.cascade;"
        "bad = [m for m in ('scipy', 'matplotlib', 'sklearn', 'torch') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
