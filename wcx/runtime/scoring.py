"""The runtime's incremental stage scores (method.md section 2), numpy and torch variants.

The executor keeps, per input, *running sums* over the members run so far:

* ``sum_probs`` (N, K): sum of the members' softmax probabilities (``P_m = sum_probs / m``),
* ``sum_stat`` (N,): sum of the members' ``logsumexp`` (score ``neg_energy``) or of their max
  logit (score ``max_logit``); absent for ``msp`` / ``neg_entropy``.

After stage m the score of a row is computed from its sums divided by m, so adding a member to a
subset of rows costs O(rows x K) and no stage is ever recomputed. Scores are oriented so that
higher = more confident:

============== ===================================== ==============================
``msp``        ``max_k P_m[k]``                      (selective classification)
``neg_entropy`` ``sum_k P_m[k] log P_m[k]`` (0 log 0 = 0)
``neg_energy`` ``mean_{i<=m} logsumexp(z_i)``        (OOD detection)
``max_logit``  ``mean_{i<=m} max_k z_i[k]``
============== ===================================== ==============================

The numpy state works in float64. The torch state works in the dtype it is given: float32 on
CUDA (method.md: float32 or better, even when the engine runs FP16), float64 on the CPU. The
prediction is ``argmax_k P_m[k]``.

The numpy state reuses the calibration's definitions (:mod:`wcx.calibration.scores`, numpy
only), so the runtime and the calibration simulator compute the very same numbers. This module
imports numpy only; torch is imported by :class:`TorchScoreState` when it is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wcx.calibration.scores import SCORES, check_score, member_statistics, score_from_running

__all__ = ["SCORES", "NumpyScoreState", "TorchScoreState", "check_score"]


class NumpyScoreState:
    """Running sums of one batch of ``n`` rows and ``k`` classes (float64).

    >>> st = NumpyScoreState(1, 2, "msp")
    >>> st.add(slice(None), np.array([[0.0, 0.0]], dtype=np.float32))
    >>> st.add(np.array([0]), np.array([[0.0, np.log(3.0)]]))
    >>> s, pred = st.score(slice(None), 2)
    >>> round(float(s[0]), 6), int(pred[0])
    (0.625, 1)
    """

    def __init__(self, n: int, k: int, score: str) -> None:
        self.score_name = check_score(score)
        self.sum_probs = np.zeros((n, k), dtype=np.float64)
        self.sum_stat = np.zeros(n, dtype=np.float64) if score in ("neg_energy", "max_logit") else None

    def add(self, rows: Any, logits: np.ndarray) -> None:
        """Add one member's ``logits`` (len(rows), K) to the sums of ``rows`` (indices or a slice)."""
        probs, lse, max_logit = member_statistics(logits)
        self.sum_probs[rows] += probs
        if self.score_name == "neg_energy":
            self.sum_stat[rows] += lse
        elif self.score_name == "max_logit":
            self.sum_stat[rows] += max_logit

    def probs(self, rows: Any, stage: int) -> np.ndarray:
        return self.sum_probs[rows] / stage

    def score(self, rows: Any, stage: int) -> tuple[np.ndarray, np.ndarray]:
        """Stage-``stage`` scores (float64) and predictions (int64) of ``rows``."""
        p = self.sum_probs[rows] / stage
        stat = None if self.sum_stat is None else self.sum_stat[rows] / stage
        s = score_from_running(p, stat, stat, self.score_name)
        return s, p.argmax(axis=1)


class TorchScoreState:
    """The same running sums as :class:`NumpyScoreState` as torch tensors on ``device``.

    ``rows`` is ``None`` (every row) or an int64 index tensor on the device.
    """

    def __init__(self, n: int, k: int, score: str, *, device: Any, dtype: Any = None) -> None:
        import torch

        self.torch = torch
        self.score_name = check_score(score)
        self.dtype = dtype if dtype is not None else torch.float32
        self.sum_probs = torch.zeros((n, k), dtype=self.dtype, device=device)
        self.sum_stat = (
            torch.zeros(n, dtype=self.dtype, device=device)
            if score in ("neg_energy", "max_logit")
            else None
        )

    def add(self, rows: Any, logits: Any) -> None:
        torch = self.torch
        z = logits.to(self.dtype)
        mx = z.amax(dim=1, keepdim=True)
        e = torch.exp(z - mx)
        total = e.sum(dim=1, keepdim=True)
        probs = e / total
        stat = None
        if self.score_name == "neg_energy":
            stat = (mx + torch.log(total))[:, 0]
        elif self.score_name == "max_logit":
            stat = mx[:, 0]
        if rows is None:
            self.sum_probs += probs
            if stat is not None:
                self.sum_stat += stat
        else:
            self.sum_probs.index_add_(0, rows, probs)
            if stat is not None:
                self.sum_stat.index_add_(0, rows, stat)

    def probs(self, rows: Any, stage: int) -> Any:
        p = self.sum_probs if rows is None else self.sum_probs.index_select(0, rows)
        return p / stage

    def score(self, rows: Any, stage: int) -> tuple[Any, Any]:
        torch = self.torch
        p = self.probs(rows, stage)
        best, pred = p.max(dim=1)
        if self.score_name == "msp":
            s = best
        elif self.score_name == "neg_entropy":
            s = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), 0.0).sum(1)
        else:
            stat = self.sum_stat if rows is None else self.sum_stat.index_select(0, rows)
            s = stat / stage
        return s, pred
