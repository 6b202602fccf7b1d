"""Shared, session-scoped exports for the export tests (exports take seconds; do them once)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.export import models as M
from wcx.bundle import Bundle
from wcx.export.exporter import ExportReport, export_bundle
from wcx.export.onnx_export import export_onnx


@dataclass
class Exported:
    report: ExportReport
    bundle: Bundle


@dataclass
class DigitsFiles:
    calib: Path  # digits 1000..1499 (not used for training), float32 in [0, 1], labels
    eval: Path  # digits 1500..1796
    x_eval: np.ndarray
    y_eval: np.ndarray


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory: pytest.TempPathFactory) -> DigitsFiles:
    x, y = M.load_digits_arrays()
    root = tmp_path_factory.mktemp("digits")
    np.savez(root / "calib.npz", x=x[1000:1500], y=y[1000:1500])
    np.savez(root / "eval.npz", x=x[1500:], y=y[1500:])
    return DigitsFiles(calib=root / "calib.npz", eval=root / "eval.npz", x_eval=x[1500:], y_eval=y[1500:])


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A TorchScript file (traced small_cnn) and an ONNX file (wide_cnn) made by the tests."""
    root = tmp_path_factory.mktemp("model_files")
    ts = root / "traced_small.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in torch 2.13
        torch.jit.trace(M.small_cnn(), torch.zeros(2, *M.INPUT_SHAPE)).save(str(ts))
    onnx_path = root / "wide.onnx"
    export_onnx(M.wide_cnn(), onnx_path, sample_shape=M.INPUT_SHAPE)
    return {"torchscript": ts, "onnx": onnx_path}


def _export(out: Path, models: list, **kwargs) -> Exported:
    report = export_bundle(models, out, input_shape=M.INPUT_SHAPE, mean=M.MEAN, std=M.STD, **kwargs)
    return Exported(report=report, bundle=Bundle.load(out))


@pytest.fixture(scope="session")
def fp32_mixed(tmp_path_factory, digits_files, model_files) -> Exported:
    """FP32 bundle of all three MODEL forms: callable (trained), TorchScript, ONNX, in that order."""
    out = tmp_path_factory.mktemp("fp32") / "bundle"
    return _export(out, ["tests.export.models:digits_cnn", str(model_files["torchscript"]),
                         str(model_files["onnx"])],
                   calib_data=digits_files.calib, eval_data=digits_files.eval)


@pytest.fixture(scope="session")
def fp16_bundle(tmp_path_factory, digits_files) -> Exported:
    out = tmp_path_factory.mktemp("fp16") / "bundle"
    return _export(out, ["tests.export.models:digits_cnn"], precision="fp16", calib_data=digits_files.calib)


@pytest.fixture(scope="session")
def int8_bundle(tmp_path_factory, digits_files) -> Exported:
    """INT8, ranges from 80% of calib.npz, agreement on the 20% held back."""
    out = tmp_path_factory.mktemp("int8") / "bundle"
    return _export(out, ["tests.export.models:digits_cnn", "tests.export.models:small_cnn"],
                   precision="int8", calib_data=digits_files.calib)
