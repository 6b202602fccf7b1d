"""Calibration targets: what a task's threshold controls and how quality is measured.

A :class:`Target` is one task's statistics (method.md sections 3 and 4), so that the calibrator,
the window search and the report have no task branches:

* :class:`SelectiveRisk` (task ``selective``): the selective risk (errors among accepted
  inputs) at the accept threshold is at most ``risk``; needs labels. Window search quality:
  coverage at the target risk.
* :class:`InDistributionTPR` (task ``ood``): the share of in-distribution inputs kept (score
  ``>= tau``) is at least ``tpr``; needs no labels, and OOD data only reports FPR and AUROC.
  Window search quality: agreement of the cascade's flags with the full ensemble's (label-free).

Both control a rate ``alpha`` (the risk, or ``1 - tpr``): Learn-then-Test certifies
``P(rate <= alpha) >= 1 - delta``. A new task is one module with a :class:`Target` subclass and a
:func:`register_target` call (or a ``wcx.targets`` entry point plus a ``wcx.tasks`` one for
processes that only run cascades).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from wcx.calibration.metrics import auroc, coverage_at_risk, coverage_at_risk_weighted, threshold_at_tpr
from wcx.calibration.risk_control import (
    ThresholdResult,
    check_fraction,
    fit_empirical_threshold,
    fit_threshold,
    fit_tpr_threshold,
)
from wcx.core.registry import Registry
from wcx.core.tasks import OOD, SELECTIVE, TASK_REGISTRY, Task
from wcx.errors import BadInputError


class Target(abc.ABC):
    """A task's calibration target (see the module docstring). ``value`` is what the user asks
    for (a risk, a TPR); ``alpha`` the rate Learn-then-Test controls."""

    task: ClassVar[Task]
    #: whether fitting needs class labels
    needs_labels: ClassVar[bool] = False
    #: what the window search's quality measures (axis label of the report's plot)
    quality_label: ClassVar[str] = "quality"
    #: the figures :meth:`ood_figures` returns (reported as null without OOD data)
    ood_figure_names: ClassVar[tuple[str, ...]] = ()
    #: a risk the report's risk-coverage plot marks (None: none to mark)
    risk_coverage_target: float | None = None

    def __init__(self, value: float) -> None:
        self.value = value

    @classmethod
    def from_settings(cls, *, risk: float, tpr: float) -> Target:
        """Build from the calibrator's settings; a target reads the one it needs (default:
        ``risk``)."""
        return cls(risk)

    @property
    @abc.abstractmethod
    def alpha(self) -> float:
        """The controlled rate (certified: ``P(rate <= alpha) >= 1 - delta``)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """E.g. ``"risk 0.05"``, for messages."""

    def errors(self, preds: np.ndarray, labels: np.ndarray | None) -> np.ndarray | None:
        """Per-input errors (same shape as ``preds``) the target counts, or None if it counts
        none (label-free targets)."""
        return None

    @abc.abstractmethod
    def stage_threshold(self, scores: np.ndarray, errors: np.ndarray | None) -> float:
        """The operating threshold of one stage's ensemble on fitting data (a window's centre)."""

    @abc.abstractmethod
    def fit_threshold(self, scores: np.ndarray, errors: np.ndarray | None, delta: float | None,
                      grid_size: int) -> ThresholdResult:
        """The accept threshold of the whole cascade (empirical, or certified with ``delta``)."""

    # -- the window search's quality ---------------------------------------------------------
    def reference(self, full_score: np.ndarray) -> Any:
        """What quality is measured against, from the full ensemble's scores (or None)."""
        return None

    @abc.abstractmethod
    def quality(self, score: np.ndarray, errors: np.ndarray | None, reference: Any) -> float:
        """A cascade's quality from its exit scores and errors (higher is better)."""

    @abc.abstractmethod
    def boot_quality(self, score: np.ndarray, errors: np.ndarray | None, reference: Any,
                     weights: np.ndarray) -> np.ndarray:
        """:meth:`quality` under each row of bootstrap ``weights`` (B, N): ``(B,)``."""

    # -- reports -----------------------------------------------------------------------------
    def result_fields(self, result: ThresholdResult) -> dict[str, Any]:
        """What this target adds to the calibration section and report."""
        return {}

    def baseline(self, score: np.ndarray, errors: np.ndarray | None) -> dict[str, Any]:
        """Figures of a baseline policy (first member, full ensemble) on the certifying data."""
        return {}

    @abc.abstractmethod
    def evaluate(self, score: np.ndarray, errors: np.ndarray | None, tau: float) -> dict[str, Any]:
        """Figures of the fitted cascade at ``tau`` on a test set (never re-fitted)."""

    def ood_figures(self, in_score: np.ndarray, ood_score: np.ndarray, tau: float) -> dict[str, Any]:
        """Figures from out-of-distribution inputs, when the task has a use for them."""
        return {}


