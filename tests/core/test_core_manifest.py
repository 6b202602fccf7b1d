"""The typed manifest (wcx.core.manifest): validation on load, and version-1 migration."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from wcx.bundle import MANIFEST_NAME, Bundle
from wcx.core.manifest import SCHEMA_VERSION, Manifest, PolicySection, migrate_v1
from wcx.core.policy import EMPTY
from wcx.errors import BadInputError

ZOO_FP32 = Path(__file__).resolve().parents[2] / "wcx" / "zoo" / "bundles" / "fp32"


def manifest_dict(bundle: Bundle) -> dict[str, Any]:
    return json.loads((bundle.path / MANIFEST_NAME).read_text())


def with_policy(d: dict[str, Any], **policy: Any) -> dict[str, Any]:
    out = copy.deepcopy(d)
    out["policy"] = {"kind": "window", "task": "selective", "score": "msp", "windows": [[0.4, 0.9]], "tau": 0.8,
                     **policy}
    return out


@pytest.mark.parametrize(
    "change, match",
    [
        ({"windows": [[0.9, 0.4]]}, "inverted"),
        ({"windows": [[0.4, 3.0]]}, "outside the score's range"),
        ({"windows": [[0.1, 0.9]]}, "outside the score's range"),  # msp >= 1/K = 0.25 with 4 classes
        ({"tau": 3.0}, "outside the range of score msp"),
        ({"tau": float("nan")}, "finite"),
        ({"tau": "0.5"}, "number"),
        ({"task": "detect"}, "valid tasks"),
        ({"score": "entropy"}, "valid scores"),
        ({"kind": "magic"}, "valid policies"),
        ({"windows": [[0.4, 0.9], [0.5, 0.6]]}, "2 members"),
    ],
)
def test_bad_policies_are_refused_on_load(mlp_bundle: Bundle, change: dict[str, Any], match: str) -> None:
    d = with_policy(manifest_dict(mlp_bundle), **change)
    with pytest.raises(BadInputError, match=match):
        Manifest.from_dict(d)


def test_unbounded_and_empty_windows_load(mlp_bundle: Bundle) -> None:
    m = Manifest.from_dict(with_policy(manifest_dict(mlp_bundle), windows=[[None, 0.9]]))
    assert m.policy is not None and m.policy.policy.windows == ((-math.inf, 0.9),)
    m = Manifest.from_dict(with_policy(manifest_dict(mlp_bundle), windows=[[]]))
    assert m.policy is not None and m.policy.policy.windows == (EMPTY,)
    assert Manifest.from_dict(m.to_dict()) == m  # the written form reads back equal


@pytest.mark.parametrize(
    "path, value, match",
    [
        (("members", 0, "sha256"), None, "sha256"),
        (("members", 0, "sha256"), "abc", "sha256"),
        (("members", 0, "precision"), "fp8", "precision"),
        (("members", 0, "num_classes"), 0, "num_classes"),
        (("members", 0, "input", "shape"), [1, 8], "shape"),
        (("members", 0, "input", "std"), [0.0], "std"),
        (("members", 0, "input", "resize"), 224, "resize"),
        (("members", 1, "input", "mean"), [0.1], "preprocessing"),
        (("members", 1, "name"), "m0", "unique"),
        (("members",), [], "no members"),
    ],
)
def test_bad_members_are_refused(mlp_bundle: Bundle, path: tuple[Any, ...], value: Any, match: str) -> None:
    d = manifest_dict(mlp_bundle)
    node: Any = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(BadInputError, match=match):
        Manifest.from_dict(d)


def test_calibration_section_needs_its_fields(mlp_bundle: Bundle) -> None:
    d = manifest_dict(mlp_bundle)
    d["calibration"] = {"backend": "onnxruntime", "precision": "fp32"}
    with pytest.raises(BadInputError, match="calibration"):
        Manifest.from_dict(d)


def test_unknown_schema_version_is_refused(mlp_bundle: Bundle) -> None:
    d = manifest_dict(mlp_bundle)
    d["schema_version"] = 4
    with pytest.raises(BadInputError, match="schema_version 4"):
        Manifest.from_dict(d)


def test_combine_last_is_version_3_and_round_trips(mlp_bundle: Bundle) -> None:
    """A policy whose stages keep their own member's output needs a reader that knows it: the
    manifest says version 3 then, and only then."""
    d = with_policy(manifest_dict(mlp_bundle), combine="last")
    m = Manifest.from_dict(d)
    assert m.policy is not None and m.policy.combine == "last"
    out = m.to_dict()
    assert out["schema_version"] == 3 and out["policy"]["combine"] == "last"
    mean = Manifest.from_dict(with_policy(manifest_dict(mlp_bundle))).to_dict()
    assert mean["schema_version"] == SCHEMA_VERSION == 2 and "combine" not in mean["policy"]
    with pytest.raises(BadInputError, match="combine must be one of mean, last"):
        Manifest.from_dict(with_policy(manifest_dict(mlp_bundle), combine="max"))


# ---------------------------------------------------------------------------------------------
# version 1
# ---------------------------------------------------------------------------------------------
def v1_member(m: dict[str, Any]) -> dict[str, Any]:
    """A version-2 member record written the way wcx 0.1 wrote it."""
    out = {k: v for k, v in m.items() if k != "input"}
    inp = m["input"]
    out.update(input_name=inp["name"], input_shape=[None, *inp["shape"]], input_dtype=inp["dtype"],
               preprocess={"mean": inp["mean"], "std": inp["std"]})
    return out


def test_shipped_zoo_is_version_1_and_loads() -> None:
    raw = json.loads((ZOO_FP32 / MANIFEST_NAME).read_text())
    assert raw["schema_version"] == 1
    b = Bundle.load(ZOO_FP32, verify=False)
    assert b.manifest.schema_version == 1 and len(b.members) == 15
    assert b.input.mean == tuple(raw["members"][0]["preprocess"]["mean"])
    assert b.manifest.export["export_options"]["precision"] == "fp32"


def test_version_1_policy_and_calibration_migrate(mlp_bundle: Bundle, tmp_path: Path) -> None:
    d = manifest_dict(mlp_bundle)
    v1 = {
        "schema_version": 1, "created": d["created"], "provenance": d["export"],
        "members": [v1_member(m) for m in d["members"]],
        # wcx 0.1 wrote a stage no input reaches as the inverted pair (1.0, 0.0)
        "policy": {"kind": "window", "task": "selective", "score": "msp", "windows": [[1.0, 0.0]], "tau": 0.8},
        "calibration": {"backend": "onnxruntime", "precision": "fp32", "task": "selective", "score": "msp",
                        "policy": "window", "risk": 0.05, "delta": None, "mode": "empirical", "certified": False,
                        "pass_fraction": [1.0, 0.0], "measured_risk": 0.04},
        "engines": None,
    }
    assert migrate_v1(v1)["policy"]["windows"] == [[]]
    m = Manifest.from_dict(v1)
    assert m.schema_version == 1 and m.policy is not None and m.policy.policy.windows == (EMPTY,)
    assert m.members == Manifest.from_dict(d).members
    assert m.calibration is not None
    prov = m.calibration.provenance
    assert prov.backend == "onnxruntime" and [p.precision for p in prov.members] == ["fp32", "fp32"]
    assert prov.members[0].onnx_sha256 is None  # unknown, so never compared
    assert m.to_dict()["schema_version"] == SCHEMA_VERSION


def test_policy_section_round_trip() -> None:
    d = {"kind": "threshold", "task": "ood", "score": "neg_energy", "thresholds": [1.5, None], "tau": 2.0}
    section = PolicySection.from_dict(d).check(n_stages=3, num_classes=10)
    assert section.to_dict() == d
