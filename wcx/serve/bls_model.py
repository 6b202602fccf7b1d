"""The cascade as a Triton Python-backend (BLS) model, for repositories of ``wcx export-triton``.

Triton's Python backend imports this module (the repository's ``model.py`` re-exports
:class:`TritonPythonModel`) in its stub process, so wcx must be installed in that Python (and,
for Triton 2.51's backend, numpy<2). The model reads ``cascade.json`` beside its ``model.py``
(the members' manifest sections, the policy, the Triton model serving each member) and builds
wcx's own :class:`~wcx.runtime.cascade.Cascade` over :class:`~wcx.serve.triton_runner.TritonMemberRunner`
runners that call the member models through BLS: per dynamic batch, member 1 runs on every row,
member m+1 only on the rows still in their windows.

Each request is answered on its own: a bad one (shape, dtype, range) gets an error response,
the others of the same batch their results (:func:`~wcx.serve.requests.answer_requests`).
Rows, accepted rows and rows per stage are counted in Triton's metrics endpoint
(``wcx_rows_total``, ``wcx_accepted_rows_total``, ``wcx_stage_rows_total{stage}``) where the
backend offers custom metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wcx.core.manifest import MemberSection, PolicySection
from wcx.errors import BadInputError, WorkFailedError
from wcx.serve.contract import INPUT_NAME, ServingContract
from wcx.serve.requests import answer_requests
from wcx.serve.triton_runner import MemberCall, TritonMemberRunner

__all__ = ["cascade_from_spec", "TritonPythonModel"]

CASCADE_FILE = "cascade.json"


def cascade_from_spec(spec: Mapping[str, Any], call: MemberCall) -> tuple[Any, ServingContract]:
    """The cascade and serving contract of ``spec`` (a ``cascade.json``), with members reached
    through ``call``."""
    from wcx.runtime.cascade import Cascade

    members = [MemberSection.from_dict(m, where=CASCADE_FILE) for m in spec["members"]]
    models = list(spec["member_models"])
    if len(models) != len(members):
        raise BadInputError(f"{CASCADE_FILE}: {len(members)} members but {len(models)} member models")
    runners = [TritonMemberRunner(m, i, model_name=name, call=call, max_batch=int(spec["max_batch"]))
               for i, (m, name) in enumerate(zip(members, models, strict=True))]
    cascade = Cascade(runners, policy=PolicySection.from_dict(spec["policy"], where=CASCADE_FILE),
                      input=members[0].input, num_classes=int(spec["num_classes"]), backend="triton")
    contract = ServingContract.for_input(members[0].input, num_classes=cascade.num_classes,
                                         takes_frames=cascade.takes_frames, input_dtype=spec["input_dtype"],
                                         probs=bool(spec["probs"]))
    return cascade, contract


class TritonPythonModel:
    """Triton's Python-backend interface (``initialize``, ``execute``, ``finalize``)."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        spec = json.loads((Path(args["model_repository"]) / args["model_version"] / CASCADE_FILE).read_text())
        self.cascade, self.contract = cascade_from_spec(spec, self._call_member)
        self.counters = self._counters(args.get("model_name", "wcx_cascade"))

    def _call_member(self, model: str, input_name: str, output_name: str, x: np.ndarray) -> np.ndarray:
        request = self.pb.InferenceRequest(model_name=model, requested_output_names=[output_name],
                                           inputs=[self.pb.Tensor(input_name, x)])
        response = request.exec()
        if response.has_error():
            raise WorkFailedError(f"member model {model!r}: {response.error().message()}")
        out: np.ndarray = self.pb.get_output_tensor_by_name(response, output_name).as_numpy()
        return out

    def _counters(self, model: str) -> dict[str, Any] | None:
        """Triton custom metrics, or None where this backend has none."""
        family = getattr(self.pb, "MetricFamily", None)
        if family is None:
            return None
        rows = family(name="wcx_rows_total", description="Rows the cascade answered", kind=family.COUNTER)
        accepted = family(name="wcx_accepted_rows_total", description="Rows accepted (score >= tau)",
                          kind=family.COUNTER)
        stages = family(name="wcx_stage_rows_total", description="Rows that reached each stage (1-based)",
                        kind=family.COUNTER)
        # the families must outlive their metrics: keep them
        return {"families": [rows, accepted, stages],
                "rows": rows.Metric(labels={"model": model}), "accepted": accepted.Metric(labels={"model": model}),
                "stages": [stages.Metric(labels={"model": model, "stage": str(m + 1)})
                           for m in range(self.cascade.n_stages)]}

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb
        xs = []
        for request in requests:
            tensor = pb.get_input_tensor_by_name(request, INPUT_NAME)
            xs.append(None if tensor is None else tensor.as_numpy())
        answers = answer_requests(self.cascade, self.contract, xs)
        responses = []
        for answer in answers:
            if isinstance(answer, BadInputError):
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(answer))))
                continue
            if self.counters is not None:
                stage = answer["exit_stage"].ravel()
                self.counters["rows"].increment(int(stage.size))
                self.counters["accepted"].increment(int(answer["accept"].sum()))
                for m, metric in enumerate(self.counters["stages"]):
                    metric.increment(int((stage >= m + 1).sum()))
            responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor(k, v) for k, v in answer.items()]))
        return responses

    def finalize(self) -> None:
        self.cascade.close()
