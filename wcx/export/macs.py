"""Multiply-accumulates per sample, counted from an ONNX graph.

The cost ``C_m`` of a member (method.md section 2) is the MACs of its Conv, ConvTranspose, Gemm
and MatMul nodes at batch size 1, from the shapes ONNX shape inference gives. Everything else
(activations, pooling, normalisation, Q/DQ nodes) is not counted. A QDQ (INT8) or FP16 graph of
the same network gives the same count, since the counted nodes and their shapes are unchanged.

Where static inference cannot follow a shape computed at run time, the graph is run once at
batch 1 (ONNX Runtime) to measure it. Per node, with output shape ``out`` and weight shape ``w``:

* Conv: ``prod(out) * prod(w[1:])`` (``w`` is (C_out, C_in / groups, *kernel));
* ConvTranspose: ``prod(x) * prod(w[1:])`` with ``x`` the input (``w`` is (C_in, C_out / groups,
  *kernel)): every input element is multiplied into a C_out / groups x kernel patch;
* Gemm and MatMul: ``prod(out) * K``, K the contracted dimension.

>>> from onnx import TensorProto, helper
>>> g = helper.make_graph(
...     [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
...      helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 4])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
>>> count_macs(helper.make_model(g)).total
12
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

import onnx
from onnx import shape_inference

COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class MacCount:
    """Total MACs per sample, per op type, per node (by name, or first output where unnamed), and
    the counted-type nodes whose shapes were unknown."""

    total: int
    by_op: dict[str, int] = field(default_factory=dict)
    uncounted: list[str] = field(default_factory=list)
    by_node: dict[str, int] = field(default_factory=dict)


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Shapes of every tensor after setting each graph input's batch dimension to 1."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    for vi in list(graph.input) + list(graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and vi.name not in init_names and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    del graph.value_info[:]
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # fall back to what the graph declares
        inferred = model
    shapes: dict[str, list[int | None]] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.output) + list(inferred.graph.value_info):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _known(shape: list[int | None] | None) -> TypeGuard[list[int]]:
    return shape is not None and all(d is not None for d in shape)


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[int | None]]) -> int | None:
    get = shapes.get
    if node.op_type == "Conv":
        out, w = get(node.output[0]), get(node.input[1])
        if not (_known(out) and _known(w)):
            return None
        return math.prod(out) * math.prod(w[1:])
    if node.op_type == "ConvTranspose":
        x, w = get(node.input[0]), get(node.input[1])
        if not (_known(x) and _known(w)):
            return None
        return math.prod(x) * math.prod(w[1:])
    if node.op_type == "Gemm":
        a, out = get(node.input[0]), get(node.output[0])
        if not (_known(a) and _known(out)) or len(a) != 2:
            return None
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        k = a[0] if trans_a else a[1]
        return math.prod(out) * k
    if node.op_type == "MatMul":
        a, out = get(node.input[0]), get(node.output[0])
        if not (_known(a) and _known(out)) or not a:
            return None
        return max(1, math.prod(out)) * a[-1]
    return 0


def _shapes_by_running(model: onnx.ModelProto, names: list[str]) -> dict[str, list[int | None]]:
    """Shapes of ``names`` found by running the graph once on a batch-1 zero input (ONNX Runtime).

    Used when static shape inference cannot follow a shape computed at run time (e.g. a
    ``Reshape`` to ``(x.shape[0], ...)`` followed by ``Tile``). Returns {} when it cannot run.
    """
    import numpy as np
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    have = {o.name for o in graph.output}
    for name in names:
        if name not in have and name not in init_names:
            graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    feeds = {}
    for vi in graph.input:
        if vi.name in init_names:
            continue
        dims = [1] + [d.dim_value for d in vi.type.tensor_type.shape.dim[1:]]
        if any(d <= 0 for d in dims):
            return {}
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = np.zeros(dims, dtype=dtype)
    try:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        outs = session.run([o.name for o in graph.output], feeds)
    except Exception:
        return {}
    return {o.name: list(arr.shape) for o, arr in zip(graph.output, outs, strict=True)}


def count_macs(model: onnx.ModelProto | str | Path) -> MacCount:
    """Count MACs per sample of ``model`` (a ModelProto or a path) at batch size 1.

    Shapes come from ONNX shape inference; where it leaves a counted node's shapes unknown, the
    graph is run once at batch 1 with ONNX Runtime to measure them.
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    shapes = _shapes(model)
    counted = [n for n in model.graph.node if n.op_type in COUNTED_OPS]
    if any(_node_macs(n, shapes) is None for n in counted):
        needed = sorted({t for n in counted for t in (*n.input[:2], n.output[0]) if not _known(shapes.get(t))})
        shapes.update(_shapes_by_running(model, needed))
    count = MacCount(total=0)
    for node in counted:
        macs = _node_macs(node, shapes)
        if macs is None:
            count.uncounted.append(node.name or node.output[0])
            continue
        count.total += int(macs)
        count.by_op[node.op_type] = count.by_op.get(node.op_type, 0) + int(macs)
        count.by_node[node.name or node.output[0]] = int(macs)
    return count
