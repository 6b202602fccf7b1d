"""PyTorch -> ONNX with a dynamic batch dimension, and what a member's ONNX graph looks like.

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is used first: on
torch 2.13 it exports the CNNs wcx deploys in well under a second with ``dynamic_axes`` on the
batch dimension, and it is the only one that takes a TorchScript ``ScriptModule``. When it
fails (an operator it cannot trace), the dynamo-based exporter is tried with ``dynamic_shapes``
(several seconds per model; needs ``onnxscript``). The exporter used is recorded in the member's
export report.

Before exporting, the module runs once on a batch of ``input_shape``: a shape the model cannot
take is bad input (exit 2) with the model's own one-line reason, not an export failure. What
torch writes while exporting (its loggers, C++ warnings, the dynamo exporter's progress, often
with terminal colour codes) is captured at the file-descriptor level: this module's log
gets one summary line (level INFO) and the whole text at level DEBUG (``wcx --debug``), and
error messages carry the first line of the reason without colour codes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnx

from wcx.errors import BadInputError, WorkFailedError

log = logging.getLogger(__name__)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17

Exporter = Literal["auto", "torchscript", "dynamo"]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, without terminal colour codes."""
    text = _ANSI.sub("", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def captured_output(what: str) -> Iterator[list[str]]:
    """Capture everything this process writes to its standard output and error (the file
    descriptors, so C++ and third-party loggers are caught too) while the block runs; the lines
    are put in the yielded list, summarised on this module's log (one INFO line) and logged
    whole at DEBUG."""
    lines: list[str] = []
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no file descriptors to redirect (an embedded interpreter): capture nothing
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield lines
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text = _ANSI.sub("", sink.read().decode("utf-8", errors="replace"))
            lines.extend(line for line in text.splitlines() if line.strip())
            if lines:
                log.info("%s wrote %d log lines (first: %s); run with --debug to see them", what, len(lines),
                         lines[0].strip()[:200])
                log.debug("%s log:\n%s", what, "\n".join(lines))


def check_forward(module: Any, sample_shape: tuple[int, ...]) -> None:
    """Run ``module`` once on a batch of ``sample_shape``; a model that cannot take that shape is
    a ``BadInputError`` naming ``input_shape`` and the model's reason."""
    import torch

    dummy = torch.zeros((2, *sample_shape), dtype=torch.float32)
    try:
        with captured_output("the model's test run"), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            module(dummy)
    except Exception as exc:  # a model raises whatever its layers raise
        raise BadInputError(f"input_shape {','.join(map(str, sample_shape))} does not fit the model: "
                            f"{type(exc).__name__}: {first_line(exc)}") from None


@dataclass(frozen=True)
class OnnxSignature:
    """The one input and one output of a member graph (batch dimension dynamic)."""

    input_name: str
    output_name: str
    sample_shape: tuple[int, ...]
    opset: int


def export_onnx(
    module: Any,
    path: str | Path,
    *,
    sample_shape: tuple[int, ...],
    opset: int = DEFAULT_OPSET,
    max_batch: int = 256,
    exporter: Exporter = "auto",
) -> str:
    """Export ``module`` (eval mode) to ``path`` with input ``input`` and output ``logits``.

    The batch dimension is dynamic. Returns the exporter used (``"torchscript"`` or
    ``"dynamo"``). Raises ``BadInputError`` when the model cannot run on ``sample_shape`` and
    ``WorkFailedError`` when no exporter can export the model.
    """
    import torch

    check_forward(module, sample_shape)
    path = Path(path)
    dummy = torch.zeros((2, *sample_shape), dtype=torch.float32)  # batch 2: never specialised
    errors: list[str] = []
    logged: list[str] = []
    tool_log: list[str] = []
    order = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    is_script = isinstance(module, torch.jit.ScriptModule)
    for name in order:
        if name == "dynamo" and is_script:
            errors.append("dynamo: cannot export a TorchScript module")
            continue
        try:
            with captured_output(f"torch's {name} ONNX exporter") as tool_log, warnings.catch_warnings(), \
                    torch.no_grad():
                warnings.simplefilter("ignore")
                if name == "torchscript":
                    torch.onnx.export(
                        module, (dummy,), str(path), dynamo=False, opset_version=opset,
                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                        dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
                        do_constant_folding=True,
                    )
                else:
                    batch = torch.export.Dim("N", min=1, max=max(2, max_batch))
                    torch.onnx.export(
                        module, (dummy,), str(path), dynamo=True, opset_version=max(opset, 18),
                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                        dynamic_shapes=({0: batch},), verbose=False,
                    )
            return name
        except Exception as exc:  # exporter errors come in many types
            errors.append(f"{name}: {type(exc).__name__}: {first_line(exc)}")
            logged.extend(tool_log)
    hint = f"; torch's log ({len(logged)} lines) is shown with --debug" if logged else ""
    raise WorkFailedError("ONNX export failed (" + "; ".join(errors) + ")" + hint)


def read_signature(path: str | Path, *, sample_shape: tuple[int, ...] | None = None) -> OnnxSignature:
    """Check that an ONNX member has one float32 input (N, *sample_shape) with a dynamic batch
    dimension and one float32 output, and return its names.

    Raises ``BadInputError`` naming the file otherwise (a corrupt file included).
    """
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise BadInputError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise BadInputError(
            f"{path}: a member must have exactly one input and one output, found "
            f"{len(inputs)} and {len(graph.output)}"
        )
    inp, out = inputs[0], graph.output[0]
    for vi, role in ((inp, "input"), (out, "output")):
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
            raise BadInputError(f"{path}: the {role} {vi.name!r} is {dtype}, not float32")
    dims = list(inp.type.tensor_type.shape.dim)
    if not dims:
        raise BadInputError(f"{path}: the input {inp.name!r} has no shape")
    if dims[0].HasField("dim_value"):
        raise BadInputError(
            f"{path}: the input's batch dimension is fixed at {dims[0].dim_value}; "
            "export it with a dynamic batch dimension"
        )
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:])
    if sample_shape is not None and shape != tuple(sample_shape):
        raise BadInputError(
            f"{path}: input sample shape {shape} does not match input_shape {tuple(sample_shape)}"
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return OnnxSignature(input_name=inp.name, output_name=out.name, sample_shape=shape, opset=opset)
