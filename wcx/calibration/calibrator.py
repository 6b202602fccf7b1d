"""``CascadeCalibrator``: fit windows (or thresholds) and the final tau of a cascade on cached
held-out logits (method.md section 3), in the scikit-learn spirit.

Example (empirical mode, synthetic logits)::

    cal = CascadeCalibrator(task="selective", risk=0.05).fit(logits, y, member_costs=macs)
    cal.tau_, cal.windows_, cal.pass_fraction_, cal.coverage_
    test = cal.evaluate(test_logits, test_y)          # never re-fits
    report = cal.report_dict(test=test)               # the JSON of ``wcx calibrate --json``
    cal.result_.policy_section(), cal.result_.calibration_section(provenance)   # manifest sections

Modes: ``delta=None`` is *empirical* (windows and tau fitted on the whole held-out set);
``delta`` in (0, 1) is *guaranteed*: the held-out set is split once at random (``seed``) into a
part that fits the windows and the stage thresholds (``fit_fraction``, default 30%) and a part
that certifies tau with Learn-then-Test (the rest), so labels that chose the windows never
certify tau. When no threshold can be certified, ``fit`` still returns (``certified_`` False,
``n_needed_`` set) so the report can be written; :meth:`raise_if_failed` then raises
``WorkFailedError`` (exit 1), and :meth:`to_policy_dict` refuses to produce a deployable policy.

``fit`` only orchestrates: the task's :class:`~wcx.calibration.targets.Target` (its threshold,
errors and quality), the policy's :class:`~wcx.calibration.fitters.PolicyFitter`, and the frozen
:class:`~wcx.calibration.result.CalibrationResult` (``result_``) from which every fitted
attribute, the manifest sections and the report are read. Every guarantee assumes the held-out
set and the deployment data are exchangeable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from wcx.calibration.fitters import FITTERS, SearchSettings, make_fitter
from wcx.calibration.reference import measure_reference
from wcx.calibration.result import EXCHANGEABILITY_NOTE, CalibrationResult, CalibrationSettings
from wcx.calibration.risk_control import DEFAULT_GRID_SIZE, ThresholdResult, check_fraction, min_certify_size
from wcx.calibration.simulator import CascadeOutcome, expected_cost, simulate_from_stages
from wcx.calibration.targets import Target, make_target
from wcx.calibration.window import DEFAULT_N_BOOT, DEFAULT_WIDTH_GRID, WindowSearch
from wcx.core.policy import AllPolicy, NonePolicy, Policy
from wcx.core.provenance import Provenance
from wcx.core.scores import check_combine, get_score, stage_outputs
from wcx.core.tasks import get_task
from wcx.errors import BadInputError, InsufficientDataError, NotFittedError
from wcx.json_values import json_safe

COSTS: tuple[str, ...] = ("macs", "latency")

__all__ = ["COSTS", "EXCHANGEABILITY_NOTE", "CascadeCalibrator", "json_safe"]


class CascadeCalibrator:
    """Fits a cascade's exit policy and final threshold for a risk (or TPR) target.

    Parameters:
        task: ``"selective"`` (accept iff score >= tau; target = selective risk ``risk``) or
            ``"ood"`` (flag iff score < tau; target = in-distribution TPR ``tpr``; no labels),
            or a task registered with :func:`wcx.calibration.targets.register_target`.
        score: a registered score name (:mod:`wcx.core.scores`); default: the task's (``msp``
            for selective, ``neg_energy`` for ood).
        risk: target selective risk in (0, 1) (selective).
        tpr: target in-distribution TPR in (0, 1) (ood); its "risk" is ``1 - tpr``.
        delta: None for empirical mode, else the failure probability in (0, 1) of the
            Learn-then-Test guarantee.
        eps: tolerated shortfall of the cascade's quality behind the full ensemble in the width
            search (selective: coverage at the target risk, 0.005 = 0.5 points).
        policy: ``"window"`` (default), ``"threshold"`` (older single-threshold cascade),
            ``"none"`` (first member) or ``"all"`` (full ensemble).
        widths: fix the window widths ``(w_lo, w_hi)`` at every stage instead of searching
            (``(0.1, 0.1)`` is the reference method's band).
        budget: threshold policy only: target pass fraction(s) of the later stages (see
            :func:`wcx.calibration.window.thresholds_for_budget`); default: the pass fractions of
            the window the search finds, so both policies compare at equal budget.
        fit_fraction: guaranteed mode: fraction of the held-out set that fits windows and stage
            thresholds (the rest certifies tau).
        seed: seed of that random split (recorded).
        cost: what ``member_costs`` are: ``"macs"`` (default) or ``"latency"`` (seconds per
            input); the search minimises their expectation.
        width_grid: widths searched (quantile levels, each of w_lo and w_hi).
        grid_size: most candidate taus in Learn-then-Test.
        n_boot: bootstrap resamples of the fitting data that measure each searched cascade's
            gap to the full ensemble; a cascade is feasible iff ``gap + its standard deviation
            <= eps`` (0: plain ``gap <= eps``; see :mod:`wcx.calibration.window`). Seeded by
            ``seed``.
        combine: ``mean`` (stage m's output is the mean of members 1..m, the stage-m ensemble)
            or ``last`` (its own member's alone: a confidence cascade of different models);
            :data:`wcx.core.scores.COMBINES`. With ``last`` the full-ensemble reference of the
            window search is the last member on every input.
    """

    def __init__(
        self,
        task: str = "selective",
        score: str | None = None,
        risk: float = 0.05,
        tpr: float = 0.95,
        delta: float | None = None,
        eps: float = 0.005,
        policy: str = "window",
        widths: tuple[float, float] | None = None,
        budget: float | Sequence[float] | None = None,
        fit_fraction: float = 0.3,
        seed: int = 0,
        cost: str = "macs",
        width_grid: Sequence[float] = DEFAULT_WIDTH_GRID,
        grid_size: int = DEFAULT_GRID_SIZE,
        n_boot: int = DEFAULT_N_BOOT,
        combine: str = "mean",
    ) -> None:
        # Names given as strings are resolved here, once, with errors that list the valid ones.
        self.task = get_task(task).name
        self.score = get_score(get_task(task).default_score if score is None else score).name
        self.combine = check_combine(combine)
        if policy not in FITTERS:
            raise BadInputError(f"unknown policy {policy!r}; valid policies: {', '.join(FITTERS)}")
        if cost not in COSTS:
            raise BadInputError(f"unknown cost {cost!r}; valid costs: {', '.join(COSTS)}")
        self.risk = check_fraction(risk, "risk")
        self.tpr = check_fraction(tpr, "tpr")
        self.target: Target = make_target(self.task, risk=self.risk, tpr=self.tpr)
        self.delta = None if delta is None else check_fraction(delta, "delta")
        if not (isinstance(eps, (int, float)) and 0.0 <= eps < 1.0):
            raise BadInputError(f"eps must be in [0, 1), got {eps!r}")
        self.eps = float(eps)
        self.policy = policy
        if widths is not None:
            if len(widths) != 2 or any(not (0.0 <= float(w) <= 1.0) for w in widths):
                raise BadInputError(f"widths must be (w_lo, w_hi) in [0, 1], got {widths!r}")
            widths = (float(widths[0]), float(widths[1]))
        self.widths = widths
        if budget is not None and any(not 0.0 <= float(b) <= 1.0 for b in np.atleast_1d(budget)):
            raise BadInputError(f"budget must be in [0, 1], got {budget!r}")
        self.budget = budget
        self.fit_fraction = check_fraction(fit_fraction, "fit_fraction")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise BadInputError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self.cost = cost
        if not width_grid or any(float(w) < 0 for w in width_grid):
            raise BadInputError(f"width_grid must be non-empty with widths >= 0, got {width_grid!r}")
        self.width_grid = tuple(float(w) for w in width_grid)
        if int(grid_size) < 2:
            raise BadInputError(f"grid_size must be >= 2, got {grid_size!r}")
        self.grid_size = int(grid_size)
        if not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
            raise BadInputError(f"n_boot must be a non-negative integer, got {n_boot!r}")
        self.n_boot = int(n_boot)
        self.fitter = make_fitter(policy, SearchSettings(self.eps, self.width_grid, self.widths, self.n_boot,
                                                         self.seed), self.budget)

    # ----------------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return "empirical" if self.delta is None else "guaranteed"

    def _settings(self) -> CalibrationSettings:
        return CalibrationSettings(target=self.target, score=self.score, policy=self.policy, delta=self.delta,
                                   eps=self.eps, n_boot=self.n_boot, seed=self.seed,
                                   fit_fraction=self.fit_fraction, cost=self.cost, combine=self.combine)

    @property
    def result_(self) -> CalibrationResult:
        """The fitted :class:`~wcx.calibration.result.CalibrationResult`."""
        try:
            return self.__dict__["_result"]  # type: ignore[no-any-return]
        except KeyError:
            raise NotFittedError("this CascadeCalibrator is not fitted yet: call fit(logits, y) first") from None

    def _labels(self, y: Any, n: int, k: int) -> np.ndarray | None:
        if y is None:
            if self.target.needs_labels:
                raise BadInputError(f"{self.task} calibration needs class labels y (N,); none were given")
            return None
        labels = np.asarray(y)
        if labels.shape != (n,):
            raise BadInputError(f"labels must have shape ({n},) to match the logits, got {labels.shape}")
        if labels.dtype.kind == "f":
            if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
                raise BadInputError("labels must be integer class indices")
        elif labels.dtype.kind not in "iub":
            raise BadInputError(f"labels must be integer class indices, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)
        if n and (labels.min() < 0 or labels.max() >= k):
            raise BadInputError(f"labels must be in [0, {k}), got values in [{labels.min()}, {labels.max()}]")
        return labels

    @staticmethod
    def _costs(member_costs: Any, m: int, name: str) -> np.ndarray:
        c = np.asarray(member_costs, dtype=np.float64)
        if c.shape != (m,):
            raise BadInputError(f"{name} needs one value per member ({m}), got shape {c.shape}")
        if not np.all(np.isfinite(c)) or np.any(c < 0):
            raise BadInputError(f"{name} must be finite and >= 0, got {c.tolist()}")
        return c

    # ----------------------------------------------------------------------------------------
    def fit(
        self,
        logits: np.ndarray,
        y: np.ndarray | None = None,
        member_costs: Sequence[float] | np.ndarray | None = None,
        *,
        member_macs: Sequence[float] | np.ndarray | None = None,
        ood_logits: np.ndarray | None = None,
    ) -> CascadeCalibrator:
        """Fit on held-out logits ``(M, N, K)`` and labels ``y`` ``(N,)`` (selective).

        ``member_costs`` prices the stages for the width search (MACs or latency per
        ``cost``; default 1 per member, i.e. expected members run). ``member_macs`` gives
        ``expected_macs`` in the report (defaults to ``member_costs`` when ``cost="macs"``).
        ``ood_logits`` ``(M, N_ood, K)`` (ood task) are used only to report FPR and AUROC.
        Returns ``self``.
        """
        scores, preds = stage_outputs(logits, self.score, self.combine)
        m_total, n = scores.shape
        k = int(np.shape(logits)[-1])
        labels = self._labels(y, n, k)
        costs = self._costs(np.ones(m_total) if member_costs is None else member_costs, m_total, "member_costs")
        if member_macs is not None:
            macs: np.ndarray | None = self._costs(member_macs, m_total, "member_macs")
        else:
            macs = costs if (self.cost == "macs" and member_costs is not None) else None
        if m_total < self.fitter.min_members:
            raise BadInputError(f"the {self.policy} policy needs at least {self.fitter.min_members} members, "
                                f"got {m_total}")
        if n < 2:
            raise BadInputError(f"need at least 2 held-out inputs, got {n}")

        fit_idx, cert_idx = self._split(n)
        fitted = self.fitter.fit(scores[:, fit_idx], preds[:, fit_idx],
                                 None if labels is None else labels[fit_idx], self.target, costs)
        cs, cp = scores[:, cert_idx], preds[:, cert_idx]
        cert_labels = None if labels is None else labels[cert_idx]
        outcome = simulate_from_stages(cs, cp, fitted.policy)
        errors = self.target.errors(outcome.pred, cert_labels)
        threshold: ThresholdResult = self.target.fit_threshold(outcome.score, errors, self.delta, self.grid_size)
        ood_figures: dict[str, Any] = dict.fromkeys(self.target.ood_figure_names)
        if ood_logits is not None and self.target.ood_figure_names:
            ood = self._simulate(ood_logits, fitted.policy, m_total, k)
            ood_figures = self.target.ood_figures(outcome.score, ood.score, threshold.tau)
        self._result = CalibrationResult(
            settings=self._settings(),
            n_members=m_total,
            n_classes=k,
            policy=fitted.policy,
            threshold=threshold,
            search=fitted.search,
            pass_fraction=tuple(float(p) for p in outcome.pass_fraction),
            member_costs=tuple(float(c) for c in costs),
            member_macs=None if macs is None else tuple(float(c) for c in macs),
            expected_cost=expected_cost(outcome.pass_fraction, costs),
            expected_macs=None if macs is None else expected_cost(outcome.pass_fraction, macs),
            n_fit=int(fit_idx.size),
            n_certify=int(cert_idx.size),
            baselines=self._baselines(cs, cp, cert_labels, costs),
            target_fields=self.target.result_fields(threshold),
            ood_figures=ood_figures,
            # label-free rates for drift monitoring; quantiles from the part that fitted the windows
            reference=measure_reference(outcome, threshold.tau, scores[0, fit_idx], first_scores=cs[0],
                                        independent=self.delta is not None),
        )
        return self

    def check_data_size(self, n: int) -> None:
        """Refuse ``n`` held-out inputs that are too few for a certificate (guaranteed mode): an
        :class:`~wcx.errors.InsufficientDataError` (exit 2) whose ``report`` holds ``n_needed``,
        the held-out inputs that would be needed. Called by ``fit``, and by callers that can
        refuse before the members run."""
        if self.delta is None:
            return
        fraction = self._fit_share
        n_cert = n - int(round(fraction * n))
        n0 = min_certify_size(self.target.alpha, self.delta)
        if n_cert >= n0:
            return
        need = math.ceil(n0 / (1.0 - fraction))
        while need - int(round(fraction * need)) < n0:  # the split rounds; make the count exact
            need += 1
        message = (f"the certifying part has {n_cert} of {n} held-out inputs (fit_fraction "
                   f"{fraction:g}); at least {n0} are needed for the target and delta "
                   f"{self.delta:g}, i.e. at least {need} held-out inputs")
        raise InsufficientDataError(message, {
            "certified": False, "reason": "too_few_inputs", "error": message, "task": self.task,
            "mode": "guaranteed", "risk": self.target.alpha, "delta": self.delta, "fit_fraction": fraction,
            "n": int(n), "n_certify": int(n_cert), "n_certify_needed": int(n0), "n_needed": int(need),
            "manifest_written": False,
        })

    @property
    def _fit_share(self) -> float:
        """The share of the held-out rows set aside to fit the policy: none for a policy fixed in
        advance (``none``, ``all``), whose tau is certified on every row."""
        return self.fit_fraction if self.fitter.uses_data else 0.0

    def _split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the window-fitting part and the tau-certifying part (the same rows in
        empirical mode, and for a policy fixed in advance, which fits nothing)."""
        if self.delta is None or not self.fitter.uses_data:
            self.check_data_size(n)
            idx = np.arange(n)
            return idx, idx
        self.check_data_size(n)
        n_fit = int(round(self.fit_fraction * n))
        if n_fit < 1:
            raise BadInputError(f"the window-fitting part is empty ({n} inputs, fit_fraction {self.fit_fraction:g})")
        perm = np.random.default_rng(self.seed).permutation(n)
        return np.sort(perm[:n_fit]), np.sort(perm[n_fit:])

    def _baselines(
        self, scores: np.ndarray, preds: np.ndarray, labels: np.ndarray | None, costs: np.ndarray
    ) -> dict[str, Any]:
        """Single member and full ensemble on the same data, for comparison (empirical)."""
        out: dict[str, Any] = {}
        for name, pol in (("none", NonePolicy()), ("all", AllPolicy())):
            o = simulate_from_stages(scores, preds, pol)
            out[name] = {"expected_cost": expected_cost(o.pass_fraction, costs),
                         **self.target.baseline(o.score, self.target.errors(o.pred, labels))}
        return out

    def _simulate(self, logits: np.ndarray, policy: Policy, m_total: int, k: int) -> CascadeOutcome:
        scores, preds = stage_outputs(logits, self.score, self.combine)
        if scores.shape[0] != m_total:
            raise BadInputError(f"logits have {scores.shape[0]} members; the calibration has {m_total}")
        if np.shape(logits)[-1] != k:
            raise BadInputError(f"logits have {np.shape(logits)[-1]} classes; the calibration has {k}")
        return simulate_from_stages(scores, preds, policy)

    # ----------------------------------------------------------------------------------------
    def evaluate(
        self, logits: np.ndarray, y: np.ndarray | None = None, *, ood_logits: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Measure the fitted cascade (policy and tau as fitted, never re-fitted) on a test set.

        Selective: ``coverage`` (accepted fraction), ``risk`` (errors among accepted; 0.0 when
        nothing is accepted), ``accuracy`` (of all predictions), ``violated`` (risk > target).
        OOD: ``tpr`` and, with ``ood_logits``, ``fpr`` and ``auroc``. Both: ``pass_fraction``,
        ``expected_cost``, ``expected_macs``, ``n``.
        """
        r = self.result_
        out = self._simulate(logits, r.policy, r.n_members, r.n_classes)
        n = out.score.size
        labels = self._labels(y, n, r.n_classes)
        res: dict[str, Any] = {
            "n": int(n),
            "pass_fraction": [float(p) for p in out.pass_fraction],
            "expected_cost": expected_cost(out.pass_fraction, r.member_costs),
            "expected_macs": None if r.member_macs is None else expected_cost(out.pass_fraction, r.member_macs),
        }
        res.update(self.target.evaluate(out.score, self.target.errors(out.pred, labels), r.tau))
        if ood_logits is not None and self.target.ood_figure_names:
            ood = self._simulate(ood_logits, r.policy, r.n_members, r.n_classes)
            res.update(self.target.ood_figures(out.score, ood.score, r.tau))
        return json_safe(res)  # type: ignore[no-any-return]

    def raise_if_failed(self) -> None:
        """Raise ``WorkFailedError`` (exit 1) when the fit has no usable threshold: guaranteed
        mode without a certificate, or empirical mode where no threshold meets the target."""
        self.result_.raise_if_failed()

    def to_policy_dict(self) -> dict[str, Any]:
        """The manifest's ``policy`` section as JSON; ``WorkFailedError`` if nothing is
        deployable (see :meth:`raise_if_failed`)."""
        return self.result_.policy_section().to_dict()

    def to_calibration_dict(self, provenance: Provenance | str | None = None, precision: str | None = None, *,
                            backend: str | None = None) -> dict[str, Any]:
        """The manifest's ``calibration`` section as JSON, for logits produced as ``provenance``
        says. (``to_calibration_dict(backend, precision)`` with two strings is the wcx 0.1 form:
        it records only those two, as an older wcx did.)"""
        if not isinstance(provenance, Provenance):
            names = [f"stage{i + 1}" for i in range(self.result_.n_members)]
            provenance = Provenance.legacy(provenance or backend or "unknown", precision or "", names)
        return self.result_.calibration_section(provenance).to_dict()

    def report_dict(self, test: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON of ``wcx calibrate --json`` (see
        :meth:`wcx.calibration.result.CalibrationResult.report_dict`)."""
        return self.result_.report_dict(test)

    # -- fitted attributes (scikit-learn style), read from ``result_`` ---------------------------
    @property
    def n_members_(self) -> int:
        return self.result_.n_members

    @property
    def n_classes_(self) -> int:
        return self.result_.n_classes

    @property
    def policy_(self) -> Policy:
        return self.result_.policy

    @property
    def search_(self) -> WindowSearch | None:
        return self.result_.search

    @property
    def threshold_(self) -> ThresholdResult:
        return self.result_.threshold

    @property
    def tau_(self) -> float:
        return self.result_.tau

    @property
    def windows_(self) -> list[list[float | None]] | None:
        return self.result_.windows

    @property
    def thresholds_(self) -> list[float] | None:
        return self.result_.thresholds

    @property
    def stage_taus_(self) -> list[float] | None:
        return self.result_.stage_taus

    @property
    def curve_(self) -> list[dict[str, Any]]:
        search = self.result_.search
        return [] if search is None else [p.to_dict() for p in search.curve]

    @property
    def member_costs_(self) -> np.ndarray:
        return np.asarray(self.result_.member_costs)

    @property
    def member_macs_(self) -> np.ndarray | None:
        macs = self.result_.member_macs
        return None if macs is None else np.asarray(macs)

    @property
    def pass_fraction_(self) -> list[float]:
        return list(self.result_.pass_fraction)

    @property
    def expected_cost_(self) -> float:
        return self.result_.expected_cost

    @property
    def expected_macs_(self) -> float | None:
        return self.result_.expected_macs

    @property
    def coverage_(self) -> float:
        return self.result_.threshold.coverage

    @property
    def risk_(self) -> float:
        return self.result_.threshold.risk

    @property
    def certified_(self) -> bool:
        return self.result_.threshold.certified

    @property
    def risk_upper_bound_(self) -> float | None:
        return self.result_.threshold.risk_upper_bound

    @property
    def n_needed_(self) -> int | None:
        return self.result_.threshold.n_needed

    @property
    def n_fit_(self) -> int:
        return self.result_.n_fit

    @property
    def n_certify_(self) -> int:
        return self.result_.n_certify

    @property
    def baselines_(self) -> dict[str, Any]:
        return dict(self.result_.baselines)

    @property
    def tpr_(self) -> float | None:
        return self.result_.target_fields.get("tpr")

    @property
    def tpr_lower_bound_(self) -> float | None:
        return self.result_.target_fields.get("tpr_lower_bound")

    @property
    def fpr_(self) -> float | None:
        return self.result_.ood_figures.get("fpr")

    @property
    def auroc_(self) -> float | None:
        return self.result_.ood_figures.get("auroc")
