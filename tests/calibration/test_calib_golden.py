"""Every figure ``CascadeCalibrator`` reports on fixed synthetic logits, against stored values.

The stored file (``golden_calibration.json``) was written by wcx before its calibration code was
reorganised; the reorganisation must not change a number. Regenerate it only for an intended
change of results: ``WCX_REGEN_GOLDEN=1 python -m pytest tests/calibration/test_calib_golden.py``.

Numbers are compared with a relative tolerance of 1e-9: numpy's exp/log may differ in the last
bit between CPU instruction sets, which is not a change of method.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wcx.calibration.calibrator import CascadeCalibrator

GOLDEN = Path(__file__).with_name("golden_calibration.json")
RTOL = 1e-9
#: searched points stored per case (all of them for the cases marked full_curve)
CURVE_POINTS = 10


def synthetic(m: int, n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits (m, n, k) of members that share a signal and add their own noise, and labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    signal = rng.normal(0.0, 1.0, (n, k))
    signal[np.arange(n), y] += rng.gamma(2.0, 1.2, n)
    logits = np.stack([1.6 * (signal + rng.normal(0.0, 0.9, (n, k))) for _ in range(m)])
    return logits.astype(np.float32), y


CASES: dict[str, dict[str, Any]] = {
    "window_guaranteed": {"m": 2, "kw": {"risk": 0.05, "delta": 0.1}, "full_curve": True},
    "window_empirical": {"m": 2, "kw": {"risk": 0.05}},
    "window_fixed": {"m": 2, "kw": {"risk": 0.1, "delta": 0.2, "widths": (0.1, 0.1)}},
    "window_plain_rule": {"m": 2, "kw": {"risk": 0.05, "n_boot": 0, "score": "neg_entropy"}},
    "window_three": {"m": 3, "kw": {"risk": 0.08, "delta": 0.1}, "full_curve": True},
    "window_latency_cost": {"m": 2, "kw": {"risk": 0.05, "cost": "latency"}, "costs": [0.002, 0.0035]},
    "threshold": {"m": 2, "kw": {"risk": 0.05, "policy": "threshold"}},
    "threshold_budget": {"m": 3, "kw": {"risk": 0.05, "policy": "threshold", "budget": 0.3}},
    "none": {"m": 2, "kw": {"risk": 0.05, "policy": "none", "delta": 0.1}},
    "all": {"m": 2, "kw": {"risk": 0.05, "policy": "all"}},
    "ood_empirical": {"m": 2, "kw": {"task": "ood", "tpr": 0.95}, "ood": True},
    "ood_guaranteed": {"m": 2, "kw": {"task": "ood", "tpr": 0.9, "delta": 0.1, "score": "max_logit"}, "ood": True},
}


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    m = case["m"]
    logits, y = synthetic(m, 2400, 10, seed=7)
    test_logits, test_y = synthetic(m, 1600, 10, seed=8)
    macs = [1.0e6 * (i + 1.5) for i in range(m)]
    ood_logits = None
    if case.get("ood"):
        ood_logits = 0.5 * synthetic(m, 800, 10, seed=9)[0]
    cal = CascadeCalibrator(**case["kw"])
    costs = case.get("costs", macs)
    cal.fit(logits, y if cal.task == "selective" else None, member_costs=costs, member_macs=macs,
            ood_logits=ood_logits)
    test = cal.evaluate(test_logits, test_y if cal.task == "selective" else None, ood_logits=ood_logits)
    report = json.loads(json.dumps(cal.report_dict(test=test)))
    if report.get("search") and not case.get("full_curve"):
        report["search"]["curve"] = report["search"]["curve"][:CURVE_POINTS]  # keeps the file small
    return report


def _compare(old: Any, new: Any, where: str, problems: list[str]) -> None:
    if isinstance(old, dict):
        if not isinstance(new, dict):
            problems.append(f"{where}: not an object")
            return
        for key, value in old.items():
            if key not in new:
                problems.append(f"{where}.{key}: missing")
            else:
                _compare(value, new[key], f"{where}.{key}", problems)
    elif isinstance(old, list):
        if not isinstance(new, list) or len(old) != len(new):
            problems.append(f"{where}: list length {len(old)} -> {len(new) if isinstance(new, list) else new!r}")
            return
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _compare(a, b, f"{where}[{i}]", problems)
    elif isinstance(old, bool) or old is None or isinstance(old, str):
        if old != new:
            problems.append(f"{where}: {old!r} -> {new!r}")
    elif isinstance(old, (int, float)) and not _close(old, new):
        problems.append(f"{where}: {old!r} -> {new!r}")


def _close(old: float, new: Any) -> bool:
    if isinstance(new, bool) or not isinstance(new, (int, float)):
        return False
    return math.isclose(old, new, rel_tol=RTOL, abs_tol=1e-12)


def test_golden_file_is_current() -> None:
    if os.environ.get("WCX_REGEN_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps({name: run_case(case) for name, case in CASES.items()}, indent=0) + "\n")
    assert GOLDEN.is_file(), "golden file missing: regenerate it (see the module docstring)"
    assert set(json.loads(GOLDEN.read_text())) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_calibration_numbers_unchanged(name: str) -> None:
    golden = json.loads(GOLDEN.read_text())[name]
    problems: list[str] = []
    _compare(golden, run_case(CASES[name]), name, problems)
    assert not problems, "\n".join(problems[:20])
