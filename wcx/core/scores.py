"""Confidence scores of the stage-m ensembles (method.md section 2), for numpy and torch.

Conventions:

* The stage-m ensemble averages *probabilities*: ``P_m = mean_{i<=m} softmax(z_i)``; its
  prediction is ``argmax_k P_m[k]`` (the first index on ties). That is the ``mean`` *combine*;
  with ``last`` a stage's output is its own member's alone (``P_m = softmax(z_m)``, and a score's
  per-member statistic is member m's): a confidence cascade of different models (Lebovitz et al.,
  TMLR 2023), for pools whose later members are much stronger than the first.
* Every score is oriented so that **higher = more confident**.
* A score is three things (a :class:`Score`): an optional *per-member statistic* (a number per
  input computed from one member's logits), its *running combination* (the mean over the members
  run so far, kept as a running sum by :class:`ScoreState`), and the *final score* computed from
  the mean probabilities ``P_m`` and that mean statistic.

  ================ ============================== ====================== ==========================
  name             stage-m score                  per-member statistic   range (K classes)
  ================ ============================== ====================== ==========================
  ``msp``          ``max_k P_m[k]``               none                   ``[1/K, 1]``
  ``neg_entropy``  ``sum_k P_m[k] log P_m[k]``    none                   ``[-log K, 0]``
  ``neg_energy``   ``mean_{i<=m} logsumexp(z_i)`` ``logsumexp(z_i)``     unbounded
  ``max_logit``    ``mean_{i<=m} max_k z_i[k]``   ``max_k z_i[k]``       unbounded
  ``agreement``    ``mean_{i<=m} v_i[argmax P_m]`` ``v_i``: one-hot of     ``[0, 1]``
                                                  ``argmax_k z_i[k]``
  ================ ============================== ====================== ==========================

One implementation serves the calibration's simulator (numpy, float64) and the runtime (numpy
float64 on the CPU, torch float32 on CUDA): the code is written against
:class:`~wcx.core.arrays.ArrayOps`. New scores register with :func:`register_score` (or the
``wcx.scores`` entry point group); :func:`get_score` finds them by name.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np

from wcx.core.arrays import Array, ArrayOps, numpy_ops, ops_for
from wcx.core.registry import Registry
from wcx.errors import BadInputError

#: default score per task (method.md section 2)
DEFAULT_SCORE: dict[str, str] = {"selective": "msp", "ood": "neg_energy"}

#: how stage m's probabilities come from the members run so far: ``mean`` of members 1..m (the
#: stage-m ensemble, the default) or the ``last`` member's own (module docstring)
COMBINES: tuple[str, ...] = ("mean", "last")


def check_combine(combine: str) -> str:
    """``combine`` if it is one of :data:`COMBINES`, else ``BadInputError`` listing them."""
    if combine not in COMBINES:
        raise BadInputError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")
    return combine


def check_combines(combines: Sequence[str]) -> list[str]:
    """The distinct ``combines`` in order (at least one, each in :data:`COMBINES`), else
    ``BadInputError``."""
    if not combines:
        raise BadInputError("combines: give at least one of " + ", ".join(COMBINES))
    return [check_combine(c) for c in dict.fromkeys(combines)]


class MemberStatistics(NamedTuple):
    """What one member's logits ``z`` (..., K) give: ``probs`` = softmax (..., K), ``lse`` =
    logsumexp (...), ``max_logit`` = max_k z[k] (...)."""

    probs: Array
    lse: Array
    max_logit: Array


def member_statistics(logits: Array, ops: ArrayOps | None = None) -> MemberStatistics:
    """Softmax, logsumexp and max logit of logits ``(..., K)``, in the logits' dtype.

    The softmax is ``exp(z - lse)`` with the max subtracted first, so it is stable for any finite
    logits.

    >>> st = member_statistics(np.array([[0.0, 0.0]]))
    >>> st.probs.tolist(), round(float(st.lse[0]), 6), st.max_logit.tolist()
    ([[0.5, 0.5]], 0.693147, [0.0])
    """
    ops = ops or ops_for(logits)
    mx = ops.max(logits, -1)
    shifted = logits - mx[..., None]
    lse_shifted = ops.log(ops.sum(ops.exp(shifted), -1))
    probs = ops.exp(shifted - lse_shifted[..., None])
    return MemberStatistics(probs, mx + lse_shifted, mx)


class Score(abc.ABC):
    """A confidence score of the stage-m ensemble (higher = more confident).

    Subclasses set ``name`` and implement :meth:`final`; a score that averages a per-member
    number (beyond the probabilities) also implements :meth:`member_statistic`.
    """

    name: ClassVar[str] = ""
    #: whether :meth:`member_statistic` is used (the running state keeps its sum only then)
    uses_statistic: ClassVar[bool] = False
    #: whether the per-member statistic has one number per class, shape (N, K), instead of (N,)
    statistic_per_class: ClassVar[bool] = False

    def member_statistic(self, stats: MemberStatistics) -> Array:
        """The per-member number this score averages, shape (N,) (or (N, K), see
        :attr:`statistic_per_class`)."""
        raise NotImplementedError(f"score {self.name!r} has no per-member statistic")

    @abc.abstractmethod
    def final(self, mean_probs: Array, mean_statistic: Array | None, ops: ArrayOps) -> Array:
        """The stage-m score (N,) from ``P_m`` (N, K) and the mean statistic (N,) (or (N, K))
        or None."""

    def bounds(self, num_classes: int) -> tuple[float, float]:
        """The interval every value of this score lies in for ``num_classes`` classes
        (``(-inf, inf)`` when unbounded); manifests with thresholds outside it are refused."""
        return -math.inf, math.inf

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MaxSoftmaxProbability(Score):
    name = "msp"

    def final(self, mean_probs: Array, mean_statistic: Array | None, ops: ArrayOps) -> Array:
        return ops.max(mean_probs, -1)

    def bounds(self, num_classes: int) -> tuple[float, float]:
        return 1.0 / num_classes, 1.0


class NegativeEntropy(Score):
    name = "neg_entropy"

    def final(self, mean_probs: Array, mean_statistic: Array | None, ops: ArrayOps) -> Array:
        # 0 log 0 = 0; the log of a positive probability is finite, so no clipping is needed
        positive = mean_probs > 0
        safe = ops.where(positive, mean_probs, 1.0)
        return ops.sum(ops.where(positive, mean_probs * ops.log(safe), 0.0), -1)

    def bounds(self, num_classes: int) -> tuple[float, float]:
        return -math.log(num_classes), 0.0


class MeanMemberStatistic(Score):
    """A score that is the mean over the members run so far of one per-member number."""

    uses_statistic = True

    def final(self, mean_probs: Array, mean_statistic: Array | None, ops: ArrayOps) -> Array:
        assert mean_statistic is not None
        return mean_statistic


class NegativeEnergy(MeanMemberStatistic):
    name = "neg_energy"

    def member_statistic(self, stats: MemberStatistics) -> Array:
        return stats.lse


class MaxLogit(MeanMemberStatistic):
    name = "max_logit"

    def member_statistic(self, stats: MemberStatistics) -> Array:
        return stats.max_logit


class Agreement(Score):
    """The share of the members run so far whose own top-1 class is the stage ensemble's
    prediction ``argmax P_m`` (a member's top-1: the first index on ties). 1 for every input at
    stage 1; from stage 2 on it is the committee's agreement that deferral on disagreement uses
    (ABC, Kolawole et al., TMLR 2025): at stage m it takes the values 0, 1/m, ..., 1, so many
    inputs tie (a threshold accepts or passes on all inputs of one value together)."""

    name = "agreement"
    uses_statistic = True
    statistic_per_class = True

    def member_statistic(self, stats: MemberStatistics) -> Array:
        ops = ops_for(stats.probs)
        top = ops.argmax(stats.probs, -1)
        classes = ops.arange(stats.probs.shape[-1], like=stats.probs)
        return ops.astype(classes[None, :] == top[:, None], stats.probs.dtype)  # one vote per member

    def final(self, mean_probs: Array, mean_statistic: Array | None, ops: ArrayOps) -> Array:
        assert mean_statistic is not None
        return ops.pick(mean_statistic, ops.argmax(mean_probs, -1))

    def bounds(self, num_classes: int) -> tuple[float, float]:
        return 0.0, 1.0


SCORE_REGISTRY: Registry[Score] = Registry("score", "wcx.scores", lambda s: s.name)
for _score in (MaxSoftmaxProbability(), NegativeEntropy(), NegativeEnergy(), MaxLogit(), Agreement()):
    SCORE_REGISTRY.register(_score)

#: the scores that ship with wcx (others may be registered)
SCORES: tuple[str, ...] = ("msp", "neg_entropy", "neg_energy", "max_logit", "agreement")


def register_score(score: Score, *, replace: bool = False) -> Score:
    """Make ``score`` available by its name everywhere (calibration, runtime, manifests, CLI)."""
    if not isinstance(score, Score):
        raise TypeError(f"register_score takes a Score instance, got {type(score).__name__}")
    return SCORE_REGISTRY.register(score, replace=replace)


def get_score(score: str | Score) -> Score:
    """The :class:`Score` called ``score`` (a Score is returned as it is)."""
    if isinstance(score, Score):
        return score
    if not isinstance(score, str):
        raise BadInputError(f"score must be a score name, got {score!r}")
    return SCORE_REGISTRY.get(score)


def check_score(score: str) -> str:
    """``score`` if it names a registered score, else ``BadInputError`` listing them."""
    return get_score(score).name


class ScoreState:
    """Running sums of one batch of ``n`` inputs over the members run so far.

    Keeps ``sum_probs`` (n, K) and, for a score with a per-member statistic, ``sum_statistic``
    (n,) or (n, K). After stage m a row's score comes from its sums divided by m, so adding a
    member to a subset of rows costs O(rows x K) and no stage is recomputed. With ``combine``
    ``last`` a member replaces the sums of its rows instead (divided by 1). ``dtype`` is the sums' dtype:
    float64 by default (numpy), float32 on CUDA (method.md: float32 or better even when the
    members run in FP16). ``like`` places torch sums on that tensor's device.

    >>> st = ScoreState("msp", n=1, k=2)
    >>> st.add(None, np.array([[0.0, 0.0]], dtype=np.float32))
    >>> st.add(np.array([0]), np.array([[0.0, np.log(3.0)]]))
    >>> s, pred = st.score(None, 2)
    >>> round(float(s[0]), 6), int(pred[0])
    (0.625, 1)
    """

    def __init__(
        self, score: str | Score, n: int, k: int, *, ops: ArrayOps | None = None, dtype: Any = None,
        like: Array | None = None, combine: str = "mean",
    ) -> None:
        self.score_fn = get_score(score)
        self.combine = check_combine(combine)
        self.ops = ops or (ops_for(like) if like is not None else numpy_ops())
        self.dtype = dtype if dtype is not None else self.ops.float64()
        self.sum_probs = self.ops.zeros((n, k), self.dtype, like)
        shape = (n, k) if self.score_fn.statistic_per_class else (n,)
        self.sum_statistic = self.ops.zeros(shape, self.dtype, like) if self.score_fn.uses_statistic else None

    def add(self, rows: Array | None, logits: Array) -> None:
        """Add one member's ``logits`` (len(rows), K) to the sums of ``rows`` (None: every row)."""
        z = self.ops.astype(logits, self.dtype)
        stats = member_statistics(z, self.ops)
        if self.combine == "last":  # this member's output replaces the earlier ones'
            self.ops.fill(self.sum_probs, rows, 0.0)
            if self.sum_statistic is not None:
                self.ops.fill(self.sum_statistic, rows, 0.0)
        self.ops.add_to(self.sum_probs, rows, stats.probs)
        if self.sum_statistic is not None:
            self.ops.add_to(self.sum_statistic, rows, self.score_fn.member_statistic(stats))

    def count(self, stage: int) -> int:
        """How many members the sums of a row at ``stage`` hold."""
        return stage if self.combine == "mean" else 1

    def exit_probs(self, exit_stage: Array) -> Array:
        """``P`` of every row at its own ``exit_stage`` (N,): the probabilities it exits with."""
        if self.combine == "last":
            return self.sum_probs / 1.0  # a copy: the sums stay the state's
        return self.sum_probs / self.ops.astype(exit_stage, self.dtype)[:, None]

    def mean_probs(self, rows: Array | None, stage: int) -> Array:
        """``P_stage`` of ``rows``: the mean probabilities after ``stage`` members (``last``:
        the stage's own member's)."""
        return self.ops.take(self.sum_probs, rows) / self.count(stage)

    def score(self, rows: Array | None, stage: int) -> tuple[Array, Array]:
        """Stage-``stage`` scores (the sums' dtype) and predictions (int64) of ``rows``."""
        p = self.mean_probs(rows, stage)
        stat = (None if self.sum_statistic is None
                else self.ops.take(self.sum_statistic, rows) / self.count(stage))
        return self.score_fn.final(p, stat, self.ops), self.ops.argmax(p, -1)


def _as_logits(logits: Array) -> np.ndarray:
    arr = np.asarray(logits, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[-1] < 1:
        raise BadInputError(f"logits must have shape (M, N, K), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise BadInputError("logits contain NaN or infinite values")
    return arr


def stage_outputs(logits: Array, score: str | Score = "msp", combine: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(M, N)`` float64 and predictions ``(M, N)`` int64 of every stage-m ensemble (or,
    ``combine`` ``last``, of every member alone), for cached logits ``(M, N, K)`` (row m-1 is
    stage m). The same running state as the runtime.

    >>> z = np.array([[[0.0, 0.0]], [[0.0, np.log(3.0)]]])
    >>> s, p = stage_outputs(z, "msp")
    >>> np.round(s, 6).tolist(), p.tolist()
    ([[0.5], [0.625]], [[0], [1]])
    """
    score_fn = get_score(score)
    z = _as_logits(logits)
    m_total, n, k = z.shape
    state = ScoreState(score_fn, n, k, combine=combine)
    scores = np.empty((m_total, n), dtype=np.float64)
    preds = np.empty((m_total, n), dtype=np.int64)
    for m in range(m_total):
        state.add(None, z[m])
        scores[m], preds[m] = state.score(None, m + 1)
    return scores, preds


def stage_scores(logits: Array, score: str | Score = "msp", combine: str = "mean") -> np.ndarray:
    """Scores ``(M, N)`` float64 of every stage-m ensemble (row m-1 is stage m)."""
    return stage_outputs(logits, score, combine)[0]


def stage_probs(logits: Array, combine: str = "mean") -> np.ndarray:
    """Mean probabilities ``P_m`` ``(M, N, K)`` float64 of every stage-m ensemble (``last``:
    each member's own).

    >>> z = np.array([[[0.0, 0.0]], [[0.0, np.log(3.0)]]])
    >>> np.round(stage_probs(z)[:, 0], 6).tolist()
    [[0.5, 0.5], [0.375, 0.625]]
    """
    z = _as_logits(logits)
    probs = member_statistics(z, numpy_ops()).probs
    if check_combine(combine) == "last":
        return np.asarray(probs)
    counts = np.arange(1, z.shape[0] + 1, dtype=np.float64)[:, None, None]
    return np.cumsum(probs, axis=0) / counts
