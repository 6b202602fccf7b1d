"""Run the docstring examples of the calibration modules (they document the conventions)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["scores", "metrics", "policy", "risk_control", "window"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(f"wcx.calibration.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
