"""``wcx serve`` on loopback: a real Triton server, real clients, the in-process cascade as the
reference. Started as a subprocess in the serving environment, stopped by its PID."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.conftest import with_policy
from tests.serve.conftest import ROOT, free_ports
from wcx.bundle import Bundle
from wcx.runtime.cascade import Cascade

http = pytest.importorskip("tritonclient.http", reason="tritonclient (the test extra) is not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "wcx_cascade"
START_SECONDS = 45


def _log_tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-15:])


@pytest.fixture
def served(server_python: str, mlp_bundle: Bundle, tmp_path: Path) -> Iterator[tuple[str, int, Bundle, Path]]:
    """A window-policy bundle served by ``wcx serve`` on free loopback ports; stopped by SIGTERM
    to its PID (killed if it does not stop)."""
    bundle = with_policy(mlp_bundle, tmp_path / "bundle")
    port = free_ports(4)
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([server_python, "-m", "wcx.cli", "serve", str(bundle.path), "--host", "127.0.0.1",
                                 "--port", str(port), "--max-batch", "64", "--threads", "1"],
                                stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        client = http.InferenceServerClient(f"127.0.0.1:{port}")
        deadline = time.monotonic() + START_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"wcx serve exited with {proc.returncode}:\n{_log_tail(log)}")
            try:
                if client.is_server_ready() and client.is_model_ready(MODEL):
                    break
            except Exception:  # not listening yet
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"wcx serve was not ready after {START_SECONDS} s:\n{_log_tail(log)}")
            time.sleep(0.25)
        yield str(proc.pid), port, bundle, log
        proc.send_signal(signal.SIGTERM)  # by its PID: a graceful stop
        assert proc.wait(timeout=30) == 0, _log_tail(log)
        assert "stopped after" in log.read_text(), _log_tail(log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _request(x: np.ndarray, dtype: str = "FP32") -> list:
    inp = http.InferInput("x", list(x.shape), dtype)
    inp.set_data_from_numpy(x)
    return [inp]


def test_served_decisions_equal_the_in_process_cascade(served: tuple[str, int, Bundle, Path]) -> None:
    pid, port, bundle, log = served
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 9, size=200)
    batches = [rng.random((int(n), 1, 8, 8), dtype=np.float32) for n in sizes]
    # 8 requests in flight, so Triton's dynamic batcher merges some of them
    client = http.InferenceServerClient(f"127.0.0.1:{port}", concurrency=8)
    pending = [client.async_infer(MODEL, _request(x)) for x in batches]
    results = [p.get_result() for p in pending]
    got = {k: np.concatenate([r.as_numpy(k) for r in results]) for k in ("pred", "score", "accept", "exit_stage")}
    x = np.concatenate(batches)
    with Cascade.load(bundle) as cascade:
        want = cascade(x)
    assert all(v.shape == (len(x), 1) for v in got.values())
    np.testing.assert_array_equal(got["pred"].ravel(), want.pred)
    np.testing.assert_array_equal(got["accept"].ravel(), want.accept)
    np.testing.assert_array_equal(got["exit_stage"].ravel(), want.exit_stage)
    np.testing.assert_allclose(got["score"].ravel(), want.score, rtol=1e-6, atol=1e-9)
    assert set(want.exit_stage.tolist()) == {1, 2}, "both stages must be exercised"

    # a request outside the input contract (pixels as floats) gets an error naming it ...
    with pytest.raises(InferenceServerException, match="outside the input range"):
        client.infer(MODEL, _request(batches[0] * 255.0))
    # ... as does another dtype (refused by Triton itself) ...
    with pytest.raises(InferenceServerException):
        client.infer(MODEL, _request((batches[0] * 255).astype(np.uint8), "UINT8"))
    # ... and the server keeps serving
    again = client.infer(MODEL, _request(batches[0]))
    np.testing.assert_array_equal(again.as_numpy("pred").ravel(), want.pred[: len(batches[0])])

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port + 3}/metrics", timeout=10).read().decode()
    assert f"wcx_rows_total {len(x) + len(batches[0])}" in metrics
    assert "wcx_requests_failed_total 1" in metrics
    reached = int((want.exit_stage >= 2).sum()) + int((want.exit_stage[: len(batches[0])] >= 2).sum())
    assert f'wcx_stage_rows_total{{stage="2"}} {reached}' in metrics
    client.close()
