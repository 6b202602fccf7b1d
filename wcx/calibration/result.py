"""The outcome of a calibration: one frozen object from which the manifest sections and the
report are both derived.

:class:`CalibrationResult` holds the settings that were used, the fitted policy and accept
threshold, and what they do on the held-out data (pass fractions, cost, coverage, risk, the
certificate). :meth:`~CalibrationResult.policy_section` and
:meth:`~CalibrationResult.calibration_section` are the bundle's manifest sections;
:meth:`~CalibrationResult.report_dict` is the JSON of ``wcx calibrate --json``. The figures the
two share come from one place (:meth:`~CalibrationResult.figures`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wcx.calibration.risk_control import ThresholdResult
from wcx.calibration.targets import Target
from wcx.calibration.window import WindowSearch
from wcx.core.manifest import CalibrationSection, PolicySection, ReferenceRates
from wcx.core.policy import Policy, ThresholdPolicy, WindowPolicy, window_to_json
from wcx.core.provenance import Provenance
from wcx.errors import WorkFailedError
from wcx.json_values import json_safe

EXCHANGEABILITY_NOTE = (
    "Guarantees assume the held-out set and the deployment data are exchangeable (drawn alike); "
    "calibrate on data drawn like the deployment's."
)


@dataclass(frozen=True)
class CalibrationSettings:
    """What was asked: the target, score, policy kind, mode and search settings."""

    target: Target
    score: str
    policy: str
    delta: float | None
    eps: float
    n_boot: int
    seed: int
    fit_fraction: float
    cost: str
    combine: str = "mean"

    @property
    def mode(self) -> str:
        return "empirical" if self.delta is None else "guaranteed"

    @property
    def task(self) -> str:
        return self.target.task.name


@dataclass(frozen=True)
class CalibrationResult:
    """A fitted cascade and its figures on the held-out data.

    Coverage and risk are measured on the certifying part in guaranteed mode and on the whole
    held-out set in empirical mode. ``target_fields`` are the task's own figures (OOD: TPR and
    its bound), ``ood_figures`` what OOD data showed (FPR, AUROC), when given.
    """

    settings: CalibrationSettings
    n_members: int
    n_classes: int
    policy: Policy
    threshold: ThresholdResult
    search: WindowSearch | None
    pass_fraction: tuple[float, ...]
    member_costs: tuple[float, ...]
    member_macs: tuple[float, ...] | None
    expected_cost: float
    expected_macs: float | None
    n_fit: int
    n_certify: int
    baselines: Mapping[str, Any]
    target_fields: Mapping[str, Any] = field(default_factory=dict)
    ood_figures: Mapping[str, Any] = field(default_factory=dict)
    reference: ReferenceRates | None = None

    # -- what was fitted ---------------------------------------------------------------------
    @property
    def tau(self) -> float:
        return self.threshold.tau

    @property
    def windows(self) -> list[list[float | None]] | None:
        """The windows as in JSON (``[lo, hi]``, null = unbounded, ``[]`` = empty), or None."""
        return [window_to_json(w) for w in self.policy.windows] if isinstance(self.policy, WindowPolicy) else None

    @property
    def thresholds(self) -> list[float] | None:
        return list(self.policy.thresholds) if isinstance(self.policy, ThresholdPolicy) else None

    @property
    def stage_taus(self) -> list[float] | None:
        return None if self.search is None else list(self.search.stage_taus)

    @property
    def deployable(self) -> bool:
        """Certified (guaranteed mode), or a threshold found (empirical mode)."""
        if self.settings.delta is not None:
            return self.threshold.certified
        return math.isfinite(self.tau)

    def raise_if_failed(self) -> None:
        """``WorkFailedError`` (exit 1) when nothing deployable was fitted."""
        target = self.settings.target.describe()
        if self.settings.delta is not None and not self.threshold.certified:
            n_needed = self.threshold.n_needed
            need = (
                f"the observed error rate would need about {n_needed} accepted inputs"
                if n_needed is not None
                else "the observed error rate is at or above the target, so no sample size suffices"
            )
            raise WorkFailedError(
                f"no certificate: no threshold passes the test for {target} with delta "
                f"{self.settings.delta:g} on {self.n_certify} certifying inputs; {need}"
            )
        if not math.isfinite(self.tau):
            raise WorkFailedError(f"no threshold meets {target} on the held-out set")

    # -- derived forms -----------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        """The figures the manifest section and the report share."""
        s = self.settings
        return {
            "task": s.task,
            "score": s.score,
            "policy": self.policy.kind,
            "mode": s.mode,
            "delta": s.delta,
            "certified": self.threshold.certified,
            "risk_upper_bound": self.threshold.risk_upper_bound,
            "n_needed": self.threshold.n_needed,
            "seed": s.seed,
            "fit_fraction": s.fit_fraction if s.delta is not None else None,
            "n_fit": self.n_fit,
            "n_certify": self.n_certify,
            "coverage": self.threshold.coverage,
            "pass_fraction": list(self.pass_fraction),
            "expected_macs": self.expected_macs,
            "expected_cost": self.expected_cost,
            "cost": s.cost,
            "eps": s.eps,
            "n_boot": s.n_boot,
            "stage_taus": self.stage_taus,
            **self.target_fields,
        }

    def policy_section(self) -> PolicySection:
        """The manifest's policy section; ``WorkFailedError`` if nothing is deployable."""
        self.raise_if_failed()
        return PolicySection(policy=self.policy, score=self.settings.score, task=self.settings.task,
                             tau=float(self.tau), combine=self.settings.combine).check(
            n_stages=self.n_members, num_classes=self.n_classes)

    def calibration_section(self, provenance: Provenance) -> CalibrationSection:
        """The manifest's calibration section, recording what produced the logits.

        ``risk`` is the *target* rate (selective risk, or ``1 - tpr``); the rate measured at tau
        is ``measured_risk``.
        """
        f = json_safe(self.figures())
        known = {k: f.pop(k) for k in ("task", "score", "policy", "mode", "certified", "pass_fraction")}
        target_fields = {k: f.pop(k) for k in self.target_fields}
        return CalibrationSection(
            provenance=provenance, risk=self.settings.target.alpha, measured_risk=self.threshold.risk,
            task=known["task"], score=known["score"], policy=known["policy"], mode=known["mode"],
            certified=known["certified"], pass_fraction=tuple(known["pass_fraction"]),
            stage_taus=None if f["stage_taus"] is None else tuple(f.pop("stage_taus")),
            target_fields=target_fields, reference=self.reference,
            **{k: v for k, v in f.items() if k != "stage_taus"},
        )

    def report_dict(self, test: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The JSON of ``wcx calibrate --json``: the shared figures plus ``tau`` (null when
        none), ``windows``, ``thresholds``, ``target_risk``, ``risk`` (measured), the accepted
        count and errors, the baselines, the window search (chosen point, reference band,
        curve), ``test`` (the evaluation on a test set, or null) and the exchangeability note."""
        search = self.search
        d = self.figures()
        d.update(
            target_risk=self.settings.target.alpha,
            combine=self.settings.combine,
            tau=self.tau,
            windows=self.windows,
            thresholds=self.thresholds,
            risk=self.threshold.risk,
            n_accepted=self.threshold.n_accepted,
            errors=self.threshold.errors,
            baselines=dict(self.baselines),
            search=None if search is None else {
                "chosen": search.best.to_dict(),
                "reference": search.reference.to_dict(),
                "ensemble_quality": search.ensemble_quality,
                "single_quality": search.single_quality,
                "curve": [p.to_dict() for p in search.curve],
            },
            test=None if test is None else dict(test),
            reference=None if self.reference is None else self.reference.to_dict(),
            note=EXCHANGEABILITY_NOTE,
            **self.ood_figures,
        )
        return json_safe(d)  # type: ignore[no-any-return]
