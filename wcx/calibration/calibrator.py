"""``CascadeCalibrator``: fit windows (or thresholds) and the final tau of a cascade on cached
held-out logits (method.md section 3), in the scikit-learn spirit.

Example (empirical mode, synthetic logits)::

    cal = CascadeCalibrator(task="selective", risk=0.05).fit(logits, y, member_costs=macs)
    cal.tau_, cal.windows_, cal.pass_fraction_, cal.coverage_
    test = cal.evaluate(test_logits, test_y)          # never re-fits
    report = cal.report_dict(test=test)               # the JSON of ``wcx calibrate --json``
    manifest_policy = cal.to_policy_dict()
    manifest_calibration = cal.to_calibration_dict(backend="onnxruntime", precision="fp16")

Modes: ``delta=None`` is *empirical* (windows and tau fitted on the whole held-out set);
``delta`` in (0, 1) is *guaranteed*: the held-out set is split once at random (``seed``) into a
part that fits the windows and the stage thresholds (``fit_fraction``, default 30%) and a part
that certifies tau with Learn-then-Test (the rest), so labels that chose the windows never
certify tau. When no threshold can be certified, ``fit`` still returns (``certified_`` False,
``n_needed_`` set) so the report can be written; :meth:`raise_if_failed` then raises
``WorkFailedError`` (exit 1), and :meth:`to_policy_dict` refuses to produce a deployable policy.

Selective risk and coverage in the fitted attributes are measured on the certifying part in
guaranteed mode and on the whole held-out set in empirical mode. Every guarantee assumes the
held-out set and the deployment data are exchangeable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from wcx.calibration.metrics import auroc, coverage_at_risk
from wcx.calibration.policy import (
    POLICY_KINDS,
    TASKS,
    AllPolicy,
    CascadeOutcome,
    NonePolicy,
    Policy,
    WindowPolicy,
    expected_cost,
    policy_to_dict,
    simulate_from_stages,
)
from wcx.calibration.risk_control import (
    DEFAULT_GRID_SIZE,
    ThresholdResult,
    check_fraction,
    fit_threshold,
    fit_tpr_threshold,
    min_certify_size,
)
from wcx.calibration.scores import DEFAULT_SCORE, SCORES, stage_outputs
from wcx.calibration.window import (
    DEFAULT_N_BOOT,
    DEFAULT_WIDTH_GRID,
    WindowSearch,
    search_windows,
    thresholds_for_budget,
)
from wcx.errors import BadInputError, NotFittedError, WorkFailedError

COSTS: tuple[str, ...] = ("macs", "latency")
EXCHANGEABILITY_NOTE = (
    "Guarantees assume the held-out set and the deployment data are exchangeable (drawn alike); "
    "calibrate on data drawn like the deployment's."
)


def json_safe(obj: Any) -> Any:
    """Recursively turn numpy scalars and arrays into Python values, keys into strings and
    non-finite floats (e.g. an unbounded window side) into None, so ``json.dumps`` takes it."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


