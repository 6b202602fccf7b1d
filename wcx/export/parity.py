"""Run a member both ways and compare: PyTorch vs ONNX Runtime, or FP16/INT8 vs FP32 ONNX.

Inputs go in chunks; the first chunk has batch size 1 and the others up to ``chunk`` rows, so
every check also exercises the dynamic batch dimension.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wcx.errors import BadInputError


@dataclass(frozen=True)
class Agreement:
    """How closely ``candidate`` logits follow ``reference`` logits on ``n`` inputs.

    ``max_abs_diff`` is over all logits; ``logit_scale`` is the largest absolute reference
    logit; ``top1_agreement`` the fraction of inputs whose argmax is the same. With labels,
    ``reference_accuracy`` and ``candidate_accuracy`` are filled in.
    """

    n: int
    max_abs_diff: float
    logit_scale: float
    top1_agreement: float
    reference_accuracy: float | None = None
    candidate_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def chunks(n: int, chunk: int) -> Iterator[slice]:
    """Slices over ``n`` rows: first one row, then up to ``chunk`` rows at a time."""
    if n == 0:
        return
    yield slice(0, 1)
    start = 1
    while start < n:
        yield slice(start, min(n, start + chunk))
        start += chunk


def run_onnx(path: str | Path, x: np.ndarray, *, chunk: int = 64, optimize: bool = True) -> np.ndarray:
    """Logits of the ONNX member at ``path`` (ONNX Runtime, CPU) on preprocessed ``x``.

    ``optimize=False`` turns ORT's graph optimisations off: a Q/DQ graph then runs as
    DequantizeLinear -> float op -> QuantizeLinear, i.e. *simulated* quantization, the
    arithmetic TensorRT's INT8 kernels follow, free of ORT's own x86 INT8 kernels.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: np.ascontiguousarray(x[s])})[0] for s in chunks(len(x), chunk)]
    return np.concatenate(outs).astype(np.float32, copy=False)


def run_torch(module: Any, x: np.ndarray, *, chunk: int = 64) -> np.ndarray:
    """Logits of the PyTorch ``module`` (eval mode, CPU) on preprocessed ``x``."""
    import torch

    outs = []
    with torch.no_grad():
        for s in chunks(len(x), chunk):
            out = module(torch.from_numpy(np.ascontiguousarray(x[s])))
            if not isinstance(out, torch.Tensor):
                raise BadInputError(f"the model returned {type(out).__name__}; a member must return one logits tensor")
            outs.append(out.detach().float().cpu().numpy())
    return np.concatenate(outs)


def compare_logits(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> Agreement:
    """Compare two (N, K) logit arrays (and both against ``labels`` when given)."""
    if reference.shape != candidate.shape:
        return Agreement(n=len(reference), max_abs_diff=float("inf"), logit_scale=float(np.abs(reference).max()),
                         top1_agreement=0.0)
    ref_top, cand_top = reference.argmax(axis=1), candidate.argmax(axis=1)
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    return Agreement(
        n=int(len(reference)),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        logit_scale=float(np.abs(reference).max()) if reference.size else 0.0,
        top1_agreement=float(np.mean(ref_top == cand_top)) if len(reference) else 1.0,
        reference_accuracy=None if labels is None else float(np.mean(ref_top == labels)),
        candidate_accuracy=None if labels is None else float(np.mean(cand_top == labels)),
    )
