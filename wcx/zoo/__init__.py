"""The embedded model zoo: Fashion-MNIST CNN members, data splits and their manifest.

Light on purpose (no torch here): ``zoo.json`` describes the members and splits, the ``.npz``
splits are read with numpy. The torch models live in ``wcx.zoo.architectures`` (needs torch);
``tools/train_zoo.py`` regenerates everything. See ``wcx/zoo/README.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ZOO_DIR = Path(__file__).resolve().parent
MANIFEST_PATH = ZOO_DIR / "zoo.json"
SPLITS = ("calib", "test", "heldout_train", "ood_mnist")


def load_manifest() -> dict[str, Any]:
    """The parsed ``zoo.json``."""
    manifest: dict[str, Any] = json.loads(MANIFEST_PATH.read_text())
    return manifest


def split_path(split: str) -> Path:
    """Path of a shipped data split (``calib``, ``test``, ``heldout_train``, ``ood_mnist``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown zoo split {split!r}; valid splits: {', '.join(SPLITS)}")
    return ZOO_DIR / "data" / f"{split}.npz"


def weights_path(member: str) -> Path:
    """Path of a member's safetensors weights (the file may be absent if the zoo is not built)."""
    return ZOO_DIR / "weights" / f"{member}.safetensors"
