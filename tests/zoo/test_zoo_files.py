"""Checks of the shipped model zoo (``wcx/zoo``): manifest, hashes, splits and weights.

These test the files that ship, not the training (``tools/train_zoo.py`` regenerates them).
The torch tests are skipped where torch is not installed.
"""

from __future__ import annotations

import hashlib
import importlib
import subprocess
import sys

import numpy as np
import pytest

from wcx.data import load_npz
from wcx.zoo import MANIFEST_PATH, SPLITS, ZOO_DIR, load_manifest, split_path, weights_path

SIZES = ("b0", "b1", "b2", "b3", "b4")
SEEDS = (0, 1, 2)
MEMBERS = [f"{size}_s{seed}" for size in SIZES for seed in SEEDS]
ACC_SPLITS = ("calib", "test", "heldout_train")
HEAD = 256  # test images per member in the quick accuracy check


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def manifest() -> dict:
    return load_manifest()


@pytest.fixture(scope="module")
def members(manifest: dict) -> dict[str, dict]:
    return {m["name"]: m for m in manifest["members"]}


def test_manifest_lists_every_member_in_order(manifest: dict) -> None:
    assert MANIFEST_PATH.is_file()
    assert manifest["schema_version"] == 1
    assert [m["name"] for m in manifest["members"]] == MEMBERS
    assert list(manifest["sizes"]) == list(SIZES)


def test_member_entries_are_complete(members: dict[str, dict], manifest: dict) -> None:
    for name, m in members.items():
        size, seed = name.split("_s")
        assert m["size"] == size and m["seed"] == int(seed)
        assert m["callable"] == f"wcx.zoo.architectures:{name}"
        assert m["weights"]["file"] == f"weights/{name}.safetensors"
        assert m["params"] == manifest["sizes"][size]["params"] > 0
        assert m["macs"] == manifest["sizes"][size]["macs"] > 0
        assert set(m["accuracy"]) == set(ACC_SPLITS)
        assert all(0.0 < a <= 1.0 for a in m["accuracy"].values())
        assert m["epochs"] == manifest["epochs"][size] == len(m["history"])
        assert m["train_time_s"] > 0
    pre = manifest["preprocess"]
    assert len(pre["mean"]) == len(pre["std"]) == 1 and 0 < pre["mean"][0] < 1 and pre["std"][0] > 0


def test_weights_exist_and_match_recorded_hashes(members: dict[str, dict]) -> None:
    for name, m in members.items():
        path = ZOO_DIR / m["weights"]["file"]
        assert path == weights_path(name) and path.is_file(), name
        assert sha256(path) == m["weights"]["sha256"], f"{name}: weights do not match zoo.json"


def test_sizes_scale_geometrically(manifest: dict) -> None:
    macs = [manifest["sizes"][s]["macs"] for s in SIZES]
    assert macs[-1] >= 50 * macs[0]
    for small, big in zip(macs, macs[1:], strict=False):
        assert 2.0 <= big / small <= 3.5  # roughly 2.7x per step, like EfficientNet B0..B4
    for spec in manifest["sizes"].values():  # width and depth both grow
        assert len(spec["widths"]) == len(spec["depths"]) == 3
    # Width grows in the first stage (b0 has a wider last stage than b1, 24 vs 20 channels, so
    # that the smallest member still classifies ~80% right); depth and parameters grow throughout.
    widths = [manifest["sizes"][s]["widths"][0] for s in SIZES]
    depths = [sum(manifest["sizes"][s]["depths"]) for s in SIZES]
    params = [manifest["sizes"][s]["params"] for s in SIZES]
    assert widths == sorted(widths) and widths[-1] >= 4 * widths[0]
    assert depths == sorted(depths) and depths[-1] > depths[0]
    assert params == sorted(params)


def test_accuracy_targets(members: dict[str, dict]) -> None:
    for name, m in members.items():
        assert m["accuracy"]["test"] >= 0.78, name  # even b0 is a real classifier
        if m["size"] == "b4":
            assert m["accuracy"]["test"] >= 0.92, name


