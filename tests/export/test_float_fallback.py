"""int8_float_layers="auto": the fewest layers in float that bring the agreement up to the target,
chosen on rows the gate does not judge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.bundle_factory import make_mlp_onnx
from wcx.bundle import Bundle
from wcx.export import float_fallback
from wcx.export.exporter import Tolerances, export_bundle
from wcx.export.float_fallback import MAX_AUTO_FLOAT_LAYERS, candidate_layers, quantize_int8_auto
from wcx.export.precision import DEFAULT_FLOAT_LAYERS

N = 200
SHAPE = (1, 8, 8)


class FakeQuantizer:
    """Stands in for quantize_int8: writes the layers it was asked to keep in float, and the
    graph's agreement is read from ``table`` (a layer set not in it agrees as the best of its
    subsets, as keeping more layers in float rarely hurts)."""

    def __init__(self, table: dict[tuple[str, ...], float], weighted_layers: int) -> None:
        self.table, self.weighted_layers, self.calls = table, weighted_layers, 0

    def quantize(self, src, dst, calib_x, *, input_name, float_layers, **options):
        self.calls += 1
        Path(dst).write_text(json.dumps(list(float_layers)))
        return {"float_layers": list(float_layers), "weighted_layers": self.weighted_layers}

    def agreement(self, layers: tuple[str, ...]) -> float:
        if layers in self.table:
            return self.table[layers]
        return max((a for key, a in self.table.items() if set(key) <= set(layers)), default=0.0)

    def run(self, path: Path, x: np.ndarray) -> np.ndarray:
        logits = np.zeros((len(x), 2))
        logits[:, 0] = 1.0  # the reference's top-1 is class 0
        if path.suffix == ".onnx" and path.name != "src.onnx":
            disagree = len(x) - round(self.agreement(tuple(json.loads(path.read_text()))) * len(x))
            logits[:disagree, 1] = 2.0
        return logits


def search(tmp_path: Path, table: dict[tuple[str, ...], float], weighted_layers: int = 4,
           target: float = 0.98) -> tuple[dict, FakeQuantizer]:
    fake = FakeQuantizer(table, weighted_layers)
    (tmp_path / "src.onnx").write_text("fp32")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(float_fallback, "quantize_int8", fake.quantize)
        options = quantize_int8_auto(tmp_path / "src.onnx", tmp_path / "out.onnx", np.zeros((N, 1)), np.zeros((N, 1)),
                                     input_name="input", target=target, run=fake.run, selection_source="test rows")
    # what was written is the graph of the configuration reported
    assert json.loads((tmp_path / "out.onnx").read_text()) == options["float_layers"]
    assert not list(tmp_path.glob("*.part"))
    return options, fake


def test_nothing_is_kept_in_float_when_every_layer_quantized_reaches_the_target(tmp_path: Path) -> None:
    options, fake = search(tmp_path, {(): 0.99})
    assert options["float_layers"] == [] and fake.calls == 1
    assert options["auto"]["reached"] and options["auto"]["trials"] == [{"float_layers": [], "agreement": 0.99}]


def test_the_first_single_layer_that_reaches_the_target_stops_the_search(tmp_path: Path) -> None:
    options, fake = search(tmp_path, {(): 0.96, ("first",): 0.97, ("layer:1",): 0.985, ("layer:2",): 0.99})
    assert options["float_layers"] == ["layer:1"]
    assert [t["float_layers"] for t in options["auto"]["trials"]] == [[], ["first"], ["layer:1"]]
    assert options["auto"]["agreement"] == pytest.approx(0.985)


def test_layers_are_added_in_order_of_their_single_layer_agreement(tmp_path: Path) -> None:
    table = {(): 0.95, ("first",): 0.96, ("layer:1",): 0.97, ("layer:2",): 0.955, ("last",): 0.965,
             ("first", "layer:1"): 0.975, ("first", "layer:1", "last"): 0.99}
    options, _ = search(tmp_path, table)
    trials = [t["float_layers"] for t in options["auto"]["trials"]]
    # one at a time, then layer:1 (0.97) + last (0.965), then + first (0.96)
    assert trials[:5] == [[], ["first"], ["layer:1"], ["layer:2"], ["last"]]
    assert trials[5:] == [["last", "layer:1"], ["first", "last", "layer:1"]]
    assert options["float_layers"] == ["first", "last", "layer:1"] and options["auto"]["reached"]


def test_when_nothing_reaches_the_target_the_best_graph_is_kept_and_said(tmp_path: Path) -> None:
    table = {(): 0.90, ("first",): 0.93, ("layer:1",): 0.91, ("last",): 0.92}
    options, _ = search(tmp_path, table, weighted_layers=3)
    assert not options["auto"]["reached"]
    best = max(options["auto"]["trials"], key=lambda t: t["agreement"])
    assert options["float_layers"] == best["float_layers"]
    assert max(len(t["float_layers"]) for t in options["auto"]["trials"]) <= MAX_AUTO_FLOAT_LAYERS


def test_candidates_are_the_ends_of_a_deep_graph() -> None:
    assert candidate_layers(1) == ["first"]
    assert candidate_layers(2) == ["first", "last"]
    deep = candidate_layers(30)
    assert deep == ["first", "layer:1", "layer:2", "layer:3", "layer:26", "layer:27", "layer:28", "last"]


def test_default_export_keeps_layers_in_float_only_when_the_gate_needs_them(tmp_path: Path) -> None:
    """A 100% gate that the fully quantized MLP misses: the default search keeps layers in float,
    chosen on calibration rows outside the range sample, and the gate (on other rows) passes."""
    assert DEFAULT_FLOAT_LAYERS == "auto"
    mlp = make_mlp_onnx(tmp_path / "mlp.onnx", sample_shape=SHAPE, seed=1)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((400, *SHAPE), dtype=np.float32))
    report = export_bundle([str(mlp)], tmp_path / "b", input_shape=SHAPE, precision="int8",
                           calib_data=tmp_path / "calib.npz", max_calib_samples=100,
                           tolerances=Tolerances(int8_min_agreement=1.0))
    check = report.members[0].checks["int8"]
    auto = check["quantization"]["auto"]
    assert auto["trials"][0]["float_layers"] == [] and auto["trials"][0]["agreement"] < 1.0
    assert auto["reached"] and check["passed"] and check["eval"]["top1_agreement"] == 1.0
    # 400 rows: 80 held back for the gate (holdout 0.2), 100 for the ranges, the other 220 select
    assert auto["selection_rows"] == 220 and auto["selection_source"].startswith("calibration rows outside")
    chosen = check["quantization"]["float_layers"]
    assert chosen and Bundle.load(tmp_path / "b").members[0].quantization.float_layers == tuple(chosen)
    assert any(note.startswith("Kept in float32 (chosen by measurement") for note in report.notes)
    # a gate every quantized graph meets keeps nothing in float
    report = export_bundle([str(mlp)], tmp_path / "c", input_shape=SHAPE, precision="int8",
                           calib_data=tmp_path / "calib.npz", tolerances=Tolerances(int8_min_agreement=0.0))
    assert report.members[0].checks["int8"]["quantization"]["float_layers"] == []
    assert len(report.members[0].checks["int8"]["quantization"]["auto"]["trials"]) == 1
