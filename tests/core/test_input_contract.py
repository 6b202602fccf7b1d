"""The input contract (wcx.core.preprocess, the input section): floats outside the range the
members expect are refused with their min/max and the likely cause, everywhere a batch enters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.runtime.conftest import with_policy
from wcx.bundle import MANIFEST_NAME, Bundle
from wcx.cli import app
from wcx.core.manifest import CalibrationSection, InputSection, Manifest
from wcx.core.preprocess import RANGE_SLACK, Preprocessor
from wcx.errors import BadInputError
from wcx.runtime.cascade import Cascade


@pytest.fixture
def policy_bundle(mlp_bundle: Bundle, tmp_path: Path) -> Bundle:
    return with_policy(mlp_bundle, tmp_path / "policy_bundle")


def section(**kw: object) -> InputSection:
    base: dict[str, object] = {"name": "input", "shape": (1, 4, 4), "mean": (0.5,), "std": (0.25,)}
    base.update(kw)
    return InputSection(**base)  # type: ignore[arg-type]


def batch(value: float, n: int = 3) -> np.ndarray:
    return np.full((n, 1, 4, 4), value, dtype=np.float32)


def test_floats_in_0_255_are_refused_with_min_max_and_cause() -> None:
    p = Preprocessor(section())
    x = np.linspace(0, 255, 48, dtype=np.float32).reshape(3, 1, 4, 4)
    with pytest.raises(BadInputError) as exc:
        p(x, where="cascade input")
    text = str(exc.value)
    assert text.startswith("cascade input: float values in [0, 255]") and "\n" not in text
    assert "looks like 0..255 floats: divide by 255 or pass uint8" in text
    # the same pixels as uint8, or divided by 255, are what the members take
    np.testing.assert_allclose(p(x.astype(np.uint8)), p(x.astype(np.uint8).astype(np.float32) / 255))


def test_negative_floats_are_refused_as_already_normalised() -> None:
    with pytest.raises(BadInputError, match=r"\[-2, 2\].*already normalised with a mean/std.*input_range"):
        Preprocessor(section())(np.linspace(-2, 2, 48, dtype=np.float32).reshape(3, 1, 4, 4))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_floats_are_refused(value: float) -> None:
    x = batch(0.5)
    x[1, 0, 2, 2] = value
    with pytest.raises(BadInputError, match="NaN or infinite"):
        Preprocessor(section())(x)


def test_edges_and_rounding_slack_pass() -> None:
    p = Preprocessor(section())
    p(batch(0.0))
    p(batch(1.0))
    p(batch(1.0 + RANGE_SLACK / 2))  # a user's own x / 255 may round a hair above 1
    with pytest.raises(BadInputError, match="outside the input range"):
        p(batch(1.0 + 10 * RANGE_SLACK))
    with pytest.raises(BadInputError, match="scale float inputs into"):
        p(batch(300.0))  # beyond 0..255 pixels: no guess


def test_another_declared_range_is_the_contract() -> None:
    p = Preprocessor(section(value_range=(-1.0, 1.0)))
    p(batch(-1.0))
    with pytest.raises(BadInputError, match=r"outside the input range \[-1, 1\]"):
        p(batch(1.5))


def test_normalized_inputs_pass_unchanged_and_refuse_uint8() -> None:
    s = section(mean=(0.0,), std=(1.0,), value_range=(-3.0, 3.0), normalized=True)
    p = Preprocessor(s)
    x = np.linspace(-3, 3, 48, dtype=np.float32).reshape(3, 1, 4, 4)
    np.testing.assert_array_equal(p(x), x)  # no scaling, no mean/std
    with pytest.raises(BadInputError, match="already-normalised float inputs in \\[-3, 3\\].*not uint8"):
        p(x.astype(np.uint8))
    with pytest.raises(BadInputError, match="raw 0..255 pixels"):
        p(batch(200.0))
    with pytest.raises(BadInputError, match="normalized inputs take no mean/std"):
        section(normalized=True, value_range=(-3.0, 3.0))


def test_torch_tensors_are_checked_on_their_device() -> None:
    torch = pytest.importorskip("torch")
    p = Preprocessor(section())
    with pytest.raises(BadInputError, match=r"\[0, 255\].*0..255 floats"):
        p(torch.from_numpy(np.linspace(0, 255, 48, dtype=np.float32).reshape(3, 1, 4, 4)))
    with pytest.raises(BadInputError, match="NaN"):
        p(torch.full((2, 1, 4, 4), float("nan")))
    ok = np.random.default_rng(0).random((3, 1, 4, 4), dtype=np.float32)
    np.testing.assert_array_equal(p(torch.from_numpy(ok)).numpy(), p(ok))


def test_normalized_field_is_written_read_and_part_of_the_identity() -> None:
    s = section()
    assert s.to_dict()["normalized"] is False
    raw = s.to_dict()
    del raw["normalized"]  # a version-2 manifest written before the field existed
    assert InputSection.from_dict(raw, where="m") == s
    normalized = section(mean=(0.0,), std=(1.0,), value_range=(-3.0, 3.0), normalized=True)
    assert InputSection.from_dict(normalized.to_dict(), where="m") == normalized
    assert normalized.preprocessing() != section(mean=(0.0,), std=(1.0,), value_range=(-3.0, 3.0)).preprocessing()
    with pytest.raises(BadInputError, match="'normalized' must be true or false"):
        InputSection.from_dict({**s.to_dict(), "normalized": "yes"}, where="m")


def test_a_calibration_recorded_before_the_field_still_matches(policy_bundle: Bundle, tmp_path: Path) -> None:
    """An older record of the input section (no ``normalized``) means today's default: no mismatch."""
    b = Bundle.load(shutil.copytree(policy_bundle.path, tmp_path / "b"))
    raw = json.loads((b.path / MANIFEST_NAME).read_text())
    for m in raw["calibration"]["provenance"]["members"]:
        del m["input"]["normalized"]
    (b.path / MANIFEST_NAME).write_text(json.dumps(raw))
    with Cascade.load(b.path, "onnxruntime", strict=True):
        pass
    for m in raw["calibration"]["provenance"]["members"]:
        m["input"]["normalized"] = True  # a real difference is still one
    (b.path / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(BadInputError, match="normalized False -> True|normalized True -> False"):
        Cascade.load(b.path, "onnxruntime", strict=True)
    assert isinstance(Manifest.from_dict(raw).calibration, CalibrationSection)


def test_cascade_refuses_before_any_member_runs(policy_bundle: Bundle) -> None:
    x = np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32) * 255
    with Cascade.load(policy_bundle, "onnxruntime") as c:
        with pytest.raises(BadInputError, match="looks like 0..255 floats"):
            c(x)
        assert all(r.calls == 0 for r in c.runners)
        out = c((x / 255).astype(np.float32))
        assert len(out) == 20


