"""Deprecated location of the exit policies and the simulator (wcx 0.1).

The policies live in :mod:`wcx.core.policy` (shared with the runtime), the simulator in
:mod:`wcx.calibration.simulator`. Importing a name from here still works and warns once.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED = {
    "WindowPolicy": "wcx.core.policy",
    "ThresholdPolicy": "wcx.core.policy",
    "NonePolicy": "wcx.core.policy",
    "AllPolicy": "wcx.core.policy",
    "Policy": "wcx.core.policy",
    "POLICY_KINDS": "wcx.core.policy",
    "policy_from_dict": "wcx.core.policy",
    "CascadeOutcome": "wcx.calibration.simulator",
    "expected_cost": "wcx.calibration.simulator",
    "route": "wcx.calibration.simulator",
    "simulate_cascade": "wcx.calibration.simulator",
    "simulate_from_stages": "wcx.calibration.simulator",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(f"wcx.calibration.policy.{name} moved to {_MOVED[name]}.{name}", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'wcx.calibration.policy' has no attribute {name!r}")
