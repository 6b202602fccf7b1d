"""One model at several precisions in a pool (wcx.calibration.precision_flips): which members
are the same model, their twins, and the decisions a lower precision flips."""

from __future__ import annotations

import numpy as np
import pytest

from wcx.calibration.planner import search_front
from wcx.calibration.precision_flips import decision_flips, model_groups, reference_twins
from wcx.calibration.simulator import simulate_cascade
from wcx.core.manifest import InputSection, MemberSection
from wcx.core.policy import WindowPolicy


def member(name: str, source: str | None, precision: str, *, shape: tuple[int, ...] = (1, 8, 8)) -> MemberSection:
    report = {} if source is None else {"source": source}
    return MemberSection(name=name, file=f"members/{name}.onnx", sha256="0" * 64, precision=precision,
                         input=InputSection(name="input", shape=shape, mean=(0.5,), std=(0.25,)),
                         output_name="logits", num_classes=4, macs=100, export_report=report)


def test_groups_and_twins() -> None:
    members = [member("a", "m.onnx", "fp32"), member("a8", "m.onnx", "int8"), member("b16", "n.onnx", "fp16"),
               member("b8", "n.onnx", "int8"), member("c", "m.onnx", "int8", shape=(1, 16, 16)),
               member("hand", None, "int8"), member("hand2", None, "int8")]
    groups = model_groups(members)
    assert groups == [0, 0, 1, 1, 2, 3, 4]  # another input shape is another model; no record: its own
    twins = reference_twins(groups, [m.precision for m in members])
    assert twins == {1: 0, 3: 2}


def test_flips_against_the_twin_swapped_cascade() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(scale=2.0, size=(3, 400, 4))
    z[1] = z[0] + rng.normal(scale=0.3, size=(400, 4))  # member 1: member 0 "quantized"
    policy, tau = WindowPolicy([(0.5, 0.8)]), 0.7
    got = decision_flips(z, [1, 2], policy, tau, "msp", {1: 0}, ["m", "m_int8", "other"])
    assert got is not None and got["replaced"] == {"m_int8": "m"}
    planned = simulate_cascade(z[[1, 2]], policy, "msp", tau=tau)
    reference = simulate_cascade(z[[0, 2]], policy, "msp", tau=tau)
    flips = planned.accept != reference.accept
    window = planned.exit_stage > 1
    assert got["flips"] == int(flips.sum()) > 0 and got["n"] == 400
    assert got["in_window"] == {"n": int(window.sum()), "flips": int(flips[window].sum()),
                                "flip_rate": pytest.approx(float(flips[window].mean()))}
    assert got["in_window"]["flips"] + got["outside_window"]["flips"] == got["flips"]
    assert decision_flips(z, [0, 2], policy, tau, "msp", {1: 0}, ["m", "m_int8", "other"]) is None


def test_the_search_runs_a_model_once() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 600)
    z = rng.normal(size=(3, 600, 4)) + 2.5 * np.eye(4)[y]
    z = np.concatenate([z, z[:1] + rng.normal(scale=0.05, size=(1, 600, 4))])  # member 3: member 0 again
    outcome = search_front(z, y, np.array([1.0, 2.0, 3.0, 0.9]), max_stages=3, beam=8, groups=[0, 1, 2, 0])
    grown = [c for c in outcome.front if len(c.members) > 1]
    assert grown and all(not {0, 3} <= set(c.members) for c in outcome.front)
