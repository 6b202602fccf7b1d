"""A score and a backend written the way another package would write them: outside wcx, against
its public extension points only (``Score``, ``Runner``, ``Backend``), registered by the tests
(``tests/test_plugins.py``) in code and through entry points.

* :class:`MarginScore` (``margin``): the gap between the two most probable classes of ``P_m``;
* :class:`NumpyMlpRunner` (backend ``numpy_mlp``): runs the test bundles' MLP members
  (``tests/bundle_factory``) in plain numpy from the ONNX file's weights, no ONNX Runtime.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wcx.core.arrays import Array, ArrayOps
from wcx.core.scores import Score
from wcx.runtime.backends import Backend
from wcx.runtime.runner import Runner


class MarginScore(Score):
    """``P_m[top1] - P_m[top2]``: in [0, 1], higher = more confident."""

    name = "margin"

    def final(self, mean_probs: Array, mean_statistic: Array | None, ops: ArrayOps) -> Array:
        top = ops.max(mean_probs, -1)
        best = ops.argmax(mean_probs, -1)
        masked = ops.where(ops.arange(mean_probs.shape[1], mean_probs)[None, :] == best[:, None], -1.0, mean_probs)
        return top - ops.max(masked, -1)

    def bounds(self, num_classes: int) -> tuple[float, float]:
        return 0.0, 1.0


class NumpyMlpRunner(Runner):
    """Flatten -> Gemm -> Relu -> Gemm in numpy, with the weights read from the member's ONNX."""

    backend = "numpy_mlp"

    def activate_impl(self) -> None:
        import onnx
        from onnx import numpy_helper

        assert self.bundle is not None
        graph = onnx.load(str(self.bundle.member_path(self.member_index))).graph
        self.w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in graph.initializer}

    def infer_impl(self, x: Any, rows: int) -> np.ndarray:
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        hidden = np.maximum(flat @ self.w["w1"] + self.w["b1"], 0.0)
        return (hidden @ self.w["w2"] + self.w["b2"]).astype(np.float32)

    def deactivate_impl(self) -> None:
        self.w = {}


TOY_BACKEND = Backend("numpy_mlp", NumpyMlpRunner, description="the test bundles' MLPs in plain numpy")
