"""Exit policies (wcx.core.policy): decisions on numpy and torch, the manifest form, validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wcx.core.policy import (
    EMPTY,
    AllPolicy,
    ForcedFractionPolicy,
    NonePolicy,
    ThresholdPolicy,
    WindowPolicy,
    policy_from_dict,
)
from wcx.errors import BadInputError


def test_decisions() -> None:
    s = np.array([0.2, 0.45, 0.7, 0.9])
    assert WindowPolicy([(0.45, 0.7)]).continues(1, s).tolist() == [False, True, True, False]  # bounds inclusive
    assert WindowPolicy([(-math.inf, 0.5)]).continues(1, s).tolist() == [True, True, False, False]
    assert not WindowPolicy([EMPTY]).continues(1, s).any()
    assert ThresholdPolicy([0.7]).continues(1, s).tolist() == [True, True, True, False]
    assert not ThresholdPolicy([-math.inf]).continues(1, s).any()
    assert AllPolicy().continues(1, s).all() and not NonePolicy().continues(1, s).any()


def test_decisions_on_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    s = torch.tensor([0.2, 0.45, 0.7, 0.9])
    for policy in (WindowPolicy([(0.45, 0.7)]), ThresholdPolicy([0.7]), AllPolicy(), NonePolicy(),
                   ForcedFractionPolicy(0.5)):
        got = policy.continues(1, s)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.bool
        want = type(policy).from_dict(policy.to_dict()).continues(1, s.numpy())
        assert got.tolist() == want.tolist()


def test_manifest_round_trip() -> None:
    for policy in (
        WindowPolicy([(0.2, 0.8), (-math.inf, math.inf), EMPTY]),
        ThresholdPolicy([0.7, -math.inf]),
        NonePolicy(),
        AllPolicy(),
        ForcedFractionPolicy([0.25, 0.5]),
    ):
        d = json.loads(json.dumps(policy.to_dict(), allow_nan=False))  # strict JSON: no infinities
        assert policy_from_dict(d) == policy
        assert d["kind"] == policy.kind
    assert WindowPolicy([(0.2, 0.8), EMPTY]).to_dict()["windows"] == [[0.2, 0.8], []]
    assert WindowPolicy([(-math.inf, 0.5)]).to_dict()["windows"] == [[None, 0.5]]
    assert WindowPolicy([(1.0, 0.0)]).windows == (EMPTY,)  # an inverted pair in code is the empty window
    assert ThresholdPolicy([-math.inf]).to_dict()["thresholds"] == [None]


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"kind": "cascade"}, "valid policies"),
        ({"windows": [[0.1, 0.2]]}, "kind"),
        ({"kind": "window"}, "windows"),
        ({"kind": "window", "windows": [[0.1]]}, "lo, hi"),
        ({"kind": "window", "windows": [[0.9, 0.1]]}, "inverted"),
        ({"kind": "window", "windows": [["a", 0.1]]}, "number"),
        ({"kind": "window", "windows": [[float("nan"), 1.0]]}, "NaN"),
        ({"kind": "threshold", "thresholds": []}, "thresholds"),
        ({"kind": "threshold", "thresholds": [float("inf")]}, "finite"),
        ({"kind": "forced", "fractions": [1.5]}, r"\[0, 1\]"),
    ],
)
def test_bad_manifest_forms_are_refused(bad: dict, match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        policy_from_dict(bad)


def test_stage_counts_and_ranges() -> None:
    WindowPolicy([(0.1, 0.2), (0.3, 0.4)]).check_stages(3)
    with pytest.raises(BadInputError, match="3 stages"):
        WindowPolicy([(0.1, 0.2), (0.3, 0.4)]).check_stages(2)
    AllPolicy().check_stages(5)
    WindowPolicy([(0.5, 1.0)]).check_range(0.1, 1.0)
    with pytest.raises(BadInputError, match="outside"):
        WindowPolicy([(0.5, 3.0)]).check_range(0.1, 1.0)
    WindowPolicy([(-math.inf, math.inf), EMPTY]).check_range(0.1, 1.0)  # unbounded and empty are fine
    with pytest.raises(BadInputError, match="outside"):
        ThresholdPolicy([-2.0]).check_range(0.1, 1.0)


def test_forced_fraction_is_exact_over_calls() -> None:
    policy = ForcedFractionPolicy(0.25)
    assert sum(int(policy.continues(1, np.zeros(1)).sum()) for _ in range(40)) == 10
    policy = ForcedFractionPolicy(0.1)
    assert [int(policy.continues(1, np.zeros(256)).sum()) for _ in range(2)] == [25, 26]
    assert ForcedFractionPolicy(0.5).continues(1, np.zeros(4)).tolist() == [True, True, False, False]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=30), st.floats(-5, 5), st.floats(0, 5))
def test_window_is_its_interval(scores: list[float], lo: float, width: float) -> None:
    s = np.array(scores)
    got = WindowPolicy([(lo, lo + width)]).continues(1, s)
    np.testing.assert_array_equal(got, (s >= lo) & (s <= lo + width))
    assert WindowPolicy([(-math.inf, math.inf)]).continues(1, s).all()
