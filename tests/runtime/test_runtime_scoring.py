"""The runtime's incremental scores against a direct reference, and preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

from wcx.errors import BadInputError
from wcx.runtime.preprocess import Preprocessor
from wcx.runtime.scoring import SCORES, NumpyScoreState, TorchScoreState


def reference_scores(logits: np.ndarray, score: str) -> tuple[np.ndarray, np.ndarray]:
    """Stage scores (M, N) and predictions straight from the definitions (method.md table)."""
    z = logits.astype(np.float64)
    m_total = z.shape[0]
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    out_s, out_p = [], []
    for m in range(1, m_total + 1):
        p = probs[:m].mean(0)
        out_p.append(p.argmax(-1))
        if score == "msp":
            out_s.append(p.max(-1))
        elif score == "neg_entropy":
            out_s.append(np.array([sum(q * np.log(q) for q in row if q > 0) for row in p]))
        elif score == "neg_energy":
            out_s.append(np.log(np.exp(z[:m]).sum(-1)).mean(0))
        else:
            out_s.append(z[:m].max(-1).mean(0))
    return np.array(out_s), np.array(out_p)


@pytest.mark.parametrize("score", SCORES)
def test_numpy_state_matches_reference_on_subsets(score: str) -> None:
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((3, 50, 5)) * 3).astype(np.float32)
    ref_s, ref_p = reference_scores(logits, score)
    st = NumpyScoreState(50, 5, score)
    st.add(slice(None), logits[0])
    s, p = st.score(slice(None), 1)
    np.testing.assert_allclose(s, ref_s[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(p, ref_p[0])
    rows = np.sort(rng.choice(50, 20, replace=False))
    st.add(rows, logits[1][rows])
    s, p = st.score(rows, 2)
    np.testing.assert_allclose(s, ref_s[1][rows], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(p, ref_p[1][rows])
    rows3 = rows[::2]
    st.add(rows3, logits[2][rows3])
    s, p = st.score(rows3, 3)
    np.testing.assert_allclose(s, ref_s[2][rows3], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("score", SCORES)
def test_torch_state_matches_numpy(score: str) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    logits = (rng.standard_normal((2, 40, 6)) * 4).astype(np.float32)
    ref_s, ref_p = reference_scores(logits, score)
    st = TorchScoreState(40, 6, score, device="cpu", dtype=torch.float64)
    st.add(None, torch.from_numpy(logits[0]))
    s, p = st.score(None, 1)
    np.testing.assert_allclose(s.numpy(), ref_s[0], rtol=1e-12, atol=1e-12)
    rows = torch.tensor([1, 5, 7, 30])
    st.add(rows, torch.from_numpy(logits[1][rows.numpy()]).half())  # fp16 logits are accepted
    s, p = st.score(rows, 2)
    z = logits.copy()
    z[1] = z[1].astype(np.float16).astype(np.float32)
    ref_s, ref_p = reference_scores(z, score)
    np.testing.assert_allclose(s.numpy(), ref_s[1][rows.numpy()], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(p.numpy(), ref_p[1][rows.numpy()])


def test_scores_are_stable_for_huge_logits() -> None:
    st = NumpyScoreState(1, 3, "neg_energy")
    st.add(slice(None), np.array([[1000.0, 999.0, -1000.0]]))
    s, p = st.score(slice(None), 1)
    assert np.isfinite(s).all() and p[0] == 0
    assert s[0] == pytest.approx(1000.0 + np.log1p(np.exp(-1.0)))


def test_unknown_score_is_bad_input() -> None:
    with pytest.raises(BadInputError, match="valid scores"):
        NumpyScoreState(1, 2, "entropy")


def test_preprocess_uint8_and_float() -> None:
    p = Preprocessor([0.5, 0.25], [0.5, 0.25])
    u = np.full((2, 2, 3, 3), 255, dtype=np.uint8)
    f = np.ones((2, 2, 3, 3), dtype=np.float32)
    np.testing.assert_array_equal(p(u), p(f))
    out = p(f)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out[:, 0], 1.0)
    np.testing.assert_allclose(out[:, 1], 3.0)
    assert f[0, 0, 0, 0] == 1.0  # the input is not modified


def test_preprocess_torch_matches_numpy() -> None:
    torch = pytest.importorskip("torch")
    p = Preprocessor([0.3], [0.2])
    x = np.random.default_rng(0).integers(0, 256, (4, 1, 5, 5)).astype(np.uint8)
    np.testing.assert_allclose(p.torch(torch.from_numpy(x)).numpy(), p(x), rtol=1e-6, atol=1e-6)


def test_preprocess_refuses_bad_settings() -> None:
    with pytest.raises(BadInputError):
        Preprocessor([0.5], [0.0])
    with pytest.raises(BadInputError):
        Preprocessor([0.5, 0.5], [0.2])
    with pytest.raises(BadInputError, match="expected"):
        Preprocessor([0.5], [0.2])(np.zeros((1, 3, 2, 2), np.float32))