def test_calibration_refuses_out_of_range_data(mlp_bundle: Bundle) -> None:
    from wcx.calibration.held_out import run_members

    x = -np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32)
    with pytest.raises(BadInputError, match="held-out data: float values .* already normalised"):
        run_members(mlp_bundle, x, cache=False)


def test_wcx_run_refuses_0_255_floats_exit_2(policy_bundle: Bundle, tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32) * 255
    np.savez(tmp_path / "x255.npz", x=x)
    res = CliRunner().invoke(app, ["run", str(policy_bundle.path), "--data", str(tmp_path / "x255.npz"),
                                   "--out", str(tmp_path / "p.npz")])
    assert res.exit_code == 2
    assert "looks like 0..255 floats: divide by 255 or pass uint8" in res.output
    assert not (tmp_path / "p.npz").exists()


def test_export_declares_already_normalised_inputs(mlp_bundle: Bundle, tmp_path: Path) -> None:
    from wcx.export.exporter import export_bundle

    member = mlp_bundle.member_path(0)
    with pytest.raises(BadInputError, match="input_range declares inputs that arrive already normalised"):
        export_bundle([member], tmp_path / "x", input_shape=(1, 8, 8), input_range=(-2.0, 2.0), mean=[0.5])
    with pytest.raises(BadInputError, match="input_range: expected two finite numbers"):
        export_bundle([member], tmp_path / "x", input_shape=(1, 8, 8), input_range=(2.0, -2.0))
    export_bundle([member], tmp_path / "n", input_shape=(1, 8, 8), input_range=(-2.0, 2.0))
    b = Bundle.load(tmp_path / "n")
    assert b.input.normalized and b.input.value_range == (-2.0, 2.0)
    assert b.manifest.export["export_options"]["input_range"] == [-2.0, 2.0]
    x = np.random.default_rng(0).uniform(-2, 2, (30, 1, 8, 8)).astype(np.float32)
    with Cascade.load(b, "onnxruntime", policy="all") as c:
        c(x)
        with pytest.raises(BadInputError, match=r"outside the input range \[-2, 2\]"):
            c(x * 3)
        with pytest.raises(BadInputError, match="not uint8"):
            c(np.zeros((2, 1, 8, 8), np.uint8))


def test_cli_export_input_range_flag(mlp_bundle: Bundle, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["export", str(mlp_bundle.member_path(0)), "--input-shape", "1,8,8", "--out",
                                   str(tmp_path / "b"), "--input-range", "-1,1", "--mean", "0.5"])
    assert res.exit_code == 2
    assert "--input-range declares inputs" in res.output and "drop mean and std" in res.output
    res = CliRunner().invoke(app, ["export", str(mlp_bundle.member_path(0)), "--input-shape", "1,8,8", "--out",
                                   str(tmp_path / "b"), "--input-range", "-1,1"])
    assert res.exit_code == 0, res.output
    assert Bundle.load(tmp_path / "b").input.normalized
