"""The serving contract's checks and responses, answering a batch of requests, and the
per-stage metrics: no server needed."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.runtime.conftest import with_policy
from wcx.bundle import Bundle
from wcx.errors import BadInputError
from wcx.runtime.cascade import Cascade
from wcx.serve.contract import ServingContract
from wcx.serve.metrics import ServeMetrics, quantile
from wcx.serve.requests import answer_requests


@pytest.fixture
def cascade(mlp_bundle: Bundle, tmp_path: Path):
    with Cascade.load(with_policy(mlp_bundle, tmp_path / "b")) as c:
        yield c


def test_contract_tensors_and_checks(cascade) -> None:
    contract = ServingContract.for_cascade(cascade, probs=True)
    assert [(s.name, s.triton_dtype, s.shape) for s in contract.inputs] == [("x", "FP32", (1, 8, 8))]
    assert [(s.name, s.triton_dtype) for s in contract.outputs] == [
        ("pred", "INT64"), ("score", "FP64"), ("accept", "BOOL"), ("exit_stage", "INT64"), ("probs", "FP32")]
    x = np.full((2, 1, 8, 8), 0.5, dtype=np.float32)
    assert contract.check_request(x) is x
    for bad, match in ((None, "missing"), (x.astype(np.uint8), "must be float32"), (x[:, :, :4], "shape"),
                       (x * 255, "outside the input range"), (np.full_like(x, np.nan), "NaN")):
        with pytest.raises(BadInputError, match=match):
            contract.check_request(bad)
    u8 = ServingContract.for_cascade(cascade, input_dtype="uint8")
    assert u8.check_request(np.zeros((1, 1, 8, 8), dtype=np.uint8)).dtype == np.uint8
    with pytest.raises(BadInputError, match="input_dtype 'int8'"):
        ServingContract.for_cascade(cascade, input_dtype="int8")


def test_answer_requests_isolates_bad_requests(cascade) -> None:
    contract = ServingContract.for_cascade(cascade, probs=True)
    rng = np.random.default_rng(0)
    xs = [rng.random((n, 1, 8, 8), dtype=np.float32) for n in (3, 1, 4)]
    metrics = ServeMetrics(cascade.n_stages)
    answers = answer_requests(cascade, contract, [xs[0], xs[1] * 255, None, xs[2]], metrics=metrics)
    assert isinstance(answers[1], BadInputError) and "request 2 of 4" in str(answers[1])
    assert isinstance(answers[2], BadInputError)
    want = cascade(np.concatenate([xs[0], xs[2]]), return_probs=True)
    got = {k: np.concatenate([answers[0][k], answers[3][k]]) for k in ("pred", "exit_stage", "accept", "probs")}
    np.testing.assert_array_equal(got["pred"].ravel(), want.pred)
    np.testing.assert_array_equal(got["exit_stage"].ravel(), want.exit_stage)
    np.testing.assert_array_equal(got["accept"].ravel(), want.accept)
    np.testing.assert_allclose(got["probs"], want.probs)
    snap = metrics.snapshot()
    assert (snap["requests"], snap["failed_requests"], snap["rows"]) == (2, 2, 7)
    assert snap["stage_rows"] == [7, int((want.exit_stage >= 2).sum())]
    assert snap["accept_rate"] == pytest.approx(want.accept.mean())
    text = metrics.prometheus()
    assert "wcx_rows_total 7" in text and 'wcx_stage_pass_fraction{stage="1"} 1.0' in text


class _Request:
    """What PyTriton hands the infer function per request: its input tensors as ``data``."""

    def __init__(self, x: np.ndarray | None) -> None:
        self.data = {} if x is None else {"x": x}


def test_served_infer_checks_each_request_once(cascade, monkeypatch) -> None:
    from wcx.serve.server import make_infer

    contract = ServingContract.for_cascade(cascade, input_dtype="uint8")
    calls: list[str] = []
    check = ServingContract.check_request

    def counted(self: ServingContract, x: object, *, where: str = "request") -> np.ndarray:
        calls.append(where)
        return check(self, x, where=where)

    monkeypatch.setattr(ServingContract, "check_request", counted)
    metrics = ServeMetrics(cascade.n_stages)
    infer = make_infer(cascade, contract, metrics)
    rng = np.random.default_rng(1)
    xs = [rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8) for n in (2, 5)]
    answers = infer([_Request(x) for x in xs])
    assert calls == ["request 1 of 2", "request 2 of 2"]  # one validation pass per request
    want = cascade(np.concatenate(xs))
    np.testing.assert_array_equal(np.concatenate([a["pred"] for a in answers]).ravel(), want.pred)
    np.testing.assert_array_equal(np.concatenate([a["exit_stage"] for a in answers]).ravel(), want.exit_stage)
    assert [len(a["score"]) for a in answers] == [2, 5]
    with pytest.raises(BadInputError, match="request 2 of 2"):
        infer([_Request(xs[0]), _Request(None)])
    snap = metrics.snapshot()
    assert (snap["requests"], snap["failed_requests"], snap["rows"]) == (2, 2, 7)


@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=50), st.floats(0.01, 1.0))
def test_quantile_is_an_order_statistic(values: list[float], q: float) -> None:
    got = quantile(values, q)
    assert got in values
    # at least a q share of the values lie at or below it, and fewer below it
    assert sum(v <= got for v in values) >= q * len(values) - 1e-9
    assert sum(v < got for v in values) < max(q * len(values), 1)
    assert math.isnan(quantile([], q))


def test_serve_without_the_extra_names_it(mlp_bundle: Bundle, tmp_path: Path) -> None:
    import subprocess

    bundle = with_policy(mlp_bundle, tmp_path / "b")
    code = ("import sys; sys.modules['pytriton'] = None; sys.modules['pytriton.triton'] = None\n"
            "from wcx.cli import main; sys.argv = ['wcx', 'serve', sys.argv[1]]; main()")
    res = subprocess.run([sys.executable, "-c", code, str(bundle.path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "nvidia-pytriton" in res.stderr and '".[serve]"' in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("command", "module", "function", "at_least"),
                         [("serve", "wcx.serve.server", "serve", 9),
                          ("export-triton", "wcx.serve.repository", "export_triton", 7)])
def test_commands_have_the_library_defaults(command: str, module: str, function: str, at_least: int) -> None:
    import importlib
    import inspect

    import typer

    from wcx.cli import app

    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    cli = {p.name: p.default for p in cmd.params if p.name}
    fn = getattr(importlib.import_module(module), function)
    py = {n: p.default for n, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}
    shared = sorted(set(cli) & set(py))
    assert len(shared) >= at_least, shared
    for name in shared:
        assert cli[name] == py[name], f"{command} --{name}: CLI {cli[name]!r}, {function} {py[name]!r}"


def test_a_monitored_server_reports_its_alarms(capsys: pytest.CaptureFixture[str]) -> None:
    """wcx serve --monitor: the AlarmLog observer feeds the monitor and logs each alarm once;
    /metrics counts them and /monitor gives the status with every message (no server needed:
    the metrics endpoint is wcx's own HTTP server)."""
    import json
    import socket
    import urllib.request

    from tests.runtime.test_monitor import _draw, _reference
    from wcx.runtime.monitor import Monitor
    from wcx.serve.metrics import start_metrics_server
    from wcx.serve.server import AlarmLog

    monitor = Monitor(_reference(np.random.default_rng(1)), alpha=0.01)
    metrics = ServeMetrics(2, monitor=monitor)
    log = AlarmLog(monitor)
    rng = np.random.default_rng(3)
    for _ in range(10):
        log.observe(_draw(rng, 64, shift=0.4))  # every stage-1 score moved up: alarms
    text = metrics.prometheus()
    alarms = [a for a in monitor.status()["alarms"] if a["kind"] == "drift"]
    assert alarms and f"wcx_drift_alarms {len(alarms)}" in text and "wcx_monitor_inputs_total 640" in text
    assert all(f'wcx_drift_alarm{{statistic="{a["statistic"]}"}} 1' in text for a in alarms)
    logged = [line for line in capsys.readouterr().err.splitlines() if line.startswith("wcx serve: drift")]
    assert logged == [f"wcx serve: {a['message']}" for a in alarms]  # each alarm once, as raised
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_metrics_server(metrics, "127.0.0.1", port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/monitor", timeout=10) as r:
            status = json.loads(r.read())
        assert status["n_seen"] == 640 and [a["message"] for a in status["alarms"]] == [a["message"] for a in alarms]
    finally:
        server.shutdown()
        server.server_close()
    quiet = ServeMetrics(2)
    assert "wcx_drift" not in quiet.prometheus() and quiet.snapshot()["monitor"] is None
