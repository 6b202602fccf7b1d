"""The TensorRT backend end to end on a fake GPU (tests/fakes): the real ``TensorRTRunner``,
engine builder, CUDA layer and executor, against a fake TensorRT whose engines run the member's
ONNX on ONNX Runtime and a fake CUDA binding that behaves like device memory.

Equality with the onnxruntime backend therefore tests wcx's plumbing (buffers, copies, shapes,
addresses, streams, chunking, padding, type conversion), not the fake's arithmetic.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.bundle_factory import labelled_data, make_mlp_bundle
from tests.runtime.test_tensorrt_runner_gpu import SAMPLE, _inputs, _ort_logits, make_variant_bundle
from wcx.bundle import Bundle
from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.held_out import calibrate_bundle
from wcx.cuda_runtime import Cuda
from wcx.errors import BadInputError, UsageError, WorkFailedError
from wcx.export.tensorrt_engine import build_engines
from wcx.runtime.cascade import Cascade
from wcx.runtime.runner import LOGITS
from wcx.runtime.tensorrt_runner import TensorRTRunner

ROOT = Path(__file__).resolve().parents[2]


def _engines(bundle: Bundle, **options: int) -> Bundle:
    build_engines(bundle, opt_batch=options.get("opt_batch", 16), max_batch=options.get("max_batch", 64))
    return Bundle.load(bundle.path)


@pytest.mark.parametrize("variant", ["fp32", "fp16", "fp16io", "int8"])
def test_runner_matches_onnxruntime(fake_gpu, tmp_path: Path, variant: str) -> None:
    _, cudart = fake_gpu
    bundle = _engines(make_variant_bundle(tmp_path, variant))
    x = _inputs(300, seed=5)  # > max batch 64: four full chunks and one of 44, padded to 64
    want = _ort_logits(bundle.member_path(0), x)
    with TensorRTRunner(bundle, 0) as runner:
        assert runner.max_batch == 64 and runner.array_library == "numpy"
        got = runner.infer({"input": x})[LOGITS]
        assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (300, 4)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert (runner.rows_received, runner.rows_run, runner.calls) == (300, 320, 5)
        # small and empty batches, and the same rows again, give the same logits
        np.testing.assert_allclose(runner.infer({"input": x[:3]})[LOGITS], want[:3], rtol=1e-5, atol=1e-5)
        assert runner.infer({"input": x[:0]})[LOGITS].shape == (0, 4)
        assert cudart.pending() == 0  # nothing left in flight after a call returns
    assert cudart.live_allocations() == 0  # deactivate released every buffer


def test_results_are_read_only_after_synchronising(fake_gpu) -> None:
    _, cudart = fake_gpu
    cuda = Cuda()
    stream = cuda.stream()
    host = cuda.pinned((4,), np.float32)
    back = cuda.pinned((4,), np.float32)
    device = cuda.alloc(16)
    host.array[:] = [1, 2, 3, 4]
    cuda.to_device(device, host, 16, stream)
    cuda.to_host(back, device, 16, stream)
    assert np.isnan(back.array).all()  # still in flight: garbage
    stream.synchronize()
    np.testing.assert_array_equal(back.array, [1, 2, 3, 4])
    with pytest.raises(WorkFailedError, match="does not fit"):
        cuda.to_device(device, host, 32, stream)
    for item in (device, host, back):
        item.free()
    stream.destroy()
    assert cudart.live_allocations() == 0


def test_engine_records_and_refusals(fake_gpu, tmp_path: Path) -> None:
    trt, _ = fake_gpu
    bundle = _engines(make_variant_bundle(tmp_path, "fp32"))
    runner = TensorRTRunner(bundle, 0)
    prov = runner.provenance()
    engine = bundle.engines.members["m0"]  # type: ignore[union-attr]
    assert (prov.engine_sha256, prov.tensorrt_version, prov.compute_capability) == (engine.sha256, "10.3.0.30", "8.7")
    assert runner.info()["gpu_name"] == "Fake Orin"
    trt.__version__ = "10.3.0.26"  # another TensorRT than the one that built it
    with pytest.raises(BadInputError, match="built with TensorRT 10.3.0.30"):
        runner.activate()
    trt.__version__ = "10.3.0.30"
    with runner, pytest.raises(UsageError, match="already active"):
        runner.activate()
    no_engines = make_mlp_bundle(tmp_path / "plain", members=1)
    with pytest.raises(BadInputError, match="wcx build-engines"):
        TensorRTRunner(no_engines, 0).activate()


def test_calibrate_then_strict_load_on_tensorrt(fake_gpu, tmp_path: Path) -> None:
    bundle = _engines(make_mlp_bundle(tmp_path))
    calib = labelled_data(bundle, 2000, 0)
    done = calibrate_bundle(bundle, calib, CascadeCalibrator(risk=0.2), backend="tensorrt")
    assert done.report["manifest_written"] and done.provenance is not None
    assert done.provenance.members[0].engine_sha256 == bundle.engines.members["m0"].sha256  # type: ignore[union-attr]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it runs what was calibrated: no mismatch warning
        cascade = Cascade.load(bundle.path, strict=True)  # "auto" picks the calibrated backend
    x = calib.x[:500]
    with cascade, Cascade.load(bundle.path, "onnxruntime", policy=cascade.section) as reference:
        assert cascade.backend == "tensorrt"
        out, ref = cascade(x, timing=True), reference(x)
    np.testing.assert_array_equal(out.exit_stage, ref.exit_stage)
    np.testing.assert_array_equal(out.accept, ref.accept)
    np.testing.assert_allclose(out.score, ref.score, rtol=1e-5, atol=1e-6)
    assert out.timing is not None and out.timing.padded_rows[0] == 512  # 500 rows: buckets of the profile's max


def test_cascade_without_torch_matches_onnxruntime_on_the_zoo(tmp_path: Path) -> None:
    """A TensorRT cascade (fake GPU) in a process where torch cannot be imported makes the same
    decisions as the onnxruntime cascade on the zoo's test split."""
    script = f"""
import importlib.abc, sys


class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed here")
        return None


sys.meta_path.insert(0, NoTorch())  # importing torch now raises ImportError
sys.path.insert(0, {str(ROOT)!r})
import numpy as np
from tests.fakes.cudart import FakeCudart
from tests.fakes.tensorrt import make_fake_tensorrt
sys.modules["tensorrt"] = make_fake_tensorrt()
from wcx.bundle import Bundle, select_members
from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.held_out import calibrate_bundle, load_dataset_for
from wcx.cuda_runtime import use_binding
from wcx.export.tensorrt_engine import build_engines
from wcx.runtime.cascade import Cascade
from wcx.zoo import split_path
from wcx.zoo.experiment import load_zoo_bundle

with use_binding(FakeCudart()):
    b = select_members(load_zoo_bundle("fp32"), ["b3_s0", "b3_s1"], {str(tmp_path / "b3")!r})
    calib = load_dataset_for(b, split_path("calib"), require_labels=True)
    test = load_dataset_for(b, split_path("test"), require_labels=True)
    calibrate_bundle(b, calib, CascadeCalibrator(risk=0.05, delta=0.1))
    build_engines(b, opt_batch=32, max_batch=256)
    b = Bundle.load(b.path)
    with Cascade.load(b, "onnxruntime", strict=True) as ort, \\
            Cascade.load(b, "tensorrt", policy=b.policy) as trt:
        a, t = ort.predict(test.x), trt.predict(test.x)
    assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
    assert (a.accept == t.accept).all() and (a.exit_stage == t.exit_stage).all() and (a.pred == t.pred).all()
    print("identical", len(test.x), a.pass_fraction, float(a.accept.mean()))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("identical 5000")


def test_backend_auto_needs_the_binding_and_a_gpu(fake_gpu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes.cudart import FakeCudart
    from wcx.cuda_runtime import use_binding
    from wcx.runtime.backends import backend_available

    bundle = _engines(make_mlp_bundle(tmp_path))
    assert backend_available(bundle, "tensorrt") == (True, "")
    with use_binding(FakeCudart(devices=0)):
        ok, why = backend_available(bundle, "tensorrt")
    assert not ok and "needs a CUDA GPU" in why
    assert not backend_available(make_mlp_bundle(tmp_path / "plain"), "tensorrt")[0]
    assert SAMPLE == (1, 8, 8)


def _quirky_engine(trt, monkeypatch: pytest.MonkeyPatch, **patches: object) -> None:
    """Make the fake engine (or its context, for ``context_*`` names) answer differently."""
    real = trt.Runtime

    class Quirky(real):  # type: ignore[misc, valid-type]
        def deserialize_cuda_engine(self, plan):  # noqa: ANN001, ANN202
            engine = super().deserialize_cuda_engine(plan)
            make_context = engine.create_execution_context

            def create_execution_context():  # noqa: ANN202
                context = make_context()
                for name, value in patches.items():
                    if name.startswith("context_"):
                        setattr(context, name[len("context_"):], value)
                return context

            engine.create_execution_context = create_execution_context
            for name, value in patches.items():
                if not name.startswith("context_"):
                    setattr(engine, name, value)
            return engine

    monkeypatch.setattr(trt, "Runtime", Quirky)


@pytest.mark.parametrize(
    "patch, error, match",
    [
        ({"get_tensor_mode": lambda name: "OUTPUT"}, BadInputError, "has inputs"),
        ({"get_tensor_profile_shape": lambda name, i: [(1, 1, 8, 8), (8, 1, 8, 8), (32, 1, 8, 8)]}, BadInputError,
         "up to 32"),
        ({"get_tensor_dtype": lambda name: "INT32"}, BadInputError, "I/O types"),
        ({"get_tensor_shape": lambda name: (-1, 5) if name == "logits" else (-1, 1, 8, 8)}, BadInputError,
         "outputs shape"),
        ({"create_execution_context": lambda: None}, WorkFailedError, "execution context"),
        ({"context_set_input_shape": lambda name, shape: False}, WorkFailedError, "refused input shape"),
        ({"context_set_tensor_address": lambda name, memory: False}, WorkFailedError, "refused the address"),
        ({"context_execute_async_v3": lambda stream_handle: False}, WorkFailedError, "failed to run"),
    ],
)
def test_engine_quirks_are_refused(fake_gpu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, patch: dict,
                                   error: type, match: str) -> None:
    trt, cudart = fake_gpu
    bundle = _engines(make_variant_bundle(tmp_path, "fp32"))
    _quirky_engine(trt, monkeypatch, **patch)
    runner = TensorRTRunner(bundle, 0)
    with pytest.raises(error, match=match), runner:
        runner.infer({"input": _inputs(3)})
    assert not runner.is_active and cudart.live_allocations() == 0


def test_engine_files_are_checked_when_activating(fake_gpu, tmp_path: Path) -> None:
    from dataclasses import replace

    from wcx.bundle import sha256_file
    from wcx.core.manifest import EnginesSection

    bundle = _engines(make_variant_bundle(tmp_path, "fp32"))
    assert bundle.engines is not None
    engine_file = bundle.file(bundle.engines.members["m0"].file)
    plan = engine_file.read_bytes()
    engine_file.write_bytes(plan + b"\0")  # altered after the bundle was loaded
    with pytest.raises(BadInputError, match="was altered"):
        TensorRTRunner(bundle, 0).activate()
    engine_file.write_bytes(b"not a plan")  # a plan TensorRT cannot read, recorded as it is
    assert bundle.engines is not None
    record = replace(bundle.engines.members["m0"], sha256=sha256_file(engine_file))
    bundle.update_sections(engines=EnginesSection(members={"m0": record}, timing_cache=bundle.engines.timing_cache))
    with pytest.raises(BadInputError, match="could not deserialize"):
        TensorRTRunner(bundle, 0).activate()
    engine_file.unlink()
    with pytest.raises(BadInputError, match="is missing"):
        TensorRTRunner(bundle, 0).activate()


def test_failed_allocation_releases_what_was_allocated(fake_gpu, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _, cudart = fake_gpu
    bundle = _engines(make_variant_bundle(tmp_path, "fp32"))
    calls = {"n": 0}
    real = cudart.cudaMallocHost

    def failing(size: int):  # noqa: ANN202 - the second pinned buffer cannot be had
        calls["n"] += 1
        return (cudart.cudaError_t.cudaErrorMemoryAllocation, 0) if calls["n"] == 2 else real(size)

    monkeypatch.setattr(cudart, "cudaMallocHost", failing)
    with pytest.raises(WorkFailedError, match="cudaMallocHost failed"):
        TensorRTRunner(bundle, 0).activate()
    assert cudart.live_allocations() == 0


def test_provenance_without_tensorrt_reads_the_record(fake_gpu, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = _engines(make_variant_bundle(tmp_path, "fp32"))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    runner = TensorRTRunner(bundle, 0)
    prov = runner.provenance()
    assert (prov.tensorrt_version, prov.compute_capability) == ("10.3.0.30", "8.7")
    assert "tensorrt" not in runner.info()
