"""Build one TensorRT engine per member from its precision-baked ONNX (TensorRT 10.3+ and 11).

Precision is decided while producing the ONNX (FP16 graph, or INT8 with Q/DQ nodes), so every
network here is built *strongly typed*: the ``STRONGLY_TYPED`` creation flag is passed (it
exists since TensorRT 10.0; on 11 strong typing is the only mode and the flag is kept for
compatibility). No ``EXPLICIT_BATCH`` flag, no FP16/INT8 builder flags, no INT8 calibrators:
TensorRT 11 removed them.

Per member: parse the ONNX with ``trt.OnnxParser``, add one optimization profile on the batch
dimension (min 1, opt, max), optionally limit the workspace pool, share one timing cache (kept in
the bundle as ``engines/timing.<hash>.cache``), ``build_serialized_network``, and write the engine
to ``engines/<member>.<hash>.engine`` (``<hash>``: the start of the file's sha256; see
:mod:`wcx.export.engine_compat` for the section's layout and the compatibility rules).

All or nothing, even under ``kill -9``: engines are built into a staging folder; only when every
requested member has built are they moved to their content-addressed names, which are new files
beside the ones the manifest names, and then the manifest's ``engines`` section switches to them
in one atomic write. Files no longer named are deleted after that write. An interruption at any
point leaves a bundle that loads and verifies (the old engines or the new ones); what it leaves
behind (a staging folder, unnamed engine files) is removed by the next build.

``tensorrt`` and the CUDA binding are imported inside the functions, never at ``import wcx``.
Without them, or without a GPU, ``build_engines`` raises ``MissingDependencyError`` (CLI exit
2) naming what is missing and how to install it.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wcx.atomic import scratch_directory
from wcx.bundle import Bundle, sha256_file
from wcx.core.manifest import EngineRecord, EnginesSection, MemberSection, TimingCacheRecord, file_references
from wcx.errors import BadInputError, WorkFailedError
from wcx.export.engine_compat import (
    ENGINE_DIR,
    cuda_gpu_facts,
    engine_file,
    import_tensorrt,
    make_engine_record,
    profile_shapes,
    timing_cache_file,
    trt_unsupported_qdq,
    validate_batch_sizes,
)

log = logging.getLogger(__name__)

#: TensorRT's messages are forwarded to this Python logger.
TRT_LOGGER_NAME = "wcx.tensorrt"

#: ``--trt-log-level`` choices, most to least quiet, and the Python level each forwards at.
TRT_LOG_LEVELS = ("error", "warning", "info", "verbose")
_PY_LEVEL = {"internal_error": logging.CRITICAL, "error": logging.ERROR, "warning": logging.WARNING,
             "info": logging.INFO, "verbose": logging.DEBUG}

_LOGGER_SINGLETON: dict[str, Any] = {}


def python_log_level(trt_log_level: str) -> int:
    """The Python logging level matching a ``--trt-log-level`` choice."""
    check_log_level(trt_log_level)
    return _PY_LEVEL[trt_log_level]


def check_log_level(trt_log_level: str) -> None:
    if trt_log_level not in TRT_LOG_LEVELS:
        raise BadInputError(
            f"log_level: {trt_log_level!r} is not one of {', '.join(TRT_LOG_LEVELS)}"
        )


def get_trt_logger(trt: Any, level: str = "warning") -> Any:
    """The process-wide ``trt.ILogger`` that forwards TensorRT's messages to ``logging``.

    TensorRT keeps one logger per process (the first one given to a builder or runtime is used
    by all later ones), so this returns a singleton and only changes its verbosity. Messages
    below ``level`` are dropped; errors are also remembered (``recent_errors``) so that a failed
    build can say why.
    """
    check_log_level(level)
    logger = _LOGGER_SINGLETON.get("logger")
    if logger is None:
        severity = trt.ILogger.Severity
        ranks = {severity.INTERNAL_ERROR: 0, severity.ERROR: 1, severity.WARNING: 2,
                 severity.INFO: 3, severity.VERBOSE: 4}
        py_levels = {severity.INTERNAL_ERROR: logging.CRITICAL, severity.ERROR: logging.ERROR,
                     severity.WARNING: logging.WARNING, severity.INFO: logging.INFO,
                     severity.VERBOSE: logging.DEBUG}
        target = logging.getLogger(TRT_LOGGER_NAME)

        class _ForwardingLogger(trt.ILogger):  # type: ignore[misc]
            """A TensorRT logger that hands every message to Python's ``logging``."""

            def __init__(self) -> None:
                trt.ILogger.__init__(self)  # required by the pybind11 trampoline
                self.max_rank = 2
                self.recent_errors: collections.deque[str] = collections.deque(maxlen=20)

            def log(self, sev: Any, msg: str) -> None:
                rank = ranks.get(sev, 4)
                if rank <= 1:
                    self.recent_errors.append(str(msg))
                if rank <= self.max_rank:
                    target.log(py_levels.get(sev, logging.DEBUG), "%s", msg)

        logger = _ForwardingLogger()
        _LOGGER_SINGLETON["logger"] = logger
    logger.max_rank = TRT_LOG_LEVELS.index(level) + 1  # error -> 1 ... verbose -> 4
    return logger


