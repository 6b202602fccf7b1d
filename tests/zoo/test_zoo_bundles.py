"""The zoo bundles that ship with wcx (``wcx/zoo/bundles/{fp32,int8}``, from tools/export_zoo.py).

They load with every hash verified, hold the 15 members of ``zoo.json`` in its order with its
MACs and preprocessing, and carry their export reports (FP32 parity, INT8 agreement with FP32 on
the ``test`` split, ranges from ``calib``). Skipped, with the reason, where they are not built.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from wcx.bundle import Bundle
from wcx.core.manifest import Manifest
from wcx.zoo import load_manifest, split_path
from wcx.zoo.experiment import BUNDLES_DIR, zoo_bundle_path

PRECISIONS = ("fp32", "int8")

pytestmark = pytest.mark.skipif(
    not all((zoo_bundle_path(p) / "wcx.json").is_file() for p in PRECISIONS),
    reason="the zoo bundles are not built (run tools/export_zoo.py)",
)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return load_manifest()


@pytest.fixture(scope="module", params=PRECISIONS)
def bundle(request: pytest.FixtureRequest) -> Bundle:
    return Bundle.load(zoo_bundle_path(request.param), verify=True)  # every sha256 checked


def test_members_match_zoo_manifest(bundle: Bundle, manifest: dict) -> None:
    expected = [m["name"] for m in manifest["members"]]
    assert [m.name for m in bundle.members] == expected
    assert len(bundle.members) == 15
    macs = {m["name"]: m["macs"] for m in manifest["members"]}
    assert {m.name: m.macs for m in bundle.members} == macs
    precision = bundle.path.name
    for m in bundle.members:
        assert m.precision == precision
        assert m.input.shape == (1, 28, 28)
        assert m.num_classes == 10
        pre = manifest["preprocess"]
        assert (list(m.input.mean), list(m.input.std)) == (pre["mean"], pre["std"])
        assert m.torch_source is not None and m.torch_source.callable == f"wcx.zoo.architectures:{m.name}"
    assert bundle.policy is None and bundle.calibration is None
    assert not (bundle.path / "cache").exists(), "cached logits must not ship inside the package"


def test_fp32_parity_recorded(manifest: dict) -> None:
    b = Bundle.load(zoo_bundle_path("fp32"), verify=False)
    for m in b.members:
        fp32 = m.export_report["checks"]["fp32"]
        assert fp32["passed"] is True
        assert fp32["max_abs_diff"] <= fp32["limit"]
        assert fp32["data"]["n"] == 5000  # the calib split


def test_int8_agreement_recorded() -> None:
    b = Bundle.load(zoo_bundle_path("int8"), verify=False)
    for m in b.members:
        int8 = m.export_report["checks"]["int8"]
        assert int8["passed"] is True
        ev = int8["eval"]
        assert ev["n"] == 5000  # measured on the test split, never used for the ranges
        assert ev["top1_agreement"] >= int8["min_agreement"] >= 0.95  # tools/export_zoo.py: 7-bit weights
        assert ev["reference_accuracy"] is not None and ev["candidate_accuracy"] is not None
        assert "test.npz" in int8["eval_data"]
    options = b.manifest.export["export_options"]
    assert options["calib_data"]["path"].endswith("calib.npz")
    assert options["calib_data"]["n"] == 5000


def test_export_reports_ship_beside_the_bundles() -> None:
    for precision in PRECISIONS:
        report = json.loads((BUNDLES_DIR / f"{precision}.export.json").read_text())
        assert report["precision"] == precision
        assert [m["name"] for m in report["members"]] == [m["name"] for m in load_manifest()["members"]]


def test_smallest_member_runs_on_onnxruntime(bundle: Bundle) -> None:
    from wcx.calibration.held_out import collect_logits

    x = np.load(split_path("test"))["x"][:64]
    view = Bundle(bundle.path, Manifest(members=bundle.members[:1]))
    logits = collect_logits(view, x, cache=False)
    assert logits.shape == (1, 64, 10) and np.isfinite(logits).all()
