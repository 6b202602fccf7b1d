"""The torch backend on a CUDA GPU: the runner contract, calibrate-then-load with no warning,
decisions equal to the simulator on the same logits, pipelined streams (skipped without CUDA).

The same paths run on the CPU in the other runtime tests (torch with ``device="cpu"``); these
check what only a GPU exercises: FP16 members, CUDA graphs per stream, asynchronous subset sizes.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.bundle_factory import labelled_data
from tests.runtime.conftest import with_policy
from wcx.bundle import Bundle
from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.held_out import calibrate_bundle, run_members
from wcx.calibration.simulator import simulate_cascade
from wcx.core.scores import stage_scores
from wcx.runtime.backends import get_backend
from wcx.runtime.cascade import Cascade
from wcx.runtime.runner import LOGITS

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda() -> object:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return torch


def test_torch_runner_contract_on_cuda(cuda, torch_bundle: Bundle) -> None:
    torch = cuda
    runner = get_backend("torch").create(torch_bundle, 0)
    assert runner.precision == "fp16" and runner.device.startswith("cuda") and runner.input_dtype == "float16"
    x = np.random.default_rng(0).standard_normal((37, 1, 8, 8)).astype(np.float32)
    with runner:
        host = runner.infer({"input": x})[LOGITS]  # host arrays are accepted
        dev = runner.infer({"input": torch.from_numpy(x).cuda().half()})[LOGITS]
        assert host.is_cuda and host.dtype == torch.float32 and tuple(host.shape) == (37, 4)
        np.testing.assert_allclose(host.cpu().numpy(), dev.cpu().numpy(), rtol=1e-3, atol=1e-3)
        assert runner.rows_for(37) == 64 and runner.rows_for(300) == 256 + 64


def test_calibrate_on_torch_then_strict_load_is_silent(cuda, torch_bundle: Bundle, tmp_path) -> None:
    b = with_policy(torch_bundle, tmp_path / "b")
    calib, test = labelled_data(b, 3000, 1, flip=0.2), labelled_data(b, 1000, 2, flip=0.2)
    done = calibrate_bundle(b, calib, CascadeCalibrator(risk=0.2), backend="torch", test=test, cache=False)
    assert done.provenance is not None and done.provenance.precision == "fp16"
    assert done.report["precision"] == "fp16"
    reloaded = Bundle.load(b.path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no CalibrationMismatchWarning: it runs what was calibrated
        cascade = Cascade.load(reloaded, strict=True)
    with cascade:
        assert cascade.backend == "torch" and cascade.precision == "fp16"
        out = cascade(test.x, timing=True)
        streamed = list(cascade.stream([test.x[:300], test.x[300:700], test.x[700:]]))
    # the same decisions as the simulator on the same (torch, fp16) logits, away from boundaries
    z = run_members(reloaded, test.x, backend="torch", cache=False).logits
    section = reloaded.policy
    assert section is not None and section.tau is not None
    sim = simulate_cascade(z, section.policy, section.score, tau=section.tau)
    s = stage_scores(z, section.score)
    bounds = [v for w in section.policy.windows for v in w] + [section.tau]  # type: ignore[attr-defined]
    keep = ~np.any([(np.abs(s - v) < 1e-5).any(0) for v in bounds], axis=0)
    assert keep.mean() > 0.95
    np.testing.assert_array_equal(out.exit_stage[keep], sim.exit_stage[keep])
    np.testing.assert_array_equal(out.accept[keep], sim.accept[keep])
    np.testing.assert_allclose(out.score, sim.score, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.concatenate([o.exit_stage for o in streamed]), out.exit_stage)
    # every row's stage-1 score, copied with the other outputs (pipelined streams too)
    assert out.first_score is not None
    np.testing.assert_allclose(out.first_score, s[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.concatenate([o.first_score for o in streamed]), out.first_score)
    assert out.timing is not None and out.timing.stage_rows[0] == 1000
    assert out.timing.padded_rows[0] == 1024 and all(t >= 0 for t in out.timing.stage_seconds)
