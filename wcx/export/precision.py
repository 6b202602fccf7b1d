"""Reduced-precision ONNX graphs: FP16 by graph conversion, INT8 by symmetric Q/DQ.

TensorRT 11 builds every network strongly typed, with the precision the ONNX carries (method.md
section 6), so precision is decided here, in the graph:

* **FP16**: ONNX Runtime's own float16 converter (``onnxruntime.transformers.float16``) with
  ``keep_io_types=True``: weights and activations in float16, input and output stay float32.
* **INT8**: ``onnxruntime.quantization.quantize_static`` in QDQ format with *symmetric*
  activations and weights (zero point 0, what TensorRT wants), per-channel weight scales and
  activation ranges collected on held-out data ("INT8 calibration": activation ranges, not the
  cascade's thresholds, which live in ``wcx.calibration``) by one of
  :data:`CALIBRATION_METHODS` (``minmax``, ``percentile``, ``entropy``; default
  :data:`DEFAULT_CALIBRATION_METHOD`, chosen by measurement: ``tools/int8_defaults.py``).

  Weights use the full symmetric int8 range [-127, 127] by default (:data:`WEIGHT_RANGES`).
  ``reduce_range=True`` keeps them in onnxruntime's "7-bit" range [-64, 64] instead, for
  bundles that run on ONNX Runtime on x86 CPUs *without* VNNI (AVX2 or AVX-512 without
  VNNI): ORT's INT8 convolution there multiplies u8 x s8 pairs with VPMADDUBSW, whose int16
  pair sums saturate with full-range weights (measured on an AVX2-only machine: top-1
  agreement of a digits CNN with FP32 fell to 94%, 83% for a wider one, while the same graph
  in simulated quantization agreed 100%). With VNNI (VPDPBUSD accumulates in int32) and on
  TensorRT nothing saturates, and the 7-bit weights only cost agreement (measured in
  ``docs/results/int8_defaults.md``). The ONNX Runtime backend warns when a full-range member
  runs on an x86 CPU without VNNI
  (:func:`wcx.runtime.onnxruntime_runner.int8_saturation_warning`; VPMADDUBSW is x86 only).

  ``float_layers`` keeps parts of the network in float32 (:data:`FLOAT_LAYERS`): ``first``, the
  graph input and the first weighted layer (Conv, ConvTranspose, Gemm, MatMul) reached from it,
  with every node between them; ``last``, the last weighted layer before the graph output and
  every node after it; ``layer:K``, the K-th weighted node alone. They are handed to
  ``quantize_static`` as ``nodes_to_exclude``: onnxruntime leaves those nodes and their weights
  unquantized (with ``first`` no QuantizeLinear reads the graph input) and quantizes the other
  nodes as usual (the last layer still reads its input through the Q/DQ pair of the node before
  it). The graph stays symmetric Q/DQ with float biases;
  TensorRT's strongly typed networks run the float layers in float32. No fixed choice makes every
  zoo member pass the gate with every range sample (``first`` raised the mean agreement a little
  and no more; ``docs/results/int8_defaults.md``), so the exporter's default is ``auto``
  (:data:`DEFAULT_FLOAT_LAYERS`): every layer quantized unless the agreement falls short, then the
  fewest layers in float that bring it up, found by measurement (:mod:`wcx.export.float_fallback`).

No torch here: both work on any ONNX file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from wcx.errors import BadInputError, WorkFailedError

log = logging.getLogger(__name__)

#: INT8 calibration methods (how activation ranges are chosen), wcx name -> onnxruntime's
#: ``CalibrationMethod`` member: ``minmax`` the largest |value| seen, ``percentile`` the 99.999th
#: percentile of |value| (2,048-bin histogram), ``entropy`` the threshold whose quantized
#: histogram is closest in KL divergence (128 bins at first, more as batches with larger values
#: are merged in; collected all at once, onnxruntime's 128 bins would leave it no choice but the
#: full range); onnxruntime's defaults otherwise.
CALIBRATION_METHODS: dict[str, str] = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
#: the method ``wcx export`` uses unless told otherwise (measured: docs/results/int8_defaults.md)
DEFAULT_CALIBRATION_METHOD = "minmax"
#: the int8 weight values each ``reduce_range`` setting allows (onnxruntime's symmetric ranges)
WEIGHT_RANGES: dict[bool, tuple[int, int]] = {False: (-127, 127), True: (-64, 64)}
#: parts of a network that ``float_layers`` can keep in float32 (module docstring)
FLOAT_LAYERS: tuple[str, ...] = ("first", "last")
#: the ``float_layers`` value that asks the exporter to choose them (:mod:`wcx.export.float_fallback`)
AUTO = "auto"
#: the layers ``wcx export`` keeps in float unless told otherwise, in the command line's form
#: (measured: docs/results/int8_defaults.md)
DEFAULT_FLOAT_LAYERS = AUTO
#: the op types that make a "layer" (weighted nodes, as wcx.export.macs counts them)
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

# The ``quantize_static`` options wcx uses; recorded in the export report.
INT8_OPTIONS: dict[str, Any] = {
    "quant_format": "QDQ",
    "activation_type": "QInt8",
    "weight_type": "QInt8",
    "per_channel": True,
    # QuantizeBias off: TensorRT dequantizes only activation types, so an INT32 bias behind a
    # DequantizeLinear fails its parser (see wcx.export.engine_compat.trt_unsupported_qdq).
    # CalibStridedMinMax 1: ranges are collected one batch at a time and merged (min/max, or
    # histograms), so memory holds one batch's activations. Collected at once, onnxruntime keeps
    # every batch's outputs until the end and its histogram methods fail on a shorter last batch.
    # (Not CalibMaxIntermediateOutputs: it discards what it collected.)
    "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                      "CalibStridedMinMax": 1},
}


def check_calibration_method(method: str, *, name: str = "calibration_method") -> str:
    """``method`` if it is one of :data:`CALIBRATION_METHODS`, else a ``BadInputError`` that names
    the parameter ``name`` and lists them."""
    if method not in CALIBRATION_METHODS:
        raise BadInputError(f"{name}: {method!r} is not an INT8 calibration method (valid: "
                            f"{', '.join(CALIBRATION_METHODS)})")
    return method


def check_float_layers(layers: str | Sequence[str], *, name: str = "float_layers") -> tuple[str, ...]:
    """``layers`` as a tuple without repeats, :data:`FLOAT_LAYERS` first (in that order), then
    ``layer:K`` parts by K, if each is one of them, else a ``BadInputError`` that names the
    parameter ``name``. ``layer:K`` is the K-th weighted node (0-based, graph order) alone. A
    string is read as a comma-separated list (``"first,last"``); ``"none"`` or ``""`` is no layer.

    >>> check_float_layers("last,first"), check_float_layers(["first"]), check_float_layers("none")
    (('first', 'last'), ('first',), ())
    >>> check_float_layers("layer:3,first,layer:1")
    ('first', 'layer:1', 'layer:3')
    """
    if isinstance(layers, str):  # a bare "first" would otherwise be read letter by letter
        layers = [part.strip() for part in layers.split(",") if part.strip() not in ("", "none")]
    indices: set[int] = set()
    for layer in layers:
        if layer in FLOAT_LAYERS:
            continue
        index = layer.removeprefix("layer:") if isinstance(layer, str) else ""
        if not (layer.startswith("layer:") and index.isdigit()):
            raise BadInputError(f"{name}: {layer!r} is not a part INT8 export can keep in float "
                                f"(valid: {', '.join(FLOAT_LAYERS)}, layer:K for the K-th weighted layer)")
        indices.add(int(index))
    return (tuple(layer for layer in FLOAT_LAYERS if layer in layers)
            + tuple(f"layer:{k}" for k in sorted(indices)))


def weighted_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The weighted nodes (:data:`WEIGHTED_OPS`) of ``model``, in graph order: what ``layer:K`` counts."""
    return [n for n in model.graph.node if n.op_type in WEIGHTED_OPS]