@pytest.mark.parametrize("split", SPLITS)
def test_splits_match_hashes_and_shapes(manifest: dict, split: str) -> None:
    entry = manifest["splits"][split]
    path = split_path(split)
    assert ZOO_DIR / entry["file"] == path
    assert sha256(path) == entry["sha256"]
    data = load_npz(path, require_labels=True, sample_shape=(1, 28, 28), num_classes=10)
    assert data.x.dtype == np.uint8 and data.y.dtype == np.int64
    assert len(data) == entry["n"] == 5000


def test_calib_and_test_halve_the_official_test_set() -> None:
    calib, test = (load_npz(split_path(s)) for s in ("calib", "test"))
    # Fashion-MNIST's official test set has exactly 1,000 images per class.
    assert np.bincount(np.concatenate([calib.y, test.y]), minlength=10).tolist() == [1000] * 10
    assert np.bincount(load_npz(split_path("ood_mnist")).y, minlength=10).tolist() == [500] * 10
    # No image appears in both halves (byte-identical duplicates would be a split bug).
    hc = {hashlib.sha1(img.tobytes()).digest() for img in calib.x}
    ht = {hashlib.sha1(img.tobytes()).digest() for img in test.x}
    assert not hc & ht


def test_zoo_folder_stays_small() -> None:
    # The whole shipped zoo (data, weights, the FP32 and INT8 bundles) stays under ~20 MB.
    total = sum(p.stat().st_size for p in ZOO_DIR.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and "cache" not in p.parts)
    assert total < 20e6, f"the zoo takes {total / 1e6:.1f} MB"


def test_import_wcx_zoo_does_not_import_torch() -> None:
    code = "import sys, wcx.zoo; wcx.zoo.load_manifest(); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------------------------- with torch
def _inputs(manifest: dict, split: str, n: int | None = None):
    torch = pytest.importorskip("torch")
    data = load_npz(split_path(split))
    x, y = data.x[:n], data.y[:n]
    mean, std = manifest["preprocess"]["mean"][0], manifest["preprocess"]["std"][0]
    return (torch.from_numpy(x).float() / 255.0 - mean) / std, torch.from_numpy(y)


def _correct(model, x, y) -> int:
    import torch

    with torch.inference_mode():
        return int((model(x).argmax(1) == y).sum())


def test_members_load_and_match_recorded_accuracy(manifest: dict, members: dict[str, dict]) -> None:
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    x, y = _inputs(manifest, "test", HEAD)
    for name, m in members.items():
        module, attr = m["callable"].split(":")
        model = getattr(importlib.import_module(module), attr)()
        assert not model.training, name
        assert sum(p.numel() for p in model.parameters()) == m["params"]
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            logits = model(x[:1])
        assert counter.get_total_flops() // 2 == m["macs"]
        assert logits.shape == (1, 10)
        # The first 256 test images: a loose check (binomial noise) that weights and the
        # recorded preprocessing go together.
        acc = _correct(model, x, y) / HEAD
        assert abs(acc - m["accuracy"]["test"]) < 0.08, f"{name}: {acc:.3f} on the first {HEAD} test images"


@pytest.mark.parametrize("name", ["b0_s0", "b1_s1"])
def test_small_members_reproduce_recorded_accuracy_exactly(manifest: dict, members: dict, name: str) -> None:
    pytest.importorskip("safetensors")
    from wcx.zoo import architectures

    model = getattr(architectures, name)()
    for split in ACC_SPLITS:
        x, y = _inputs(manifest, split)
        acc = _correct(model, x, y) / len(y)
        assert abs(acc - members[name]["accuracy"][split]) <= 3 / len(y), (name, split)


def test_build_gives_random_models_of_each_size(manifest: dict) -> None:
    pytest.importorskip("torch")
    from wcx.zoo.architectures import MEMBERS as ARCH_MEMBERS
    from wcx.zoo.architectures import SIZES as ARCH_SIZES
    from wcx.zoo.architectures import build

    assert list(ARCH_MEMBERS) == MEMBERS and tuple(ARCH_SIZES) == SIZES
    for size in SIZES:
        model = build(size)
        assert sum(p.numel() for p in model.parameters()) == manifest["sizes"][size]["params"]
        spec = ARCH_SIZES[size]
        assert [list(spec.widths), list(spec.depths)] == [
            manifest["sizes"][size]["widths"],
            manifest["sizes"][size]["depths"],
        ]
    with pytest.raises(ValueError, match="valid sizes"):
        build("b9")
