"""One cascade member as a Triton Python-backend model running ONNX Runtime.

For a Triton that has only the Python backend (the ``tritonserver`` in PyTriton's wheel):
``wcx export-triton --members python`` writes each member as such a model, its ``model.onnx``
beside the ``model.py`` that re-exports :class:`TritonPythonModel`. The requests of a dynamic
batch run as one ONNX Runtime call; each gets its rows back. Input and output names come from
the model's configuration (one input, one output: the member's logits).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TritonPythonModel"]


class TritonPythonModel:
    """Triton's Python-backend interface (``initialize``, ``execute``, ``finalize``)."""

    def initialize(self, args: dict[str, str]) -> None:
        import onnxruntime as ort
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb
        xs = [pb.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        logits = self.session.run([self.output_name], {self.input_name: np.concatenate(xs)})[0]
        responses, start = [], 0
        for x in xs:
            rows = logits[start:start + len(x)]
            start += len(x)
            responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor(self.output_name, rows)]))
        return responses

    def finalize(self) -> None:
        self.session = None
