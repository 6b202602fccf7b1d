"""The member's quantization record: written for INT8 members, read back equal, and read from
the export report of manifests written before the field existed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from wcx.bundle import MANIFEST_NAME, Bundle
from wcx.core.manifest import Manifest, QuantizationSection
from wcx.errors import BadInputError

ZOO_INT8 = Path(__file__).resolve().parents[2] / "wcx" / "zoo" / "bundles" / "int8"


def int8_manifest(bundle: Bundle, **member_fields: Any) -> dict[str, Any]:
    """``bundle``'s manifest with its members marked INT8 and ``member_fields`` set on each."""
    d = json.loads((bundle.path / MANIFEST_NAME).read_text())
    for m in d["members"]:
        m["precision"] = "int8"
        m.pop("quantization", None)
        m.update(copy.deepcopy(member_fields))
    return d


def test_record_round_trips(mlp_bundle: Bundle) -> None:
    d = int8_manifest(mlp_bundle, quantization={"reduce_range": False, "calibration": "percentile", "samples": 1024})
    m = Manifest.from_dict(d)
    assert m.members[0].quantization == QuantizationSection(False, "percentile", 1024)
    assert Manifest.from_dict(m.to_dict()) == m


def test_float_layers_round_trip_and_default_to_none(mlp_bundle: Bundle) -> None:
    record = {"reduce_range": False, "calibration": "minmax", "samples": 1024, "float_layers": ["first"]}
    m = Manifest.from_dict(int8_manifest(mlp_bundle, quantization=record))
    assert m.members[0].quantization == QuantizationSection(False, "minmax", 1024, ("first",))
    assert m.to_dict()["members"][0]["quantization"] == record
    # written before the field existed: nothing kept in float
    del record["float_layers"]
    assert Manifest.from_dict(int8_manifest(mlp_bundle, quantization=record)).members[0].quantization == \
        QuantizationSection(False, "minmax", 1024, ())


def test_shipped_int8_zoo_without_the_field_loads_with_its_recorded_choice() -> None:
    raw = json.loads((ZOO_INT8 / MANIFEST_NAME).read_text())
    assert all("quantization" not in m for m in raw["members"])
    b = Bundle.load(ZOO_INT8, verify=False)
    assert {m.quantization for m in b.members} == {QuantizationSection(True, "minmax", 1024)}


def test_older_record_in_the_export_report_is_read(mlp_bundle: Bundle) -> None:
    report = {"checks": {"int8": {"quantization": {"reduce_range": False, "calibrate_method": "Entropy",
                                                   "calibration_samples": 300}}}}
    m = Manifest.from_dict(int8_manifest(mlp_bundle, export_report=report))
    assert m.members[0].quantization == QuantizationSection(False, "entropy", 300)


@pytest.mark.parametrize("report", [{}, {"checks": {"int8": {}}}, {"checks": "x"},
                                    {"checks": {"int8": {"quantization": {"reduce_range": "yes"}}}}])
def test_no_readable_record_means_unknown(mlp_bundle: Bundle, report: dict[str, Any]) -> None:
    m = Manifest.from_dict(int8_manifest(mlp_bundle, export_report=report))
    assert all(member.quantization is None for member in m.members)


def test_fp32_members_have_none(mlp_bundle: Bundle) -> None:
    assert all(m.quantization is None for m in mlp_bundle.members)
    assert all(m["quantization"] is None for m in mlp_bundle.manifest.to_dict()["members"])


@pytest.mark.parametrize(
    "record, match",
    [
        ({"calibration": "minmax"}, "missing 'reduce_range'"),
        ({"reduce_range": 1, "calibration": "minmax"}, "'reduce_range' must be true or false"),
        ({"reduce_range": True}, "missing 'calibration'"),
        ({"reduce_range": True, "calibration": "minmax", "samples": 0}, "'samples' must be positive"),
        ({"reduce_range": True, "calibration": "minmax", "float_layers": "first"},
         "'float_layers' must be a list of strings"),
        ("7bit", "'quantization' must be an object"),
    ],
)
def test_bad_records_are_refused(mlp_bundle: Bundle, record: Any, match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        Manifest.from_dict(int8_manifest(mlp_bundle, quantization=record))
