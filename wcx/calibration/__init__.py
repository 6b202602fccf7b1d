"""Calibration of a cascade: thresholds and windows for a risk target (method.md sections 2-4).

Not to be confused with *INT8 calibration* (activation ranges, in ``wcx.export``).

Modules (each importable on its own; none imports scipy or matplotlib at import time):

* ``targets``: what a fit aims at (selective risk, OOD TPR) as objects;
* ``fitters``: how each policy kind (window, threshold, none, all) is fitted;
* ``window``: quantile-band windows and the width search;
* ``risk_control``: empirical and Learn-then-Test (guaranteed) thresholds;
* ``simulator``: the cascade run on held-out logits (the core's scores and policies);
* ``result``: the frozen ``CalibrationResult`` the manifest sections and the report come from;
* ``calibrator``: ``CascadeCalibrator``, the fitted object behind ``wcx calibrate``;
* ``held_out``: running a bundle's members on held-out data and calibrating it
  (``calibrate_bundle``; ``wcx.calibrate`` is the same with the CLI's options);
* ``logits_cache``: the user cache of held-out logits;
* ``planner``, ``pareto_testing``, ``plan_baselines``, ``plan_bundle``: planning a cascade from
  a pool of members (search over members, orders and windows; certifying the candidates
  together; the baselines of its report; writing the planned bundle: ``wcx plan``);
* ``metrics``: risk-coverage, AURC, AUROC, FPR@95, accuracy, NLL, ECE;
* ``report``: plots (matplotlib, imported when called);
* ``policy``, ``scores``: deprecated aliases of ``wcx.core.policy`` and ``wcx.core.scores``.

The names below are loaded lazily, so ``import wcx.calibration`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CascadeCalibrator": "wcx.calibration.calibrator",
    "WindowPolicy": "wcx.calibration.policy",
    "ThresholdPolicy": "wcx.calibration.policy",
    "NonePolicy": "wcx.calibration.policy",
    "AllPolicy": "wcx.calibration.policy",
    "CascadeOutcome": "wcx.calibration.policy",
    "simulate_cascade": "wcx.calibration.policy",
    "policy_from_dict": "wcx.calibration.policy",
    "policy_to_dict": "wcx.calibration.policy",
    "stage_scores": "wcx.calibration.scores",
    "stage_probs": "wcx.calibration.scores",
    "score_from_running": "wcx.calibration.scores",
    "SCORES": "wcx.calibration.scores",
    "ThresholdResult": "wcx.calibration.risk_control",
    "fit_threshold": "wcx.calibration.risk_control",
    "fit_tpr_threshold": "wcx.calibration.risk_control",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wcx.calibration' has no attribute {name!r}")
