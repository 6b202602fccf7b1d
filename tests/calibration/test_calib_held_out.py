"""Calibrating a bundle on a backend: provenance recorded, strict loading after it, mixed
precisions, and the logits cache keyed by what produces the logits."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.bundle_factory import labelled_data, make_mlp_bundle, make_mlp_onnx
from wcx.bundle import MANIFEST_NAME, Bundle, write_bundle
from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.held_out import cache_key, calibrate_bundle, run_members
from wcx.core.manifest import EngineRecord, EnginesSection
from wcx.export.precision import convert_to_fp16
from wcx.runtime.backends import create_runners, provenance_of
from wcx.runtime.cascade import Cascade


def _strict_load_is_silent(bundle: Bundle, **options: Any) -> Cascade:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CalibrationMismatchWarning would fail the test
        return Cascade.load(bundle.path, strict=True, **options)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_calibrate_then_strict_load_is_silent(backend: str, mlp_bundle: Bundle, tmp_path: Path) -> None:
    options: dict[str, Any] = {}
    b = Bundle.load(shutil.copytree(mlp_bundle.path, tmp_path / "b"))
    if backend == "torch":
        pytest.importorskip("torch")
        from tests.runtime.torch_members import add_torch_sources

        b = add_torch_sources(b)
        options = {"device": "cpu"}
    done = calibrate_bundle(b, labelled_data(b, 2000, 0), CascadeCalibrator(risk=0.2), backend=backend, **options)
    assert done.report["manifest_written"]
    recorded = Bundle.load(b.path).calibration
    assert recorded is not None and recorded.backend == backend and recorded.precision == "fp32"
    assert [m.onnx_sha256 for m in recorded.provenance.members] == [m.sha256 for m in b.members]
    with _strict_load_is_silent(b, **options) as cascade:
        assert cascade.backend == backend
        assert cascade.provenance.differences(recorded.provenance) == []


def test_members_at_two_precisions_work(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    fp32 = make_mlp_onnx(src / "m0.onnx", seed=0)
    fp16 = src / "m1.onnx"
    convert_to_fp16(make_mlp_onnx(src / "m1_fp32.onnx", seed=1), fp16)
    template = make_mlp_bundle(tmp_path / "template")
    m0, m1 = template.members
    b = write_bundle(tmp_path / "mixed", [(m0, fp32), (dataclasses.replace(m1, precision="fp16"), fp16)],
                     {"wcx": "test"})
    done = calibrate_bundle(b, labelled_data(b, 2000, 1), CascadeCalibrator(risk=0.2))
    assert done.report["precision"] == "fp32,fp16"
    recorded = Bundle.load(b.path).calibration
    assert recorded is not None and [m.precision for m in recorded.provenance.members] == ["fp32", "fp16"]
    with _strict_load_is_silent(b) as cascade:
        assert cascade.precision == "fp32,fp16"
        out = cascade(np.random.default_rng(3).random((50, 1, 8, 8), dtype=np.float32))
        assert len(out) == 50


def test_cache_key_follows_the_input_section_and_the_engine(mlp_bundle: Bundle, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from wcx.calibration.logits_cache import ENV_VAR, cache_dir

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "cache"))
    x = np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32)
    b = Bundle.load(shutil.copytree(mlp_bundle.path, tmp_path / "b"))
    key = cache_key(provenance_of(create_runners(b, "onnxruntime"), "onnxruntime"), "data-a")
    assert key == cache_key(provenance_of(create_runners(b, "onnxruntime", threads=1), "onnxruntime"), "data-a")
    assert key != cache_key(provenance_of(create_runners(b, "onnxruntime"), "onnxruntime"), "data-b")
    assert key != cache_key(provenance_of(create_runners(b, "onnxruntime"), "onnxruntime"), "data-a", 256)
    # another mean in every member's input section: other logits, another key
    raw = json.loads((b.path / MANIFEST_NAME).read_text())
    for m in raw["members"]:
        m["input"]["mean"] = [0.4]
    (b.path / MANIFEST_NAME).write_text(json.dumps(raw))
    changed = Bundle.load(b.path)
    assert cache_key(provenance_of(create_runners(changed, "onnxruntime"), "onnxruntime"), "data-a") != key
    run_members(b, x, data_key="data-a")
    run_members(changed, x, data_key="data-a")
    assert len(list(cache_dir().glob("*.npz"))) == 2  # the old logits are not reused
    assert not (b.path / "cache").exists()

    # an engine: its file's hash is part of the tensorrt backend's identity
    def engines(sha: str) -> EnginesSection:
        rec = EngineRecord(member="m0", file="engines/m0.engine", sha256=sha, tensorrt_version="10.3.0.30",
                           compute_capability="8.7", onnx_sha256=changed.members[0].sha256,
                           profile={"min": [1, 1, 8, 8], "opt": [8, 1, 8, 8], "max": [64, 1, 8, 8]})
        return EnginesSection(members={"m0": rec, "m1": dataclasses.replace(rec, member="m1")})

    keys = []
    for sha in ("a" * 64, "b" * 64):
        with_engines = Bundle(changed.path, changed.manifest.with_sections(engines=engines(sha)))
        keys.append(cache_key(provenance_of(create_runners(with_engines, "tensorrt"), "tensorrt"), "data-a"))
    assert keys[0] != keys[1]
