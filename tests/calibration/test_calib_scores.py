"""Scores of the stage-m ensembles: hand-computed values, stability, the running-sum helper."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from wcx.calibration.scores import (
    SCORES,
    member_statistics,
    score_from_running,
    stage_outputs,
    stage_probs,
    stage_scores,
)
from wcx.errors import BadInputError


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
    }[score]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_extreme_logits_are_stable() -> None:
    z = np.array([[[1000.0, -1000.0, 0.0]], [[-5000.0, 5000.0, 0.0]]])
    for score in SCORES:
        assert np.all(np.isfinite(stage_scores(z, score)))
    np.testing.assert_allclose(stage_probs(z)[1, 0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(stage_scores(z, "neg_entropy")[0, 0], 0.0, atol=1e-300)


@pytest.mark.parametrize("score", SCORES)
def test_running_helper_matches_offline(score: str) -> None:
    # what the runtime does: keep running sums per input, divide by m, score
    rng = np.random.default_rng(1)
    z = rng.normal(scale=3.0, size=(4, 20, 5))
    offline = stage_scores(z, score)
    sums = [np.zeros((20, 5)), np.zeros(20), np.zeros(20)]
    for m in range(4):
        for acc, part in zip(sums, member_statistics(z[m]), strict=True):
            acc += part
        online = score_from_running(sums[0] / (m + 1), sums[1] / (m + 1), sums[2] / (m + 1), score)
        np.testing.assert_allclose(online, offline[m], rtol=1e-12)


def test_predictions_and_errors() -> None:
    z = np.array([[[2.0, 0.0]], [[0.0, 5.0]]])
    _, preds = stage_outputs(z)
    assert preds[:, 0].tolist() == [0, 1]
    with pytest.raises(BadInputError, match="valid scores"):
        stage_scores(z, "entropy")
    with pytest.raises(BadInputError, match="shape"):
        stage_scores(z[0], "msp")
    with pytest.raises(BadInputError, match="NaN"):
        stage_scores(np.full((1, 2, 2), np.nan))
    with pytest.raises(ValueError, match="mean_probs"):
        score_from_running(None, None, None, "msp")


def test_import_is_light() -> None:
    # the GPU machine lacks scipy and matplotlib: the runtime's imports must not need them
    code = (
        "import sys, wcx.calibration, wcx.calibration.scores, wcx.calibration.policy;"
        "bad = [m for m in ('scipy', 'matplotlib', 'sklearn', 'torch') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
