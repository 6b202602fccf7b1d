"""What the benchmarks under tools/ record about the machine they ran on, in one place.

Imported by the tools as a sibling module (``python tools/X.py`` puts ``tools/`` on the path).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


def cpu_model(default: str | None = None) -> str:
    """The CPU's model name from ``/proc/cpuinfo``; ``default`` (else ``platform.processor()``)
    where it cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() if default is None else default


def machine(*, memory: bool = False, pillow: bool = False) -> dict[str, Any]:
    """CPU, cores, Python, numpy, ONNX Runtime and the platform; with ``memory`` the total RAM in
    GiB, with ``pillow`` Pillow's version."""
    import onnxruntime

    out: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count()}
    if memory:
        meminfo = Path("/proc/meminfo").read_text(encoding="utf-8").splitlines()
        out["memory_gib"] = round(next(int(line.split()[1]) for line in meminfo
                                       if line.startswith("MemTotal")) / 2**20, 1)
    out.update(python=platform.python_version(), numpy=np.__version__, onnxruntime=onnxruntime.__version__)
    if pillow:
        import PIL

        out["pillow"] = PIL.__version__
    out["platform"] = platform.platform()
    return out


def status_mib(key: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {key} in /proc/self/status")
