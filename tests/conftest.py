"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from tests.bundle_factory import make_mlp_bundle
from wcx.bundle import Bundle

# CI (HYPOTHESIS_PROFILE=ci, set by .ci/run) draws the same examples on every run, so a red build
# is reproducible and never a lucky draw; local runs keep exploring new examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session", autouse=True)
def _own_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test (and every process a test starts) caches held-out logits in a temporary folder
    of this session, never in the user's cache."""
    from wcx.calibration.logits_cache import ENV_VAR

    root = tmp_path_factory.mktemp("wcx-cache")
    before = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(root)
    yield root
    if before is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = before


@pytest.fixture(scope="session")
def mlp_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A two-member bundle of small ONNX MLPs (input (1, 8, 8), 4 classes), no policy yet.

    Session-scoped: tests that change a bundle must copy it first (``copy_bundle``).
    """
    return make_mlp_bundle(tmp_path_factory.mktemp("mlp"))


@pytest.fixture(scope="session")
def mlp_bundle3(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A three-member variant of ``mlp_bundle``."""
    return make_mlp_bundle(tmp_path_factory.mktemp("mlp3"), members=3)


@pytest.fixture
def copy_bundle(tmp_path: Path):
    """Copy a bundle into this test's tmp dir so it can be changed."""
    import shutil

    def _copy(bundle: Bundle) -> Bundle:
        dest = tmp_path / "bundle_copy"
        shutil.copytree(bundle.path, dest)
        return Bundle.load(dest)

    return _copy


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch):
    """A fake GPU for the TensorRT backend: the fake ``tensorrt`` module and the fake CUDA
    binding (tests/fakes). Yields ``(trt, cudart)``."""
    from tests.fakes.cudart import FakeCudart
    from tests.fakes.tensorrt import make_fake_tensorrt
    from wcx.cuda_runtime import use_binding
    from wcx.export import tensorrt_engine

    trt = make_fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tensorrt_engine, "_LOGGER_SINGLETON", {})
    with use_binding(FakeCudart(name=b"Fake Orin", capability=(8, 7))) as cudart:
        yield trt, cudart
