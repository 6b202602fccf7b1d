"""Confidence scores of the stage-m ensembles (method.md section 2). numpy only.

Conventions:

* ``logits`` has shape ``(M, N, K)``: M members (stage 1 first), N inputs, K classes. Any
  floating dtype is accepted; everything is computed in float64.
* The stage-m ensemble averages *probabilities*: ``P_m = mean_{i<=m} softmax(z_i)``.
* Every score is oriented so that **higher = more confident**:

  ============== ===================================== ===========================
  name           stage-m score                         typical task
  ============== ===================================== ===========================
  ``msp``        ``max_k P_m[k]``                      selective classification
  ``neg_entropy``  ``sum_k P_m[k] log P_m[k]``         selective classification
  ``neg_energy`` ``mean_{i<=m} logsumexp(z_i)``        OOD detection
  ``max_logit``  ``mean_{i<=m} max_k z_i[k]``          OOD detection
  ============== ===================================== ===========================

The runtime keeps *running sums* per input (sum of softmax probabilities, sum of logsumexp, sum
of max logit); dividing them by the stage number m gives the three running means that
:func:`score_from_running` turns into the stage-m score. :func:`member_statistics` computes the
per-member quantities to add to those sums, so the offline simulator and the runtime share one
definition.

This module must stay numpy-only: the runtime imports it on machines without scipy.
"""

from __future__ import annotations

import numpy as np

from wcx.errors import BadInputError

SCORES: tuple[str, ...] = ("msp", "neg_entropy", "neg_energy", "max_logit")
#: default score per task (method.md section 2)
DEFAULT_SCORE: dict[str, str] = {"selective": "msp", "ood": "neg_energy"}


def check_score(score: str) -> str:
    """Return ``score`` if it is a known score name, else raise ``BadInputError`` listing them."""
    if score not in SCORES:
        raise BadInputError(f"unknown score {score!r}; valid scores: {', '.join(SCORES)}")
    return score


def _as_logits(logits: np.ndarray, ndim: int) -> np.ndarray:
    arr = np.asarray(logits, dtype=np.float64)
    if arr.ndim != ndim or arr.shape[-1] < 1 or (ndim == 3 and arr.shape[0] < 1):
        want = "(M, N, K)" if ndim == 3 else "(N, K)"
        raise BadInputError(f"logits must have shape {want}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise BadInputError("logits contain NaN or infinite values")
    return arr


def member_statistics(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-member quantities the running sums are made of, for logits ``(..., K)``.

    Returns ``(probs, lse, max_logit)`` in float64: the softmax ``(..., K)``, ``logsumexp``
    ``(...)`` and ``max_k z[k]`` ``(...)``. The softmax is computed as ``exp(z - lse)`` with the
    max subtracted first, so it is stable for any finite logits.

    >>> p, lse, mx = member_statistics(np.array([[0.0, 0.0]]))
    >>> p.tolist(), round(float(lse[0]), 6), mx.tolist()
    ([[0.5, 0.5]], 0.693147, [0.0])
    """
    z = np.asarray(logits, dtype=np.float64)
    mx = z.max(axis=-1)
    shifted = z - mx[..., None]
    lse_shifted = np.log(np.exp(shifted).sum(axis=-1))
    probs = np.exp(shifted - lse_shifted[..., None])
    return probs, mx + lse_shifted, mx


def _neg_entropy(probs: np.ndarray) -> np.ndarray:
    # 0 log 0 = 0; log of a positive probability is finite, so no clipping is needed.
    safe = np.where(probs > 0, probs, 1.0)
    return np.sum(np.where(probs > 0, probs * np.log(safe), 0.0), axis=-1)


def score_from_running(
    mean_probs: np.ndarray | None,
    mean_lse: np.ndarray | None,
    mean_max_logit: np.ndarray | None,
    score: str,
) -> np.ndarray:
    """Stage-m score from the running means of the first m members (the runtime's helper).

    ``mean_probs`` ``(N, K)`` is ``P_m`` (mean softmax), ``mean_lse`` ``(N,)`` the mean of the
    members' logsumexp and ``mean_max_logit`` ``(N,)`` the mean of their max logits. Only the
    argument the score needs must be given (``msp``/``neg_entropy``: ``mean_probs``;
    ``neg_energy``: ``mean_lse``; ``max_logit``: ``mean_max_logit``). Returns float64 ``(N,)``,
    higher = more confident.

    >>> score_from_running(np.array([[0.25, 0.75]]), None, None, "msp").tolist()
    [0.75]
    >>> score_from_running(None, np.array([2.0]), None, "neg_energy").tolist()
    [2.0]
    """
    check_score(score)
    if score in ("msp", "neg_entropy"):
        if mean_probs is None:
            raise ValueError(f"score {score!r} needs mean_probs")
        p = np.asarray(mean_probs, dtype=np.float64)
        return p.max(axis=-1) if score == "msp" else _neg_entropy(p)
    value = mean_lse if score == "neg_energy" else mean_max_logit
    if value is None:
        raise ValueError(f"score {score!r} needs {'mean_lse' if score == 'neg_energy' else 'mean_max_logit'}")
    return np.asarray(value, dtype=np.float64)


def stage_probs(logits: np.ndarray) -> np.ndarray:
    """Running-mean softmax ``P_m`` of every stage-m ensemble: ``(M, N, K)`` float64.

    ``stage_probs(logits)[m - 1]`` is the stage-m ensemble's probability vector.

    >>> z = np.array([[[0.0, 0.0]], [[0.0, np.log(3.0)]]])
    >>> np.round(stage_probs(z)[:, 0], 6).tolist()
    [[0.5, 0.5], [0.375, 0.625]]
    """
    z = _as_logits(logits, 3)
    probs, _, _ = member_statistics(z)
    counts = np.arange(1, z.shape[0] + 1, dtype=np.float64)[:, None, None]
    return np.cumsum(probs, axis=0) / counts


def stage_scores(logits: np.ndarray, score: str = "msp") -> np.ndarray:
    """Scores ``(M, N)`` float64 of every stage-m ensemble (row m-1 is stage m).

    >>> z = np.array([[[0.0, 0.0]], [[0.0, np.log(3.0)]]])
    >>> np.round(stage_scores(z, "msp"), 6).tolist()
    [[0.5], [0.625]]
    """
    return stage_outputs(logits, score)[0]


def stage_outputs(logits: np.ndarray, score: str = "msp") -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(M, N)`` float64 and predictions ``(M, N)`` int64 of every stage-m ensemble.

    The prediction is ``argmax_k P_m[k]`` (the first index on ties, as ``numpy.argmax``).
    """
    check_score(score)
    z = _as_logits(logits, 3)
    probs, lse, mx = member_statistics(z)
    counts = np.arange(1, z.shape[0] + 1, dtype=np.float64)[:, None]
    mean_probs = np.cumsum(probs, axis=0) / counts[..., None]
    preds = mean_probs.argmax(axis=-1)
    if score in ("msp", "neg_entropy"):
        scores = score_from_running(mean_probs, None, None, score)
    elif score == "neg_energy":
        scores = np.cumsum(lse, axis=0) / counts
    else:
        scores = np.cumsum(mx, axis=0) / counts
    return scores, preds
