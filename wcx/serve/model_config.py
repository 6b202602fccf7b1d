"""Triton model configurations (``config.pbtxt``): written as protobuf text, checked by parsing.

:func:`model_config` renders one model's configuration from plain values; :func:`parse_config`
parses it with Triton's own ``ModelConfig`` protobuf (``model_config_pb2``, shipped in
``tritonclient[grpc]``, which the ``serve`` extra installs), so a field name, enum or nesting
Triton would refuse is refused here first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wcx.errors import BadInputError, missing_dependency
from wcx.serve.contract import TensorSpec

__all__ = ["model_config", "parse_config", "config_parser_available", "PARSER"]

#: where the parser comes from (named in reports)
PARSER = "tritonclient.grpc.model_config_pb2"


def _tensors(kind: str, specs: Sequence[TensorSpec]) -> str:
    items = [f'  {{ name: "{s.name}" data_type: TYPE_{s.triton_dtype} dims: [ {", ".join(map(str, s.shape))} ] }}'
             for s in specs]
    return f"{kind} [\n" + ",\n".join(items) + "\n]"


def model_config(
    name: str,
    *,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch: int,
    max_queue_delay_us: int,
    backend: str | None = None,
    platform: str | None = None,
    instance_kind: str = "KIND_CPU",
    instances: int = 1,
    default_model_filename: str | None = None,
    parameters: Mapping[str, str] | None = None,
) -> str:
    """One model's ``config.pbtxt``: dynamic batching up to ``max_batch`` rows, ``instances``
    instances of ``instance_kind`` (``KIND_CPU`` or ``KIND_GPU``), one of ``backend``
    (``"python"``) or ``platform`` (``"onnxruntime_onnx"``, ``"tensorrt_plan"``)."""
    if (backend is None) == (platform is None):
        raise BadInputError("a model config names one of backend or platform")
    lines = [f'name: "{name}"', f'backend: "{backend}"' if backend else f'platform: "{platform}"',
             f"max_batch_size: {int(max_batch)}"]
    if default_model_filename:
        lines.append(f'default_model_filename: "{default_model_filename}"')
    lines += [_tensors("input", inputs), _tensors("output", outputs),
              f"dynamic_batching {{ max_queue_delay_microseconds: {int(max_queue_delay_us)} }}",
              f"instance_group [ {{ count: {int(instances)} kind: {instance_kind} }} ]"]
    for key, value in (parameters or {}).items():
        lines.append(f'parameters: {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"


def config_parser_available() -> bool:
    """Whether Triton's model-config protobuf can be imported here."""
    try:
        _model_config_pb2()
    except (ImportError, RuntimeError):  # tritonclient.grpc raises RuntimeError without its extra
        return False
    return True


def _model_config_pb2() -> Any:
    from tritonclient.grpc import model_config_pb2  # raises without the grpc extra

    return model_config_pb2


def parse_config(text: str, *, where: str = "config.pbtxt") -> Any:
    """Parse ``text`` as Triton's ``ModelConfig``; a ``BadInputError`` naming ``where`` and the
    protobuf's complaint when Triton would refuse it."""
    try:
        pb2 = _model_config_pb2()
        from google.protobuf import text_format
    except (ImportError, RuntimeError):
        raise missing_dependency("tritonclient[grpc]", "serve", "checking Triton model configurations") from None
    try:
        return text_format.Parse(text, pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise BadInputError(f"{where}: not a valid Triton model configuration: {exc}") from None
