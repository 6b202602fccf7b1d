"""Resolve a MODEL argument of ``wcx export`` into something that can be exported.

A MODEL is one of:

* an ``.onnx`` file: taken as it is (no torch needed); it is its own FP32 reference;
* ``package.module:callable``: the module is imported (from the current directory or the
  environment) and the callable is called with no arguments; it must return a
  ``torch.nn.Module`` with its weights loaded. **This runs that code.** The bundle records the
  callable and the module's weights (safetensors) so the torch runtime backend can rebuild it;
* a TorchScript file (``torch.jit.save``): loaded with ``torch.jit.load``. It is the user's own
  file, never a bundle's; nothing is ever loaded from a bundle with pickle.

A ``torch.nn.Module`` object may also be passed to the library directly (not from the CLI).
"""

from __future__ import annotations

import importlib
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wcx.errors import BadInputError, missing_dependency

SourceKind = Literal["onnx", "callable", "torchscript", "module"]

_CALLABLE_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass
class ModelSource:
    """One resolved MODEL.

    ``module`` is the ``torch.nn.Module`` (eval mode) for the torch kinds and ``None`` for
    ``onnx``; ``path`` is the file for ``onnx`` and ``torchscript``; ``callable`` is the
    ``"pkg.mod:fn"`` string for ``callable``. ``default_name`` is a member name derived from the
    source.
    """

    spec: str
    kind: SourceKind
    default_name: str
    path: Path | None = None
    callable: str | None = None
    module: Any = None

    @property
    def needs_torch(self) -> bool:
        return self.kind != "onnx"


def classify_model(spec: str | Path) -> SourceKind:
    """Tell which kind of MODEL ``spec`` is, without loading anything.

    An existing file ending in ``.onnx`` (any case) is ONNX; a string of the form
    ``pkg.mod:fn`` that is not an existing file is a callable; any other existing file is taken
    as TorchScript. Raises ``BadInputError`` for anything else.
    """
    text = str(spec)
    path = Path(text)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise BadInputError(f"{text}: no such ONNX file")
        return "onnx"
    if path.is_file():
        return "torchscript"
    if _CALLABLE_RE.match(text):
        return "callable"
    if path.exists():
        raise BadInputError(f"{text}: is not a file (expected an .onnx file, a TorchScript file or pkg.mod:fn)")
    raise BadInputError(
        f"{text}: no such file, and not of the form package.module:callable "
        "(expected an .onnx file, a TorchScript file or pkg.mod:fn)"
    )


def _import_torch(purpose: str) -> Any:
    try:
        import torch
    except ImportError:
        raise missing_dependency("torch", "export", purpose) from None
    return torch


def load_callable(spec: str) -> Any:
    """Import ``pkg.mod:fn`` (the current directory is searched too) and return ``fn``."""
    module_name, _, attr_path = spec.partition(":")
    cwd = str(Path.cwd())
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadInputError(f"{spec}: cannot import module {module_name!r} ({exc})") from None
    finally:
        if added:
            sys.path.remove(cwd)
    target: Any = module
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise BadInputError(f"{spec}: module {module_name!r} has no attribute {attr_path!r}")
        target = getattr(target, part)
    if not callable(target):
        raise BadInputError(f"{spec}: {attr_path!r} is not callable")
    return target


def resolve_model(model: str | Path | Any) -> ModelSource:
    """Resolve a MODEL (string, path or ``torch.nn.Module``) into a ``ModelSource``.

    Torch kinds are loaded and put in eval mode. Raises ``BadInputError`` for a missing or
    unreadable file, a callable that cannot be imported, fails, or does not return an
    ``nn.Module``; ``MissingDependencyError`` when a torch kind is given and torch is missing.
    """
    if not isinstance(model, (str, Path)):
        torch = _import_torch("exporting a PyTorch model")
        if not isinstance(model, torch.nn.Module):
            raise BadInputError(
                f"a model must be a path, 'pkg.mod:fn' or a torch.nn.Module, got {type(model).__name__}"
            )
        return ModelSource(spec=type(model).__name__, kind="module",
                           default_name=default_name(model, "module"), module=model.eval())

    spec = str(model)
    kind = classify_model(spec)
    if kind == "onnx":
        return ModelSource(spec=spec, kind=kind, default_name=default_name(spec, kind), path=Path(spec))
    torch = _import_torch("exporting a PyTorch model")
    if kind == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
                module = torch.jit.load(spec, map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError / ValueError / zip errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BadInputError(f"{spec}: not a TorchScript file ({first})") from None
        return ModelSource(spec=spec, kind=kind, default_name=default_name(spec, kind),
                           path=Path(spec), module=module.eval())
    fn = load_callable(spec)
    try:
        module = fn()
    except Exception as exc:
        raise BadInputError(f"{spec}: calling it raised {type(exc).__name__}: {exc}") from None
    if not isinstance(module, torch.nn.Module):
        raise BadInputError(f"{spec}: returned {type(module).__name__}, not a torch.nn.Module")
    return ModelSource(spec=spec, kind=kind, default_name=default_name(spec, kind),
                       callable=spec, module=module.eval())


def default_name(model: str | Path | Any, kind: SourceKind) -> str:
    """The member name a model gets when none is given: file stem, callable or class name."""
    if kind == "module":
        return _sanitize(type(model).__name__.lower())
    text = str(model)
    if kind == "callable":
        return _sanitize(text.rpartition(":")[2].split(".")[-1])
    return _sanitize(Path(text).stem)


def _sanitize(name: str) -> str:
    """Make ``name`` usable as a member name (letters, digits, ``._-``)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return clean or "member"
