"""One model at several precisions in a pool: which members are the same model, and how many
accept/reject decisions the lower precision flips.

``wcx export --precision fp32,int8 --names m,m_int8 m.onnx m.onnx`` puts one model in a pool
twice. The planner must not run a model twice in one cascade (its quantized copy adds nothing
an ensemble could use), and a user choosing a quantized stage wants to know what it costs in
decisions: quantization mostly flips the low-confidence predictions, which are the inputs a
window passes on, so the flips are counted overall and on the inputs that reached a later stage.

Conventions: members are *the same model* when their export source (the model path or callable
the exporter was given), input section and class count are equal; precisions rank
``fp32 > fp16 > int8``; a member's *twin* is the same model at the highest precision in the pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from wcx.calibration.simulator import simulate_cascade
from wcx.core.manifest import MemberSection
from wcx.core.policy import Policy

__all__ = ["PRECISION_RANK", "decision_flips", "model_groups", "reference_twins"]

#: higher = closer to the trained model
PRECISION_RANK: dict[str, int] = {"fp32": 2, "fp16": 1, "int8": 0}


def model_groups(members: Sequence[MemberSection]) -> list[int]:
    """A group id per member: equal ids are the same model (module docstring). A member without
    an export record (a bundle written by hand) is its own group."""
    keys: dict[Any, int] = {}
    out = []
    for i, m in enumerate(members):
        source = (m.export_report or {}).get("source")
        key = ("member", i) if source is None else (str(source), repr(m.input.preprocessing()), m.input.shape,
                                                   m.num_classes)
        out.append(keys.setdefault(key, len(keys)))
    return out


def reference_twins(groups: Sequence[int], precisions: Sequence[str]) -> dict[int, int]:
    """For every member with a higher-precision copy of its model in the pool: that copy's index
    (the highest precision; the first of equals)."""
    twins: dict[int, int] = {}
    for i, (g, p) in enumerate(zip(groups, precisions, strict=True)):
        best = max((j for j, h in enumerate(groups) if h == g),
                   key=lambda j: (PRECISION_RANK.get(precisions[j], -1), -j))
        if PRECISION_RANK.get(precisions[best], -1) > PRECISION_RANK.get(p, -1):
            twins[i] = best
    return twins


def decision_flips(logits: np.ndarray, members: Sequence[int], policy: Policy, tau: float, score: str,
                   twins: Mapping[int, int], names: Sequence[str], *, combine: str = "mean") -> dict[str, Any] | None:
    """What the lower-precision stages of the cascade ``members`` (pool indices, stage order)
    change, on pool logits ``(M, N, K)``: the same cascade (policy, tau) with every such stage
    replaced by its twin is the reference. None when no stage has a twin.

    ``flips``: inputs whose accept decision differs; ``in_window``: of the inputs the cascade as
    planned passed on from stage 1 (those inside a window), how many, and how many flipped;
    ``exit_stage_changed``: inputs that left at another stage; ``prediction_flips``: top-1 changes.
    """
    swapped = [twins.get(i, i) for i in members]
    if swapped == list(members):
        return None
    z = np.asarray(logits)
    planned = simulate_cascade(z[list(members)], policy, score, tau=tau, combine=combine)
    reference = simulate_cascade(z[swapped], policy, score, tau=tau, combine=combine)
    flips = np.asarray(planned.accepted(tau) != reference.accepted(tau))
    window = planned.exit_stage > 1
    n = int(flips.size)
    return {
        "replaced": {names[i]: names[twins[i]] for i in members if i in twins},
        "n": n,
        "flips": int(flips.sum()),
        "flip_rate": float(flips.mean()) if n else 0.0,
        "in_window": {"n": int(window.sum()), "flips": int(flips[window].sum()),
                      "flip_rate": float(flips[window].mean()) if window.any() else 0.0},
        "outside_window": {"n": int((~window).sum()), "flips": int(flips[~window].sum()),
                           "flip_rate": float(flips[~window].mean()) if (~window).any() else 0.0},
        "exit_stage_changed": int((planned.exit_stage != reference.exit_stage).sum()),
        "prediction_flips": int((planned.pred != reference.pred).sum()),
    }
