"""``wcx export-triton``: the repository's layout and configs, the BLS cascade's decisions and
per-row branching in-process, and the repository served on loopback by the ``tritonserver`` of
PyTriton's wheel (members as Python-backend models: that server has no other backend)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.runtime.conftest import with_policy
from tests.serve.conftest import ROOT, free_ports
from wcx.bundle import Bundle
from wcx.errors import BadInputError
from wcx.runtime.cascade import Cascade
from wcx.serve.bls_model import CASCADE_FILE, cascade_from_spec
from wcx.serve.repository import CASCADE_MODEL, export_triton, member_model_name


@pytest.fixture
def policy_bundle(mlp_bundle3: Bundle, tmp_path: Path) -> Bundle:
    """The three-member MLP bundle with windows wide enough that every stage runs."""
    policy = {"kind": "window", "task": "selective", "score": "msp", "windows": [[0.35, 0.9], [0.35, 0.9]],
              "tau": 0.6}
    return with_policy(mlp_bundle3, tmp_path / "bundle", policy=policy)


@pytest.mark.parametrize("members", ["onnxruntime", "tensorrt", "python"])
def test_repository_layout(policy_bundle: Bundle, tmp_path: Path, members: str) -> None:
    report = export_triton(policy_bundle, tmp_path / "repo", members=members, max_batch=32)
    repo = report.path
    names = [member_model_name(i, m.name) for i, m in enumerate(policy_bundle.members)]
    assert report.models == [CASCADE_MODEL, *names]
    assert (repo / CASCADE_MODEL / "1" / "model.py").read_text().count("from wcx.serve.bls_model import") == 1
    spec = json.loads((repo / CASCADE_MODEL / "1" / CASCADE_FILE).read_text())
    assert spec["member_models"] == names and spec["policy"] == policy_bundle.policy.to_dict()
    platform = {"onnxruntime": 'platform: "onnxruntime_onnx"', "tensorrt": 'platform: "tensorrt_plan"',
                "python": 'backend: "python"'}[members]
    for name in names:
        config = (repo / name / "config.pbtxt").read_text()
        assert platform in config and "max_batch_size: 32" in config and "dynamic_batching" in config
        onnx_file = repo / name / ("model.onnx" if members == "tensorrt" else "1/model.onnx")
        assert onnx_file.is_file()
    script = repo / "build_tensorrt_plans.sh"
    assert script.is_file() == (members == "tensorrt")
    if members == "tensorrt":
        assert script.read_text().count("--stronglyTyped") == len(names)


def test_refusals(mlp_bundle: Bundle, policy_bundle: Bundle, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no policy"):
        export_triton(mlp_bundle, tmp_path / "a")
    with pytest.raises(BadInputError, match="members 'triton'"):
        export_triton(policy_bundle, tmp_path / "b", members="triton")
    (tmp_path / "c").mkdir()
    with pytest.raises(BadInputError, match="not a repository written by wcx export-triton"):
        export_triton(policy_bundle, tmp_path / "c", overwrite=True)
    export_triton(policy_bundle, tmp_path / "d")
    with pytest.raises(FileExistsError):
        export_triton(policy_bundle, tmp_path / "d")
    export_triton(policy_bundle, tmp_path / "d", overwrite=True, members="python")


def test_bls_cascade_equals_the_cascade_and_sends_only_window_rows(policy_bundle: Bundle, tmp_path: Path) -> None:
    """The BLS model's cascade, with members reached through a call (here ONNX Runtime directly),
    decides as ``Cascade.load`` and sends member m+1 only the rows still in their windows."""
    repo = export_triton(policy_bundle, tmp_path / "repo", members="python", max_batch=64).path
    spec = json.loads((repo / CASCADE_MODEL / "1" / CASCADE_FILE).read_text())
    sessions = {name: ort.InferenceSession(str(repo / name / "1" / "model.onnx"))
                for name in spec["member_models"]}
    rows_sent = {name: 0 for name in spec["member_models"]}

    def call(model: str, input_name: str, output_name: str, x: np.ndarray) -> np.ndarray:
        assert x.shape[0] <= 64
        rows_sent[model] += x.shape[0]
        return sessions[model].run([output_name], {input_name: x})[0]

    x = np.random.default_rng(5).random((300, *policy_bundle.sample_shape), dtype=np.float32)
    cascade, contract = cascade_from_spec(spec, call)
    with cascade, Cascade.load(policy_bundle) as reference:
        got, want = cascade(x), reference(x)
    np.testing.assert_array_equal(got.exit_stage, want.exit_stage)
    np.testing.assert_array_equal(got.pred, want.pred)
    np.testing.assert_array_equal(got.accept, want.accept)
    np.testing.assert_allclose(got.score, want.score, rtol=1e-6)
    assert set(want.exit_stage.tolist()) == {1, 2, 3}
    assert [rows_sent[n] for n in spec["member_models"]] == [int((want.exit_stage >= m).sum()) for m in (1, 2, 3)]
    with pytest.raises(BadInputError, match="outside the input range"):
        contract.check_request(x * 255.0)


def test_exported_repository_on_the_wheels_tritonserver(server_python: str, policy_bundle: Bundle,
                                                        tmp_path: Path) -> None:
    http = pytest.importorskip("tritonclient.http", reason="tritonclient (the test extra) is not installed")
    from tritonclient.utils import InferenceServerException

    repo = tmp_path / "repo"
    for members, out in (("python", repo), ("onnxruntime", tmp_path / "ort"), ("tensorrt", tmp_path / "trt")):
        res = subprocess.run([server_python, "-m", "wcx.cli", "export-triton", str(policy_bundle.path), "--out",
                              str(out), "--members", members, "--max-batch", "64"],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert res.returncode == 0, res.stderr
        # every config.pbtxt was parsed with Triton's model-config protobuf (the serve extra has it)
        assert "parsed with tritonclient.grpc.model_config_pb2" in " ".join(res.stdout.split())
    port = free_ports(3)
    log = tmp_path / "triton.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([server_python, "-m", "wcx.serve.wheel_server", str(repo), "--port", str(port),
                                 "--workdir", str(tmp_path / "work")], stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        client = http.InferenceServerClient(f"127.0.0.1:{port}", concurrency=4)
        deadline = time.monotonic() + 45
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if client.is_model_ready(CASCADE_MODEL):
                    break
            except Exception:  # not listening yet
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.25)
        rng = np.random.default_rng(9)
        batches = [rng.random((int(n), 1, 8, 8), dtype=np.float32) for n in rng.integers(1, 9, size=60)]

        def request(x: np.ndarray) -> list:
            inp = http.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            return [inp]

        pending = [client.async_infer(CASCADE_MODEL, request(x)) for x in batches]
        results = [p.get_result() for p in pending]
        x = np.concatenate(batches)
        with Cascade.load(policy_bundle) as cascade:
            want = cascade(x)
        for key in ("pred", "accept", "exit_stage"):
            np.testing.assert_array_equal(np.concatenate([r.as_numpy(key) for r in results]).ravel(),
                                          getattr(want, key))
        with pytest.raises(InferenceServerException, match="request 1 of 1: float values"):
            client.infer(CASCADE_MODEL, request(batches[0] * 255.0))
        again = client.infer(CASCADE_MODEL, request(batches[0]))
        np.testing.assert_array_equal(again.as_numpy("pred").ravel(), want.pred[: len(batches[0])])
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port + 2}/metrics", timeout=10).read().decode()
        reached = int((want.exit_stage >= 3).sum()) + int((want.exit_stage[: len(batches[0])] >= 3).sum())
        assert f'wcx_stage_rows_total{{model="{CASCADE_MODEL}",stage="3"}} {reached}' in metrics
        # member 3's model ran only the rows that reached stage 3
        assert f'nv_inference_count{{model="{member_model_name(2, "m2")}",version="1"}} {reached}' in metrics
        client.close()
        proc.send_signal(signal.SIGTERM)  # by its PID (the launcher became the server)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
