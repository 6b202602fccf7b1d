"""Provenance: what produced a set of logits, and whether a cascade runs the same thing.

A certified tau is only valid for the numbers it was fitted on. Those numbers depend on the
members' files, the precision they actually run at, the engine and the TensorRT/GPU it was built
for, and the preprocessing; one :class:`Provenance` record holds all of that, computed from the
*active runners* (never from what a manifest claims). Calibration writes it into the bundle's
calibration section; :meth:`Provenance.differences` is what ``Cascade.load`` compares (one
warning naming each difference, or a refusal with ``strict=True``); :meth:`Provenance.key` is
the logits cache key.

Two kinds of fields:

* **identity** (a difference means the certified tau may not hold): the backend; per member its
  name, the precision as run, the sha256 of its ONNX, of the weights file the torch backend runs,
  of its TensorRT engine, the TensorRT version and GPU compute capability where engines run,
  and its input section (preprocessing);
* **informational** (recorded and shown, never compared): GPU name, library versions, the CPU.

An identity field recorded as ``None`` is unknown (calibrations written by wcx before provenance
records existed): it is not compared.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wcx.errors import BadInputError

#: identity fields of a member, in display order
MEMBER_IDENTITY: tuple[str, ...] = (
    "precision", "onnx_sha256", "weights_sha256", "engine_sha256", "tensorrt_version", "compute_capability",
    "input",
)


@dataclass(frozen=True)
class MemberProvenance:
    """Identity of one member as a runner runs it (see the module docstring)."""

    name: str
    precision: str | None
    onnx_sha256: str | None = None
    weights_sha256: str | None = None
    engine_sha256: str | None = None
    tensorrt_version: str | None = None
    compute_capability: str | None = None
    input: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        for key in MEMBER_IDENTITY:
            value = getattr(self, key)
            d[key] = dict(value) if isinstance(value, Mapping) else value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "provenance") -> MemberProvenance:
        if not isinstance(d, Mapping) or not isinstance(d.get("name"), str):
            raise BadInputError(f"{where}: a member record needs a 'name'")
        values: dict[str, Any] = {}
        for key in MEMBER_IDENTITY:
            value = d.get(key)
            if key == "input":
                if value is not None and not isinstance(value, Mapping):
                    raise BadInputError(f"{where}: member {d['name']!r} input must be an object or null")
            elif value is not None and not isinstance(value, str):
                raise BadInputError(f"{where}: member {d['name']!r} {key} must be a string or null")
            values[key] = value
        return cls(name=d["name"], **values)


@dataclass(frozen=True)
class Provenance:
    """What produced (or will produce) a cascade's logits: backend, members, environment."""

    backend: str
    members: tuple[MemberProvenance, ...]
    info: Mapping[str, Any] = field(default_factory=dict)

    # -- derived views -----------------------------------------------------------------------
    @property
    def precision(self) -> str:
        """The members' precisions as one string: ``"fp16"``, or per member in stage order
        (``"fp32,fp16"``) when they differ; ``"unknown"`` where none is recorded."""
        values = [m.precision or "unknown" for m in self.members]
        return values[0] if len(set(values)) == 1 else ",".join(values)

    def identity(self) -> dict[str, Any]:
        """The identity fields only (JSON-ready)."""
        return {"backend": self.backend, "members": [m.to_dict() for m in self.members]}

    def key(self) -> str:
        """sha256 of the identity (canonical JSON): equal keys mean the same numbers."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def differences(self, recorded: Provenance) -> list[str]:
        """How this (running) provenance differs from ``recorded`` in identity fields, one
        human-readable line each; fields ``recorded`` does not know are skipped."""
        out: list[str] = []
        if recorded.backend != self.backend:
            out.append(f"backend: calibrated on {recorded.backend}, running on {self.backend}")
        if [m.name for m in recorded.members] != [m.name for m in self.members]:
            out.append(f"members: calibrated with {[m.name for m in recorded.members]}, running "
                       f"{[m.name for m in self.members]}")
            return out
        for was, now in zip(recorded.members, self.members, strict=True):
            for key in MEMBER_IDENTITY:
                a, b = getattr(was, key), getattr(now, key)
                if a is None or a == b:
                    continue
                if key == "input":
                    out.append(f"member {now.name}: input section (preprocessing) changed: {_diff(a, b)}")
                elif key.endswith("sha256"):
                    out.append(f"member {now.name}: {key} {str(a)[:12]}... -> {str(b)[:12] if b else None}...")
                else:
                    out.append(f"member {now.name}: {key} {a} -> {b}")
        return out

    # -- manifest form -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {**self.identity(), "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "provenance") -> Provenance:
        if not isinstance(d, Mapping) or not isinstance(d.get("backend"), str):
            raise BadInputError(f"{where}: needs a 'backend'")
        members = d.get("members")
        if not isinstance(members, list) or not members:
            raise BadInputError(f"{where}: needs a list of 'members'")
        info = d.get("info") or {}
        if not isinstance(info, Mapping):
            raise BadInputError(f"{where}: 'info' must be an object")
        return cls(d["backend"], tuple(MemberProvenance.from_dict(m, where=where) for m in members), dict(info))

    @classmethod
    def legacy(cls, backend: str, precision: str, names: Sequence[str]) -> Provenance:
        """The record of a calibration written before provenance records: only the backend and
        the precision string (one for all members, or one per member) are known."""
        parts = precision.split(",") if precision else []
        if len(parts) != len(names):
            parts = [precision] * len(names) if precision else [None] * len(names)  # type: ignore[list-item]
        return cls(backend, tuple(MemberProvenance(n, p or None) for n, p in zip(names, parts, strict=True)),
                   {"note": "recorded by an older wcx: only backend and precision are known"})


def _diff(a: Mapping[str, Any], b: Mapping[str, Any] | None) -> str:
    if b is None:
        return "no input section now"
    keys = sorted(set(a) | set(b))
    changed = [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
    return "; ".join(changed) or "(reordered)"