def float_layer_nodes(model: onnx.ModelProto, layers: Sequence[str]) -> list[onnx.NodeProto]:
    """The nodes of ``model`` that ``layers`` (:data:`FLOAT_LAYERS`) keep in float, in graph order.

    ``first``: from each graph input forward, every node up to and including the first weighted
    node (:data:`WEIGHTED_OPS`) on each path. ``last``: from each graph output backward, every
    node up to and including the last weighted node on each path. A path without a weighted
    node keeps all its nodes. ``layer:K``: the K-th weighted node alone (none where the graph has
    fewer). Nodes are assumed in topological order (ONNX requires it).
    """
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    consumers: dict[str, list[int]] = {}
    producer: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(i)
        for tensor in node.output:
            producer[tensor] = i
    keep: set[int] = set()
    if "first" in layers:
        todo = [i for vi in graph.input if vi.name not in inits for i in consumers.get(vi.name, [])]
        while todo:
            i = todo.pop()
            if i in keep:
                continue
            keep.add(i)
            if graph.node[i].op_type not in WEIGHTED_OPS:
                todo.extend(j for t in graph.node[i].output for j in consumers.get(t, []))
    if "last" in layers:
        todo = [producer[o.name] for o in graph.output if o.name in producer]
        seen: set[int] = set()
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            keep.add(i)
            if graph.node[i].op_type not in WEIGHTED_OPS:
                todo.extend(producer[t] for t in graph.node[i].input if t in producer)
    indices = [i for i, n in enumerate(graph.node) if n.op_type in WEIGHTED_OPS]  # as weighted_nodes counts
    for layer in layers:
        if layer.startswith("layer:") and int(layer.removeprefix("layer:")) < len(indices):
            keep.add(indices[int(layer.removeprefix("layer:"))])
    return [graph.node[i] for i in sorted(keep)]


def _name_unnamed_nodes(model: onnx.ModelProto) -> bool:
    """Give every unnamed node a unique name (``nodes_to_exclude`` matches names); True if any was."""
    taken = {n.name for n in model.graph.node}
    renamed = False
    for i, node in enumerate(model.graph.node):
        if not node.name:
            candidate = f"{node.op_type}_{i}"
            while candidate in taken:
                candidate += "_"
            node.name = candidate
            taken.add(candidate)
            renamed = True
    return renamed


