"""Resolving MODEL arguments: .onnx files, pkg.mod:callable, TorchScript files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.export import models as M
from wcx.errors import BadInputError
from wcx.export.model_source import classify_model, default_name, resolve_model


def test_classify_each_form(model_files: dict[str, Path]) -> None:
    assert classify_model(model_files["onnx"]) == "onnx"
    assert classify_model(str(model_files["torchscript"])) == "torchscript"
    assert classify_model("tests.export.models:small_cnn") == "callable"


@pytest.mark.parametrize("spec", ["missing.onnx", "no/such/file.pt", "not a callable:"])
def test_classify_refuses_unknown(spec: str) -> None:
    with pytest.raises(BadInputError):
        classify_model(spec)


def test_resolve_callable_is_eval_module() -> None:
    src = resolve_model("tests.export.models:small_cnn")
    assert src.kind == "callable" and src.callable == "tests.export.models:small_cnn"
    assert isinstance(src.module, torch.nn.Module) and not src.module.training
    assert src.default_name == "small_cnn"


def test_resolve_torchscript_and_onnx(model_files: dict[str, Path]) -> None:
    ts = resolve_model(model_files["torchscript"])
    assert ts.kind == "torchscript" and isinstance(ts.module, torch.jit.ScriptModule)
    assert ts.default_name == "traced_small"
    ox = resolve_model(model_files["onnx"])
    assert ox.kind == "onnx" and ox.module is None and not ox.needs_torch


def test_resolve_module_object() -> None:
    src = resolve_model(M.small_cnn())
    assert src.kind == "module" and src.default_name == "smallcnn"
    assert default_name(M.small_cnn(), "module") == "smallcnn"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.export.no_such_module:fn", "cannot import module"),
        ("tests.export.models:no_such_fn", "has no attribute"),
        ("tests.export.models:INPUT_SHAPE", "is not callable"),
        ("tests.export.models:not_a_module", "not a torch.nn.Module"),
        ("tests.export.models:load_digits_arrays.nope", "has no attribute"),
    ],
)
def test_resolve_callable_errors(spec: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        resolve_model(spec)


def test_callable_that_raises_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "userpkg_raises.py").write_text("def build():\n    raise RuntimeError('boom')\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInputError, match="raised RuntimeError: boom"):
        resolve_model("userpkg_raises:build")


def test_callable_importable_from_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "userpkg_cwd.py").write_text(
        "from tests.export.models import small_cnn\n\ndef build():\n    return small_cnn(seed=5)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    assert resolve_model("userpkg_cwd:build").kind == "callable"


def test_garbage_torchscript_file(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"this is not a zip archive")
    with pytest.raises(BadInputError, match="not a TorchScript file"):
        resolve_model(bad)