class SelectiveRisk(Target):
    """Selective classification: selective risk at most ``risk`` (accept iff score >= tau)."""

    task = SELECTIVE
    needs_labels = True
    quality_label = "coverage at target risk"

    def __init__(self, risk: float = 0.05) -> None:
        super().__init__(check_fraction(risk, "risk"))
        self.risk_coverage_target = self.value

    @property
    def alpha(self) -> float:
        return self.value

    def describe(self) -> str:
        return f"risk {self.value:g}"

    def errors(self, preds: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        if labels is None:
            raise BadInputError("selective calibration needs class labels y (N,); none were given")
        wrong: np.ndarray = np.asarray(preds) != np.asarray(labels)  # (M, N) or (N,) against (N,) labels
        return wrong

    def stage_threshold(self, scores: np.ndarray, errors: np.ndarray | None) -> float:
        assert errors is not None
        return fit_empirical_threshold(scores, errors, self.value).tau

    def fit_threshold(self, scores: np.ndarray, errors: np.ndarray | None, delta: float | None,
                      grid_size: int) -> ThresholdResult:
        assert errors is not None
        return fit_threshold(scores, errors, self.value, delta, grid_size)

    def quality(self, score: np.ndarray, errors: np.ndarray | None, reference: Any) -> float:
        return coverage_at_risk(score, errors, self.value)  # type: ignore[arg-type]

    def boot_quality(self, score: np.ndarray, errors: np.ndarray | None, reference: Any,
                     weights: np.ndarray) -> np.ndarray:
        return coverage_at_risk_weighted(score, errors, self.value, weights)  # type: ignore[arg-type]

    def baseline(self, score: np.ndarray, errors: np.ndarray | None) -> dict[str, Any]:
        return {"coverage_at_risk": coverage_at_risk(score, errors, self.value)}  # type: ignore[arg-type]

    def evaluate(self, score: np.ndarray, errors: np.ndarray | None, tau: float) -> dict[str, Any]:
        assert errors is not None
        accept = score >= tau
        n, n_acc = score.size, int(accept.sum())
        risk = float(errors[accept].sum() / n_acc) if n_acc else 0.0
        return {"coverage": n_acc / n, "risk": risk, "accuracy": float(np.mean(~errors)),
                "violated": bool(risk > self.value)}


class InDistributionTPR(Target):
    """OOD detection: keep at least ``tpr`` of in-distribution inputs (flag iff score < tau)."""

    task = OOD
    quality_label = "flag agreement with ensemble"
    ood_figure_names = ("fpr", "auroc")

    def __init__(self, tpr: float = 0.95) -> None:
        super().__init__(check_fraction(tpr, "tpr"))

    @classmethod
    def from_settings(cls, *, risk: float, tpr: float) -> Target:
        return cls(tpr)

    @property
    def alpha(self) -> float:
        return 1.0 - self.value

    def describe(self) -> str:
        return f"TPR {self.value:g}"

    def stage_threshold(self, scores: np.ndarray, errors: np.ndarray | None) -> float:
        return threshold_at_tpr(scores, self.value)

    def fit_threshold(self, scores: np.ndarray, errors: np.ndarray | None, delta: float | None,
                      grid_size: int) -> ThresholdResult:
        return fit_tpr_threshold(scores, self.value, delta, grid_size)

    def reference(self, full_score: np.ndarray) -> np.ndarray:
        return full_score < threshold_at_tpr(full_score, self.value)

    def quality(self, score: np.ndarray, errors: np.ndarray | None, reference: Any) -> float:
        flags = score < threshold_at_tpr(score, self.value)
        return 1.0 - float(np.mean(flags != reference))

    def boot_quality(self, score: np.ndarray, errors: np.ndarray | None, reference: Any,
                     weights: np.ndarray) -> np.ndarray:
        # the flags stay those of the thresholds fitted on all the fitting data; only the
        # disagreement rate is resampled
        differs = (score < threshold_at_tpr(score, self.value)) != reference
        agreement: np.ndarray = 1.0 - (weights @ differs.astype(np.float64)) / weights.sum(axis=1)
        return agreement

    def result_fields(self, result: ThresholdResult) -> dict[str, Any]:
        bound = None if result.risk_upper_bound is None else 1.0 - result.risk_upper_bound
        return {"tpr_target": self.value, "tpr": result.coverage, "tpr_lower_bound": bound}

    def evaluate(self, score: np.ndarray, errors: np.ndarray | None, tau: float) -> dict[str, Any]:
        tpr = float(np.mean(score >= tau))
        return {"tpr": tpr, "violated": bool(tpr < self.value)}

    def ood_figures(self, in_score: np.ndarray, ood_score: np.ndarray, tau: float) -> dict[str, Any]:
        return {"fpr": float(np.mean(ood_score >= tau)), "auroc": auroc(in_score, ood_score)}


TARGET_REGISTRY: Registry[type[Target]] = Registry("task", "wcx.targets", lambda cls: cls.task.name)


def register_target(cls: type[Target], *, replace: bool = False) -> type[Target]:
    """Make a :class:`Target` subclass the calibration target of its task (and the task known
    to manifests and the runtime)."""
    if not (isinstance(cls, type) and issubclass(cls, Target)):
        raise TypeError(f"register_target takes a Target subclass, got {cls!r}")
    if cls.task.name not in TASK_REGISTRY or replace:
        TASK_REGISTRY.register(cls.task, replace=replace)
    return TARGET_REGISTRY.register(cls, replace=replace)


register_target(SelectiveRisk)
register_target(InDistributionTPR)


def make_target(task: str, *, risk: float = 0.05, tpr: float = 0.95) -> Target:
    """The target of ``task`` built from the calibrator's settings (``risk`` or ``tpr``)."""
    return TARGET_REGISTRY.get(task).from_settings(risk=risk, tpr=tpr)
