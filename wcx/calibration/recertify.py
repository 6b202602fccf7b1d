"""Re-certification: a new tau for a calibrated bundle on new labelled data, windows kept.

When the drift monitor (:mod:`wcx.runtime.monitor`) says the deployment no longer looks like
the calibration data, the windows (the cost side) usually still do their job; the promise that
breaks is tau's. :func:`recertify_bundle` runs the members on new labelled inputs, routes them
through the bundle's *existing* policy and fits tau again, for the same task and target, with
Learn-then-Test when the calibration was certified (``delta``), on all of the new inputs:
none of them chose the windows, so none has to be set aside. The previous policy and
calibration go into the calibration section's ``history``; the reference rates are measured
again on the new inputs (at the previous stage-1 score quantiles). When no threshold can be
certified, nothing is written and the result says so (the caller exits 1).
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, replace
from typing import Any

from wcx.bundle import Bundle
from wcx.calibration.held_out import HeldOutData, ProgressFn, run_members
from wcx.calibration.reference import SCORE_LEVELS, measure_reference
from wcx.calibration.risk_control import DEFAULT_GRID_SIZE, ThresholdResult, check_fraction, min_certify_size
from wcx.calibration.simulator import expected_cost, simulate_from_stages
from wcx.calibration.targets import make_target
from wcx.core.manifest import CalibrationSection, PolicySection
from wcx.core.scores import stage_outputs
from wcx.data import as_source
from wcx.errors import BadInputError, InsufficientDataError, WorkFailedError
from wcx.json_values import json_safe

#: ``delta`` left at this keeps the calibration's own (None: empirical, else its delta)
KEEP_DELTA = "keep"


@dataclass(frozen=True)
class Recertification:
    """What :func:`recertify_bundle` found: the threshold fit on the new data, the sections it
    wrote (None when nothing was deployable) and the report (the JSON of ``wcx calibrate
    --recertify --json``)."""

    threshold: ThresholdResult
    report: dict[str, Any]
    policy: PolicySection | None
    calibration: CalibrationSection | None

    @property
    def deployable(self) -> bool:
        return self.policy is not None

    def raise_if_failed(self) -> None:
        """``WorkFailedError`` (exit 1) when no threshold was certified (or, in empirical mode,
        none met the target); the bundle was left unchanged."""
        if not self.deployable:
            raise WorkFailedError(f"re-certification failed: {self.report['reason']}; the bundle is unchanged")


def recertify_bundle(
    bundle: Bundle,
    data: HeldOutData,
    *,
    delta: float | None | str = KEEP_DELTA,
    backend: str = "onnxruntime",
    threads: int | None = None,
    grid_size: int = DEFAULT_GRID_SIZE,
    data_key: str | None = None,
    progress: ProgressFn | None = None,
) -> Recertification:
    """Re-fit tau of ``bundle``'s calibrated cascade on new labelled ``data`` (module
    docstring) and write the new policy and calibration when deployable. ``delta``: the
    Learn-then-Test failure probability (default: the calibration's; None: an empirical fit,
    refused over a certified calibration). Too few inputs for a certificate is an
    :class:`~wcx.errors.InsufficientDataError` (exit 2) raised before any member runs where the
    data's size is known."""
    old_policy, old = bundle.policy, bundle.calibration
    if old_policy is None or old is None:
        raise BadInputError(f"{bundle.path}: not calibrated, so there is nothing to re-certify: run wcx calibrate")
    if delta == KEEP_DELTA:
        delta = old.delta if old.mode == "guaranteed" else None
    if delta is not None:
        delta = check_fraction(float(delta), "delta")
    elif old.certified:
        raise BadInputError(f"{bundle.path}: holds a certified calibration; re-certify it with a delta")
    target = make_target(old.task, risk=old.risk, tpr=1.0 - old.risk)
    source = as_source(data, name="re-certification data", key=data_key)
    if target.needs_labels and source.labels_known and source.y is None:
        raise BadInputError(f"{source.name}: re-certifying the {old.task} task needs labels 'y'")

    def check_size(n: int) -> None:
        if delta is None:
            return
        n0 = min_certify_size(target.alpha, float(delta))
        if n < n0:
            message = (f"{source.name}: {n} inputs; a certificate for {target.describe()} with delta {delta:g} "
                       f"needs at least {n0}")
            raise InsufficientDataError(message, {"certified": False, "reason": "too_few_inputs", "error": message,
                                                  "n": n, "n_needed": n0, "manifest_written": False})

    if source.n is not None:
        check_size(source.n)
    held = run_members(bundle, source, backend=backend, threads=threads, progress=progress, data_key=data_key)
    if target.needs_labels and held.labels is None:
        raise BadInputError(f"{source.name}: re-certifying the {old.task} task needs labels 'y'")
    n = int(held.logits.shape[1])
    check_size(n)
    scores, preds = stage_outputs(held.logits, old.score, old_policy.combine)
    outcome = simulate_from_stages(scores, preds, old_policy.policy)
    errors = target.errors(outcome.pred, held.labels)
    threshold = target.fit_threshold(outcome.score, errors, delta, grid_size)
    deployable = threshold.certified if delta is not None else math.isfinite(threshold.tau)
    report: dict[str, Any] = {
        "recertified": deployable, "bundle": str(bundle.path), "task": old.task, "score": old.score,
        "mode": "guaranteed" if delta is not None else "empirical", "risk": old.risk, "delta": delta,
        "certified": threshold.certified, "tau": threshold.tau, "previous_tau": old_policy.tau,
        "risk_upper_bound": threshold.risk_upper_bound, "n_needed": threshold.n_needed, "n": n,
        "coverage": threshold.coverage, "measured_risk": threshold.risk,
        "pass_fraction": [float(p) for p in outcome.pass_fraction], "previous_pass_fraction": list(old.pass_fraction),
        "backend": backend, "precision": held.provenance.precision, "manifest_written": False,
    }
    if not deployable:
        report["reason"] = (f"no threshold passes the test for {target.describe()} with delta {delta:g} on {n} inputs"
                            if delta is not None else f"no threshold meets {target.describe()} on {n} inputs")
        return Recertification(threshold, json_safe(report), None, None)

    previous = old.reference
    reference = measure_reference(
        outcome, threshold.tau, scores[0], first_scores=scores[0],
        levels=previous.score_levels if previous is not None and previous.score_levels else SCORE_LEVELS,
        quantiles=previous.score_quantiles if previous is not None and previous.score_levels else None,
        independent=previous is not None and bool(previous.score_levels),  # the cuts were fixed before these data
    )
    macs = [float(m) for m in bundle.member_macs]
    policy = replace(old_policy, tau=float(threshold.tau)).check(n_stages=len(bundle.members),
                                                                  num_classes=bundle.num_classes)
    previous_calibration = old.to_dict()
    previous_calibration.pop("history", None)  # the history is kept once, flat, not nested
    entry = {"replaced": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             "policy": old_policy.to_dict(), "calibration": previous_calibration}
    section = replace(
        old, provenance=held.provenance, mode=report["mode"], delta=delta, certified=threshold.certified,
        risk_upper_bound=threshold.risk_upper_bound, n_needed=threshold.n_needed, fit_fraction=None, n_fit=0,
        n_certify=n, coverage=threshold.coverage, measured_risk=threshold.risk,
        pass_fraction=tuple(float(p) for p in outcome.pass_fraction),
        expected_macs=expected_cost(outcome.pass_fraction, macs),
        expected_cost=expected_cost(outcome.pass_fraction, macs) if old.cost == "macs" else None,
        target_fields=target.result_fields(threshold), reference=reference,
        history=(*old.history, entry),
    )
    bundle.update_sections(policy=policy, calibration=section)
    report.update(manifest_written=True, history=len(section.history),
                  reference=None if reference is None else reference.to_dict())
    return Recertification(threshold, json_safe(report), policy, section)
