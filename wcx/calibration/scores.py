"""Deprecated location of the scores (wcx 0.1): they live in :mod:`wcx.core.scores`, shared
with the runtime. Importing a name from here still works and warns once."""

from __future__ import annotations

import warnings
from typing import Any

import wcx.core.scores as _scores

_NAMES = ("SCORES", "DEFAULT_SCORE", "check_score", "member_statistics", "stage_outputs", "stage_probs",
          "stage_scores")


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        warnings.warn(f"wcx.calibration.scores.{name} moved to wcx.core.scores.{name}", DeprecationWarning,
                      stacklevel=2)
        return getattr(_scores, name)
    raise AttributeError(f"module 'wcx.calibration.scores' has no attribute {name!r}")