def convert_to_fp16(src: str | Path, dst: str | Path) -> None:
    """Write an FP16 copy of the ONNX graph ``src`` to ``dst`` (float32 input and output)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    try:
        converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    except Exception as exc:
        raise WorkFailedError(f"FP16 conversion failed: {type(exc).__name__}: {exc}") from None
    onnx.save(converted, str(dst))


class RestartableReader:
    """A ``CalibrationDataReader`` over an array that can be read again after ``rewind()``.

    ONNX Runtime's readers are one-shot iterators; the quantizer (and a second look at the
    data) need to start over, so this one keeps the array and an index. ``set_range(start,
    end)`` limits reading to batches ``start..end-1`` (what onnxruntime's strided collection
    calls); ``rewind()`` reads everything again.
    """

    def __init__(self, input_name: str, x: np.ndarray, *, batch_size: int = 32) -> None:
        if len(x) == 0:
            raise BadInputError("INT8 calibration needs at least one input")
        self.input_name = input_name
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.batch_size = int(batch_size)
        self._pos = 0
        self._end = len(self.x)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= self._end:
            return None
        batch = self.x[self._pos : min(self._pos + self.batch_size, self._end)]
        self._pos += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._pos, self._end = 0, len(self.x)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pos = int(start_index) * self.batch_size
        self._end = min(len(self.x), int(end_index) * self.batch_size)

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)


def _as_ort_reader(reader: RestartableReader) -> Any:
    """Wrap ``reader`` in a subclass of ORT's ``CalibrationDataReader`` (its type check wants one)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no stubs: the base is Any
        def get_next(self) -> dict[str, np.ndarray] | None:
            return reader.get_next()

        def rewind(self) -> None:
            reader.rewind()

        def set_range(self, start_index: int, end_index: int) -> None:
            reader.set_range(start_index, end_index)

        def __len__(self) -> int:
            return len(reader)

    return _Reader()


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    calib_x: np.ndarray,
    *,
    input_name: str,
    batch_size: int = 32,
    reduce_range: bool = False,
    calibration_method: str = DEFAULT_CALIBRATION_METHOD,
    float_layers: str | Sequence[str] = (),
) -> dict[str, Any]:
    """Write a symmetric INT8 Q/DQ copy of ``src`` to ``dst``, ranges from ``calib_x``.

    ``calib_x`` is preprocessed float32 (N, C, H, W), read ``batch_size`` rows at a time (time
    grows with N, memory does not: ``INT8_OPTIONS``). ``reduce_range``, ``calibration_method``
    and ``float_layers``: module docstring. The graph is first run through
    ``quant_pre_process`` (shape inference and ORT's graph optimisations, which fold BatchNorm and
    constants so fewer tensors need ranges); if that fails the original graph is
    quantized. Returns the options used (with the names of the nodes kept in float) and the
    seconds it took (for the report).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    check_calibration_method(calibration_method)
    layers = check_float_layers(float_layers)
    started = time.perf_counter()
    reader = RestartableReader(input_name, calib_x, batch_size=batch_size)
    options = dict(INT8_OPTIONS, reduce_range=bool(reduce_range), weight_range=list(WEIGHT_RANGES[bool(reduce_range)]),
                   calibrate_method=CALIBRATION_METHODS[calibration_method],
                   calibration_samples=int(len(calib_x)), float_layers=list(layers))
    with tempfile.TemporaryDirectory(prefix="wcx-int8-") as tmp:
        source = Path(src)
        pre = Path(tmp) / "pre.onnx"
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
            source = pre
            options["pre_process"] = True
        except Exception as exc:  # pre-processing is an optimisation only
            log.info("quant_pre_process failed (%s); quantizing the graph as it is", exc)
            options["pre_process"] = False
        excluded: list[str] = []
        # chosen on the graph onnxruntime quantizes (pre-processing renames and fuses nodes)
        model = onnx.load(str(source))
        options["weighted_layers"] = len(weighted_nodes(model))
        if layers:
            if _name_unnamed_nodes(model):
                source = Path(tmp) / "named.onnx"
                onnx.save(model, str(source))
            excluded = [n.name for n in float_layer_nodes(model, layers)]
        options["float_nodes"] = excluded
        try:
            # onnxruntime's histogram calibrators print progress to stdout, which is wcx's results
            with contextlib.redirect_stdout(io.StringIO()) as chatter:
                quantize_static(
                    str(source),
                    str(dst),
                    _as_ort_reader(reader),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    reduce_range=bool(reduce_range),
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod[CALIBRATION_METHODS[calibration_method]],
                    nodes_to_exclude=excluded,
                    extra_options=dict(INT8_OPTIONS["extra_options"]),
                )
            log.debug("onnxruntime's quantizer said: %s", chatter.getvalue().strip())
        except Exception as exc:
            raise WorkFailedError(f"INT8 quantization failed: {type(exc).__name__}: {exc}") from None
    options["seconds"] = round(time.perf_counter() - started, 3)
    return options
