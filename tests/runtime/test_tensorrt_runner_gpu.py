"""Real TensorRT engines on a real GPU, compared with ONNX Runtime on the same ONNX.

Runs only where ``tensorrt`` imports and torch sees a CUDA GPU (``tensorrt_available()``);
elsewhere every TensorRT test is skipped with the reason. For each precision wcx deploys, a small
MLP member (tests/bundle_factory) is baked into that precision's ONNX (FP32; FP16 with FP32
inputs/outputs; FP16 with an FP16 input, which exercises the runner's input conversion; INT8
with symmetric Q/DQ nodes from onnxruntime.quantization), an engine is built with
``build_engines`` and run with ``TensorRTRunner``; top-1 agreement with ONNX Runtime must be at
least 99.5% (FP32/FP16) or 98% (INT8). Batches larger than the profile's max run in chunks.

``test_variant_graphs_run_on_onnxruntime`` runs everywhere: it checks that the ONNX graphs this
module feeds TensorRT are valid and close to the FP32 member, so the GPU test starts from
known-good inputs.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.bundle_factory import make_mlp_onnx
from wcx.bundle import Bundle, write_bundle
from wcx.core.manifest import EnginesSection, InputSection, MemberSection
from wcx.errors import BadInputError
from wcx.export.engine_compat import tensorrt_available, trt_unsupported_qdq

TRT_OK, TRT_REASON = tensorrt_available()
needs_tensorrt = pytest.mark.skipif(not TRT_OK, reason=f"needs TensorRT and a CUDA GPU: {TRT_REASON}")

SAMPLE = (1, 8, 8)
CLASSES = 4
AGREEMENT = {"fp32": 0.995, "fp16": 0.995, "fp16io": 0.995, "int8": 0.98}


def _inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SAMPLE)).astype(np.float32)


def _to_fp16(src: Path, dst: Path, *, fp16_input: bool) -> Path:
    """FP16 weights and arithmetic; output FP32, input FP32 (a Cast) or FP16."""
    model = onnx.load(src)
    graph = model.graph
    for init in graph.initializer:
        arr = numpy_helper.to_array(init).astype(np.float16)
        init.CopyFrom(numpy_helper.from_array(arr, init.name))
    inp, out = graph.input[0].name, graph.output[0].name
    nodes = list(graph.node)
    for node in nodes:
        node.input[:] = [f"{inp}_h" if n == inp else n for n in node.input]
        node.output[:] = [f"{out}_h" if n == out else n for n in node.output]
    cast_out = helper.make_node("Cast", [f"{out}_h"], [out], to=TensorProto.FLOAT)
    if fp16_input:
        identity = helper.make_node("Identity", [inp], [f"{inp}_h"])
        graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
        new_nodes = [identity, *nodes, cast_out]
    else:
        cast_in = helper.make_node("Cast", [inp], [f"{inp}_h"], to=TensorProto.FLOAT16)
        new_nodes = [cast_in, *nodes, cast_out]
    del graph.node[:]
    graph.node.extend(new_nodes)
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    return dst


def _to_int8_qdq(src: Path, dst: Path, *, quantize_bias: bool = False) -> Path:
    """Symmetric INT8 Q/DQ (activations and weights), calibrated on held-out-like inputs.

    Biases stay float (``QuantizeBias: False``): TensorRT cannot dequantize ORT's INT32 biases.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": _inputs(64, seed=100 + i)} for i in range(8)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": quantize_bias},
    )
    return dst


