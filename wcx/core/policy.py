"""Exit policies: which inputs go on from a non-final stage (method.md section 2).

A cascade of M members runs stage 1 on every input; at every non-final stage m < M it looks at
the stage-m ensemble's score ``s_m`` and either lets the input *exit* (it keeps ``P_m`` and
``s_m`` for good) or *continues* to stage m + 1. Stages are 1-based, as in the method text.

* :class:`WindowPolicy`: continue iff ``lo_m <= s_m <= hi_m``. A window may be unbounded on a
  side (``-inf`` / ``inf``), or :data:`EMPTY` (no input continues from that stage: a stage the
  fitting data never reached).
* :class:`ThresholdPolicy`: continue iff ``s_m <= t_m`` (the older single-threshold cascade);
  ``t_m = -inf`` passes nothing on.
* :class:`NonePolicy`: every input exits at stage 1 (the first member alone, any M).
* :class:`AllPolicy`: nothing exits early (the full ensemble, any M).
* :class:`ForcedFractionPolicy`: for benchmarks, a fixed share of the rows goes on whatever their
  score.

The final decision (not a policy's business) accepts an input iff its exit score is ``>= tau``.

**Manifest form** (``to_dict`` / :func:`policy_from_dict`, the ``policy`` section of a bundle,
schema 2): ``{"kind": "window", "windows": [[lo, hi], ...]}`` with one window per non-final
stage; in a window ``null`` means *unbounded on that side* (``lo`` null = -inf, ``hi`` null =
+inf) and the empty list ``[]`` is the empty window; ``lo <= hi`` is required.
``{"kind": "threshold", "thresholds": [t, ...]}`` with ``null`` = -inf (passes nothing on).
``{"kind": "none"}``, ``{"kind": "all"}``, ``{"kind": "forced", "fractions": [f, ...]}``.

``continues`` works on numpy arrays and torch tensors alike. New kinds register with
:func:`register_policy` (or the ``wcx.policies`` entry point group).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from wcx.core.arrays import Array, ops_for
from wcx.core.registry import Registry
from wcx.errors import BadInputError

#: the empty window: no input continues from its stage
EMPTY: tuple[float, float] = (math.inf, -math.inf)

Window = tuple[float, float]


class Policy(abc.ABC):
    """Decides which rows continue from a non-final stage, given their stage scores."""

    kind: ClassVar[str] = ""

    @abc.abstractmethod
    def continues(self, stage: int, scores: Array) -> Array:
        """Boolean mask of the rows that continue from 1-based ``stage`` (numpy or torch)."""

    @property
    def n_stages(self) -> int | None:
        """The number of stages this policy is for (None: any number)."""
        return None

    def check_stages(self, n_stages: int) -> None:
        """Raise ``BadInputError`` unless the policy fits a cascade of ``n_stages`` members."""
        if n_stages < 1:
            raise BadInputError("a cascade needs at least one member")
        want = self.n_stages
        if want is not None and want != n_stages:
            raise BadInputError(
                f"the {self.kind} policy is for {want} stages ({want - 1} per non-final stage) but the "
                f"cascade has {n_stages} members"
            )

    def check_range(self, low: float, high: float, *, where: str = "policy") -> None:  # noqa: B027
        """Raise ``BadInputError`` if a finite bound lies outside the score's ``[low, high]``
        (nothing to check for a policy without bounds)."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The manifest form (JSON-ready; see the module docstring)."""

    @classmethod
    @abc.abstractmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Policy:
        """Build the policy from its manifest form (validated)."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))

    def __repr__(self) -> str:
        params = {k: v for k, v in self.to_dict().items() if k != "kind"}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in params.items())})"


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInputError(f"{what} must be a number or null, got {value!r}")
    v = float(value)
    if math.isnan(v):
        raise BadInputError(f"{what} must not be NaN")
    return v


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _outside(value: float, low: float, high: float) -> bool:
    # a little slack: a score computed in float32 may land a rounding error outside its range
    slack = 1e-6 * max(1.0, abs(low), abs(high))
    return math.isfinite(value) and not (low - slack <= value <= high + slack)


class WindowPolicy(Policy):
    """Continue from stage m iff ``lo_m <= s_m <= hi_m``; one window per non-final stage.

    ``windows`` holds ``(lo, hi)`` pairs with ``lo <= hi`` (either may be infinite) or
    :data:`EMPTY`. A pair with ``lo > hi`` is accepted as the empty window.
    """

    kind = "window"

    def __init__(self, windows: Sequence[Sequence[float]]) -> None:
        pairs: list[Window] = []
        for i, w in enumerate(windows):
            if len(w) == 0:
                pairs.append(EMPTY)
                continue
            if len(w) != 2:
                raise BadInputError(f"window {i + 1} must be (lo, hi) or empty, got {tuple(w)!r}")
            lo, hi = float(w[0]), float(w[1])
            if math.isnan(lo) or math.isnan(hi):
                raise BadInputError("window bounds must not be NaN")
            pairs.append(EMPTY if lo > hi else (lo, hi))
        if not pairs:
            raise BadInputError("a window policy needs one window per non-final stage (M >= 2)")
        self.windows: tuple[Window, ...] = tuple(pairs)

    @property
    def n_stages(self) -> int | None:
        return len(self.windows) + 1

    def continues(self, stage: int, scores: Array) -> Array:
        lo, hi = self.windows[stage - 1]
        return (scores >= lo) & (scores <= hi)

    def check_range(self, low: float, high: float, *, where: str = "policy") -> None:
        for i, w in enumerate(self.windows):
            if w != EMPTY and any(_outside(v, low, high) for v in w):
                raise BadInputError(
                    f"{where}: window {i + 1} ({w[0]:g}, {w[1]:g}) lies outside the score's range [{low:g}, {high:g}]"
                )

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "windows": [window_to_json(w) for w in self.windows]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WindowPolicy:
        raw = d.get("windows")
        if not isinstance(raw, list) or not raw:
            raise BadInputError("a window policy needs 'windows': a list of [lo, hi] pairs or []")
        return cls([window_from_json(w, i) for i, w in enumerate(raw)])


def window_to_json(window: Window) -> list[float | None]:
    """``[lo, hi]`` with null for an unbounded side; ``[]`` for the empty window."""
    if window == EMPTY:
        return []
    return [_finite_or_none(window[0]), _finite_or_none(window[1])]


def window_from_json(value: Any, index: int = 0) -> Window:
    """Inverse of :func:`window_to_json`; an inverted pair (``lo > hi``) is refused."""
    where = f"window {index + 1}"
    if not isinstance(value, list) or len(value) not in (0, 2):
        raise BadInputError(f"{where} must be [lo, hi] or [] (empty), got {value!r}")
    if not value:
        return EMPTY
    lo = -math.inf if value[0] is None else _number(value[0], f"{where} lo")
    hi = math.inf if value[1] is None else _number(value[1], f"{where} hi")
    if lo > hi:
        raise BadInputError(f"{where} is inverted (lo {lo:g} > hi {hi:g}); write an empty window as []")
    return lo, hi


class ThresholdPolicy(Policy):
    """Continue from stage m iff ``s_m <= t_m``; one threshold per non-final stage."""

    kind = "threshold"

    def __init__(self, thresholds: Sequence[float]) -> None:
        ts = tuple(float(t) for t in thresholds)
        if not ts:
            raise BadInputError("a threshold policy needs one threshold per non-final stage (M >= 2)")
        if any(math.isnan(t) for t in ts):
            raise BadInputError("thresholds must not be NaN")
        self.thresholds: tuple[float, ...] = ts

    @property
    def n_stages(self) -> int | None:
        return len(self.thresholds) + 1

    def continues(self, stage: int, scores: Array) -> Array:
        return scores <= self.thresholds[stage - 1]

    def check_range(self, low: float, high: float, *, where: str = "policy") -> None:
        for i, t in enumerate(self.thresholds):
            if _outside(t, low, high):
                raise BadInputError(f"{where}: threshold {i + 1} ({t:g}) lies outside the score's range "
                                    f"[{low:g}, {high:g}]")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "thresholds": [_finite_or_none(t) for t in self.thresholds]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ThresholdPolicy:
        raw = d.get("thresholds")
        if not isinstance(raw, list) or not raw:
            raise BadInputError("a threshold policy needs 'thresholds': a list of numbers (null = pass nothing)")
        values = [-math.inf if t is None else _number(t, f"threshold {i + 1}") for i, t in enumerate(raw)]
        if any(t == math.inf for t in values):
            raise BadInputError("a threshold must be finite (null passes nothing on)")
        return cls(values)


class _EveryRow(Policy):
    """A policy that decides the same for every row: ``goes_on`` for all, or for none."""

    goes_on: ClassVar[bool]

    def continues(self, stage: int, scores: Array) -> Array:
        return ops_for(scores).full_bool(int(scores.shape[0]), self.goes_on, scores)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Policy:
        return cls()


class NonePolicy(_EveryRow):
    """The first member alone: every input exits at stage 1 (any M >= 1)."""

    kind = "none"
    goes_on = False


class AllPolicy(_EveryRow):
    """The full ensemble: every input runs every stage."""

    kind = "all"
    goes_on = True


class ForcedFractionPolicy(Policy):
    """For benchmarks: a fixed share of the rows reaching stage m continues, whatever the score.

    Rows are taken from the front of the subset. Over successive calls the number passed is the
    difference of ``floor(f * rows_seen_so_far)``, so the long-run pass fraction is exactly ``f``
    even at batch size 1 (at 25%, one call in four passes its row on). ``fractions`` has one
    value per non-final stage, or one for all of them. The object counts rows, so use one per
    benchmark.
    """

    kind = "forced"

    def __init__(self, fractions: float | Sequence[float]) -> None:
        values = [float(fractions)] if isinstance(fractions, (int, float)) else [float(f) for f in fractions]
        if not values or any(not 0.0 <= f <= 1.0 for f in values):
            raise BadInputError(f"forced pass fractions must be in [0, 1], got {values}")
        self.fractions = tuple(values)
        self._seen: dict[int, int] = {}

    def continues(self, stage: int, scores: Array) -> Array:
        f = self.fractions[min(stage - 1, len(self.fractions) - 1)]
        n = int(scores.shape[0])
        seen = self._seen.get(stage, 0)
        k = math.floor(f * (seen + n) + 1e-9) - math.floor(f * seen + 1e-9)
        self._seen[stage] = seen + n
        return ops_for(scores).arange(n, scores) < k

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "fractions": list(self.fractions)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ForcedFractionPolicy:
        raw = d.get("fractions")
        if not isinstance(raw, list) or not raw:
            raise BadInputError("a forced policy needs 'fractions': a list of numbers in [0, 1]")
        return cls([_number(f, "forced fraction") for f in raw])


POLICY_REGISTRY: Registry[type[Policy]] = Registry("policy", "wcx.policies", lambda cls: cls.kind,
                                                   plural="policies")
for _cls in (WindowPolicy, ThresholdPolicy, NonePolicy, AllPolicy, ForcedFractionPolicy):
    POLICY_REGISTRY.register(_cls)

#: the policies calibration can fit (ForcedFractionPolicy is for benchmarks)
POLICY_KINDS: tuple[str, ...] = ("window", "threshold", "none", "all")


def register_policy(cls: type[Policy], *, replace: bool = False) -> type[Policy]:
    """Make a :class:`Policy` subclass available by its ``kind`` (manifests, runtime)."""
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise TypeError(f"register_policy takes a Policy subclass, got {cls!r}")
    return POLICY_REGISTRY.register(cls, replace=replace)


def policy_from_dict(d: Mapping[str, Any]) -> Policy:
    """The policy of a manifest ``policy`` section (other keys such as ``tau`` are ignored).

    >>> policy_from_dict({"kind": "window", "windows": [[0.4, None], []]}).windows
    ((0.4, inf), (inf, -inf))
    """
    if not isinstance(d, Mapping) or "kind" not in d:
        raise BadInputError("a policy must be a JSON object with a 'kind'")
    kind = d["kind"]
    if not isinstance(kind, str):
        raise BadInputError(f"policy kind must be a string, got {kind!r}")
    return POLICY_REGISTRY.get(kind).from_dict(d)
