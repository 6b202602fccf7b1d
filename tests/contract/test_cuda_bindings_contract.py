"""The fake CUDA binding (tests/fakes/cudart.py) against the real one: every name wcx's CUDA layer
and the fake TensorRT engine use exists in ``cuda.bindings.runtime``, and the fake's functions
take the real functions' parameters in the same order.

Needs ``cuda-bindings`` installed (the test extra brings it; it imports without a GPU); skipped
otherwise.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from tests.fakes.cudart import FakeCudart

ROOT = Path(__file__).resolve().parents[2]
USERS = [ROOT / "wcx" / "cuda_runtime.py", ROOT / "tests" / "fakes" / "tensorrt.py"]


def used_names() -> set[str]:
    names: set[str] = set()
    for path in USERS:
        names |= set(re.findall(r"\brt\.(cuda\w+)", path.read_text()))
    return names


def real_parameters(doc: str) -> list[str]:
    """Parameter names from the binding's docstring signature, e.g. ``cudaMemcpyAsync(dst, src,
    size_t count, kind: cudaMemcpyKind, stream)`` -> ``[dst, src, count, kind, stream]``."""
    inside = doc.splitlines()[0].split("(", 1)[1].rsplit(")", 1)[0]
    params = []
    for part in filter(None, (p.strip() for p in inside.split(","))):
        part = part.split(":")[0].strip()
        params.append(part.split()[-1].lstrip("*"))
    return params


def test_the_layer_uses_what_the_fake_provides() -> None:
    names = used_names()
    assert {"cudaMalloc", "cudaMemcpyAsync", "cudaStreamSynchronize", "cudaMemcpy"} <= names
    missing = [n for n in names if not hasattr(FakeCudart, n)]
    assert not missing, f"the fake lacks {missing}"


def test_every_name_exists_in_the_real_binding_with_the_same_parameters() -> None:
    rt = pytest.importorskip("cuda.bindings.runtime")
    problems = []
    for name in sorted(used_names()):
        real = getattr(rt, name, None)
        if real is None:
            problems.append(f"cuda.bindings.runtime has no {name}")
            continue
        if callable(real) and not isinstance(real, type) and real.__doc__:
            want = real_parameters(real.__doc__)
            fake = [p for p in inspect.signature(getattr(FakeCudart, name)).parameters if p != "self"]
            if len(want) != len(fake):
                problems.append(f"{name}: real parameters {want}, fake {fake}")
    for constant in ("cudaStreamNonBlocking", "cudaEventDefault", "cudaEventDisableTiming"):
        if getattr(rt, constant, None) != getattr(FakeCudart, constant):
            problems.append(f"{constant}: real {getattr(rt, constant, None)!r}, fake {getattr(FakeCudart, constant)!r}")
    for enum_name, members in (("cudaMemcpyKind", ("cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost")),
                               ("cudaError_t", ("cudaSuccess",))):
        for member in members:
            real_value = int(getattr(getattr(rt, enum_name), member))
            if real_value != int(getattr(getattr(FakeCudart, enum_name), member)):
                problems.append(f"{enum_name}.{member}: real {real_value}")
    assert not problems, "\n".join(problems)
