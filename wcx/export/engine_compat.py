"""TensorRT engine facts that need no GPU: profiles, compatibility, availability.

Everything here is pure Python (no ``tensorrt``, no CUDA binding at import time) so that it can be
unit-tested anywhere; the engine builder (:mod:`wcx.export.tensorrt_engine`) and the runner
(:mod:`wcx.runtime.tensorrt_runner`) call into it.

The manifest's ``engines`` section (typed as :class:`wcx.core.manifest.EnginesSection`), written
by ``build_engines``::

    "engines": {
      "backend": "tensorrt",
      "timing_cache": null | {"file": "engines/timing.<sha256[:16]>.cache", "sha256": "...",
                              "tensorrt_version": "10.3.0.30", "gpu_name": "...",
                              "compute_capability": "8.7"},
      "members": {
        "m0": {"member": "m0", "file": "engines/m0.<sha256[:16]>.engine", "sha256": "...",
               "tensorrt_version": "10.3.0.30", "gpu_name": "Orin",
               "compute_capability": "8.7", "onnx_sha256": "...", "precision": "fp16",
               "input_name": "input", "output_name": "logits",
               "build_options": {"opt_batch": 32, "max_batch": 256, "workspace_mb": null,
                                 "strongly_typed": true, "timing_cache": true},
               "profile": {"min": [1, 3, 224, 224], "opt": [32, 3, 224, 224],
                           "max": [256, 3, 224, 224]}}
      }
    }

Compatibility rules (what ``check_engine_compatible`` enforces): an engine runs only on the
TensorRT version that built it (the full version string), on a GPU of the same compute
capability, and only for the exact ONNX it was built from (its sha256). A different GPU *name*
with the same compute capability is allowed with a warning (TensorRT itself only warns there).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from wcx.core.manifest import EngineRecord, Manifest
from wcx.errors import BadInputError, MissingDependencyError

log = logging.getLogger(__name__)

ENGINE_DIR = "engines"
#: hex digits of a file's sha256 in its name (content-addressed engine and cache files)
NAME_HASH_DIGITS = 16

#: How to get TensorRT, for error messages (wcx's ``tensorrt`` extra brings only the CUDA binding,
#: not TensorRT itself: on Jetson it is part of JetPack).
INSTALL_HINT = (
    "on x86_64 'pip install tensorrt' (NVIDIA's wheels, TensorRT 10.3 or newer) and NVIDIA's CUDA "
    "binding (pip install cuda-bindings, or wcx's 'tensorrt' extra from its checkout); on Jetson "
    "TensorRT comes with JetPack 6 (TensorRT 10.3), not from pip: use the system Python or create "
    "the venv with --system-site-packages; '--backend onnxruntime' works without it"
)


def rebuild_hint(bundle_path: object | None = None) -> str:
    """The command that rebuilds a bundle's engines on this machine."""
    return f"wcx build-engines {bundle_path if bundle_path is not None else 'BUNDLE'}"


def engine_file(member_name: str, sha256: str) -> str:
    """Where a member's engine with this content lives inside the bundle.

    The name carries the start of the engine's sha256, so a rebuild writes new files beside the
    ones the manifest names and switches to them with one manifest write: an interrupted
    rebuild leaves the bundle valid (the manifest read at load time always names files that
    exist with their hashes). Bundles from before this naming (``engines/<member>.engine``)
    load as they are: the runner reads whatever file the record names."""
    return f"{ENGINE_DIR}/{member_name}.{sha256[:NAME_HASH_DIGITS]}.engine"


def timing_cache_file(sha256: str) -> str:
    """Where the timing cache with this content lives inside the bundle (named like engines)."""
    return f"{ENGINE_DIR}/timing.{sha256[:NAME_HASH_DIGITS]}.cache"


