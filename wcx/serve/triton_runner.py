"""A runner whose member is another model of the same Triton server, called through BLS.

Inside the Python-backend model of an exported repository (:mod:`wcx.serve.bls_model`), each
member is a Triton model of its own (ONNX Runtime, TensorRT, or a Python model wrapping ONNX
Runtime). :class:`TritonMemberRunner` is the runner contract over such a model, so that the
cascade there is wcx's own :class:`~wcx.runtime.cascade.Cascade`: the same executor, policy and
scores as ``Cascade.load`` runs, and the member of stage m+1 receives only the rows still in
their windows.

The runner never imports Triton: it is given ``call(model_name, input_name, output_name, x)``,
which sends ``x`` to that model and returns its output (the BLS model passes one built on
``triton_python_backend_utils``; tests pass one that runs ONNX Runtime directly).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from wcx.core.manifest import MemberSection
from wcx.errors import BadInputError
from wcx.runtime.runner import Runner

__all__ = ["MemberCall", "TritonMemberRunner"]

#: ``call(model_name, input_name, output_name, x) -> output``
MemberCall = Callable[[str, str, str, np.ndarray], Any]


class TritonMemberRunner(Runner):
    """Member ``member`` served as the Triton model ``model_name`` (at most ``max_batch`` rows
    per call: the model's ``max_batch_size``)."""

    backend = "triton"

    def __init__(self, member: MemberSection, member_index: int, *, model_name: str, call: MemberCall,
                 max_batch: int) -> None:
        super().__init__(None, member_index, member=member)
        self.model_name = model_name
        self._call = call
        self.max_batch = int(max_batch)

    def activate_impl(self) -> None:
        return None  # the member model is loaded by Triton

    def infer_impl(self, x: Any, rows: int) -> np.ndarray:
        # members take their ONNX input dtype (float16 for some FP16 graphs); logits come back float32
        feed = np.ascontiguousarray(x, dtype=np.dtype(self.member.input.dtype))
        logits = np.asarray(self._call(self.model_name, self.member.input.name, self.member.output_name, feed))
        if logits.shape[0] != feed.shape[0]:
            raise BadInputError(f"Triton model {self.model_name!r} returned {logits.shape[0]} rows for "
                                f"{feed.shape[0]}")
        return logits.astype(np.float32, copy=False)

    def deactivate_impl(self) -> None:
        return None
