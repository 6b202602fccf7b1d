"""The TensorRT engine logic that needs no GPU: profiles, compatibility decisions, manifest engine
records, the refusals without TensorRT, and ``wcx build-engines``'s exit code.

``build_engines`` itself is driven here with a small *fake* ``tensorrt`` module that follows the
documented TensorRT 10/11 Python API and refuses what wcx must never do (EXPLICIT_BATCH or any
network flag other than STRONGLY_TYPED, missing ``ignore_mismatch``). It checks wcx's control
flow and records, not TensorRT: the real engines are built in tests/runtime (GPU + TensorRT only),
and the names used are checked against the real bindings in tests/contract.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.bundle_factory import make_mlp_bundle
from tests.fakes.cudart import FakeCudart
from tests.fakes.tensorrt import MAGIC, make_fake_tensorrt
from wcx.bundle import Bundle
from wcx.core.manifest import EngineRecord, EnginesSection
from wcx.errors import BadInputError, MissingDependencyError, WorkFailedError
from wcx.export import engine_compat, tensorrt_engine
from wcx.export.engine_compat import (
    check_engine_compatible,
    engine_record_for,
    make_engine_record,
    normalize_compute_capability,
    profile_shapes,
    tensorrt_available,
    validate_batch_sizes,
)

GOOD = {"trt_version": "10.3.0.30", "gpu_name": "Orin", "compute_capability": "8.7", "onnx_sha256": "a" * 64}


def _record(**over):
    rec = make_engine_record(
        member="m0", file_ref={"file": "engines/m0.engine", "sha256": "e" * 64},
        tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability=(8, 7), onnx_sha256="a" * 64,
        precision="fp16", input_name="input", output_name="logits",
        profile={"min": [1, 1, 8, 8], "opt": [8, 1, 8, 8], "max": [64, 1, 8, 8]},
        build_options={"opt_batch": 8, "max_batch": 64, "workspace_mb": None, "strongly_typed": True},
    )
    return dataclasses.replace(rec, **over)


# -------------------------------------------------------------------------------------------
# profiles
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_dim", [-1, None, "N", "batch"])
def test_profile_shapes_take_other_dims_from_the_onnx_input(batch_dim) -> None:
    shapes = profile_shapes([batch_dim, 3, 32, 32], opt_batch=8, max_batch=64)
    assert shapes == {"min": [1, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [64, 3, 32, 32]}


def test_profile_shapes_fill_dynamic_spatial_dims_from_the_manifest() -> None:
    assert profile_shapes([-1, 1, -1, -1], opt_batch=1, max_batch=1, sample_shape=(1, 8, 8)) == {
        "min": [1, 1, 8, 8], "opt": [1, 1, 8, 8], "max": [1, 1, 8, 8]}
    with pytest.raises(BadInputError, match="only the batch dimension"):
        profile_shapes([-1, 1, -1, 8], opt_batch=1, max_batch=2)
    with pytest.raises(BadInputError, match="disagrees"):
        profile_shapes([-1, 3, 8, 8], opt_batch=1, max_batch=2, sample_shape=(1, 8, 8))


def test_profile_shapes_refuse_a_fixed_batch_and_a_missing_batch_dim() -> None:
    with pytest.raises(BadInputError, match="fixed batch size 1.*dynamic batch"):
        profile_shapes([1, 3, 8, 8], opt_batch=1, max_batch=4)
    with pytest.raises(BadInputError, match="no batch dimension"):
        profile_shapes([-1], opt_batch=1, max_batch=4)


@pytest.mark.parametrize(("opt", "mx", "match"), [
    (0, 4, "opt_batch: must be at least 1"),
    (2, 0, "max_batch: must be at least 1"),
    (8, 4, r"opt_batch \(8\) must not exceed max_batch \(4\)"),
    (1.5, 4, "opt_batch: expected an integer"),
    (True, 4, "opt_batch: expected an integer"),
])
def test_batch_sizes_are_validated(opt, mx, match) -> None:
    with pytest.raises(BadInputError, match=match):
        validate_batch_sizes(opt, mx)


def test_batch_sizes_accept_equal_opt_and_max() -> None:
    validate_batch_sizes(1, 1)
    validate_batch_sizes(32, 32)


def test_profile_max_batch() -> None:
    assert _record().max_batch == 64
    broken = {k: v for k, v in _record().to_dict().items() if k != "profile"}
    with pytest.raises(BadInputError, match="profile"):
        EngineRecord.from_dict(broken, where="engines")


# -------------------------------------------------------------------------------------------
# compatibility decisions and messages
# -------------------------------------------------------------------------------------------
def test_engine_record_layout() -> None:
    rec = _record().to_dict()
    assert set(rec) == {"member", "file", "sha256", "tensorrt_version", "gpu_name", "compute_capability",
                        "onnx_sha256", "precision", "input_name", "output_name", "build_options", "profile"}
    assert rec["compute_capability"] == "8.7"
    assert rec["profile"] == {"min": [1, 1, 8, 8], "opt": [8, 1, 8, 8], "max": [64, 1, 8, 8]}
    assert EngineRecord.from_dict(json.loads(json.dumps(rec)), where="engines") == _record()


@pytest.mark.parametrize("value", [(8, 7), [8, 7], "8.7", "sm_87", " 8.7 "])
def test_normalize_compute_capability(value) -> None:
    assert normalize_compute_capability(value) == "8.7"


def test_compatible_engine_passes() -> None:
    assert check_engine_compatible(_record(), **GOOD) is None
    assert check_engine_compatible(_record(), **{**GOOD, "compute_capability": (8, 7)}) is None


def test_other_tensorrt_version_is_refused_with_the_rebuild_command() -> None:
    with pytest.raises(BadInputError) as info:
        check_engine_compatible(_record(), **{**GOOD, "trt_version": "11.4.0.106"}, bundle_path="/b/x")
    msg = str(info.value)
    assert "member 'm0'" in msg
    assert "built with TensorRT 10.3.0.30, this machine has TensorRT 11.4.0.106" in msg
    assert "wcx build-engines /b/x" in msg
    assert info.value.exit_code == 2


def test_a_patch_release_counts_as_another_version() -> None:
    with pytest.raises(BadInputError, match="10.3.0.30.*10.3.0.26"):
        check_engine_compatible(_record(), **{**GOOD, "trt_version": "10.3.0.26"})


def test_other_gpu_architecture_is_refused() -> None:
    with pytest.raises(BadInputError, match=r"compute capability 8.7 \(Orin\), this GPU \(NVIDIA H100.*\) "
                                            r"has compute capability 9.0.*wcx build-engines BUNDLE"):
        check_engine_compatible(_record(), **{**GOOD, "gpu_name": "NVIDIA H100 80GB HBM3",
                                               "compute_capability": (9, 0)})


def test_changed_onnx_is_refused() -> None:
    with pytest.raises(BadInputError, match="ONNX changed since the build.*aaaaaaaaaaaa.*bbbbbbbbbbbb"):
        check_engine_compatible(_record(), **{**GOOD, "onnx_sha256": "b" * 64})


def test_every_difference_is_listed_at_once() -> None:
    with pytest.raises(BadInputError) as info:
        check_engine_compatible(_record(), trt_version="11.4.0.106", gpu_name="H200",
                                compute_capability="9.0", onnx_sha256="c" * 64)
    msg = str(info.value)
    assert "TensorRT 11.4.0.106" in msg and "compute capability 9.0" in msg and "ONNX changed" in msg
    assert msg.count("\n") == 0


def test_other_gpu_name_same_architecture_only_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="wcx.export.engine_compat"):
        check_engine_compatible(_record(), **{**GOOD, "gpu_name": "Orin NX"})
    assert "built on Orin and runs on Orin NX" in caplog.text


def test_engine_record_for_missing_engines_says_how_to_build(mlp_bundle) -> None:
    manifest = mlp_bundle.manifest
    with pytest.raises(BadInputError, match="no TensorRT engine for member 'm0'.*wcx build-engines /b"):
        engine_record_for(manifest, "m0", bundle_path="/b")
    with_engine = manifest.with_sections(engines=EnginesSection(members={"m0": _record()}))
    with pytest.raises(BadInputError, match="no TensorRT engine for member 'm1'"):
        engine_record_for(with_engine, "m1")
    broken = {k: v for k, v in _record().to_dict().items() if k != "onnx_sha256"}
    with pytest.raises(BadInputError, match="onnx_sha256"):
        manifest.with_sections(engines={"members": {"m0": broken}})
    assert engine_record_for(with_engine, "m0").file == "engines/m0.engine"


# -------------------------------------------------------------------------------------------
# refusals when TensorRT (or a GPU) is missing
# -------------------------------------------------------------------------------------------
@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def _assert_install_message(msg: str) -> None:
    assert "TensorRT" in msg
    assert "pip install tensorrt" in msg
    assert "JetPack" in msg and "not from pip" in msg
    assert "--backend onnxruntime" in msg


def test_tensorrt_available_reports_the_reason(no_tensorrt) -> None:
    ok, reason = tensorrt_available()
    assert ok is False
    _assert_install_message(reason)


def test_tensorrt_available_without_a_gpu(monkeypatch) -> None:
    from wcx.cuda_runtime import use_binding

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0.30"))
    with use_binding(FakeCudart(devices=0)):
        ok, reason = tensorrt_available()
    assert ok is False
    assert "needs a CUDA GPU" in reason and "--backend onnxruntime" in reason


def test_tensorrt_available_without_the_cuda_binding(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0.30"))
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    ok, reason = tensorrt_available()
    assert ok is False and "pip install cuda-bindings" in reason


def test_build_engines_without_tensorrt(no_tensorrt, mlp_bundle) -> None:
    with pytest.raises(MissingDependencyError) as info:
        tensorrt_engine.build_engines(mlp_bundle, opt_batch=4, max_batch=16)
    assert info.value.exit_code == 2
    _assert_install_message(str(info.value))


def test_build_engines_validates_options_before_importing_tensorrt(no_tensorrt, mlp_bundle) -> None:
    with pytest.raises(BadInputError, match="opt_batch"):
        tensorrt_engine.build_engines(mlp_bundle, opt_batch=32, max_batch=16)
    with pytest.raises(BadInputError, match="workspace_mb"):
        tensorrt_engine.build_engines(mlp_bundle, opt_batch=1, max_batch=16, workspace_mb=0)
    with pytest.raises(BadInputError, match="log_level"):
        tensorrt_engine.build_engines(mlp_bundle, opt_batch=1, max_batch=16, log_level="loud")
    with pytest.raises(BadInputError, match="no member named zz"):
        tensorrt_engine.build_engines(mlp_bundle, opt_batch=1, max_batch=16, members=["zz"])


def test_runner_activation_without_tensorrt(no_tensorrt, mlp_bundle) -> None:
    from wcx.runtime.tensorrt_runner import TensorRTRunner

    runner = TensorRTRunner(mlp_bundle, 0)
    assert runner.backend == "tensorrt" and runner.pads_to_buckets is True
    with pytest.raises(MissingDependencyError) as info:
        runner.activate()
    _assert_install_message(str(info.value))
    assert not runner.is_active


def test_cli_build_engines_without_tensorrt_exits_2(no_tensorrt, mlp_bundle, monkeypatch, capsys) -> None:
    import wcx.cli

    # Every command runs inside the CLI's error boundary: one line, exit code 2.
    result = CliRunner().invoke(wcx.cli.app, ["build-engines", str(mlp_bundle.path), "--max-batch", "16"])
    assert result.exit_code == 2, (result.exception, result.output)
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "pip install tensorrt" in text and "--backend onnxruntime" in text
    assert "Traceback" not in text
    # So does the console entry point.
    monkeypatch.setattr(sys, "argv", ["wcx", "build-engines", str(mlp_bundle.path)])
    monkeypatch.delenv("WCX_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        wcx.cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert "pip install tensorrt" in err and "--backend onnxruntime" in err


def test_cli_build_engines_calls_the_library(monkeypatch, mlp_bundle, tmp_path) -> None:
    import wcx.cli

    calls = []

    def fake_build(bundle, **kwargs):
        calls.append((bundle.path, kwargs))
        return [_record()]

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0.30"))
    monkeypatch.setattr(tensorrt_engine, "build_engines", fake_build)
    out = tmp_path / "records.json"
    result = CliRunner().invoke(wcx.cli.app, [
        "build-engines", str(mlp_bundle.path), "--opt-batch", "8", "--max-batch", "64",
        "--workspace-mb", "512", "--trt-log-level", "info", "--member", "m0", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert calls == [(mlp_bundle.path, {"opt_batch": 8, "max_batch": 64, "workspace_mb": 512,
                                        "log_level": "info", "members": ["m0"]})]
    assert json.loads(out.read_text())[0]["member"] == "m0"
    assert "TensorRT engines in" in result.output and "m0" in result.output


# -------------------------------------------------------------------------------------------
# build_engines against a fake TensorRT module (control flow, staging, manifest records)
# -------------------------------------------------------------------------------------------
@pytest.fixture
def fake_trt(monkeypatch):
    """Install the fake TensorRT module and a fake GPU (an Orin, compute capability 8.7)."""
    from wcx.cuda_runtime import use_binding

    stack = []

    def install(**kwargs):
        trt = make_fake_tensorrt(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(tensorrt_engine, "_LOGGER_SINGLETON", {})
        ctx = use_binding(FakeCudart(name=b"Orin", capability=(8, 7)))
        ctx.__enter__()
        stack.append(ctx)
        return trt

    yield install
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)


def test_build_engines_writes_engines_and_records(fake_trt, tmp_path) -> None:
    trt = fake_trt()
    bundle = make_mlp_bundle(tmp_path)
    records = tensorrt_engine.build_engines(bundle, opt_batch=8, max_batch=64, workspace_mb=256)
    assert [r.member for r in records] == ["m0", "m1"]
    builds = [e for e in trt.events if e[0] == "build"]
    assert builds[0] == ("build", ("input", (1, 1, 8, 8), (8, 1, 8, 8), (64, 1, 8, 8)), (0, 256 << 20))

    reloaded = Bundle.load(bundle.path)  # every engine file is hash-verified on load
    section = reloaded.engines
    assert section is not None and section.backend == "tensorrt"
    assert list(section.members) == ["m0", "m1"]
    rec = section.members["m0"]
    assert rec == records[0]
    assert rec.file == f"engines/m0.{rec.sha256[:16]}.engine"  # content-addressed
    assert (bundle.path / rec.file).read_bytes().startswith(MAGIC)
    assert rec.onnx_sha256 == reloaded.members[0].sha256
    assert rec.tensorrt_version == "10.3.0.30"
    assert (rec.gpu_name, rec.compute_capability) == ("Orin", "8.7")
    assert rec.profile == {"min": [1, 1, 8, 8], "opt": [8, 1, 8, 8], "max": [64, 1, 8, 8]}
    assert rec.build_options == {"opt_batch": 8, "max_batch": 64, "workspace_mb": 256,
                                 "strongly_typed": True, "timing_cache": True}
    assert section.timing_cache is not None
    assert section.timing_cache.file == f"engines/timing.{section.timing_cache.sha256[:16]}.cache"
    assert (bundle.path / section.timing_cache.file).read_bytes() == b"+"
    assert sorted(f.name for f in (bundle.path / "engines").iterdir()) == sorted(
        Path(r.file).name for r in (*section.members.values(), section.timing_cache))  # no staging left
    check_engine_compatible(rec, trt_version="10.3.0.30", gpu_name="Orin", compute_capability=(8, 7),
                            onnx_sha256=reloaded.members[0].sha256)

    # A rebuild of one member reuses the timing cache and keeps the other member's record.
    trt.events.clear()
    tensorrt_engine.build_engines(reloaded, opt_batch=4, max_batch=32, members=["m1"])
    assert ("create_timing_cache", b"+") in trt.events
    again = Bundle.load(bundle.path).engines
    assert again is not None and again.members["m0"] == rec
    assert again.members["m1"].profile["max"] == [32, 1, 8, 8]
    # the replaced engine of m1 is gone; every file left is named by the manifest
    assert again.timing_cache is not None
    assert sorted(f.name for f in (bundle.path / "engines").iterdir()) == sorted(
        Path(r.file).name for r in (*again.members.values(), again.timing_cache))


def test_rebuild_interrupted_before_its_manifest_write_leaves_the_old_engines(fake_trt, tmp_path,
                                                                              monkeypatch) -> None:
    """The engines of a rebuild land beside the ones the manifest names; a process killed before
    the manifest switches to them leaves a bundle that verifies and runs the old engines, and the
    next build removes what the interrupted one left."""
    fake_trt()
    bundle = make_mlp_bundle(tmp_path)
    tensorrt_engine.build_engines(bundle, opt_batch=8, max_batch=64)
    first = Bundle.load(bundle.path)
    assert first.engines is not None
    old_files = sorted(f.name for f in (bundle.path / "engines").iterdir())

    class Killed(BaseException):  # like SIGKILL: no except clause of wcx catches it
        pass

    def killed(self, **sections):
        raise Killed

    monkeypatch.setattr(Bundle, "update_sections", killed)
    with pytest.raises(Killed):
        tensorrt_engine.build_engines(first, opt_batch=4, max_batch=32)  # another profile: new engines
    monkeypatch.undo()
    after = Bundle.load(bundle.path)  # hash-verifies every file the manifest names
    assert after.engines == first.engines
    left = sorted(f.name for f in (bundle.path / "engines").iterdir())
    assert set(old_files) < set(left)  # the new engines were moved in, but are not named
    assert not [n for n in left if n.startswith(".")]  # the staging folder is gone

    fake_trt()
    tensorrt_engine.build_engines(after, opt_batch=4, max_batch=32)
    final = Bundle.load(bundle.path).engines
    assert final is not None and final.members["m0"].profile["max"] == [32, 1, 8, 8]
    assert sorted(f.name for f in (bundle.path / "engines").iterdir()) == sorted(
        Path(r.file).name for r in (*final.members.values(), final.timing_cache))  # type: ignore[arg-type]


def test_rebuild_replaces_engines_named_before_content_addressing(fake_trt, tmp_path) -> None:
    """A bundle whose engines were written as ``engines/<member>.engine`` (before content
    addressing) still loads; a rebuild switches to the new names and removes the old files."""
    fake_trt()
    bundle = make_mlp_bundle(tmp_path, members=1)
    tensorrt_engine.build_engines(bundle, opt_batch=1, max_batch=4)
    loaded = Bundle.load(bundle.path)
    assert loaded.engines is not None
    rec = loaded.engines.members["m0"]
    (bundle.path / rec.file).rename(bundle.path / "engines/m0.engine")
    loaded.update_sections(engines=EnginesSection(members={"m0": dataclasses.replace(rec, file="engines/m0.engine")},
                                                  timing_cache=loaded.engines.timing_cache))
    legacy = Bundle.load(bundle.path)
    tensorrt_engine.build_engines(legacy, opt_batch=2, max_batch=8)
    assert not (bundle.path / "engines/m0.engine").exists()
    assert Bundle.load(bundle.path).engines.members["m0"].profile["max"] == [8, 1, 8, 8]  # type: ignore[union-attr]


def test_timing_cache_from_another_tensorrt_is_not_reused(fake_trt, tmp_path) -> None:
    trt = fake_trt()
    bundle = make_mlp_bundle(tmp_path, members=1)
    tensorrt_engine.build_engines(bundle, opt_batch=1, max_batch=4)
    trt.__version__ = "11.4.0.106"
    trt.events.clear()
    tensorrt_engine.build_engines(Bundle.load(bundle.path), opt_batch=1, max_batch=4)
    assert ("create_timing_cache", b"") in trt.events
    engines = Bundle.load(bundle.path).engines
    assert engines is not None and engines.timing_cache is not None
    assert engines.timing_cache.tensorrt_version == "11.4.0.106"


def test_failed_build_leaves_the_bundle_as_it_was(fake_trt, tmp_path) -> None:
    fake_trt(fail_build_for="m1")
    bundle = make_mlp_bundle(tmp_path)
    before = (bundle.path / "wcx.json").read_text()
    with pytest.raises(WorkFailedError, match="member 'm1'.*out of memory while building") as info:
        tensorrt_engine.build_engines(bundle, opt_batch=1, max_batch=4)
    assert info.value.exit_code == 1
    assert (bundle.path / "wcx.json").read_text() == before
    assert not (bundle.path / "engines").exists() or not any((bundle.path / "engines").iterdir())
    Bundle.load(bundle.path)


def test_parse_failure_is_a_failed_build_with_the_parser_errors(fake_trt, tmp_path) -> None:
    fake_trt(fail_parse=True)
    bundle = make_mlp_bundle(tmp_path, members=1)
    expected = r"could not parse member 'm0'.*Unsupported operator Foo \(node 3\)"
    with pytest.raises(WorkFailedError, match=expected):
        tensorrt_engine.build_engines(bundle, opt_batch=1, max_batch=4)


def test_trt_logger_forwards_to_python_logging(fake_trt, caplog) -> None:
    trt = fake_trt()
    logger = tensorrt_engine.get_trt_logger(trt, "warning")
    assert tensorrt_engine.get_trt_logger(trt, "info") is logger  # one logger per process
    with caplog.at_level(logging.DEBUG, logger=tensorrt_engine.TRT_LOGGER_NAME):
        tensorrt_engine.get_trt_logger(trt, "warning")
        logger.log(trt.ILogger.Severity.WARNING, "w-msg")
        logger.log(trt.ILogger.Severity.INFO, "i-msg")
        logger.log(trt.ILogger.Severity.ERROR, "e-msg")
        tensorrt_engine.get_trt_logger(trt, "verbose")
        logger.log(trt.ILogger.Severity.VERBOSE, "v-msg")
    got = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert got == [("WARNING", "w-msg"), ("ERROR", "e-msg"), ("DEBUG", "v-msg")]
    assert list(logger.recent_errors) == ["e-msg"]
    assert tensorrt_engine.python_log_level("verbose") == logging.DEBUG


def test_build_member_refuses_an_onnx_altered_after_load(fake_trt, tmp_path) -> None:
    fake_trt()
    bundle = make_mlp_bundle(tmp_path, members=1)
    onnx_file: Path = bundle.member_path(0)
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(BadInputError, match="was altered"):
        tensorrt_engine.build_engines(bundle, opt_batch=1, max_batch=4)


def _qdq_model(*, bias_dtype, zero_point: int):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array([1, 2], dtype=bias_dtype), "b_q"),
        numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s"),
        numpy_helper.from_array(np.array(zero_point, dtype=np.int8), "z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["b_q", "s"], ["b"], name="dq_bias"),
        helper.make_node("Add", ["xd", "b"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_trt_unsupported_qdq_finds_int32_biases_and_zero_points() -> None:
    import numpy as np

    assert engine_compat.trt_unsupported_qdq(_qdq_model(bias_dtype=np.int8, zero_point=0)) == []
    problems = engine_compat.trt_unsupported_qdq(_qdq_model(bias_dtype=np.int32, zero_point=3))
    assert any("dq_bias: DequantizeLinear of an INT32 tensor" in p for p in problems)
    assert any("q_x: non-zero zero point" in p for p in problems)


def test_build_engines_refuses_int32_bias_qdq_before_tensorrt(fake_trt, tmp_path) -> None:
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from tests.bundle_factory import make_mlp_onnx
    from wcx.bundle import write_bundle
    from wcx.core.manifest import InputSection, MemberSection

    src = make_mlp_onnx(tmp_path / "m.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32)}])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})  # biases: INT32
    spec = MemberSection(name="m0", file="members/m0.onnx", sha256="0" * 64, precision="int8",
                         input=InputSection(name="input", shape=(1, 8, 8), mean=(0.0,), std=(1.0,)),
                         output_name="logits", num_classes=4, macs=1)
    bundle = write_bundle(tmp_path / "b", [(spec, tmp_path / "q.onnx")], {"wcx": "test"})
    trt = fake_trt()
    with pytest.raises(BadInputError, match="INT32.*QuantizeBias False"):
        tensorrt_engine.build_engines(bundle, opt_batch=1, max_batch=4)
    assert not [e for e in trt.events if e[0] == "build"]


def test_export_backend_tensorrt_without_tensorrt_exits_2_before_exporting(tmp_path, monkeypatch) -> None:
    import sys

    from typer.testing import CliRunner

    from wcx.cli import app

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    res = CliRunner().invoke(app, ["export", str(tmp_path / "m.onnx"), "--input-shape", "1,8,8",
                                   "--out", str(tmp_path / "b"), "--backend", "tensorrt"])
    assert res.exit_code == 2
    assert "needs NVIDIA TensorRT" in res.output and "--backend onnxruntime" in res.output
    assert not (tmp_path / "b").exists()
