"""The cascade simulator: what a policy does to every input, from cached logits.

Calibration fits and measures cascades without running them: the stage-m scores and
predictions of every input are computed once from cached logits
(:func:`wcx.core.scores.stage_outputs`, the same running state the runtime uses), then
:func:`route` applies a :class:`~wcx.core.policy.Policy` (the same objects the runtime runs) to
find each input's exit stage. Stages are 1-based in every output (``exit_stage``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from wcx.core.policy import Policy
from wcx.core.scores import Score, stage_outputs
from wcx.errors import BadInputError


@dataclass
class CascadeOutcome:
    """What the cascade does to every input (all arrays are per input, length N).

    ``exit_stage`` is 1-based; ``pred`` and ``score`` are the stage-``exit_stage`` ensemble's
    prediction and score; ``pass_fraction[m-1]`` is the fraction of *all* inputs that reach
    stage m (the first is 1.0); ``accept`` is ``score >= tau`` when a ``tau`` was given.
    """

    exit_stage: np.ndarray
    pred: np.ndarray
    score: np.ndarray
    pass_fraction: np.ndarray
    tau: float | None = None
    accept: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        if self.tau is not None and self.accept is None:
            self.accept = self.score >= self.tau

    def accepted(self, tau: float) -> np.ndarray:
        """Accept decision ``score >= tau`` for another ``tau``."""
        return self.score >= tau

    def expected_cost(self, member_costs: Sequence[float] | np.ndarray) -> float:
        """``sum_m pass_fraction[m] * C_m`` per input, for per-member costs ``C_m`` (MACs, s)."""
        return expected_cost(self.pass_fraction, member_costs)


def expected_cost(pass_fraction: np.ndarray, member_costs: Sequence[float] | np.ndarray) -> float:
    """Expected per-input cost ``sum_m pass_fraction[m] * C_m``.

    >>> expected_cost(np.array([1.0, 0.2]), [10.0, 10.0])
    12.0
    """
    costs = np.asarray(member_costs, dtype=np.float64)
    pf = np.asarray(pass_fraction, dtype=np.float64)
    if costs.shape != pf.shape:
        raise BadInputError(f"need one cost per member: {pf.size} stages, {costs.size} costs")
    return float(np.dot(pf, costs))


def route(scores: np.ndarray, policy: Policy) -> np.ndarray:
    """1-based exit stage ``(N,)`` of every input, given stage scores ``(M, N)``.

    >>> from wcx.core.policy import WindowPolicy
    >>> route(np.array([[0.2, 0.5, 0.9], [0.3, 0.6, 0.95]]), WindowPolicy([(0.4, 0.8)])).tolist()
    [1, 2, 1]
    """
    s = np.asarray(scores, dtype=np.float64)
    m_total, n = s.shape
    policy.check_stages(m_total)
    exit_stage = np.full(n, m_total, dtype=np.int64)
    active = np.ones(n, dtype=bool)
    for m in range(1, m_total):
        leaving = active & ~policy.continues(m, s[m - 1])
        exit_stage[leaving] = m
        active &= ~leaving
    return exit_stage


def simulate_from_stages(
    scores: np.ndarray, preds: np.ndarray, policy: Policy, tau: float | None = None
) -> CascadeOutcome:
    """Cascade outcome from precomputed stage scores and predictions, both ``(M, N)``.

    Use this when simulating many policies on one set of logits (the window search).
    """
    s = np.asarray(scores, dtype=np.float64)
    exit_stage = route(s, policy)
    m_total, n = s.shape
    reach = np.bincount(exit_stage - 1, minlength=m_total)[::-1].cumsum()[::-1]
    p = np.asarray(preds)
    # pick row exit_stage - 1 of every column; a chain of np.where is several times faster
    # than fancy indexing for the few stages a cascade has
    score, pred = s[-1], p[-1]
    for m in range(m_total - 1, 0, -1):
        here = exit_stage == m
        score, pred = np.where(here, s[m - 1], score), np.where(here, p[m - 1], pred)
    return CascadeOutcome(
        exit_stage=exit_stage,
        pred=pred,
        score=score,
        pass_fraction=reach / n,
        tau=tau,
    )


def simulate_cascade(
    logits: np.ndarray, policy: Policy, score: str | Score = "msp", tau: float | None = None, combine: str = "mean"
) -> CascadeOutcome:
    """Simulate a cascade on cached logits ``(M, N, K)`` (any M >= 1; M >= 2 for window and
    threshold policies). See :class:`CascadeOutcome` for what it returns. ``combine``: how a stage's
    output comes from its members (:data:`wcx.core.scores.COMBINES`).

    >>> from wcx.core.policy import WindowPolicy
    >>> z = np.zeros((2, 3, 2)); z[:, 0, 0] = 5.0; z[1, 1, 1] = 3.0
    >>> out = simulate_cascade(z, WindowPolicy([(0.0, 0.9)]), "msp", tau=0.9)
    >>> out.exit_stage.tolist(), out.pass_fraction.tolist(), out.accept.tolist()
    ([1, 2, 2], [1.0, 0.6666666666666666], [True, False, False])
    """
    scores, preds = stage_outputs(logits, score, combine)
    return simulate_from_stages(scores, preds, policy, tau)
