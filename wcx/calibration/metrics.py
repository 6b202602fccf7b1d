"""Metrics of selective classification, OOD detection and calibration (method.md section 4).

Conventions shared by every function here:

* Scores are oriented *higher = more confident*; an input is **accepted** iff ``score >= tau``.
* ``errors`` is a boolean (or 0/1) array, True where the prediction is wrong.
* **Ties are grouped**: all inputs with one score are accepted (or rejected) together, so a
  risk-coverage curve has one point per *distinct* score.
* Risk and coverage are fractions in [0, 1]; multiply by 100 only when printing.
* OOD: **in-distribution is the positive class**; an input is *flagged* as OOD iff its score is
  below the threshold.

Every metric is tested against a hand-computed example and, where scikit-learn has it, against
scikit-learn (``tests/calibration``).
"""

from __future__ import annotations

import math

import numpy as np

from wcx.errors import BadInputError

# Risks are ratios of integers compared with a float target; compare "k / n <= r" as
# "k <= r * n" with this slack so that e.g. 1/20 <= 0.05 does not depend on rounding.
_SLACK = 1e-9


def _vec(x: np.ndarray, name: str, dtype: type = np.float64) -> np.ndarray:
    arr: np.ndarray = np.asarray(x, dtype=dtype)
    if arr.ndim != 1:
        raise BadInputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _pair(scores: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = _vec(scores, "scores")
    e = _vec(errors, "errors", bool)
    if s.shape != e.shape:
        raise BadInputError(f"scores {s.shape} and errors {e.shape} differ in length")
    if s.size == 0:
        raise BadInputError("empty scores")
    return s, e


def risk_coverage_curve(scores: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Risk-coverage curve with tied scores grouped.

    Sorts by score descending; for every distinct score ``t`` (threshold, accept iff
    ``score >= t``) returns the coverage ``#accepted / N`` and the selective risk
    ``#errors among accepted / #accepted``. Returns ``(coverage, risk, thresholds)``, one entry
    per distinct score, thresholds descending (so coverage ascending, ending at 1.0).

    >>> cov, risk, thr = risk_coverage_curve(np.array([0.9, 0.8, 0.8, 0.3]), np.array([0, 1, 0, 1]))
    >>> cov.tolist(), risk.tolist(), thr.tolist()
    ([0.25, 0.75, 1.0], [0.0, 0.3333333333333333, 0.5], [0.9, 0.8, 0.3])
    """
    s, e = _pair(scores, errors)
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    cum_err = np.cumsum(e[order])
    # last index of every group of equal scores
    ends = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))
    counts = ends + 1
    return counts / s.size, cum_err[ends] / counts, s_sorted[ends]


def aurc(scores: np.ndarray, errors: np.ndarray) -> float:
    """Area under the risk-coverage curve over coverage in [0, 1] (trapezoid rule).

    The curve is the grouped one of :func:`risk_coverage_curve`, extended to coverage 0 with the
    risk of its first point (the most confident group). A fraction; report x100 when printed.

    >>> round(aurc(np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 1, 0, 1])), 6)
    0.270833
    """
    cov, risk, _ = risk_coverage_curve(scores, errors)
    x = np.concatenate([[0.0], cov])
    y = np.concatenate([[risk[0]], risk])
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def coverage_at_risk(scores: np.ndarray, errors: np.ndarray, risk: float) -> float:
    """Largest coverage whose selective risk is ``<= risk`` (ties grouped); 0.0 if none.

    >>> coverage_at_risk(np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 1, 0, 1]), 0.4)
    0.75
    """
    cov, r, _ = risk_coverage_curve(scores, errors)
    ok = r <= risk + _SLACK
    return float(cov[ok].max()) if ok.any() else 0.0


def coverage_at_risk_weighted(scores: np.ndarray, errors: np.ndarray, risk: float, weights: np.ndarray) -> np.ndarray:
    """:func:`coverage_at_risk` under each row of ``weights`` (B, N): one coverage per row.

    Row ``b`` counts input ``i`` ``weights[b, i]`` times (non-negative; multinomial counts of a
    bootstrap resample make it equal :func:`coverage_at_risk` on that resample). Coverage is the
    accepted weight over the row's total weight; ties are grouped as in
    :func:`risk_coverage_curve`. Returns float64 ``(B,)``; 0.0 where no point meets ``risk``.

    >>> w = np.array([[1, 1, 1, 1], [2, 0, 1, 1]], dtype=float)
    >>> coverage_at_risk_weighted(np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 1, 0, 1]), 0.4, w).tolist()
    [0.75, 1.0]
    """
    s, e = _pair(scores, errors)
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[1] != s.size:
        raise BadInputError(f"weights must be (B, {s.size}), got {w.shape}")
    if w.dtype.kind not in "ui":  # integer counts (the bootstrap's) stay integers: exact and fast
        w = w.astype(np.float64)
    if w.dtype.kind != "u" and np.any(w < 0):
        raise BadInputError("weights must be non-negative")
    acc = np.int64 if w.dtype.kind in "ui" else np.float64
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    ends = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))
    accepted = np.cumsum(w[:, order], axis=1, dtype=acc)[:, ends]
    # errors are few: cumulate only their columns, then read each group end's running total
    err_pos = np.flatnonzero(e[order])
    wrong_cum = np.zeros((w.shape[0], err_pos.size + 1), dtype=acc)
    np.cumsum(w[:, order[err_pos]], axis=1, dtype=acc, out=wrong_cum[:, 1:])
    wrong = wrong_cum[:, np.searchsorted(err_pos, ends, side="right")]
    ok = wrong <= risk * accepted + _SLACK
    total = accepted[:, -1].astype(np.float64)
    best = np.where(ok, accepted, 0).max(axis=1).astype(np.float64)
    coverage: np.ndarray = np.divide(best, total, out=np.zeros_like(best), where=total > 0)
    return coverage


def risk_at_coverage(scores: np.ndarray, errors: np.ndarray, coverage: float) -> float:
    """Selective risk at the first curve point whose coverage is ``>= coverage``.

    With ties grouped, that point may cover more than asked. ``coverage`` in (0, 1].

    >>> risk_at_coverage(np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 1, 0, 1]), 0.5)
    0.5
    """
    if not 0.0 < coverage <= 1.0:
        raise BadInputError(f"coverage must be in (0, 1], got {coverage}")
    cov, r, _ = risk_coverage_curve(scores, errors)
    return float(r[np.argmax(cov >= coverage - _SLACK)])


def _average_ranks(x: np.ndarray) -> np.ndarray:
    # 1-based ranks, ties get the mean of their ranks (as scipy.stats.rankdata's "average").
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    mean_rank = upper - (counts - 1) / 2.0
    return mean_rank[inverse]


def auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """AUROC of separating in-distribution (positive) from OOD inputs by score.

    The probability that a random in-distribution input scores higher than a random OOD input,
    ties counting one half (Mann-Whitney U); equals ``sklearn.metrics.roc_auc_score`` with
    in-distribution labelled 1.

    >>> auroc(np.array([0.9, 0.5]), np.array([0.5, 0.1]))
    0.875
    """
    s_in = _vec(scores_in, "scores_in")
    s_out = _vec(scores_out, "scores_out")
    if s_in.size == 0 or s_out.size == 0:
        raise BadInputError("AUROC needs both in-distribution and OOD scores")
    ranks = _average_ranks(np.concatenate([s_in, s_out]))
    n_in, n_out = s_in.size, s_out.size
    u = ranks[:n_in].sum() - n_in * (n_in + 1) / 2.0
    return float(u / (n_in * n_out))


def threshold_at_tpr(scores_in: np.ndarray, tpr: float = 0.95) -> float:
    """Largest threshold ``t`` with ``mean(scores_in >= t) >= tpr`` (a score of the data).

    In-distribution inputs at or above ``t`` are kept (true positives); below are flagged.

    >>> threshold_at_tpr(np.array([0.1, 0.2, 0.3, 0.4]), 0.75)
    0.2
    """
    s_in = _vec(scores_in, "scores_in")
    if s_in.size == 0:
        raise BadInputError("empty in-distribution scores")
    if not 0.0 < tpr <= 1.0:
        raise BadInputError(f"tpr must be in (0, 1], got {tpr}")
    k = max(1, math.ceil(tpr * s_in.size - _SLACK))
    return float(np.sort(s_in)[::-1][k - 1])


def fpr_at_tpr(scores_in: np.ndarray, scores_out: np.ndarray, tpr: float = 0.95) -> float:
    """FPR@TPR (FPR@95 by default): fraction of OOD inputs scored ``>=`` the threshold that
    keeps ``tpr`` of the in-distribution (positive) inputs (:func:`threshold_at_tpr`).

    Equals ``fpr[i]`` of ``sklearn.metrics.roc_curve`` at the first ``i`` with
    ``tpr[i] >= tpr``.

    >>> fpr_at_tpr(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.15, 0.25, 0.05]), 0.75)
    0.3333333333333333
    """
    t = threshold_at_tpr(scores_in, tpr)
    s_out = _vec(scores_out, "scores_out")
    if s_out.size == 0:
        raise BadInputError("empty OOD scores")
    return float(np.mean(s_out >= t))


def _probs_labels(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(y)
    if p.ndim != 2 or labels.shape != (p.shape[0],):
        raise BadInputError(f"probs must be (N, K) and y (N,), got {p.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= p.shape[1]):
        raise BadInputError(f"labels must be in [0, {p.shape[1]}), got [{labels.min()}, {labels.max()}]")
    return p, labels.astype(np.int64)


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    """Fraction of inputs whose ``argmax`` class equals the label.

    >>> accuracy(np.array([[0.9, 0.1], [0.4, 0.6]]), np.array([0, 0]))
    0.5
    """
    p, labels = _probs_labels(probs, y)
    return float(np.mean(p.argmax(axis=1) == labels))


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood ``-mean log p[y]`` (natural log), ``p[y]`` clipped below
    at the smallest positive float64 so a zero probability gives a large finite value.

    >>> round(nll(np.array([[0.5, 0.5], [0.25, 0.75]]), np.array([0, 1])), 6)
    0.490415
    """
    p, labels = _probs_labels(probs, y)
    py = p[np.arange(p.shape[0]), labels]
    return float(-np.mean(np.log(np.maximum(py, np.finfo(np.float64).tiny))))


def ece(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error with ``n_bins`` equal-width confidence bins.

    Confidence = ``max_k p[k]``; bin b holds confidences in ``(b/n_bins, (b+1)/n_bins]`` (a
    confidence of exactly 0 goes to the first bin). ECE = ``sum_b |B_b|/N * |acc(B_b) -
    conf(B_b)|``; a fraction.

    >>> round(ece(np.array([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3]]), np.array([0, 1]), n_bins=2), 6)
    0.25
    """
    p, labels = _probs_labels(probs, y)
    if n_bins < 1:
        raise BadInputError(f"n_bins must be >= 1, got {n_bins}")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    gap = np.bincount(bins, weights=correct - conf, minlength=n_bins)
    return float(np.sum(np.abs(gap)) / conf.size)