# -------------------------------------------------------------------------------------------
# Availability (lazy imports; nothing heavy is imported by this module itself)
# -------------------------------------------------------------------------------------------
def import_tensorrt(purpose: str = "The TensorRT backend") -> Any:
    """Import and return the ``tensorrt`` module, or raise ``MissingDependencyError``.

    A wheel without its native libraries (``libnvinfer``) fails to import with an
    ``ImportError`` or ``OSError``; both become the same one-line message.
    """
    try:
        return importlib.import_module("tensorrt")
    except (ImportError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MissingDependencyError(
            f"{purpose} needs NVIDIA TensorRT, which cannot be imported here ({reason}): {INSTALL_HINT}"
        ) from None


def cuda_gpu_facts(purpose: str = "The TensorRT backend") -> dict[str, str]:
    """Name and compute capability of the current CUDA device, read through NVIDIA's CUDA
    binding (:mod:`wcx.cuda_runtime`; no torch).

    Raises ``MissingDependencyError`` without the binding or without a CUDA GPU.
    """
    from wcx.cuda_runtime import Cuda

    return Cuda(purpose=purpose).facts()


def tensorrt_available() -> tuple[bool, str]:
    """Whether the TensorRT backend can run here: ``(True, "TensorRT 10.3.0.30 on <GPU>")`` or
    ``(False, reason)``.

    Never raises. Meant for the runtime's ``backend="auto"``: try TensorRT when this says True,
    otherwise log the reason at info level and fall back to the next backend. It imports
    ``tensorrt`` and the CUDA binding (and initialises CUDA) when they are installed.
    """
    try:
        trt = import_tensorrt()
        facts = cuda_gpu_facts()
    except MissingDependencyError as exc:
        return False, str(exc)
    except Exception as exc:  # a broken CUDA driver, for instance: report, never raise
        return False, f"the TensorRT backend cannot start here ({type(exc).__name__}: {exc})"
    return True, (
        f"TensorRT {getattr(trt, '__version__', '?')} on {facts['gpu_name']} "
        f"(compute capability {facts['compute_capability']})"
    )


# -------------------------------------------------------------------------------------------
# Profiles
# -------------------------------------------------------------------------------------------
def validate_batch_sizes(opt_batch: int, max_batch: int) -> None:
    """Check ``1 <= opt_batch <= max_batch`` (integers), naming the parameters on failure."""
    for option, value in (("opt_batch", opt_batch), ("max_batch", max_batch)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInputError(f"{option}: expected an integer, got {value!r}")
        if value < 1:
            raise BadInputError(f"{option}: must be at least 1, got {value}")
    if opt_batch > max_batch:
        raise BadInputError(
            f"opt_batch ({opt_batch}) must not exceed max_batch ({max_batch}): "
            "the optimization profile needs 1 <= opt <= max"
        )


def _is_dynamic(dim: object) -> bool:
    return dim is None or isinstance(dim, str) or (isinstance(dim, int) and dim < 0)


def profile_shapes(
    input_shape: Sequence[object],
    *,
    opt_batch: int,
    max_batch: int,
    sample_shape: Sequence[int] | None = None,
) -> dict[str, list[int]]:
    """The (min, opt, max) shapes of the one optimization profile on the batch dimension.

    ``input_shape`` is the network input's shape as the ONNX/TensorRT network reports it: the
    batch dimension dynamic (``-1``, ``None`` or a symbolic name), the other dimensions fixed.
    A dynamic non-batch dimension is taken from ``sample_shape`` (the manifest's (C, H, W));
    without it, or if they disagree, this raises ``BadInputError``.

    >>> profile_shapes([-1, 3, 32, 32], opt_batch=8, max_batch=64)
    {'min': [1, 3, 32, 32], 'opt': [8, 3, 32, 32], 'max': [64, 3, 32, 32]}
    """
    validate_batch_sizes(opt_batch, max_batch)
    dims = list(input_shape)
    if len(dims) < 2:
        raise BadInputError(f"input shape {dims} has no batch dimension (expected (N, C, H, W))")
    if not _is_dynamic(dims[0]):
        raise BadInputError(
            f"the member's ONNX has a fixed batch size {dims[0]}; TensorRT engines need a dynamic "
            "batch dimension: re-export the member with a dynamic batch"
        )
    rest: list[int] = []
    for i, dim in enumerate(dims[1:]):
        expected = None if sample_shape is None else int(sample_shape[i])
        if _is_dynamic(dim):
            if expected is None:
                raise BadInputError(
                    f"input shape {dims}: dimension {i + 1} is dynamic; only the batch dimension may be"
                )
            rest.append(expected)
        else:
            if expected is not None and int(dim) != expected:  # type: ignore[call-overload]
                assert sample_shape is not None  # expected comes from it
                raise BadInputError(
                    f"input shape {dims} disagrees with the manifest's sample shape {tuple(sample_shape)}"
                )
            rest.append(int(dim))  # type: ignore[call-overload]
    if sample_shape is not None and len(sample_shape) != len(rest):
        raise BadInputError(
            f"input shape {dims} disagrees with the manifest's sample shape {tuple(sample_shape)}"
        )
    return {"min": [1, *rest], "opt": [opt_batch, *rest], "max": [max_batch, *rest]}


def trt_unsupported_qdq(model: Any) -> list[str]:
    """Q/DQ patterns in an ONNX ``ModelProto`` that TensorRT's parser rejects, one line each.

    TensorRT dequantizes only activation-typed (INT8/FP8/INT4) tensors: an INT32 bias behind a
    ``DequantizeLinear`` (what onnxruntime's ``quantize_static`` writes unless it is given
    ``extra_options={"QuantizeBias": False}``) fails with "only activation types allowed as
    input to this layer". Asymmetric quantization (a non-zero zero point) is rejected as well.
    """
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("DequantizeLinear", "QuantizeLinear"):
            continue
        data = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if data is not None and data.data_type == TensorProto.INT32:
            problems.append(f"{node.name or node.output[0]}: DequantizeLinear of an INT32 tensor "
                            f"({data.name}, a quantized bias)")
        zero = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero is not None and zero.data_type != TensorProto.INT32 and numpy_helper.to_array(zero).any():
            problems.append(f"{node.name or node.output[0]}: non-zero zero point (asymmetric quantization)")
    return problems


# -------------------------------------------------------------------------------------------
# Manifest records and the compatibility decision
# -------------------------------------------------------------------------------------------
def make_engine_record(
    *,
    member: str,
    file_ref: Mapping[str, str],
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: str,
    onnx_sha256: str,
    precision: str,
    input_name: str,
    output_name: str,
    profile: Mapping[str, Sequence[int]],
    build_options: Mapping[str, Any],
) -> EngineRecord:
    """One member's entry of the manifest's ``engines.members`` (see the module docstring)."""
    return EngineRecord(
        member=member, file=file_ref["file"], sha256=file_ref["sha256"], tensorrt_version=str(tensorrt_version),
        gpu_name=str(gpu_name), compute_capability=normalize_compute_capability(compute_capability),
        onnx_sha256=onnx_sha256, precision=precision, input_name=input_name, output_name=output_name,
        build_options=dict(build_options), profile={k: [int(d) for d in profile[k]] for k in ("min", "opt", "max")},
    )


def normalize_compute_capability(value: object) -> str:
    """``(8, 7)``, ``[8, 7]``, ``"8.7"`` or ``"sm_87"`` -> ``"8.7"``."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return f"{int(value[0])}.{int(value[1])}"
    text = str(value).strip()
    if text.startswith("sm_") and text[3:].isdigit() and len(text) >= 5:
        return f"{text[3:-1]}.{text[-1]}"
    return text


def engine_record_for(manifest: Manifest, member: str, *, bundle_path: object | None = None) -> EngineRecord:
    """The engine record of ``member`` in a manifest, or a ``BadInputError`` saying how to build one."""
    record = None if manifest.engines is None else manifest.engines.members.get(member)
    if record is None:
        raise BadInputError(
            f"{bundle_path or 'the bundle'} has no TensorRT engine for member {member!r}: build the "
            f"engines on the deployment machine with '{rebuild_hint(bundle_path)}' "
            "(or use --backend onnxruntime)"
        )
    return record


def check_engine_compatible(
    record: EngineRecord,
    *,
    trt_version: str,
    gpu_name: str,
    compute_capability: object,
    onnx_sha256: str,
    bundle_path: object | None = None,
) -> None:
    """Refuse an engine that was built elsewhere or from another ONNX; return None if it fits.

    Raises ``BadInputError`` (CLI exit 2) listing every difference: the TensorRT version (must
    match exactly: engines are not portable across TensorRT releases), the GPU's compute
    capability (engines hold kernels for one architecture) and the member ONNX's sha256 (a
    changed member makes the engine stale). A different GPU name with the same compute
    capability is only logged as a warning.
    """
    member = record.member
    differences: list[str] = []
    built_version = record.tensorrt_version
    if built_version != str(trt_version):
        differences.append(
            f"it was built with TensorRT {built_version}, this machine has TensorRT {trt_version}"
        )
    built_cc = normalize_compute_capability(record.compute_capability)
    here_cc = normalize_compute_capability(compute_capability)
    if built_cc != here_cc:
        differences.append(
            f"it was built for GPU compute capability {built_cc} ({record.gpu_name or '?'}), "
            f"this GPU ({gpu_name}) has compute capability {here_cc}"
        )
    built_onnx = record.onnx_sha256
    if built_onnx != str(onnx_sha256):
        differences.append(
            f"the member's ONNX changed since the build (engine built from sha256 {built_onnx[:12]}..., "
            f"the bundle's ONNX is {str(onnx_sha256)[:12]}...)"
        )
    if differences:
        raise BadInputError(
            f"the TensorRT engine of member {member!r} cannot be used here: {'; '.join(differences)}. "
            f"Rebuild the engines on this machine with '{rebuild_hint(bundle_path)}' "
            "(or run with --backend onnxruntime)"
        )
    built_gpu = record.gpu_name
    if built_gpu is not None and str(built_gpu) != str(gpu_name):
        log.warning(
            "the TensorRT engine of member %r was built on %s and runs on %s (same compute capability "
            "%s): it works, but may be slower than an engine built here (%s)",
            member, built_gpu, gpu_name, here_cc, rebuild_hint(bundle_path),
        )