def make_variant_onnx(tmp: Path, variant: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    fp32 = make_mlp_onnx(tmp / "fp32.onnx", sample_shape=SAMPLE, hidden=32, num_classes=CLASSES, seed=3)
    if variant == "fp32":
        return fp32
    if variant in ("fp16", "fp16io"):
        return _to_fp16(fp32, tmp / f"{variant}.onnx", fp16_input=variant == "fp16io")
    if variant == "int8":
        return _to_int8_qdq(fp32, tmp / "int8.onnx")
    raise ValueError(variant)


def _ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dtype = np.float16 if sess.get_inputs()[0].type == "tensor(float16)" else np.float32
    return sess.run(None, {"input": x.astype(dtype)})[0].astype(np.float32)


def make_variant_bundle(tmp: Path, variant: str) -> Bundle:
    onnx_path = make_variant_onnx(tmp / "src", variant)
    spec = MemberSection(
        name="m0", file="members/m0.onnx", sha256="0" * 64, precision="fp16" if variant == "fp16io" else variant,
        input=InputSection(name="input", shape=SAMPLE, mean=(0.0,), std=(1.0,),
                           dtype="float16" if variant == "fp16io" else "float32"),
        output_name="logits", num_classes=CLASSES, macs=64 * 32 + 32 * CLASSES,
    )
    return write_bundle(tmp / "bundle", [(spec, onnx_path)], {"wcx": "test", "export_options": {}})


@pytest.mark.parametrize("variant", ["fp16", "fp16io", "int8"])
def test_variant_graphs_run_on_onnxruntime(tmp_path, variant) -> None:
    x = _inputs(512)
    ref = _ort_logits(make_variant_onnx(tmp_path, "fp32"), x)
    got = _ort_logits(make_variant_onnx(tmp_path, variant), x)
    assert got.shape == (512, CLASSES)
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    assert agree >= 0.95, (variant, agree)
    if variant == "int8":
        model = onnx.load(tmp_path / "int8.onnx")
        assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
        assert trt_unsupported_qdq(model) == []


def test_int32_bias_qdq_is_refused_before_tensorrt_sees_it(tmp_path) -> None:
    fp32 = make_mlp_onnx(tmp_path / "fp32.onnx", sample_shape=SAMPLE, hidden=32, num_classes=CLASSES)
    model = onnx.load(_to_int8_qdq(fp32, tmp_path / "bias.onnx", quantize_bias=True))
    problems = trt_unsupported_qdq(model)
    assert problems and all("INT32" in p for p in problems)


# -------------------------------------------------------------------------------------------
# GPU + TensorRT only
# -------------------------------------------------------------------------------------------
@pytest.mark.tensorrt
@needs_tensorrt
@pytest.mark.parametrize("variant", ["fp32", "fp16", "fp16io", "int8"])
def test_engine_matches_onnxruntime(tmp_path, variant) -> None:
    import torch

    from wcx.export.tensorrt_engine import build_engines
    from wcx.runtime.tensorrt_runner import TensorRTRunner

    bundle = make_variant_bundle(tmp_path, variant)
    records = build_engines(bundle, opt_batch=16, max_batch=64, workspace_mb=256)
    assert records[0].profile["max"] == [64, *SAMPLE]
    bundle = Bundle.load(bundle.path)  # engine + timing cache are hash-verified
    n = 2000  # > max batch: runs in 32 chunks (31 full + 1 of 16)
    x = _inputs(n, seed=7)
    ref = _ort_logits(bundle.member_path(0), x)
    with TensorRTRunner(bundle, 0) as runner:
        assert runner.max_batch == 64
        out = runner.infer({"input": torch.from_numpy(x).cuda()})["logits"]
        assert out.is_cuda and out.dtype == torch.float32 and tuple(out.shape) == (n, CLASSES)
        got = out.cpu().numpy()
        agree = float((got.argmax(1) == ref.argmax(1)).mean())
        assert agree >= AGREEMENT[variant], (variant, agree)
        # Host arrays are accepted too; small and empty subsets, and a non-default stream, give
        # the same rows.
        host = runner.infer({"input": x[:100]})["logits"].cpu().numpy()
        np.testing.assert_allclose(host, got[:100], rtol=1e-3, atol=1e-3)
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            few = runner.infer({"input": torch.from_numpy(x[:3]).cuda()})["logits"]
        side.synchronize()
        np.testing.assert_allclose(few.cpu().numpy(), got[:3], rtol=1e-3, atol=1e-3)
        empty = runner.infer({"input": torch.empty((0, *SAMPLE), device="cuda")})["logits"]
        assert tuple(empty.shape) == (0, CLASSES)
    assert not runner.is_active


@pytest.mark.tensorrt
@needs_tensorrt
def test_engine_from_another_tensorrt_or_onnx_is_refused(tmp_path) -> None:
    from wcx.export.tensorrt_engine import build_engines
    from wcx.runtime.tensorrt_runner import TensorRTRunner

    bundle = make_variant_bundle(tmp_path, "fp16")
    build_engines(bundle, opt_batch=4, max_batch=8)
    bundle = Bundle.load(bundle.path)
    for key, value, match in (("tensorrt_version", "9.9.9.9", "built with TensorRT 9.9.9.9"),
                              ("compute_capability", "1.0", "compute capability 1.0"),
                              ("onnx_sha256", "0" * 64, "ONNX changed")):
        copy = tmp_path / f"copy_{key}"
        shutil.copytree(bundle.path, copy)
        changed = Bundle.load(copy)
        assert changed.engines is not None
        record = dataclasses.replace(changed.engines.members["m0"], **{key: value})
        changed.update_sections(engines=EnginesSection(members={"m0": record},
                                                       timing_cache=changed.engines.timing_cache))
        with pytest.raises(BadInputError, match=match), TensorRTRunner(Bundle.load(copy), 0):
            pass
    # An altered engine file is refused when the bundle loads.
    assert bundle.engines is not None
    engine = bundle.file(bundle.engines.members["m0"].file)
    engine.write_bytes(engine.read_bytes()[:-1] + b"\0")
    with pytest.raises(BadInputError, match="altered"):
        Bundle.load(bundle.path)


@pytest.mark.tensorrt
@needs_tensorrt
def test_member_without_engine_says_how_to_build(tmp_path) -> None:
    from wcx.runtime.tensorrt_runner import TensorRTRunner

    bundle = make_variant_bundle(tmp_path, "fp32")
    with pytest.raises(BadInputError, match="wcx build-engines"), TensorRTRunner(bundle, 0):
        pass