class CascadeCalibrator:
    """Fits a cascade's exit policy and final threshold for a risk (or TPR) target.

    Parameters:
        task: ``"selective"`` (accept iff score >= tau; target = selective risk ``risk``) or
            ``"ood"`` (flag iff score < tau; target = in-distribution TPR ``tpr``; no labels).
        score: one of :data:`wcx.calibration.scores.SCORES`; default ``msp`` (selective) or
            ``neg_energy`` (ood).
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
    ) -> None:
        if task not in TASKS:
            raise BadInputError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
        if score is None:
            score = DEFAULT_SCORE[task]
        if score not in SCORES:
            raise BadInputError(f"unknown score {score!r}; valid scores: {', '.join(SCORES)}")
        if policy not in POLICY_KINDS:
            raise BadInputError(f"unknown policy {policy!r}; valid policies: {', '.join(POLICY_KINDS)}")
        if cost not in COSTS:
            raise BadInputError(f"unknown cost {cost!r}; valid costs: {', '.join(COSTS)}")
        self.task = task
        self.score = score
        self.risk = check_fraction(risk, "risk")
        self.tpr = check_fraction(tpr, "tpr")
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

    # ----------------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return "empirical" if self.delta is None else "guaranteed"

    @property
    def target(self) -> float:
        """The search/threshold target: the risk (selective) or the TPR (ood)."""
        return self.risk if self.task == "selective" else self.tpr

    def _check_fitted(self) -> None:
        if not hasattr(self, "tau_"):
            raise NotFittedError("this CascadeCalibrator is not fitted yet: call fit(logits, y) first")

    def _labels(self, y: Any, n: int, k: int, required: bool) -> np.ndarray | None:
        if y is None:
            if required:
                raise BadInputError("selective calibration needs class labels y (N,); none were given")
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

    def _costs(self, member_costs: Any, m: int, name: str) -> np.ndarray:
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
        scores, preds = stage_outputs(logits, self.score)
        m_total, n = scores.shape
        k = int(np.shape(logits)[-1])
        labels = self._labels(y, n, k, required=self.task == "selective")
        costs = self._costs(np.ones(m_total) if member_costs is None else member_costs, m_total, "member_costs")
        if member_macs is not None:
            macs: np.ndarray | None = self._costs(member_macs, m_total, "member_macs")
        else:
            macs = costs if (self.cost == "macs" and member_costs is not None) else None
        if m_total < 2 and self.policy in ("window", "threshold"):
            raise BadInputError(f"the {self.policy} policy needs at least 2 members, got {m_total}")
        if n < 2:
            raise BadInputError(f"need at least 2 held-out inputs, got {n}")

        fit_idx, cert_idx = self._split(n)
        fs, fp = scores[:, fit_idx], preds[:, fit_idx]
        fy = None if labels is None else labels[fit_idx]
        search: WindowSearch | None = None
        if self.policy == "window" or (self.policy == "threshold" and self.budget is None):
            search = search_windows(
                fs,
                fp,
                fy if self.task == "selective" else None,
                task=self.task,
                target=self.target,
                member_costs=costs,
                eps=self.eps,
                width_grid=self.width_grid,
                fixed_widths=self.widths,
                n_boot=self.n_boot,
                seed=self.seed,
            )
        policy: Policy
        if self.policy == "window":
            assert search is not None
            policy = WindowPolicy(search.best.windows)
        elif self.policy == "threshold":
            budget = self.budget if self.budget is not None else search.best.pass_fraction[1:]  # type: ignore[union-attr]
            policy = thresholds_for_budget(fs, budget)
        elif self.policy == "none":
            policy = NonePolicy()
        else:
            policy = AllPolicy()

        cs, cp = scores[:, cert_idx], preds[:, cert_idx]
        outcome = simulate_from_stages(cs, cp, policy)
        if self.task == "selective":
            errors = outcome.pred != labels[cert_idx]  # type: ignore[index]
            result = fit_threshold(outcome.score, errors, self.risk, self.delta, self.grid_size)
        else:
            result = fit_tpr_threshold(outcome.score, self.tpr, self.delta, self.grid_size)

        self.n_members_ = m_total
        self.n_classes_ = k
        self.policy_ = policy
        self.search_ = search
        self.threshold_: ThresholdResult = result
        self.tau_ = result.tau
        self.windows_ = [list(w) for w in policy.windows] if isinstance(policy, WindowPolicy) else None
        self.thresholds_ = list(policy.thresholds) if policy.kind == "threshold" else None  # type: ignore[union-attr]
        self.stage_taus_ = None if search is None else list(search.stage_taus)
        self.curve_ = [] if search is None else [p.to_dict() for p in search.curve]
        self.member_costs_ = costs
        self.member_macs_ = macs
        self.pass_fraction_ = [float(p) for p in outcome.pass_fraction]
        self.expected_cost_ = expected_cost(outcome.pass_fraction, costs)
        self.expected_macs_ = None if macs is None else expected_cost(outcome.pass_fraction, macs)
        self.coverage_ = result.coverage
        self.risk_ = result.risk
        self.certified_ = result.certified
        self.risk_upper_bound_ = result.risk_upper_bound
        self.n_needed_ = result.n_needed
        self.n_fit_ = int(fit_idx.size)
        self.n_certify_ = int(cert_idx.size)
        self.baselines_ = self._baselines(cs, cp, None if labels is None else labels[cert_idx], costs)
        if self.task == "ood":
            self.tpr_ = result.coverage
            self.tpr_lower_bound_ = None if result.risk_upper_bound is None else 1.0 - result.risk_upper_bound
            self.fpr_ = self.auroc_ = None
            if ood_logits is not None:
                ood = self._outcome(ood_logits)
                self.fpr_ = float(np.mean(ood.score >= self.tau_))
                self.auroc_ = auroc(outcome.score, ood.score)
        return self

    def _split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the window-fitting part and the tau-certifying part."""
        if self.delta is None:
            idx = np.arange(n)
            return idx, idx
        n_fit = int(round(self.fit_fraction * n))
        n_cert = n - n_fit
        n0 = min_certify_size(1.0 - self.tpr if self.task == "ood" else self.risk, self.delta)
        if n_cert < n0:
            need = math.ceil(n0 / (1.0 - self.fit_fraction))
            raise BadInputError(
                f"the certifying part has {n_cert} of {n} held-out inputs (fit_fraction "
                f"{self.fit_fraction:g}); at least {n0} are needed for the target and delta "
                f"{self.delta:g}, i.e. at least {need} held-out inputs"
            )
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
            entry: dict[str, Any] = {"expected_cost": expected_cost(o.pass_fraction, costs)}
            if self.task == "selective":
                entry["coverage_at_risk"] = coverage_at_risk(o.score, o.pred != labels, self.risk)
            out[name] = entry
        return out

    def _outcome(self, logits: np.ndarray) -> CascadeOutcome:
        scores, preds = stage_outputs(logits, self.score)
        if scores.shape[0] != self.n_members_:
            raise BadInputError(f"logits have {scores.shape[0]} members; the calibration has {self.n_members_}")
        if np.shape(logits)[-1] != self.n_classes_:
            raise BadInputError(f"logits have {np.shape(logits)[-1]} classes; the calibration has {self.n_classes_}")
        return simulate_from_stages(scores, preds, self.policy_, self.tau_)

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
        self._check_fitted()
        out = self._outcome(logits)
        n = out.score.size
        labels = self._labels(y, n, self.n_classes_, required=self.task == "selective")
        res: dict[str, Any] = {
            "n": int(n),
            "pass_fraction": [float(p) for p in out.pass_fraction],
            "expected_cost": expected_cost(out.pass_fraction, self.member_costs_),
            "expected_macs": None if self.member_macs_ is None else expected_cost(out.pass_fraction, self.member_macs_),
        }
        accept = out.score >= self.tau_
        if self.task == "selective":
            wrong = out.pred != labels
            n_acc = int(accept.sum())
            risk = float(wrong[accept].sum() / n_acc) if n_acc else 0.0
            res.update(
                coverage=n_acc / n,
                risk=risk,
                accuracy=float(np.mean(~wrong)),
                violated=bool(risk > self.risk),
            )
        else:
            res["tpr"] = float(np.mean(accept))
            res["violated"] = bool(res["tpr"] < self.tpr)
            if ood_logits is not None:
                ood = self._outcome(ood_logits)
                res["fpr"] = float(np.mean(ood.score >= self.tau_))
                res["auroc"] = auroc(out.score, ood.score)
        return json_safe(res)

    def raise_if_failed(self) -> None:
        """Raise ``WorkFailedError`` (exit 1) when the fit has no usable threshold: guaranteed
        mode without a certificate, or empirical mode where no threshold meets the target."""
        self._check_fitted()
        if self.delta is not None and not self.certified_:
            need = (
                f"the observed error rate would need about {self.n_needed_} accepted inputs"
                if self.n_needed_ is not None
                else "the observed error rate is at or above the target, so no sample size suffices"
            )
            raise WorkFailedError(
                f"no certificate: no threshold passes the test for {self._target_text()} with "
                f"delta {self.delta:g} on {self.n_certify_} certifying inputs; {need}"
            )
        if not math.isfinite(self.tau_):
            raise WorkFailedError(f"no threshold meets {self._target_text()} on the held-out set")

    def _target_text(self) -> str:
        return f"risk {self.risk:g}" if self.task == "selective" else f"TPR {self.tpr:g}"

    # ----------------------------------------------------------------------------------------
    def to_policy_dict(self) -> dict[str, Any]:
        """The manifest's ``"policy"`` section; raises ``WorkFailedError`` if nothing is
        deployable (see :meth:`raise_if_failed`)."""
        self.raise_if_failed()
        return policy_to_dict(self.policy_, task=self.task, score=self.score, tau=self.tau_)

    def to_calibration_dict(self, backend: str, precision: str) -> dict[str, Any]:
        """The manifest's ``"calibration"`` section (JSON-ready).

        ``risk`` is the *target* (selective risk, or ``1 - tpr`` for ood); the risk measured at
        tau is ``measured_risk``. ``backend``/``precision`` record what produced the logits.
        """
        self._check_fitted()
        d = {
            "backend": backend,
            "precision": precision,
            "task": self.task,
            "score": self.score,
            "policy": self.policy_.kind,
            "risk": self.risk if self.task == "selective" else 1.0 - self.tpr,
            "delta": self.delta,
            "mode": self.mode,
            "certified": self.certified_,
            "risk_upper_bound": self.risk_upper_bound_,
            "n_needed": self.n_needed_,
            "seed": self.seed,
            "fit_fraction": self.fit_fraction if self.delta is not None else None,
            "n_fit": self.n_fit_,
            "n_certify": self.n_certify_,
            "coverage": self.coverage_,
            "measured_risk": self.risk_,
            "pass_fraction": self.pass_fraction_,
            "expected_macs": self.expected_macs_,
            "expected_cost": self.expected_cost_,
            "cost": self.cost,
            "eps": self.eps,
            "n_boot": self.n_boot,
            "stage_taus": self.stage_taus_,
        }
        if self.task == "ood":
            d.update(tpr_target=self.tpr, tpr=self.tpr_, tpr_lower_bound=self.tpr_lower_bound_)
        return json_safe(d)

    def report_dict(self, test: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON of ``wcx calibrate --json``: ``tau`` (null when none), ``windows``,
        ``thresholds``, ``pass_fraction``, ``expected_macs``, ``coverage``, ``risk`` (measured),
        ``risk_upper_bound`` (guaranteed mode, else null), ``certified``, ``test`` (the
        :meth:`evaluate` dict, or null), for ood ``tpr``, ``tpr_lower_bound``, ``fpr``, ``auroc``,
        plus the search curve, the baselines and the settings."""
        self._check_fitted()
        search = self.search_
        d: dict[str, Any] = {
            "task": self.task,
            "score": self.score,
            "policy": self.policy_.kind,
            "mode": self.mode,
            "target_risk": self.risk if self.task == "selective" else 1.0 - self.tpr,
            "delta": self.delta,
            "eps": self.eps,
            "n_boot": self.n_boot,
            "tau": self.tau_,
            "windows": self.windows_,
            "thresholds": self.thresholds_,
            "stage_taus": self.stage_taus_,
            "pass_fraction": self.pass_fraction_,
            "expected_macs": self.expected_macs_,
            "expected_cost": self.expected_cost_,
            "cost": self.cost,
            "coverage": self.coverage_,
            "risk": self.risk_,
            "risk_upper_bound": self.risk_upper_bound_,
            "certified": self.certified_,
            "n_needed": self.n_needed_,
            "n_accepted": self.threshold_.n_accepted,
            "errors": self.threshold_.errors,
            "seed": self.seed,
            "fit_fraction": self.fit_fraction if self.delta is not None else None,
            "n_fit": self.n_fit_,
            "n_certify": self.n_certify_,
            "baselines": self.baselines_,
            "search": None
            if search is None
            else {
                "chosen": search.best.to_dict(),
                "reference": search.reference.to_dict(),
                "ensemble_quality": search.ensemble_quality,
                "single_quality": search.single_quality,
                "curve": self.curve_,
            },
            "test": test,
            "note": EXCHANGEABILITY_NOTE,
        }
        if self.task == "ood":
            d.update(
                tpr_target=self.tpr,
                tpr=self.tpr_,
                tpr_lower_bound=self.tpr_lower_bound_,
                fpr=self.fpr_,
                auroc=self.auroc_,
            )
        return json_safe(d)
