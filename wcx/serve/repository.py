"""``wcx export-triton``: a calibrated bundle as a Triton model repository with a BLS cascade.

Layout (``M`` members, ``NAME`` = :data:`CASCADE_MODEL`)::

    REPO/
      NAME/                      Python backend: the cascade (wcx.serve.bls_model)
        config.pbtxt
        1/model.py               imports wcx.serve.bls_model (wcx must be installed for the backend)
        1/cascade.json           the members' manifest sections, the policy, the member models
      NAME_m1_<member>/          one model per member, in stage order
        config.pbtxt
        1/model.onnx             onnxruntime_onnx, or python (ONNX Runtime inside the Python backend)
        model.onnx, 1/model.plan tensorrt_plan: the plan is built from model.onnx inside the
                                 container by build_tensorrt_plans.sh (TensorRT's own version)
      build_tensorrt_plans.sh    (tensorrt members only)

Triton's ensembles cannot branch per row, so the cascade is a BLS model: it runs member 1 on
every row of the dynamic batch and member m+1 only on the rows still in their windows, with
wcx's executor, policy and scores (no copy of them in the repository). Every ``config.pbtxt`` is
parsed with Triton's model-config protobuf when ``tritonclient[grpc]`` is installed.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wcx.atomic import atomic_directory
from wcx.bundle import Bundle
from wcx.errors import BadInputError
from wcx.serve.bls_model import CASCADE_FILE
from wcx.serve.contract import ServingContract, TensorSpec
from wcx.serve.model_config import PARSER, config_parser_available, model_config, parse_config

__all__ = ["CASCADE_MODEL", "MEMBER_KINDS", "CASCADE_FILE", "RepositoryReport", "export_triton", "member_model_name"]

CASCADE_MODEL = "wcx_cascade"
CASCADE_FORMAT = "wcx triton cascade 1"
#: how members are served: Triton's ONNX Runtime backend, TensorRT plans, or ONNX Runtime inside
#: the Python backend (for a Triton that has only that backend, like the one in PyTriton's wheel)
MEMBER_KINDS = ("onnxruntime", "tensorrt", "python")
BUILD_SCRIPT = "build_tensorrt_plans.sh"

_BLS_MODEL_PY = '''"""The wcx cascade as a Triton Python-backend (BLS) model: see wcx.serve.bls_model.

