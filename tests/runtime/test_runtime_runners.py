"""The runner contract, checked over every registered backend: onnxruntime and torch (CPU) as
they are, TensorRT on the fake GPU of tests/fakes unless a real TensorRT and GPU are present."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from wcx.bundle import Bundle
from wcx.errors import BadInputError, UsageError
from wcx.runtime.backends import backend_names, get_backend
from wcx.runtime.runner import LOGITS, Runner, TensorMeta

BACKENDS = ["onnxruntime", "torch", "tensorrt"]


def _make(backend: str, bundle: Bundle, index: int) -> Runner:
    return get_backend(backend).create(bundle, index, threads=1, device="cpu" if backend == "torch" else None)


def _importable(backend: str) -> bool:
    if backend == "onnxruntime":
        return importlib.util.find_spec("onnxruntime") is not None
    if backend == "torch":
        return all(importlib.util.find_spec(m) is not None for m in ("torch", "safetensors"))
    return True  # tensorrt: the real one, or the fake


def _to_numpy(a: object) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    return a.detach().cpu().numpy()  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", BACKENDS)
def test_runner_contract(backend: str, request: pytest.FixtureRequest) -> None:
    if not _importable(backend):
        pytest.skip(f"backend {backend} cannot be imported/run here")
    bundle: Bundle = request.getfixturevalue("torch_bundle" if backend == "torch" else "policy_bundle")
    if backend == "tensorrt":
        from wcx.export.engine_compat import tensorrt_available
        from wcx.export.tensorrt_engine import build_engines

        if not tensorrt_available()[0]:
            request.getfixturevalue("fake_gpu")
        build_engines(bundle, opt_batch=4, max_batch=16)
        bundle = Bundle.load(bundle.path)
    assert backend in backend_names()
    runner = _make(backend, bundle, 1)
    assert runner.backend == backend
    assert runner.name == f"{backend}:{bundle.members[1].name}"
    assert isinstance(runner.pads_to_buckets, bool)
    assert runner.array_library in ("numpy", "torch") and isinstance(runner.device, str)
    assert runner.precision in ("fp32", "fp16", "int8")
    assert runner.input_metadata() == {"input": TensorMeta("input", (None, 1, 8, 8), runner.input_dtype)}
    assert runner.provenance().onnx_sha256 == bundle.members[1].sha256
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    with pytest.raises(UsageError, match="not active"):
        runner.infer({"input": x})
    with runner as active:
        assert active is runner and runner.is_active
        with pytest.raises(UsageError, match="already active"):
            runner.activate()
        with pytest.raises(BadInputError, match="one input named"):
            runner.infer({"wrong": x})
        with pytest.raises(BadInputError, match="takes"):
            runner.infer({"input": x[:, :, :4]})
        out = runner.infer({"input": x})  # every runner accepts host arrays
        assert set(out) == {LOGITS}
        logits = out[LOGITS]
        if isinstance(logits, np.ndarray):
            assert logits.dtype == np.float32
        else:
            import torch

            assert isinstance(logits, torch.Tensor) and logits.dtype == torch.float32
        assert tuple(logits.shape) == (5, bundle.num_classes)
        assert np.isfinite(_to_numpy(logits)).all()
        # a second call with another size works and is consistent row by row
        again = _to_numpy(runner.infer({"input": x[:3]})[LOGITS])
        np.testing.assert_allclose(again, _to_numpy(logits)[:3], rtol=1e-5, atol=1e-5)
        assert tuple(runner.infer({"input": x[:0]})[LOGITS].shape) == (0, bundle.num_classes)
        assert runner.rows_for(5) >= 5
    assert not runner.is_active
    runner.deactivate()  # idempotent
    # released and reusable
    with runner:
        assert _to_numpy(runner.infer({"input": x})[LOGITS]).shape == (5, bundle.num_classes)


def test_backends_agree(torch_bundle: Bundle) -> None:
    pytest.importorskip("torch")
    from wcx.runtime.onnxruntime_runner import OnnxRuntimeRunner
    from wcx.runtime.torch_runner import TorchRunner

    x = np.random.default_rng(1).standard_normal((17, 1, 8, 8)).astype(np.float32)
    for i in range(2):
        with OnnxRuntimeRunner(torch_bundle, i) as a, TorchRunner(torch_bundle, i, device="cpu") as b:
            np.testing.assert_allclose(_to_numpy(b.infer({"input": x})[LOGITS]),
                                       a.infer({"input": x})[LOGITS], rtol=1e-5, atol=1e-5)
            assert b.rows_received == 17 and b.rows_run == 32  # padded to the power-of-two bucket


def test_torch_runner_without_torch_source_is_clear(policy_bundle: Bundle) -> None:
    pytest.importorskip("torch")
    from wcx.runtime.torch_runner import TorchRunner

    with pytest.raises(BadInputError, match="module:callable"):
        TorchRunner(policy_bundle, 0, device="cpu").activate()


def test_torch_runner_bad_sources(torch_bundle: Bundle) -> None:
    pytest.importorskip("torch")
    import json

    from wcx.bundle import MANIFEST_NAME
    from wcx.runtime.torch_runner import TorchRunner

    manifest = json.loads((torch_bundle.path / MANIFEST_NAME).read_text())
    for ref, match in (("tests.runtime.torch_members:not_a_module", "not an nn.Module"),
                       ("tests.runtime.no_such_module:f", "cannot import"),
                       ("no_colon", "module:callable")):
        manifest["members"][0]["torch_source"]["callable"] = ref
        (torch_bundle.path / MANIFEST_NAME).write_text(json.dumps(manifest))
        with pytest.raises(BadInputError, match=match):
            TorchRunner(Bundle.load(torch_bundle.path), 0, device="cpu").activate()


def test_torch_runner_cuda_without_gpu_is_missing_dependency(torch_bundle: Bundle) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from wcx.errors import MissingDependencyError
    from wcx.runtime.torch_runner import TorchRunner

    with pytest.raises(MissingDependencyError, match="GPU"):
        TorchRunner(torch_bundle, 0).activate()
    with pytest.raises(BadInputError, match="CUDA graphs"):
        TorchRunner(torch_bundle, 0, device="cpu", cuda_graphs=True)


def test_torch_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from wcx.errors import MissingDependencyError
    from wcx.runtime import torch_runner

    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "torch" or name.startswith("torch."):
            raise ImportError("no torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingDependencyError, match=r'-e "\.\[torch\]"'):
        torch_runner.import_torch()


def test_ort_runner_threads_and_bad_graph(policy_bundle: Bundle, tmp_path) -> None:
    from wcx.runtime.onnxruntime_runner import OnnxRuntimeRunner

    with pytest.raises(BadInputError, match="threads"):
        OnnxRuntimeRunner(policy_bundle, 0, threads=0)
    member_file = policy_bundle.member_path(0)
    member_file.write_bytes(b"not onnx")
    bundle = Bundle.load(policy_bundle.path, verify=False)
    with pytest.raises(BadInputError, match="cannot load"):
        OnnxRuntimeRunner(bundle, 0).activate()


@pytest.mark.gpu
def test_torch_runner_cuda_graphs_match_eager(torch_bundle: Bundle) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from wcx.runtime.torch_runner import TorchRunner

    x = np.random.default_rng(2).standard_normal((37, 1, 8, 8)).astype(np.float32)
    with TorchRunner(torch_bundle, 0) as g, TorchRunner(torch_bundle, 0, cuda_graphs=False) as e:
        a = _to_numpy(g.infer({"input": x})[LOGITS])
        a2 = _to_numpy(g.infer({"input": x[:5]})[LOGITS])
        b = _to_numpy(e.infer({"input": x})[LOGITS])
    np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(a2, b[:5], rtol=1e-2, atol=1e-2)
