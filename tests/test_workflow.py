"""The Python workflow (``wcx.workflow``): the same options and defaults as the command line,
the result object with the certificate, and inspect."""

from __future__ import annotations

import inspect as pyinspect
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import wcx
from tests.bundle_factory import labelled_data
from wcx.bundle import Bundle
from wcx.cli import app
from wcx.errors import BadInputError, WorkFailedError


def _cli_defaults(command: str) -> dict[str, Any]:
    group: Any = typer.main.get_command(app)
    cmd = group.commands[command]
    return {p.name: p.default for p in cmd.params if p.name}


def _function_defaults(fn: Any) -> dict[str, Any]:
    return {name: p.default for name, p in pyinspect.signature(fn).parameters.items()
            if p.default is not pyinspect.Parameter.empty}


@pytest.mark.parametrize(("command", "function"), [("calibrate", "calibrate"), ("export", "export_bundle"),
                                                  ("plan", "plan_bundle")])
def test_python_calls_have_the_cli_defaults(command: str, function: str) -> None:
    """Every option the command shares with its Python call has the same default (a list-valued
    option's default may be the empty tuple click gives a multiple option)."""
    cli = _cli_defaults(command)
    py = _function_defaults(getattr(wcx, function))
    shared = sorted(set(cli) & set(py))
    assert len(shared) >= 8, shared  # guards the comparison itself
    for name in shared:
        a, b = cli[name], py[name]
        if a in ((), []) and b is None:
            continue
        assert a == b, f"{command} --{name.replace('_', '-')}: CLI default {a!r}, wcx.{function} default {b!r}"


@pytest.fixture
def bundle_and_data(mlp_bundle: Bundle, tmp_path: Path) -> tuple[Bundle, Path]:
    """A copy of the MLP bundle and 2,000 labelled rows for it in an .npz."""
    b = Bundle.load(shutil.copytree(mlp_bundle.path, tmp_path / "b"))
    ds = labelled_data(b, 2000, 0)
    path = tmp_path / "val.npz"
    np.savez(path, x=ds.x, y=ds.y)
    return b, path


def test_calibrate_returns_the_certificate_and_writes_the_manifest(bundle_and_data: tuple[Bundle, Path],
                                                                   tmp_path: Path) -> None:
    bundle, data = bundle_and_data
    done = wcx.calibrate(bundle.path, data, risk=0.2, delta=0.2, n_boot=0)
    assert done.certified and done.report["certified"] and done.result.threshold.certified
    assert done.report["tau"] == pytest.approx(done.result.tau)
    info = wcx.inspect_bundle(bundle.path)
    assert info.calibrated and info.certified
    assert info.members == [m.name for m in bundle.members]
    assert info.digest == Bundle.load(bundle.path).digest()
    # the CLI fits the same calibration from the same options
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["calibrate", str(bundle.path), "--data", str(data), "--risk", "0.2",
                                   "--delta", "0.2", "--n-boot", "0", "--json", str(out)])
    assert res.exit_code == 0, res.output
    cli_report = json.loads(out.read_text())
    assert (cli_report["tau"], cli_report["windows"]) == (done.report["tau"], done.report["windows"])


def test_an_uncertified_fit_is_returned_and_raises_on_request(bundle_and_data: tuple[Bundle, Path]) -> None:
    bundle, data = bundle_and_data
    done = wcx.calibrate(bundle, data, risk=0.02, delta=0.1, n_boot=0)  # a 15% label noise: unreachable
    assert not done.certified
    with pytest.raises(WorkFailedError, match="no certificate"):
        done.raise_if_failed()


def test_calibrate_on_an_iterable_of_batches(bundle_and_data: tuple[Bundle, Path]) -> None:
    bundle, data = bundle_and_data
    d = np.load(data)
    batches = [(d["x"][i : i + 300], d["y"][i : i + 300]) for i in range(0, len(d["y"]), 300)]
    reference = wcx.calibrate(bundle, data, risk=0.2, n_boot=0)
    done = wcx.calibrate(bundle, batches, risk=0.2, n_boot=0)
    assert done.report["tau"] == reference.report["tau"]
    assert done.report["windows"] == reference.report["windows"]


def test_latency_cost_needs_the_bench_rows(bundle_and_data: tuple[Bundle, Path]) -> None:
    bundle, data = bundle_and_data
    with pytest.raises(BadInputError, match="bench"):
        wcx.calibrate(bundle, data, cost="latency")


def test_inspect_refuses_an_altered_bundle(bundle_and_data: tuple[Bundle, Path]) -> None:
    bundle, _ = bundle_and_data
    member = bundle.member_path(0)
    member.write_bytes(member.read_bytes() + b"\0")
    with pytest.raises(BadInputError, match="altered"):
        wcx.inspect_bundle(bundle.path)
