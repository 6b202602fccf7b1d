from __future__ import annotations

import json
import shutil

import pytest

from wcx.bundle import MANIFEST_NAME, Bundle, select_members, write_bundle
from wcx.errors import BadInputError


def test_manifest_records_members(mlp_bundle: Bundle) -> None:
    data = json.loads((mlp_bundle.path / MANIFEST_NAME).read_text())
    assert data["schema_version"] == 2
    assert [m["name"] for m in data["members"]] == ["m0", "m1"]
    for m in data["members"]:
        assert m["input"]["shape"] == [1, 8, 8]
        assert len(m["sha256"]) == 64
        assert (m["input"]["mean"], m["input"]["std"]) == ([0.5], [0.25])
    assert mlp_bundle.sample_shape == (1, 8, 8)
    assert mlp_bundle.num_classes == 4


def test_missing_member_file_is_refused(mlp_bundle: Bundle, copy_bundle) -> None:
    b = copy_bundle(mlp_bundle)
    (b.path / "members" / "m1.onnx").unlink()
    with pytest.raises(BadInputError, match="m1.onnx is missing"):
        Bundle.load(b.path)


def test_altered_member_file_is_refused(mlp_bundle: Bundle, copy_bundle) -> None:
    b = copy_bundle(mlp_bundle)
    with open(b.path / "members" / "m0.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BadInputError, match="m0.onnx was altered"):
        Bundle.load(b.path)


def test_corrupt_manifest_is_refused(mlp_bundle: Bundle, copy_bundle) -> None:
    b = copy_bundle(mlp_bundle)
    (b.path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BadInputError, match="corrupt manifest"):
        Bundle.load(b.path)


def test_unknown_schema_version_is_refused(mlp_bundle: Bundle, copy_bundle) -> None:
    b = copy_bundle(mlp_bundle)
    data = json.loads((b.path / MANIFEST_NAME).read_text())
    data["schema_version"] = 99
    (b.path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BadInputError, match="schema_version 99"):
        Bundle.load(b.path)


def test_paths_outside_the_bundle_are_refused(mlp_bundle: Bundle, copy_bundle) -> None:
    b = copy_bundle(mlp_bundle)
    data = json.loads((b.path / MANIFEST_NAME).read_text())
    data["members"][0]["file"] = "../escape.onnx"
    (b.path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BadInputError, match="outside the bundle"):
        Bundle.load(b.path)


def test_update_sections_is_atomic_and_persisted(mlp_bundle: Bundle, copy_bundle) -> None:
    b = copy_bundle(mlp_bundle)
    b.update_sections(policy={"kind": "all", "tau": 0.5})
    policy = Bundle.load(b.path).policy
    assert policy is not None and policy.policy.kind == "all" and policy.tau == 0.5
    assert not list(b.path.glob(".*.tmp"))
    with pytest.raises(BadInputError, match="outside the range"):  # validated before writing
        b.update_sections(policy={"kind": "all", "score": "msp", "tau": 3.0})
    assert Bundle.load(b.path).policy == policy


def test_failed_write_leaves_nothing(mlp_bundle: Bundle, tmp_path) -> None:
    spec = mlp_bundle.members[0]
    with pytest.raises(FileNotFoundError):
        write_bundle(tmp_path / "new", [(spec, tmp_path / "does-not-exist.onnx")], {})
    assert not (tmp_path / "new").exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_bundle_is_not_overwritten_by_default(mlp_bundle: Bundle, tmp_path) -> None:
    dest = tmp_path / "b"
    shutil.copytree(mlp_bundle.path, dest)
    with pytest.raises(BadInputError, match="already exists"):
        write_bundle(dest, [(mlp_bundle.members[0], mlp_bundle.member_path(0))], {})


def test_select_members_copies_in_the_given_order(mlp_bundle3: Bundle, tmp_path) -> None:
    sub = select_members(mlp_bundle3, ["m2", "m0"], tmp_path / "sub")
    assert [m.name for m in sub.members] == ["m2", "m0"]
    assert sub.members[0].sha256 == mlp_bundle3.members[2].sha256
    assert sub.policy is None
    with pytest.raises(BadInputError, match="no member named zz"):
        select_members(mlp_bundle3, ["zz"], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
