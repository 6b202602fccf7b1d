"""Policy fitters: how each kind of exit policy is fitted on the window-fitting data.

A fitter turns the fitting part's stage scores and predictions into a
:class:`~wcx.core.policy.Policy` (method.md section 3, steps 2 and 3):

* :class:`WindowFitter`: quantile-band windows around the stages' operating thresholds, widths
  searched for the cheapest cascade within ``eps`` of the full ensemble (or fixed ``widths``);
* :class:`ThresholdFitter`: the single-threshold cascade at a pass-fraction budget (by default
  the budget of the window the search finds, so both compare at equal cost);
* :class:`FixedFitter`: the baselines that need no fitting, ``none`` (first member) and ``all``
  (full ensemble).

:func:`make_fitter` builds one from the calibrator's settings; a new policy kind that
calibration should fit is one class here plus its registration in :data:`FITTERS`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wcx.calibration.targets import Target
from wcx.calibration.window import WindowSearch, search_windows, thresholds_for_budget
from wcx.core.policy import AllPolicy, NonePolicy, Policy, WindowPolicy
from wcx.errors import BadInputError


@dataclass(frozen=True)
class FittedPolicy:
    """A fitted policy and, when windows were searched, the search (its curve and baselines)."""

    policy: Policy
    search: WindowSearch | None = None


@dataclass(frozen=True)
class SearchSettings:
    """How windows are searched (see :func:`wcx.calibration.window.search_windows`)."""

    eps: float
    width_grid: tuple[float, ...]
    widths: tuple[float, float] | None
    n_boot: int
    seed: int

    def search(self, scores: np.ndarray, preds: np.ndarray, labels: np.ndarray | None, target: Target,
               costs: np.ndarray) -> WindowSearch:
        return search_windows(scores, preds, labels if target.needs_labels else None, target=target,
                              member_costs=costs, eps=self.eps, width_grid=self.width_grid,
                              fixed_widths=self.widths, n_boot=self.n_boot, seed=self.seed)


class PolicyFitter(abc.ABC):
    """Fits one kind of policy on the fitting part of the held-out data."""

    kind: str = ""
    #: the fewest members the policy needs
    min_members: int = 1
    #: False for a policy fixed in advance: guaranteed mode then certifies tau on every held-out
    #: row instead of setting a window-fitting part aside
    uses_data: bool = True

    @abc.abstractmethod
    def fit(self, scores: np.ndarray, preds: np.ndarray, labels: np.ndarray | None, target: Target,
            costs: np.ndarray) -> FittedPolicy:
        """Fit on stage scores/predictions ``(M, N)``, labels ``(N,)`` (or None), member costs."""


class WindowFitter(PolicyFitter):
    kind = "window"
    min_members = 2

    def __init__(self, search: SearchSettings) -> None:
        self.settings = search

    def fit(self, scores: np.ndarray, preds: np.ndarray, labels: np.ndarray | None, target: Target,
            costs: np.ndarray) -> FittedPolicy:
        search = self.settings.search(scores, preds, labels, target, costs)
        return FittedPolicy(WindowPolicy(search.best.windows), search)


class ThresholdFitter(PolicyFitter):
    kind = "threshold"
    min_members = 2

    def __init__(self, search: SearchSettings, budget: float | Sequence[float] | None) -> None:
        self.settings = search
        self.budget = budget

    def fit(self, scores: np.ndarray, preds: np.ndarray, labels: np.ndarray | None, target: Target,
            costs: np.ndarray) -> FittedPolicy:
        search = None
        budget: Any = self.budget
        if budget is None:  # equal cost: the pass fractions of the window the search finds
            search = self.settings.search(scores, preds, labels, target, costs)
            budget = search.best.pass_fraction[1:]
        return FittedPolicy(thresholds_for_budget(scores, budget), search)


class FixedFitter(PolicyFitter):
    """A policy with nothing to fit (``none`` or ``all``)."""

    uses_data = False

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.kind = policy.kind

    def fit(self, scores: np.ndarray, preds: np.ndarray, labels: np.ndarray | None, target: Target,
            costs: np.ndarray) -> FittedPolicy:
        return FittedPolicy(self.policy)


#: policy kind -> fitter factory taking (search settings, budget)
FITTERS: dict[str, Callable[[SearchSettings, Any], PolicyFitter]] = {
    "window": lambda search, budget: WindowFitter(search),
    "threshold": lambda search, budget: ThresholdFitter(search, budget),
    "none": lambda search, budget: FixedFitter(NonePolicy()),
    "all": lambda search, budget: FixedFitter(AllPolicy()),
}


def make_fitter(kind: str, search: SearchSettings, budget: float | Sequence[float] | None = None) -> PolicyFitter:
    """The fitter of policy ``kind``; ``BadInputError`` listing the kinds calibration fits."""
    if kind not in FITTERS:
        raise BadInputError(f"unknown policy {kind!r}; valid policies: {', '.join(FITTERS)}")
    return FITTERS[kind](search, budget)