# -------------------------------------------------------------------------------------------
# Building
# -------------------------------------------------------------------------------------------
def _parser_errors(parser: Any) -> list[str]:
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        try:
            errors.append(f"{err.desc()} (node {err.node()})")
        except Exception:  # an older parser error object: fall back to its repr
            errors.append(str(err))
    return errors


def _select_members(bundle: Bundle, members: Sequence[str] | None) -> list[tuple[int, MemberSection]]:
    if members is None:
        return list(enumerate(bundle.members))
    wanted = set(bundle.member_indices(members))
    return [(i, m) for i, m in enumerate(bundle.members) if i in wanted]


def _load_timing_cache(bundle: Bundle, facts: dict[str, str], trt_version: str) -> bytes:
    """The bundle's timing cache if it was made by this TensorRT on this GPU, else ``b""``."""
    ref = None if bundle.engines is None else bundle.engines.timing_cache
    if ref is None:
        return b""
    same = (ref.tensorrt_version == trt_version and ref.compute_capability == facts["compute_capability"]
            and ref.gpu_name == facts["gpu_name"])
    if not same:
        log.info("timing cache %s was made by TensorRT %s on %s; starting a new one", ref.file,
                 ref.tensorrt_version, ref.gpu_name)
        return b""
    path = bundle.file(ref.file)
    if not path.is_file() or sha256_file(path) != ref.sha256:
        log.warning("timing cache %s is missing or altered; starting a new one", ref.file)
        return b""
    return path.read_bytes()


def _engine_files(bundle: Bundle) -> list[Path]:
    """The engine and timing-cache files in the bundle's engine folder (visible names only)."""
    folder = bundle.path / ENGINE_DIR
    if not folder.is_dir() or folder.is_symlink():
        return []
    return sorted(f for f in folder.iterdir()
                  if not f.name.startswith(".") and f.suffix in (".engine", ".cache")
                  and f.is_file() and not f.is_symlink())


def _remove_unnamed_engine_files(bundle: Bundle) -> None:
    """Delete engine and cache files the manifest does not name (replaced by a rebuild, or left
    by one that was interrupted before its manifest write)."""
    named = {rel for rel, _ in file_references(bundle.manifest.to_dict())}
    for f in _engine_files(bundle):
        if f"{ENGINE_DIR}/{f.name}" not in named:
            log.info("removing %s/%s (no longer named by the manifest)", ENGINE_DIR, f.name)
            f.unlink(missing_ok=True)