Needs wcx (and numpy<2 for Triton 2.51's Python backend) in the backend's Python environment.
"""

from wcx.serve.bls_model import TritonPythonModel  # noqa: F401
'''

_MEMBER_MODEL_PY = '''"""One cascade member, ONNX Runtime inside Triton's Python backend: see wcx.serve.member_model."""

from wcx.serve.member_model import TritonPythonModel  # noqa: F401
'''


@dataclass(frozen=True)
class RepositoryReport:
    """What :func:`export_triton` wrote."""

    path: Path
    models: list[str]
    members: str
    validated_with: str | None
    build_script: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "models": self.models, "members": self.members,
                "validated_with": self.validated_with,
                "build_script": None if self.build_script is None else str(self.build_script)}


def member_model_name(index: int, member: str) -> str:
    """The Triton model name of stage ``index`` (0-based) serving ``member``.

    >>> member_model_name(0, "b3_s0")
    'wcx_cascade_m1_b3_s0'
    """
    return f"{CASCADE_MODEL}_m{index + 1}_{re.sub(r'[^A-Za-z0-9_.-]', '_', member)}"


def _check_replaceable(path: Path) -> None:
    if not (path / CASCADE_MODEL / "1" / CASCADE_FILE).is_file():
        raise BadInputError(f"{path}: exists and is not a repository written by wcx export-triton; "
                            "choose another out")


def export_triton(
    bundle: Bundle | str | Path,
    out: str | Path,
    *,
    members: str = "onnxruntime",
    max_batch: int = 256,
    max_queue_delay_us: int = 100,
    instances: int = 1,
    input_dtype: str | None = None,
    probs: bool = False,
    overwrite: bool = False,
) -> RepositoryReport:
    """Write the Triton model repository of ``bundle``'s calibrated cascade to ``out``.

    ``members``: one of :data:`MEMBER_KINDS`; ``max_batch``: every model's ``max_batch_size``
    (the most rows one request, and one merged batch, may hold); ``instances``: instances per
    model (CPU instances for ``onnxruntime``/``python`` members and the cascade, GPU for
    ``tensorrt``). ``input_dtype``/``probs``: as for ``wcx serve`` (:mod:`wcx.serve.contract`).
    """
    if members not in MEMBER_KINDS:
        raise BadInputError(f"members {members!r}: use one of {', '.join(MEMBER_KINDS)}")
    for name, value, low in (("max_batch", max_batch, 1), ("instances", instances, 1),
                             ("max_queue_delay_us", max_queue_delay_us, 0)):
        if value < low:
            raise BadInputError(f"{name}={value}: must be at least {low}")
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    if bundle.policy is None:
        raise BadInputError(f"{bundle.path}: the bundle has no policy: run wcx calibrate first")
    contract = ServingContract.for_input(bundle.input, num_classes=bundle.num_classes,
                                         takes_frames=bundle.manifest.takes_frames, input_dtype=input_dtype,
                                         probs=probs)
    validate = config_parser_available()
    names = [member_model_name(i, m.name) for i, m in enumerate(bundle.members)]
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite, check_replace=_check_replaceable) as tmp:
        configs: dict[str, str] = {}
        for i, (member, name) in enumerate(zip(bundle.members, names, strict=True)):
            version = tmp / name / "1"
            version.mkdir(parents=True)
            inputs = (TensorSpec(member.input.name, _dtype(member.input.dtype), member.sample_shape),)
            outputs = (TensorSpec(member.output_name, _dtype("float32"), (member.num_classes,)),)
            common: dict[str, Any] = {"inputs": inputs, "outputs": outputs, "max_batch": max_batch,
                                      "max_queue_delay_us": max_queue_delay_us, "instances": instances}
            if members == "onnxruntime":
                shutil.copyfile(bundle.member_path(i), version / "model.onnx")
                configs[name] = model_config(name, platform="onnxruntime_onnx", instance_kind="KIND_CPU", **common)
            elif members == "tensorrt":
                shutil.copyfile(bundle.member_path(i), tmp / name / "model.onnx")
                configs[name] = model_config(name, platform="tensorrt_plan", instance_kind="KIND_GPU",
                                             default_model_filename="model.plan", **common)
            else:
                shutil.copyfile(bundle.member_path(i), version / "model.onnx")
                (version / "model.py").write_text(_MEMBER_MODEL_PY)
                configs[name] = model_config(name, backend="python", instance_kind="KIND_CPU", **common)
        version = tmp / CASCADE_MODEL / "1"
        version.mkdir(parents=True)
        (version / "model.py").write_text(_BLS_MODEL_PY)
        (version / CASCADE_FILE).write_text(json.dumps({
            "format": CASCADE_FORMAT, "bundle": str(bundle.path), "bundle_digest": bundle.digest(),
            "members": [m.to_dict() for m in bundle.members], "member_models": names,
            "policy": bundle.policy.to_dict(), "num_classes": bundle.num_classes,
            "input_dtype": contract.input_dtype, "probs": contract.probs, "max_batch": max_batch,
        }, indent=2) + "\n")
        configs[CASCADE_MODEL] = model_config(CASCADE_MODEL, backend="python", inputs=contract.inputs,
                                              outputs=contract.outputs, max_batch=max_batch,
                                              max_queue_delay_us=max_queue_delay_us, instance_kind="KIND_CPU",
                                              instances=instances)
        for name, text in configs.items():
            if validate:
                parse_config(text, where=f"{name}/config.pbtxt")
            (tmp / name / "config.pbtxt").write_text(text)
        if members == "tensorrt":
            script = tmp / BUILD_SCRIPT
            script.write_text(_build_script(bundle, names, max_batch))
            script.chmod(0o755)
    return RepositoryReport(path=out, models=[CASCADE_MODEL, *names], members=members,
                            validated_with=PARSER if validate else None,
                            build_script=out / BUILD_SCRIPT if members == "tensorrt" else None)


def _dtype(name: str) -> Any:
    import numpy as np

    return np.dtype(name)


def _build_script(bundle: Bundle, names: list[str], max_batch: int) -> str:
    """A shell script that builds every member's plan with the TensorRT of the machine it runs on
    (inside the Triton container: plans are tied to its TensorRT version and the GPU)."""
    opt = min(64, max_batch)
    lines = ["#!/usr/bin/env bash",
             "# Build each member's TensorRT plan from its ONNX, strongly typed (the precision the ONNX",
             "# carries), with one profile over the batch dimension. Run it inside the Triton container,",
             "# on the GPU that will serve: a plan only loads on the TensorRT version and GPU that built it.",
             "set -euo pipefail", 'cd "$(dirname "$0")"', 'TRTEXEC="${TRTEXEC:-trtexec}"']
    for member, name in zip(bundle.members, names, strict=True):
        shape = "x".join(map(str, member.sample_shape))
        tensor = member.input.name
        lines += [f'mkdir -p "{name}/1"',
                  f'"$TRTEXEC" --onnx="{name}/model.onnx" --saveEngine="{name}/1/model.plan" --stronglyTyped '
                  f"--minShapes={tensor}:1x{shape} --optShapes={tensor}:{opt}x{shape} "
                  f"--maxShapes={tensor}:{max_batch}x{shape}"]
    return "\n".join(lines) + "\n"
