"""Export: PyTorch / TorchScript / ONNX members -> checked ONNX (FP32, FP16, INT8) in a bundle.

Modules: ``model_source`` (what a MODEL argument is), ``onnx_export`` (torch -> ONNX),
``parity`` (compare logits), ``precision`` (FP16 and INT8 graphs), ``macs`` (cost from the
graph), ``inputs`` (preprocessing for the checks), ``exporter`` (``export_bundle``, the whole
job). Importing this package loads nothing heavy; torch is imported only to export a torch model.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExportReport", "Tolerances", "export_bundle"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from wcx.export import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module 'wcx.export' has no attribute {name!r}")
