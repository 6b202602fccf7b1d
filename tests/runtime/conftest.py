"""Fixtures of the runtime tests: bundles with hand-written policies and calibrations."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wcx.bundle import Bundle
from wcx.core.manifest import CalibrationSection
from wcx.core.provenance import Provenance
from wcx.runtime.backends import create_runners, provenance_of

WINDOW_POLICY = {"kind": "window", "task": "selective", "score": "msp", "windows": [[0.45, 0.85]], "tau": 0.7}


def calibration_for(bundle: Bundle, backend: str = "onnxruntime", *, record_backend: str | None = None,
                    precision: str | None = None, **options: Any) -> CalibrationSection:
    """A calibration section whose provenance is what ``backend`` produces for ``bundle`` here,
    optionally recorded as another backend or precision (to provoke a mismatch)."""
    provenance = provenance_of(create_runners(bundle, backend, **options), backend)
    if precision is not None:
        members = tuple(dataclasses.replace(m, precision=precision) for m in provenance.members)
        provenance = Provenance(provenance.backend, members, provenance.info)
    if record_backend is not None:
        provenance = Provenance(record_backend, provenance.members, provenance.info)
    return CalibrationSection(provenance=provenance, task="selective", score="msp", policy="window", risk=0.05,
                              mode="empirical", certified=False,
                              pass_fraction=(1.0,) + (0.5,) * (len(bundle.members) - 1))


def with_policy(bundle: Bundle, dest: Path, policy: dict[str, Any] | None = None,
                calibration: CalibrationSection | str | None = "onnxruntime") -> Bundle:
    """Copy ``bundle`` to ``dest`` and set its policy and calibration (by default: calibrated on
    onnxruntime, as this machine runs it)."""
    shutil.copytree(bundle.path, dest)
    b = Bundle.load(dest)
    if isinstance(calibration, str):
        calibration = calibration_for(b, calibration)
    b.update_sections(policy=policy or WINDOW_POLICY, calibration=calibration)
    return b


@pytest.fixture
def policy_bundle(mlp_bundle: Bundle, tmp_path: Path) -> Bundle:
    """The two-member MLP bundle with a window policy calibrated on onnxruntime/fp32."""
    return with_policy(mlp_bundle, tmp_path / "policy_bundle")


@pytest.fixture
def torch_bundle(mlp_bundle: Bundle, tmp_path: Path) -> Bundle:
    """``policy_bundle`` whose members also carry torch sources (safetensors weights)."""
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from tests.runtime.torch_members import add_torch_sources

    return add_torch_sources(with_policy(mlp_bundle, tmp_path / "torch_bundle"))


@pytest.fixture
def xbatch() -> np.ndarray:
    return np.random.default_rng(7).random((300, 1, 8, 8), dtype=np.float32)
