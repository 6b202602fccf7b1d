"""Exit policies and the cascade simulator on cached logits (method.md section 2).

A cascade of M members runs stage 1 on every input; at every non-final stage m < M it looks at
the stage-m ensemble's score ``s_m`` and either lets the input *exit* (it keeps ``P_m`` and
``s_m`` for good) or *continues* to stage m + 1:

* :class:`WindowPolicy` ``windows[m-1] = (lo, hi)``: continue iff ``lo <= s_m <= hi``. A window
  with ``lo > hi`` is empty (nothing continues).
* :class:`ThresholdPolicy` ``thresholds[m-1] = t``: continue iff ``s_m <= t`` (the older
  single-threshold cascade).
* :class:`NonePolicy`: everything exits at stage 1 (the first member alone).
* :class:`AllPolicy`: nothing exits early (the full ensemble).

The final decision accepts an input iff its exit score is ``>= tau``. Stages are 1-based in
every output (``exit_stage``), as in the method text.

This module is numpy-only (the runtime uses :func:`policy_from_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from wcx.calibration.scores import check_score, stage_outputs
from wcx.errors import BadInputError

POLICY_KINDS: tuple[str, ...] = ("window", "threshold", "none", "all")
TASKS: tuple[str, ...] = ("selective", "ood")


@dataclass(frozen=True)
class WindowPolicy:
    """Continue from stage m iff ``lo_m <= s_m <= hi_m``; one ``(lo, hi)`` per non-final stage."""

    windows: tuple[tuple[float, float], ...]
    kind: ClassVar[str] = "window"

    def __init__(self, windows: Sequence[Sequence[float]]) -> None:
        pairs = tuple((float(lo), float(hi)) for lo, hi in windows)
        if not pairs:
            raise BadInputError("a window policy needs one (lo, hi) window per non-final stage (M >= 2)")
        if any(math.isnan(v) for pair in pairs for v in pair):
            raise BadInputError("window bounds must not be NaN")
        object.__setattr__(self, "windows", pairs)

    @property
    def n_stages(self) -> int | None:
        return len(self.windows) + 1

    def continues(self, stage: int, scores: np.ndarray) -> np.ndarray:
        """Mask of inputs that continue from 1-based ``stage`` given their stage scores."""
        lo, hi = self.windows[stage - 1]
        return (scores >= lo) & (scores <= hi)


@dataclass(frozen=True)
class ThresholdPolicy:
    """Continue from stage m iff ``s_m <= t_m``; one threshold per non-final stage."""

    thresholds: tuple[float, ...]
    kind: ClassVar[str] = "threshold"

    def __init__(self, thresholds: Sequence[float]) -> None:
        ts = tuple(float(t) for t in thresholds)
        if not ts:
            raise BadInputError("a threshold policy needs one threshold per non-final stage (M >= 2)")
        if any(math.isnan(t) for t in ts):
            raise BadInputError("thresholds must not be NaN")
        object.__setattr__(self, "thresholds", ts)

    @property
    def n_stages(self) -> int | None:
        return len(self.thresholds) + 1

    def continues(self, stage: int, scores: np.ndarray) -> np.ndarray:
        return scores <= self.thresholds[stage - 1]


@dataclass(frozen=True)
class NonePolicy:
    """The first member alone: every input exits at stage 1 (any M >= 1)."""

    kind: ClassVar[str] = "none"

    @property
    def n_stages(self) -> int | None:
        return None

    def continues(self, stage: int, scores: np.ndarray) -> np.ndarray:
        return np.zeros(np.shape(scores), dtype=bool)


@dataclass(frozen=True)
class AllPolicy:
    """The full ensemble: every input runs every stage."""

    kind: ClassVar[str] = "all"

    @property
    def n_stages(self) -> int | None:
        return None

    def continues(self, stage: int, scores: np.ndarray) -> np.ndarray:
        return np.ones(np.shape(scores), dtype=bool)


Policy = WindowPolicy | ThresholdPolicy | NonePolicy | AllPolicy


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


def _check_stages(policy: Policy, m: int) -> None:
    want = policy.n_stages
    if want is not None and want != m:
        raise BadInputError(
            f"{policy.kind} policy is for {want} stages ({want - 1} windows/thresholds) but the logits have {m} members"
        )
    if m < 1:
        raise BadInputError("a cascade needs at least one member")
    if m == 1 and policy.kind != "none" and policy.kind != "all":
        raise BadInputError("a single member supports only the 'none' (or 'all') policy")


def route(scores: np.ndarray, policy: Policy) -> np.ndarray:
    """1-based exit stage ``(N,)`` of every input, given stage scores ``(M, N)``.

    >>> route(np.array([[0.2, 0.5, 0.9], [0.3, 0.6, 0.95]]), WindowPolicy([(0.4, 0.8)])).tolist()
    [1, 2, 1]
    """
    s = np.asarray(scores, dtype=np.float64)
    m_total, n = s.shape
    _check_stages(policy, m_total)
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
    logits: np.ndarray, policy: Policy, score: str = "msp", tau: float | None = None
) -> CascadeOutcome:
    """Simulate a cascade on cached logits ``(M, N, K)`` (any M >= 1; M >= 2 for window and
    threshold policies). See :class:`CascadeOutcome` for what it returns.

    >>> z = np.zeros((2, 3, 2)); z[:, 0, 0] = 5.0; z[1, 1, 1] = 3.0
    >>> out = simulate_cascade(z, WindowPolicy([(0.0, 0.9)]), "msp", tau=0.9)
    >>> out.exit_stage.tolist(), out.pass_fraction.tolist(), out.accept.tolist()
    ([1, 2, 2], [1.0, 0.6666666666666666], [True, False, False])
    """
    scores, preds = stage_outputs(logits, score)
    return simulate_from_stages(scores, preds, policy, tau)


# --------------------------------------------------------------------------------------------
# manifest round trip
# --------------------------------------------------------------------------------------------


def _num_or_none(x: float) -> float | None:
    # JSON has no infinities: an unbounded side of a window (or a threshold that passes
    # nothing) is written as null and read back as the matching infinity.
    return float(x) if math.isfinite(x) else None


def policy_to_dict(policy: Policy, *, task: str, score: str, tau: float) -> dict[str, Any]:
    """The manifest's ``"policy"`` section (JSON-ready).

    ``{"kind", "task", "score", "tau"}`` plus ``"windows": [[lo, hi], ...]`` (kind window) or
    ``"thresholds": [t, ...]`` (kind threshold), M - 1 entries. Infinite bounds become null:
    ``lo`` null means -inf, ``hi`` null +inf, a threshold null -inf (nothing continues).
    """
    if task not in TASKS:
        raise BadInputError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    check_score(score)
    if not math.isfinite(tau):
        raise BadInputError(f"tau must be finite to be deployed, got {tau}")
    d: dict[str, Any] = {"kind": policy.kind, "task": task, "score": score}
    if isinstance(policy, WindowPolicy):
        d["windows"] = [[_num_or_none(lo), _num_or_none(hi)] for lo, hi in policy.windows]
    elif isinstance(policy, ThresholdPolicy):
        d["thresholds"] = [_num_or_none(t) for t in policy.thresholds]
    d["tau"] = float(tau)
    return d


def policy_from_dict(d: dict[str, Any]) -> Policy:
    """Build the policy dataclass back from a manifest ``"policy"`` section.

    ``task``, ``score`` and ``tau`` stay in the dict (``d["tau"]``); see :func:`policy_to_dict`.

    >>> policy_from_dict({"kind": "window", "windows": [[0.4, None]], "tau": 0.9})
    WindowPolicy(windows=((0.4, inf),))
    """
    if not isinstance(d, dict) or "kind" not in d:
        raise BadInputError("policy must be a JSON object with a 'kind'")
    kind = d["kind"]
    try:
        if kind == "window":
            return WindowPolicy(
                [(-math.inf if lo is None else lo, math.inf if hi is None else hi) for lo, hi in d["windows"]]
            )
        if kind == "threshold":
            return ThresholdPolicy([-math.inf if t is None else t for t in d["thresholds"]])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BadInputError):
            raise
        raise BadInputError(f"malformed {kind} policy: {exc!r}") from exc
    if kind == "none":
        return NonePolicy()
    if kind == "all":
        return AllPolicy()
    raise BadInputError(f"unknown policy kind {kind!r}; valid kinds: {', '.join(POLICY_KINDS)}")
