"""wcx: deploy a deep ensemble as a window-based early-exit cascade.

The flow is export (``wcx.export``: PyTorch -> ONNX -> precision -> engines) -> calibration
(``wcx.calibration``: thresholds and windows with risk guarantees) -> runtime (``wcx.runtime``:
``Cascade``). ``import wcx`` stays light: no torch, tensorrt, scipy or matplotlib here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wcx.version import __version__

if TYPE_CHECKING:
    from wcx.runtime.cascade import Cascade

__all__ = ["Cascade", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy so that ``import wcx`` does not load onnxruntime until a cascade is used.
    if name == "Cascade":
        from wcx.runtime.cascade import Cascade

        return Cascade
    raise AttributeError(f"module 'wcx' has no attribute {name!r}")
