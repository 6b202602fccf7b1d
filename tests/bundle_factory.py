"""Small, real bundles for tests, built from ONNX graphs made with onnx.helper (no torch).

Each member is a two-layer MLP classifier on (C, H, W) inputs: Flatten -> Gemm -> Relu -> Gemm.
Weights are drawn from a seeded generator, so members disagree a little, like an ensemble.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from wcx.bundle import Bundle, write_bundle
from wcx.core.manifest import InputSection, MemberSection
from wcx.data import Dataset


def make_mlp_onnx(
    path: Path,
    *,
    sample_shape: tuple[int, int, int] = (1, 8, 8),
    hidden: int = 16,
    num_classes: int = 4,
    seed: int = 0,
    input_name: str = "input",
) -> Path:
    """Write a small MLP classifier as ONNX (dynamic batch, float32 in, float32 logits out)."""
    rng = np.random.default_rng(seed)
    features = int(np.prod(sample_shape))
    w1 = (rng.standard_normal((features, hidden)) / np.sqrt(features)).astype(np.float32)
    b1 = (0.1 * rng.standard_normal(hidden)).astype(np.float32)
    w2 = (rng.standard_normal((hidden, num_classes)) * 2.0 / np.sqrt(hidden)).astype(np.float32)
    b2 = (0.1 * rng.standard_normal(num_classes)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", [input_name], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        f"mlp_{seed}",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", *sample_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", num_classes])],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def make_mlp_bundle(
    root: Path,
    *,
    members: int = 2,
    sample_shape: tuple[int, int, int] = (1, 8, 8),
    hidden: int = 16,
    num_classes: int = 4,
    mean: float = 0.5,
    std: float = 0.25,
) -> Bundle:
    """Build a bundle of ``members`` seeded MLPs in ``root / 'bundle'``."""
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    features = int(np.prod(sample_shape))
    specs = []
    for i in range(members):
        onnx_path = make_mlp_onnx(
            src / f"m{i}.onnx", sample_shape=sample_shape, hidden=hidden, num_classes=num_classes, seed=i
        )
        spec = MemberSection(
            name=f"m{i}",
            file=f"members/m{i}.onnx",
            sha256="0" * 64,  # recomputed from the copy by write_bundle
            precision="fp32",
            input=InputSection(name="input", shape=sample_shape, mean=(mean,) * sample_shape[0],
                               std=(std,) * sample_shape[0]),
            output_name="logits",
            num_classes=num_classes,
            # (hidden + 1) scaling makes later members dearer, like a real cascade.
            macs=features * hidden * (i + 1) + hidden * num_classes,
        )
        specs.append((spec, onnx_path))
    export = {"wcx": "test", "torch": None, "onnx": onnx.__version__, "onnxruntime": None,
              "export_options": {"source": "tests/bundle_factory.py"}}
    return write_bundle(root / "bundle", specs, export)


def labelled_data(bundle: Bundle, n: int, seed: int, *, flip: float = 0.15) -> Dataset:
    """``n`` random inputs for ``bundle`` with labels the members get mostly right: the
    ensemble's own argmax (ONNX Runtime), a ``flip`` share of them replaced at random."""
    from wcx.calibration.held_out import run_members

    rng = np.random.default_rng(seed)
    x = rng.random((n, *bundle.sample_shape), dtype=np.float32)
    y = run_members(bundle, x, cache=False).logits.mean(0).argmax(1)
    flipped = rng.random(n) < flip
    y[flipped] = rng.integers(0, bundle.num_classes, int(flipped.sum()))
    return Dataset(x=x, y=y, path=bundle.path / f"labelled-{seed}.npz")
