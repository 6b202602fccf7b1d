"""Fixtures of the runtime tests: bundles with hand-written policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wcx.bundle import Bundle

WINDOW_POLICY = {"kind": "window", "task": "selective", "score": "msp", "windows": [[0.45, 0.85]], "tau": 0.7}
ORT_FP32 = {"backend": "onnxruntime", "precision": "fp32"}


def with_policy(bundle: Bundle, dest: Path, policy: dict[str, Any] | None = None,
                calibration: dict[str, Any] | None = ORT_FP32) -> Bundle:
    """Copy ``bundle`` to ``dest`` and set its policy and calibration sections."""
    import shutil

    shutil.copytree(bundle.path, dest)
    b = Bundle.load(dest)
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
