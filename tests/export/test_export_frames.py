"""Exporting members that take raw frames: ``resize``/``crop`` (one for all members, or one per
member at different resolutions) are recorded in each member's input section, the checks run on
the frames as the runtime prepares them, and the bundle runs camera frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.bundle_factory import make_mlp_onnx
from wcx import Cascade
from wcx.bundle import Bundle
from wcx.cli import app
from wcx.core.manifest import CenterCrop, Resize
from wcx.errors import BadInputError
from wcx.export.exporter import export_bundle


@pytest.fixture
def members(tmp_path: Path) -> list[Path]:
    return [make_mlp_onnx(tmp_path / "a.onnx", sample_shape=(3, 8, 8), seed=0),
            make_mlp_onnx(tmp_path / "b.onnx", sample_shape=(3, 12, 12), seed=1)]


def test_members_at_two_resolutions(members: list[Path], tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (40, 3, 30, 20), dtype=np.uint8)
    np.savez(tmp_path / "frames.npz", x=frames, y=np.arange(40) % 4)
    export_bundle(members, tmp_path / "b", input_shape=[(3, 8, 8), (3, 12, 12)], resize=[10, 14], crop=[8, 12],
                  interpolation="bicubic", calib_data=tmp_path / "frames.npz")
    bundle = Bundle.load(tmp_path / "b")
    first, second = (m.input for m in bundle.members)
    assert first.resize == Resize(shorter_side=10, interpolation="bicubic") and first.crop == CenterCrop((8, 8))
    assert second.resize == Resize(shorter_side=14, interpolation="bicubic") and second.shape == (3, 12, 12)
    for m in bundle.members:  # each member measured on the frames as it prepares them
        assert m.export_report["checks"]["fp32"]["data"]["n"] == 40
    options = bundle.manifest.export["export_options"]
    assert options["input_shape"] == [[3, 8, 8], [3, 12, 12]] and options["inputs"][1]["crop"]["size"] == [12, 12]
    with Cascade.load(bundle, "onnxruntime", policy="all") as c:
        out = c.predict_images([np.zeros((480, 640, 3), np.uint8), np.zeros((7, 5, 3), np.uint8)])
    assert out.exit_stage.tolist() == [2, 2]


def test_one_resize_for_all_and_bad_options(members: list[Path], tmp_path: Path) -> None:
    export_bundle([members[0]], tmp_path / "one", input_shape=(3, 8, 8), resize=(8, 8))
    assert Bundle.load(tmp_path / "one").members[0].input.resize == Resize(size=(8, 8))
    with pytest.raises(BadInputError, match="resize: 3 values for 2 members"):
        export_bundle(members, tmp_path / "x", input_shape=[(3, 8, 8), (3, 12, 12)], resize=[9, 13, 15], crop=[8, 12])
    with pytest.raises(BadInputError, match="different input shapes"):
        export_bundle(members, tmp_path / "x", input_shape=[(3, 8, 8), (3, 12, 12)])
    with pytest.raises(BadInputError, match="shorter-side resize needs a crop"):
        export_bundle([members[0]], tmp_path / "x", input_shape=(3, 8, 8), resize=9)


def test_cli_records_resize_and_crop(members: list[Path], tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["export", *map(str, members), "--input-shape", "3,8,8", "--input-shape", "3,12,12",
                                   "--resize", "10", "--resize", "14", "--crop", "8", "--crop", "12,12",
                                   "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "b" / "wcx.json").read_text())
    assert [m["input"]["crop"]["size"] for m in manifest["members"]] == [[8, 8], [12, 12]]
    assert manifest["members"][0]["input"]["resize"]["shorter_side"] == 10
    res = CliRunner().invoke(app, ["export", str(members[0]), "--input-shape", "3,8,8", "--resize", "1,2,3",
                                   "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "--resize: expected S or H,W" in res.output
