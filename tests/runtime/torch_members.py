"""PyTorch twins of ``tests.bundle_factory``'s ONNX MLPs, for the torch backend's tests.

``mlp_member`` is the zero-argument callable a bundle's ``torch_source`` names
(``"tests.runtime.torch_members:mlp_member"``); :func:`add_torch_sources` writes each member's
ONNX weights as safetensors into the bundle and records the ``torch_source`` in the manifest.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from safetensors.torch import save_file
from torch import nn

from wcx.bundle import MANIFEST_NAME, Bundle, sha256_file


class MLP(nn.Module):
    """Flatten -> Linear -> ReLU -> Linear, as the ONNX graphs of the bundle factory."""

    def __init__(self, features: int = 64, hidden: int = 16, num_classes: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def mlp_member() -> MLP:
    return MLP()


def not_a_module() -> int:
    return 3


def add_torch_sources(bundle: Bundle, callable_ref: str = "tests.runtime.torch_members:mlp_member") -> Bundle:
    """Give every member of an (already copied) MLP bundle a torch_source; returns it reloaded."""
    manifest = json.loads((bundle.path / MANIFEST_NAME).read_text())
    for i, member in enumerate(bundle.members):
        graph = onnx.load(str(bundle.member_path(i))).graph
        w = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        state = {
            "fc1.weight": torch.from_numpy(np.ascontiguousarray(w["w1"].T)),
            "fc1.bias": torch.from_numpy(np.array(w["b1"])),
            "fc2.weight": torch.from_numpy(np.ascontiguousarray(w["w2"].T)),
            "fc2.bias": torch.from_numpy(np.array(w["b2"])),
        }
        rel = f"members/{member.name}.safetensors"
        save_file(state, str(bundle.path / rel))
        manifest["members"][i]["torch_source"] = {
            "callable": callable_ref, "file": rel, "sha256": sha256_file(bundle.path / rel)
        }
    (bundle.path / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return Bundle.load(bundle.path)