def _build_member(
    trt: Any,
    builder: Any,
    logger: Any,
    timing_cache: Any,
    bundle: Bundle,
    index: int,
    member: MemberSection,
    *,
    opt_batch: int,
    max_batch: int,
    workspace_mb: int | None,
    staged: Path,
) -> tuple[str, dict[str, list[int]], str]:
    """Build one member's engine into ``staged``; return (onnx sha256, profile, input name)."""
    onnx_path = bundle.member_path(index)
    model_bytes = onnx_path.read_bytes()
    onnx_sha256 = hashlib.sha256(model_bytes).hexdigest()
    if onnx_sha256 != member.sha256:
        raise BadInputError(f"{bundle.path}: file {member.file} was altered since the bundle was loaded")

    if b"DequantizeLinear" in model_bytes:
        import onnx

        problems = trt_unsupported_qdq(onnx.load_from_string(model_bytes))
        if problems:
            raise BadInputError(
                f"member {member.name!r} ({member.file}) has Q/DQ nodes TensorRT cannot build: "
                f"{'; '.join(problems[:3])}{' ...' if len(problems) > 3 else ''}. Re-export the INT8 "
                "member with symmetric quantization and float biases (onnxruntime quantize_static: "
                "extra_options ActivationSymmetric/WeightSymmetric True, QuantizeBias False)"
            )
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    # The path lets the parser find weights stored next to the ONNX (external data).
    parsed = parser.parse(model_bytes, str(onnx_path))
    if not parsed or parser.num_errors > 0:
        errors = _parser_errors(parser) or list(logger.recent_errors)[-3:]
        raise WorkFailedError(
            f"TensorRT could not parse member {member.name!r} ({member.file}): "
            + ("; ".join(errors) or "no details (rerun with --trt-log-level verbose)")
        )
    if network.num_inputs != 1:
        raise BadInputError(f"member {member.name!r} has {network.num_inputs} inputs; wcx members take one")
    net_input = network.get_input(0)
    if net_input.name != member.input.name:
        raise BadInputError(
            f"member {member.name!r}: the ONNX input is named {net_input.name!r}, "
            f"the manifest says {member.input.name!r}"
        )
    output_names = [network.get_output(i).name for i in range(network.num_outputs)]
    if member.output_name not in output_names:
        raise BadInputError(
            f"member {member.name!r}: the ONNX has no output {member.output_name!r} (it has {output_names})"
        )
    shapes = profile_shapes(list(net_input.shape), opt_batch=opt_batch, max_batch=max_batch,
                            sample_shape=member.sample_shape)

    config = builder.create_builder_config()
    if workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(net_input.name, tuple(shapes["min"]), tuple(shapes["opt"]), tuple(shapes["max"]))
    if config.add_optimization_profile(profile) < 0:
        raise WorkFailedError(f"TensorRT refused the optimization profile {shapes} of member {member.name!r}")
    if not config.set_timing_cache(timing_cache, ignore_mismatch=False):
        log.warning("TensorRT did not accept the timing cache; building member %r without it", member.name)

    log.info("building the TensorRT engine of member %r (profile %s)", member.name, shapes)
    logger.recent_errors.clear()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None or serialized.nbytes == 0:
        detail = "; ".join(list(logger.recent_errors)[-3:]) or "see the TensorRT log (--trt-log-level info)"
        raise WorkFailedError(f"TensorRT could not build the engine of member {member.name!r}: {detail}")
    with open(staged, "wb") as fh:
        fh.write(memoryview(serialized))
    del serialized
    return onnx_sha256, shapes, net_input.name


