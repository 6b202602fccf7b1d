"""wcx: deploy a deep ensemble as a window-based early-exit cascade.

The flow is export (``wcx.export``: PyTorch -> ONNX -> precision -> engines) -> calibration
(``wcx.calibration``: thresholds and windows with risk guarantees) -> runtime (``wcx.runtime``:
``Cascade``). The workflow's four calls are here: :func:`export_bundle`, :func:`calibrate`,
:meth:`Cascade.load`, :func:`inspect_bundle` (:mod:`wcx.workflow` documents them with an
example), and beside them :func:`plan_bundle` (``wcx plan``), :func:`recertify`
(``wcx calibrate --recertify``) and :class:`Monitor` (``wcx monitor``). ``import wcx`` stays
light: no torch, tensorrt, scipy or matplotlib here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wcx.version import __version__

if TYPE_CHECKING:
    from wcx.calibration.plan_bundle import plan_bundle
    from wcx.export.exporter import export_bundle
    from wcx.runtime.cascade import Cascade
    from wcx.runtime.monitor import Monitor
    from wcx.workflow import calibrate, inspect_bundle, recertify

__all__ = ["Cascade", "Monitor", "__version__", "calibrate", "export_bundle", "inspect_bundle", "plan_bundle",
           "recertify"]

#: the workflow's calls (:mod:`wcx.workflow`), imported when first used
_LAZY = {
    "Cascade": "wcx.runtime.cascade",
    "export_bundle": "wcx.export.exporter",
    "calibrate": "wcx.workflow",
    "inspect_bundle": "wcx.workflow",
    "recertify": "wcx.workflow",
    "plan_bundle": "wcx.calibration.plan_bundle",
    "Monitor": "wcx.runtime.monitor",
}


def __getattr__(name: str) -> Any:
    # Lazy so that ``import wcx`` does not load onnxruntime, scipy or torch until they are used.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wcx' has no attribute {name!r}")
