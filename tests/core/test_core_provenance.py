"""Provenance records (wcx.core.provenance): identity, key, differences, old records."""

from __future__ import annotations

import dataclasses
import json

from wcx.core.provenance import MemberProvenance, Provenance

INPUT = {"name": "input", "dtype": "float32", "layout": "NCHW", "shape": [1, 8, 8], "value_range": [0.0, 1.0],
         "mean": [0.5], "std": [0.25], "resize": None, "crop": None}


def record(**member: object) -> Provenance:
    fields = {"precision": "fp32", "onnx_sha256": "a" * 64, "input": INPUT, **member}
    return Provenance("onnxruntime", (MemberProvenance("m0", **fields), MemberProvenance("m1", **fields)),  # type: ignore[arg-type]
                      {"onnxruntime": "1.30.0"})


def test_key_covers_identity_not_info() -> None:
    base = record()
    assert base.key() == record().key()
    assert Provenance(base.backend, base.members, {"onnxruntime": "9.9"}).key() == base.key()
    changed_input = record(input={**INPUT, "mean": [0.4]})
    assert changed_input.key() != base.key()
    assert record(engine_sha256="b" * 64).key() != base.key()
    assert record(precision="fp16").key() != base.key()
    assert Provenance("torch", base.members).key() != base.key()


def test_differences_name_each_field() -> None:
    recorded = record(engine_sha256="b" * 64, tensorrt_version="10.3.0.30", compute_capability="8.7")
    running = record(engine_sha256="c" * 64, tensorrt_version="10.3.0.30", compute_capability="9.0",
                     input={**INPUT, "std": [0.5]})
    diffs = running.differences(recorded)
    assert any("engine_sha256 bbbbbbbbbbbb" in d for d in diffs)
    assert any("compute_capability 8.7 -> 9.0" in d for d in diffs)
    assert any("input section (preprocessing) changed: std [0.25] -> [0.5]" in d for d in diffs)
    assert not any("tensorrt_version" in d for d in diffs)
    assert running.differences(running) == []


def test_unknown_fields_are_not_compared() -> None:
    legacy = Provenance.legacy("onnxruntime", "fp32", ["m0", "m1"])
    assert record().differences(legacy) == []
    assert record(precision="fp16").differences(legacy) == ["member m0: precision fp32 -> fp16",
                                                            "member m1: precision fp32 -> fp16"]


def test_precision_summary_and_mixed_members() -> None:
    mixed = Provenance("onnxruntime", (MemberProvenance("m0", "fp32"), MemberProvenance("m1", "fp16")))
    assert mixed.precision == "fp32,fp16"
    assert record().precision == "fp32"
    legacy = Provenance.legacy("onnxruntime", "fp32,fp16", ["m0", "m1"])
    assert [m.precision for m in legacy.members] == ["fp32", "fp16"]
    assert mixed.differences(legacy) == []


def test_json_round_trip() -> None:
    p = record(weights_sha256="d" * 64)
    assert Provenance.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert dataclasses.replace(p, info={}).identity() == p.identity()
