"""Calibration of a cascade: thresholds and windows for a risk target (method.md sections 2-4).

Not to be confused with *INT8 calibration* (activation ranges, in ``wcx.export``).

Modules (each importable on its own; none imports scipy or matplotlib at import time):

* ``scores``: stage-m ensemble scores (numpy only; the runtime uses it).
* ``metrics``: risk-coverage, AURC, AUROC, FPR@95, accuracy, NLL, ECE.
* ``policy``: window / threshold / none / all policies and the cascade simulator.
* ``risk_control``: empirical and Learn-then-Test (guaranteed) thresholds.
* ``window``: quantile-band windows and the width search.
* ``calibrator``: ``CascadeCalibrator``, the fitted object behind ``wcx calibrate``.
* ``report``: plots (matplotlib, imported when called).

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
