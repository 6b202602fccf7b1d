"""The meaning of a cascade, defined once: scores, exit policies, tasks, the manifest's typed
sections and the provenance of logits (numpy only; torch is used when given torch tensors).

Everything else builds on this package and nothing in it imports the rest of wcx (except
``wcx.errors``): the calibration's simulator and the runtime's executor both run these
:class:`~wcx.core.scores.Score` and :class:`~wcx.core.policy.Policy` objects, the bundle reads
and writes these sections, calibration writes the :class:`~wcx.core.provenance.Provenance` that
the runtime compares. ``docs/architecture.md`` shows where this sits and where to change what.
"""

from wcx.core.manifest import (
    SCHEMA_VERSION,
    CalibrationSection,
    EngineRecord,
    EnginesSection,
    InputSection,
    Manifest,
    MemberSection,
    PolicySection,
    TimingCacheRecord,
    TorchSource,
)
from wcx.core.policy import (
    EMPTY,
    AllPolicy,
    ForcedFractionPolicy,
    NonePolicy,
    Policy,
    ThresholdPolicy,
    WindowPolicy,
    policy_from_dict,
    register_policy,
)
from wcx.core.provenance import MemberProvenance, Provenance
from wcx.core.scores import Score, ScoreState, get_score, register_score, stage_outputs
from wcx.core.tasks import Task, get_task

__all__ = [
    "EMPTY",
    "SCHEMA_VERSION",
    "AllPolicy",
    "CalibrationSection",
    "EngineRecord",
    "EnginesSection",
    "ForcedFractionPolicy",
    "InputSection",
    "Manifest",
    "MemberProvenance",
    "MemberSection",
    "NonePolicy",
    "Policy",
    "PolicySection",
    "Provenance",
    "Score",
    "ScoreState",
    "Task",
    "ThresholdPolicy",
    "TimingCacheRecord",
    "TorchSource",
    "WindowPolicy",
    "get_score",
    "get_task",
    "policy_from_dict",
    "register_policy",
    "register_score",
    "stage_outputs",
]