def build_engines(
    bundle: Bundle,
    *,
    opt_batch: int,
    max_batch: int,
    workspace_mb: int | None = None,
    log_level: str = "warning",
    members: Sequence[str] | None = None,
) -> list[EngineRecord]:
    """Build a TensorRT engine for each member (or the named ``members``) of ``bundle``.

    Returns the new engine records (the manifest's ``engines.members`` entries, stage order).
    Engines land in ``BUNDLE/engines/<member>.<hash>.engine``; records of members not rebuilt
    are kept. Either every requested engine is written and recorded, or none is (the module
    docstring says how, also when the process is killed).

    Raises ``MissingDependencyError`` (exit 2) without TensorRT, the CUDA binding, or a GPU;
    ``BadInputError`` (exit 2) for bad options or a member TensorRT cannot take as given;
    ``WorkFailedError`` (exit 1) when TensorRT fails to parse or build.
    """
    validate_batch_sizes(opt_batch, max_batch)
    if workspace_mb is not None and (isinstance(workspace_mb, bool) or not isinstance(workspace_mb, int)
                                     or workspace_mb < 1):
        raise BadInputError(f"workspace_mb: expected a positive integer, got {workspace_mb!r}")
    check_log_level(log_level)
    selected = _select_members(bundle, members)

    trt = import_tensorrt("Building TensorRT engines")
    facts = cuda_gpu_facts("Building TensorRT engines")
    trt_version = str(trt.__version__)
    logger = get_trt_logger(trt, log_level)
    builder = trt.Builder(logger)
    if builder is None:
        raise WorkFailedError("TensorRT could not create a builder (see the TensorRT log)")
    # One timing cache for all members: it does not belong to a builder config and can be
    # shared; it is serialized once after the last build.
    cache_config = builder.create_builder_config()
    timing_cache = cache_config.create_timing_cache(_load_timing_cache(bundle, facts, trt_version))

    build_options = {"opt_batch": opt_batch, "max_batch": max_batch, "workspace_mb": workspace_mb,
                     "strongly_typed": True, "timing_cache": True}
    built: list[tuple[Path, EngineRecord]] = []
    (bundle.path / ENGINE_DIR).mkdir(exist_ok=True)
    with scratch_directory(bundle.path / ENGINE_DIR / "build") as staging:
        for index, member in selected:
            staged = staging / f"{member.name}.engine"
            onnx_sha256, shapes, input_name = _build_member(
                trt, builder, logger, timing_cache, bundle, index, member,
                opt_batch=opt_batch, max_batch=max_batch, workspace_mb=workspace_mb, staged=staged,
            )
            sha = sha256_file(staged)
            built.append((staged, make_engine_record(
                member=member.name, file_ref={"file": engine_file(member.name, sha), "sha256": sha},
                tensorrt_version=trt_version, gpu_name=facts["gpu_name"],
                compute_capability=facts["compute_capability"], onnx_sha256=onnx_sha256,
                precision=member.precision, input_name=input_name, output_name=member.output_name,
                profile=shapes, build_options=build_options,
            )))
        cache_staged = staging / "timing.cache"
        with open(cache_staged, "wb") as fh:
            fh.write(memoryview(timing_cache.serialize()))
        cache_sha = sha256_file(cache_staged)
        cache_ref = TimingCacheRecord(file=timing_cache_file(cache_sha), sha256=cache_sha,
                                      tensorrt_version=trt_version, gpu_name=facts["gpu_name"],
                                      compute_capability=facts["compute_capability"])
        # Every build succeeded. The new names are not the ones the manifest names (unless the
        # content is the same), so these renames leave the bundle valid until the manifest
        # switches to them.
        for staged_file, record in built:
            os.replace(staged_file, bundle.file(record.file))
        os.replace(cache_staged, bundle.file(cache_ref.file))

    records = [record for _, record in built]
    before = {} if bundle.engines is None else dict(bundle.engines.members)
    kept = {name: rec for name, rec in before.items() if name in {m.name for m in bundle.members}}
    kept.update({rec.member: rec for rec in records})
    order = [m.name for m in bundle.members if m.name in kept]
    bundle.update_sections(engines=EnginesSection(members={name: kept[name] for name in order},
                                                  timing_cache=cache_ref))
    _remove_unnamed_engine_files(bundle)
    log.info("wrote %d TensorRT engine(s) to %s/%s", len(records), bundle.path, ENGINE_DIR)
    return records
