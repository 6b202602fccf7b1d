"""The load-time warning for INT8 members with full-range weights on x86 CPUs without VNNI, where
ONNX Runtime's INT8 kernels saturate: once per bundle, one line, from the CPU flags."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.bundle_factory import make_mlp_onnx
from wcx.bundle import Bundle
from wcx.core.manifest import QuantizationSection
from wcx.export.exporter import Tolerances, export_bundle
from wcx.runtime import onnxruntime_runner as ort_runner
from wcx.runtime.cascade import Cascade
from wcx.runtime.onnxruntime_runner import Int8SaturationWarning, OnnxRuntimeRunner, int8_saturation_warning

SHAPE = (1, 8, 8)
AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512_VNNI = AVX2 | {"avx512f", "avx512bw", "avx512_vnni"}
AVX_VNNI = AVX2 | {"avx_vnni"}


def _int8_bundle(root: Path, *, reduce_range: bool) -> Bundle:
    members = [str(make_mlp_onnx(root / f"m{i}.onnx", sample_shape=SHAPE, seed=i)) for i in range(2)]
    np.savez(root / "calib.npz", x=np.random.default_rng(0).random((120, *SHAPE), dtype=np.float32))
    export_bundle(members, root / "bundle", input_shape=SHAPE, precision="int8", calib_data=root / "calib.npz",
                  int8_reduce_range=reduce_range, int8_calibration="minmax",
                  tolerances=Tolerances(int8_min_agreement=0.0))
    return Bundle.load(root / "bundle")


@pytest.fixture(scope="module")
def full_range(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return _int8_bundle(tmp_path_factory.mktemp("full"), reduce_range=False)


@pytest.fixture(scope="module")
def reduced(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return _int8_bundle(tmp_path_factory.mktemp("reduced"), reduce_range=True)


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch):
    """Pretend to run on an x86_64 CPU with the flags given: ``cpu(flags)``; forget earlier warnings."""
    monkeypatch.setattr(OnnxRuntimeRunner, "_saturation_warned", set())
    monkeypatch.setattr(ort_runner.platform, "machine", lambda: "x86_64")

    def use(flags: frozenset[str] | None) -> None:
        monkeypatch.setattr(ort_runner, "cpu_flags", lambda: flags)

    return use


def _load_warnings(bundle: Bundle) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Cascade.load(bundle, backend="onnxruntime", policy="all", threads=1):
            pass
    return [w for w in caught if issubclass(w.category, Int8SaturationWarning)]


def test_warns_once_without_vnni(full_range: Bundle, cpu) -> None:
    cpu(AVX2)
    shown = _load_warnings(full_range)
    assert len(shown) == 1  # two full-range members, one line
    text = str(shown[0].message)
    assert "\n" not in text and str(full_range.path) in text and "'m0'" in text
    assert "no VNNI" in text and "int8_reduce_range=True" in text
    assert _load_warnings(full_range) == []  # once per bundle and process


@pytest.mark.parametrize("flags", [AVX512_VNNI, AVX_VNNI, None], ids=["avx512_vnni", "avx_vnni", "unknown"])
def test_silent_with_vnni_or_unknown_flags(full_range: Bundle, cpu, flags) -> None:
    cpu(flags)
    assert _load_warnings(full_range) == []


def test_silent_for_reduced_range_bundles(reduced: Bundle, cpu) -> None:
    cpu(AVX2)
    assert [m.quantization.reduce_range for m in reduced.members if m.quantization] == [True, True]
    assert _load_warnings(reduced) == []


def test_rule(full_range: Bundle) -> None:
    member = full_range.members[0]
    assert int8_saturation_warning(member, flags=AVX2, machine="x86_64") is not None
    assert int8_saturation_warning(member, flags=AVX2, machine="AMD64") is not None
    assert int8_saturation_warning(member, flags=AVX512_VNNI, machine="x86_64") is None
    assert int8_saturation_warning(member, flags={"asimd", "asimddp"}, machine="aarch64") is None
    assert int8_saturation_warning(member, flags=None, machine="x86_64") is None
    unknown = dataclasses.replace(member, quantization=None)  # an INT8 member the manifest says nothing about
    assert int8_saturation_warning(unknown, flags=AVX2, machine="x86_64") is None
    reduced = dataclasses.replace(member, quantization=QuantizationSection(True, "minmax", 100))
    assert int8_saturation_warning(reduced, flags=AVX2, machine="x86_64") is None
    fp32 = dataclasses.replace(member, precision="fp32", quantization=None)
    assert int8_saturation_warning(fp32, flags=AVX2, machine="x86_64") is None


def test_cpu_flags_reads_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512_vnni\nbugs\t\t: none\n")
    assert ort_runner.cpu_flags(str(info)) == frozenset({"fpu", "sse2", "avx2", "avx512_vnni"})
    assert ort_runner.cpu_flags(str(tmp_path / "missing")) is None
