"""Run the docstring examples of the modules whose examples document conventions."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "wcx.core.scores", "wcx.core.policy", "wcx.core.preprocess", "wcx.calibration.metrics",
    "wcx.calibration.simulator", "wcx.calibration.risk_control", "wcx.calibration.window",
    "wcx.runtime.buckets", "wcx.json_values", "wcx.core.frames", "wcx.data.source", "wcx.workflow",
    "wcx.export.float_fallback", "wcx.export.precision",
    "wcx.serve.contract", "wcx.serve.metrics", "wcx.serve.repository",
    "wcx.runtime.drift_tests", "wcx.calibration.reference",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
