"""The bundle manifest (``wcx.json``) as typed, validated sections (schema version 2).

::

    {
      "schema_version": 2,
      "created": "2026-11-27T10:00:00+00:00",
      "export": {"wcx": "...", "torch": "..." | null, "onnx": "...", "onnxruntime": "...",
                 "export_options": {...}, ...},                 # how the members were made (free form)
      "members": [MemberSection, ...],                          # stage 1 first
      "policy": null | PolicySection,                           # written by calibration
      "calibration": null | CalibrationSection,                 # written by calibration
      "engines": null | EnginesSection                          # written by the TensorRT builder
    }

Every section is a frozen dataclass whose ``from_dict`` validates what it reads (one-line
``BadInputError`` naming the section and the field) and whose ``to_dict`` writes the JSON form.
Every JSON object with a ``file`` names a file inside the bundle and must carry its ``sha256``
(a missing or null hash is refused: :func:`file_references`); the bundle checks every one of
them on load (:mod:`wcx.bundle`).

**Member** (one ensemble member, one cascade stage)::

    {"name": "m0", "file": "members/m0.onnx", "sha256": "<64 hex>", "precision": "fp32|fp16|int8",
     "input": InputSection, "output_name": "logits", "num_classes": 10, "macs": 123456,
     "torch_source": null | {"callable": "pkg.mod:fn", "file": "members/m0.safetensors", "sha256": "..."},
     "export_report": {...},
     "quantization": null | {"reduce_range": false, "calibration": "percentile", "samples": 1024,
                             "float_layers": ["first"]}}

``quantization`` (INT8 members; :class:`QuantizationSection`): ``reduce_range`` true means
weights in [-64, 64] ("7 bits", for ONNX Runtime on x86 CPUs without VNNI), false the full
[-127, 127]; ``calibration`` is the INT8 calibration method of the activation ranges and
``samples`` the inputs it saw; ``float_layers`` the parts kept in float32 (``first``: the graph
input and the first layer, ``last``: the last layer; :mod:`wcx.export.precision`), absent or
``[]`` for none. A member written before the field existed has it read from its
``export_report`` (``checks.int8.quantization``), or null when that says nothing.

**Input section** (what a member expects and how a raw batch becomes its input)::

    {"name": "input", "dtype": "float32", "layout": "NCHW", "shape": [C, H, W],
     "value_range": [0.0, 1.0], "normalized": false, "mean": [...], "std": [...],
     "resize": null | {"size": [H, W] | null, "shorter_side": S | null,
                       "interpolation": "bilinear", "implementation": "pillow"},
     "crop": null | {"kind": "center", "size": [H, W]}}

``name``/``dtype``: the graph's input. ``value_range``: the range raw float inputs must lie in
(the input contract: a batch outside it is refused, :mod:`wcx.core.preprocess`); a raw uint8
batch is divided by 255 into it. Then ``(x - mean) / std`` per channel. ``normalized: true``
declares data that arrives already normalised: the raw float input is what the member takes
(no scaling, no mean/std, so ``mean`` must be 0 and ``std`` 1, and uint8 is refused), checked
against its own ``value_range``; absent means false (what version 2 manifests written before
the field existed mean).

``resize``/``crop`` (null in bundles without them, which take (N, C, H, W) batches as they are)
make the member take *raw frames*: uint8 images of any size, each resized (:class:`Resize`:
to ``size`` exactly, or its shorter side to ``shorter_side`` keeping the aspect ratio, as
torchvision's ``Resize``) and then center-cropped (:class:`CenterCrop`) to the member's
``[H, W]``, before the scaling and mean/std above (:mod:`wcx.core.frames`). ``implementation``
names the library that resamples; with the interpolation it is part of the provenance
identity. Members of one bundle share the preprocessing (everything but ``name`` and
``dtype``), except that members which all prepare frames may differ (other resolutions, other
mean/std): each makes its own input from the same raw frame.

**Policy**: ``{"kind", "task", "score", ...the policy's own fields..., "tau"}``; see
:mod:`wcx.core.policy` for the kinds and the meaning of ``null`` bounds and ``[]`` (an empty
window). ``tau`` null means "accept every input". Checked on load: the kind, task and score
exist, one window/threshold per non-final stage, no NaN, and every finite bound and ``tau`` lie
in the score's range (``msp`` in ``[1/K, 1]``, ``neg_entropy`` in ``[-log K, 0]``).
``"combine": "last"`` (present only then) makes every stage keep its own member's output instead
of the mean over the members so far (:data:`wcx.core.scores.COMBINES`).

**Calibration**: what was fitted and measured (see :class:`CalibrationSection`), with the
:class:`~wcx.core.provenance.Provenance` of the logits it was fitted on.

**Engines**: one :class:`EngineRecord` per member with a TensorRT engine, plus the timing cache.

**Version 1** manifests (wcx 0.1) are migrated on read (:func:`migrate_v1`): member input fields
are gathered into the input section, an inverted window ``(1.0, 0.0)`` becomes ``[]``, the
export record moves from ``provenance`` to ``export``, and the calibration's ``backend`` and
``precision`` become a provenance record whose other identity fields are unknown. Writing
writes version 2, or **version 3** when the policy section uses ``combine`` (the only difference):
a wcx that reads only up to version 2 then refuses the bundle instead of averaging the stages.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from wcx.core.policy import Policy, policy_from_dict
from wcx.core.provenance import Provenance
from wcx.core.scores import check_combine, get_score
from wcx.core.tasks import get_task
from wcx.errors import BadInputError

SCHEMA_VERSION = 2
#: the version written when the policy section uses ``combine`` (module docstring)
COMBINE_SCHEMA_VERSION = 3
READABLE_VERSIONS: tuple[int, ...] = (1, SCHEMA_VERSION, COMBINE_SCHEMA_VERSION)
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
INPUT_DTYPES: tuple[str, ...] = ("float32", "float16", "uint8")
LAYOUTS: tuple[str, ...] = ("NCHW",)
#: resampling filters a frame may be resized with (Pillow's filters of the same names)
INTERPOLATIONS: tuple[str, ...] = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
#: libraries that may resample frames; the name is part of the provenance identity
RESIZE_IMPLEMENTATIONS: tuple[str, ...] = ("pillow",)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

T = TypeVar("T")


# -------------------------------------------------------------------------------------------
# field readers: one-line errors naming the section and the field
# -------------------------------------------------------------------------------------------
def _get(d: Mapping[str, Any], key: str, kind: type[T] | tuple[type, ...], where: str, *,
         optional: bool = False, default: Any = None) -> Any:
    if key not in d or d[key] is None:
        if optional:
            return default
        raise BadInputError(f"{where}: missing '{key}'")
    value = d[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BadInputError(f"{where}: '{key}' must be {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise BadInputError(f"{where}: '{key}' must be {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
             dict: "an object", Mapping: "an object"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _number(d: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> float | None:
    value = _get(d, key, (int, float), where, optional=optional)
    if value is None:
        return None
    v = float(value)
    if not math.isfinite(v):
        raise BadInputError(f"{where}: '{key}' must be a finite number, got {value!r}")
    return v


def _sha256(d: Mapping[str, Any], key: str, where: str) -> str:
    value = _get(d, key, str, where)
    if not _SHA256.match(value):
        raise BadInputError(f"{where}: '{key}' must be a sha256 (64 lowercase hex digits), got {value!r}")
    return str(value)


def _numbers(value: Any, what: str, where: str, *, positive: bool = False) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise BadInputError(f"{where}: '{what}' must be a non-empty list of numbers")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise BadInputError(f"{where}: '{what}' must hold finite numbers, got {v!r}")
        if positive and v <= 0:
            raise BadInputError(f"{where}: '{what}' must hold positive numbers, got {v!r}")
        out.append(float(v))
    return tuple(out)


# -------------------------------------------------------------------------------------------
# input and member
# -------------------------------------------------------------------------------------------
def _size_pair(value: Any, what: str, where: str) -> tuple[int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        raise BadInputError(f"{where}: {what} must be [H, W] of positive integers, got {value!r}")
    return int(value[0]), int(value[1])


@dataclass(frozen=True)
class Resize:
    """How a raw frame is resized: to ``size`` (H, W) exactly, or so that its shorter side
    becomes ``shorter_side`` with the aspect ratio kept (the longer side rounded down, as
    torchvision's ``Resize(S)``); exactly one of the two is set. ``interpolation`` is one of
    :data:`INTERPOLATIONS`, ``implementation`` the library that resamples
    (:data:`RESIZE_IMPLEMENTATIONS`)."""

    size: tuple[int, int] | None = None
    shorter_side: int | None = None
    interpolation: str = "bilinear"
    implementation: str = "pillow"

    def __post_init__(self) -> None:
        where = "resize"
        if (self.size is None) == (self.shorter_side is None):
            raise BadInputError(f"{where}: give exactly one of size [H, W] and shorter_side")
        if self.size is not None:
            _size_pair(self.size, "size", where)
        if self.shorter_side is not None and (isinstance(self.shorter_side, bool)
                                              or not isinstance(self.shorter_side, int) or self.shorter_side < 1):
            raise BadInputError(f"{where}: shorter_side must be a positive integer, got {self.shorter_side!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise BadInputError(f"{where}: interpolation {self.interpolation!r} is not one of "
                                f"{', '.join(INTERPOLATIONS)}")
        if self.implementation not in RESIZE_IMPLEMENTATIONS:
            raise BadInputError(f"{where}: implementation {self.implementation!r} is not one of "
                                f"{', '.join(RESIZE_IMPLEMENTATIONS)}")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of a ``height`` x ``width`` frame after this resize."""
        if self.size is not None:
            return self.size
        assert self.shorter_side is not None
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.shorter_side, int(self.shorter_side * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def to_dict(self) -> dict[str, Any]:
        return {"size": None if self.size is None else list(self.size), "shorter_side": self.shorter_side,
                "interpolation": self.interpolation, "implementation": self.implementation}

    @classmethod
    def from_dict(cls, d: Any, *, where: str) -> Resize:
        if not isinstance(d, Mapping):
            raise BadInputError(f"{where}: input 'resize' must be an object or null, got {d!r}")
        size = d.get("size")
        try:
            return cls(size=None if size is None else _size_pair(size, "resize size", where),
                       shorter_side=d.get("shorter_side"),
                       interpolation=_get(d, "interpolation", str, where, optional=True, default="bilinear"),
                       implementation=_get(d, "implementation", str, where, optional=True, default="pillow"))
        except BadInputError as exc:
            raise BadInputError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class CenterCrop:
    """The centre ``size`` (H, W) of a frame, as torchvision's ``CenterCrop`` (a frame smaller
    than that is padded with zeros first, evenly on both sides)."""

    size: tuple[int, int]

    def __post_init__(self) -> None:
        _size_pair(self.size, "crop size", "crop")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "center", "size": list(self.size)}

    @classmethod
    def from_dict(cls, d: Any, *, where: str) -> CenterCrop:
        if not isinstance(d, Mapping):
            raise BadInputError(f"{where}: input 'crop' must be an object or null, got {d!r}")
        kind = _get(d, "kind", str, where, optional=True, default="center")
        if kind != "center":
            raise BadInputError(f"{where}: crop kind {kind!r} is not supported (supported: center)")
        return cls(size=_size_pair(d.get("size"), "crop size", where))


@dataclass(frozen=True)
class InputSection:
    """What a member takes and how a raw batch is turned into it (module docstring)."""

    name: str
    shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dtype: str = "float32"
    layout: str = "NCHW"
    value_range: tuple[float, float] = (0.0, 1.0)
    normalized: bool = False
    resize: Resize | None = None
    crop: CenterCrop | None = None

    def __post_init__(self) -> None:
        where = f"input section of {self.name!r}"
        if self.dtype not in INPUT_DTYPES:
            raise BadInputError(f"{where}: dtype {self.dtype!r} is not one of {', '.join(INPUT_DTYPES)}")
        if self.layout not in LAYOUTS:
            raise BadInputError(f"{where}: layout {self.layout!r} is not supported (supported: {', '.join(LAYOUTS)})")
        if len(self.shape) != 3 or any(int(d) < 1 for d in self.shape):
            raise BadInputError(f"{where}: shape must be [C, H, W] of positive sizes, got {list(self.shape)}")
        channels = int(self.shape[0])
        if len(self.mean) not in (1, channels) or len(self.std) != len(self.mean):
            raise BadInputError(f"{where}: mean and std need one value (or one per channel), got "
                                f"{len(self.mean)} and {len(self.std)} for {channels} channels")
        if any(s <= 0 or not math.isfinite(s) for s in self.std) or not all(math.isfinite(m) for m in self.mean):
            raise BadInputError(f"{where}: mean must be finite and std finite and positive")
        lo, hi = self.value_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise BadInputError(f"{where}: value_range must be [low, high] with low < high")
        if not isinstance(self.normalized, bool):
            raise BadInputError(f"{where}: normalized must be true or false, got {self.normalized!r}")
        if self.normalized and (any(m != 0.0 for m in self.mean) or any(s != 1.0 for s in self.std)):
            raise BadInputError(f"{where}: normalized inputs take no mean/std (they arrive already normalised); "
                                f"mean must be 0 and std 1, got {list(self.mean)} and {list(self.std)}")
        if self.resize is not None and not isinstance(self.resize, Resize):
            raise BadInputError(f"{where}: resize must be a Resize or null, got {self.resize!r}")
        if self.crop is not None and not isinstance(self.crop, CenterCrop):
            raise BadInputError(f"{where}: crop must be a CenterCrop or null, got {self.crop!r}")
        if self.prepares_frames:
            if self.normalized:
                raise BadInputError(f"{where}: resize/crop take uint8 frames, which already-normalised inputs are "
                                    "not")
            size = (int(self.shape[1]), int(self.shape[2]))
            if self.crop is not None and self.crop.size != size:
                raise BadInputError(f"{where}: crop size {list(self.crop.size)} is not the input's [H, W] "
                                    f"{list(size)}")
            if self.crop is None and self.resize is not None and self.resize.size != size:
                raise BadInputError(f"{where}: without a crop, resize must give the input's [H, W] {list(size)} "
                                    "exactly (a shorter-side resize needs a crop)")

    @property
    def channels(self) -> int:
        return int(self.shape[0])

    @property
    def prepares_frames(self) -> bool:
        """Whether the member takes raw frames of any size (it resizes or crops them)."""
        return self.resize is not None or self.crop is not None

    def preprocessing(self) -> dict[str, Any]:
        """The fields that decide the numbers a member sees (all but ``name`` and ``dtype``)."""
        d = self.to_dict()
        del d["name"], d["dtype"]
        return d

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "layout": self.layout, "shape": [int(d) for d in self.shape],
                "value_range": [float(v) for v in self.value_range], "normalized": self.normalized,
                "mean": list(self.mean), "std": list(self.std),
                "resize": None if self.resize is None else self.resize.to_dict(),
                "crop": None if self.crop is None else self.crop.to_dict()}

    @classmethod
    def from_dict(cls, d: Any, *, where: str) -> InputSection:
        if not isinstance(d, Mapping):
            raise BadInputError(f"{where}: 'input' must be an object")
        shape = _get(d, "shape", list, where)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in shape):
            raise BadInputError(f"{where}: input 'shape' must be integers [C, H, W], got {shape!r}")
        value_range = _numbers(d.get("value_range", [0.0, 1.0]), "value_range", where)
        if len(value_range) != 2:
            raise BadInputError(f"{where}: input 'value_range' must be [low, high]")
        return cls(
            name=_get(d, "name", str, where), shape=tuple(shape),
            mean=_numbers(d.get("mean"), "mean", where), std=_numbers(d.get("std"), "std", where, positive=True),
            dtype=_get(d, "dtype", str, where, optional=True, default="float32"),
            layout=_get(d, "layout", str, where, optional=True, default="NCHW"),
            value_range=(value_range[0], value_range[1]),
            normalized=_get(d, "normalized", bool, where, optional=True, default=False),
            resize=None if d.get("resize") is None else Resize.from_dict(d["resize"], where=where),
            crop=None if d.get("crop") is None else CenterCrop.from_dict(d["crop"], where=where),
        )


@dataclass(frozen=True)
class TorchSource:
    """How the torch backend rebuilds a member: ``callable`` (``pkg.mod:fn``) builds the module,
    ``file`` (safetensors inside the bundle, hash ``sha256``) holds its weights."""

    callable: str
    file: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"callable": self.callable, "file": self.file, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, d: Any, *, where: str) -> TorchSource:
        if not isinstance(d, Mapping):
            raise BadInputError(f"{where}: 'torch_source' must be an object or null")
        ref = _get(d, "callable", str, where)
        module, sep, attr = ref.partition(":")
        if not (module and sep and attr):
            raise BadInputError(f"{where}: torch_source callable {ref!r} is not 'module:callable'")
        file = _get(d, "file", str, where, optional=True)
        sha = _sha256(d, "sha256", where) if file is not None else None
        return cls(ref, file, sha)


@dataclass(frozen=True)
class QuantizationSection:
    """How an INT8 member was quantized (module docstring; made by :mod:`wcx.export.precision`)."""

    reduce_range: bool
    calibration: str
    samples: int | None = None
    float_layers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"reduce_range": self.reduce_range, "calibration": self.calibration, "samples": self.samples,
                "float_layers": list(self.float_layers)}

    @classmethod
    def from_dict(cls, d: Any, *, where: str) -> QuantizationSection:
        if not isinstance(d, Mapping):
            raise BadInputError(f"{where}: 'quantization' must be an object or null")
        samples = _get(d, "samples", int, where, optional=True)
        if samples is not None and samples < 1:
            raise BadInputError(f"{where}: quantization 'samples' must be positive, got {samples}")
        layers = d.get("float_layers", [])  # absent before the field existed: nothing kept in float
        if not isinstance(layers, list) or not all(isinstance(layer, str) for layer in layers):
            raise BadInputError(f"{where}: quantization 'float_layers' must be a list of strings")
        return cls(reduce_range=_get(d, "reduce_range", bool, where),
                   calibration=_get(d, "calibration", str, where), samples=samples, float_layers=tuple(layers))

    @classmethod
    def from_export_report(cls, report: Mapping[str, Any]) -> QuantizationSection | None:
        """What an export report written before the field existed says (None: nothing, or
        nothing readable); its ``calibrate_method`` is onnxruntime's name, e.g. ``MinMax``."""
        checks = report.get("checks")
        int8 = checks.get("int8") if isinstance(checks, Mapping) else None
        options = int8.get("quantization") if isinstance(int8, Mapping) else None
        if not isinstance(options, Mapping) or not isinstance(options.get("reduce_range"), bool):
            return None
        method = options.get("calibrate_method", "MinMax")
        samples = options.get("calibration_samples")
        return cls(reduce_range=options["reduce_range"], calibration=str(method).lower(),
                   samples=samples if isinstance(samples, int) and not isinstance(samples, bool) and samples > 0
                   else None)


@dataclass(frozen=True)
class MemberSection:
    """One ensemble member (one cascade stage) as the manifest records it."""

    name: str
    file: str
    sha256: str
    precision: str
    input: InputSection
    output_name: str
    num_classes: int
    macs: int
    torch_source: TorchSource | None = None
    export_report: Mapping[str, Any] = field(default_factory=dict)
    quantization: QuantizationSection | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The input shape without the batch dimension, e.g. (C, H, W)."""
        return tuple(int(d) for d in self.input.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "file": self.file, "sha256": self.sha256, "precision": self.precision,
            "input": self.input.to_dict(), "output_name": self.output_name, "num_classes": self.num_classes,
            "macs": self.macs, "torch_source": None if self.torch_source is None else self.torch_source.to_dict(),
            "export_report": dict(self.export_report),
            "quantization": None if self.quantization is None else self.quantization.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any, *, where: str) -> MemberSection:
        if not isinstance(d, Mapping):
            raise BadInputError(f"{where}: a member must be an object")
        name = _get(d, "name", str, where)
        here = f"{where}, member {name!r}"
        precision = _get(d, "precision", str, here)
        if precision not in PRECISIONS:
            raise BadInputError(f"{here}: unknown precision {precision!r} (valid: {', '.join(PRECISIONS)})")
        num_classes = _get(d, "num_classes", int, here)
        macs = _get(d, "macs", int, here)
        if num_classes < 1 or macs < 0:
            raise BadInputError(f"{here}: num_classes must be >= 1 and macs >= 0")
        torch_source = d.get("torch_source")
        report = d.get("export_report") or {}
        if not isinstance(report, Mapping):
            raise BadInputError(f"{here}: 'export_report' must be an object")
        quantization = None
        if d.get("quantization") is not None:
            quantization = QuantizationSection.from_dict(d["quantization"], where=here)
        elif precision == "int8":
            quantization = QuantizationSection.from_export_report(report)
        return cls(
            name=name, file=_get(d, "file", str, here), sha256=_sha256(d, "sha256", here), precision=precision,
            input=InputSection.from_dict(d.get("input"), where=here), output_name=_get(d, "output_name", str, here),
            num_classes=num_classes, macs=macs,
            torch_source=None if torch_source is None else TorchSource.from_dict(torch_source, where=here),
            export_report=dict(report), quantization=quantization,
        )


# -------------------------------------------------------------------------------------------
# policy and calibration
# -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicySection:
    """The cascade's exit policy, its score, its task and the accept threshold ``tau``.

    ``tau`` None accepts every input (a policy set by hand, e.g. the full ensemble); ``task``
    None when a hand-written policy names none.
    """

    policy: Policy
    score: str = "msp"
    task: str | None = None
    tau: float | None = None
    combine: str = "mean"

    def __post_init__(self) -> None:
        check_combine(self.combine)

    def check(self, *, n_stages: int, num_classes: int, where: str = "policy") -> PolicySection:
        """Validate against a cascade of ``n_stages`` members and ``num_classes`` classes."""
        score = get_score(self.score)
        if self.task is not None:
            get_task(self.task)
        self.policy.check_stages(n_stages)
        low, high = score.bounds(num_classes)
        self.policy.check_range(low, high, where=f"{where} ({score.name})")
        if self.tau is not None:
            if not math.isfinite(self.tau):
                raise BadInputError(f"{where}: tau must be finite, got {self.tau}")
            slack = 1e-6 * max(1.0, abs(low), abs(high))
            if not low - slack <= self.tau <= high + slack:
                raise BadInputError(f"{where}: tau {self.tau:g} lies outside the range of score {score.name} "
                                    f"([{low:g}, {high:g}] for {num_classes} classes)")
        return self

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.policy.kind, "task": self.task, "score": self.score}
        if self.combine != "mean":  # written only when used: a version-3 manifest (module docstring)
            d["combine"] = self.combine
        d.update({k: v for k, v in self.policy.to_dict().items() if k != "kind"})
        d["tau"] = self.tau
        return d

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "policy") -> PolicySection:
        if not isinstance(d, Mapping):
            raise BadInputError(f"{where}: must be a JSON object")
        try:
            policy = policy_from_dict(d)
        except BadInputError as exc:
            raise BadInputError(f"{where}: {exc}") from None
        score = _get(d, "score", str, where, optional=True, default="msp")
        get_score(score)
        combine = _get(d, "combine", str, where, optional=True, default="mean")
        try:
            check_combine(combine)
        except BadInputError as exc:
            raise BadInputError(f"{where}: {exc}") from None
        task = _get(d, "task", str, where, optional=True)
        tau = d.get("tau")
        if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float))):
            raise BadInputError(f"{where}: tau must be a number or null, got {tau!r}")
        if tau is not None and not math.isfinite(tau):
            raise BadInputError(f"{where}: tau must be finite, got {tau!r}")
        return cls(policy=policy, score=score, task=task, tau=None if tau is None else float(tau), combine=combine)


def _count(d: Mapping[str, Any], key: str, where: str, *, most: int) -> int:
    value = _get(d, key, int, where)
    if not 0 <= value <= most:
        raise BadInputError(f"{where}: '{key}' must be in [0, {most}], got {value!r}")
    return int(value)


def _counts(d: Mapping[str, Any], key: str, where: str, *, most: int) -> tuple[int, ...]:
    value = _get(d, key, list, where)
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= most for v in value):
        raise BadInputError(f"{where}: '{key}' must hold integers in [0, {most}], got {value!r}")
    return tuple(int(v) for v in value)


@dataclass(frozen=True)
class ReferenceRates:
    """What the calibrated cascade did to its reference inputs, as counts: the baseline a drift
    monitor compares a deployment's label-free rates with (method.md section 8).

    The reference inputs are the certifying part (guaranteed mode) or the whole held-out set
    (empirical mode). ``n``: how many; ``pass_count[m-1]``: how many reached stage m (the first
    is ``n``); ``accept_count``: how many were accepted (``score >= tau``); ``score_levels``:
    quantile levels of the stage-1 score, ``score_quantiles``: the stage-1 score at those levels
    and ``score_exit_count[j]``: how many inputs exited at stage 1 with a score at or below
    ``score_quantiles[j]`` (what an output's ``score`` shows of the stage-1 scores: rows that
    continue carry a later stage's score); ``score_count[j]`` (version 2): how many inputs, of
    all ``n``, have a stage-1 score at or below ``score_quantiles[j]`` (what an output's
    ``first_score`` shows). ``independent``: whether the windows and the score quantiles were
    chosen on other inputs than these (guaranteed mode), which makes those counts exactly
    binomial; tau is always chosen on them, so the acceptance count never is.

    JSON (``version`` 1, without ``score_count``, is what wcx wrote before; it still loads)::

        {"version": 2, "n": 3500, "pass_count": [3500, 640], "accept_count": 2950,
         "independent": true, "score_levels": [0.1, 0.25, 0.5, 0.75, 0.9],
         "score_quantiles": [...], "score_exit_count": [...], "score_count": [...]}
    """

    n: int
    pass_count: tuple[int, ...]
    accept_count: int
    score_levels: tuple[float, ...] = ()
    score_quantiles: tuple[float, ...] = ()
    score_exit_count: tuple[int, ...] = ()
    independent: bool = False
    score_count: tuple[int, ...] | None = None  # None: a version-1 reference

    def __post_init__(self) -> None:
        where = "calibration reference"
        if self.n < 1 or not self.pass_count or self.pass_count[0] != self.n:
            raise BadInputError(f"{where}: needs n >= 1 and pass_count starting with n")
        if any(b > a for a, b in zip(self.pass_count, self.pass_count[1:], strict=False)):
            raise BadInputError(f"{where}: pass_count must not increase from stage to stage")
        if not len(self.score_levels) == len(self.score_quantiles) == len(self.score_exit_count):
            raise BadInputError(f"{where}: score_levels, score_quantiles and score_exit_count differ in length")
        if self.score_count is not None and len(self.score_count) != len(self.score_quantiles):
            raise BadInputError(f"{where}: score_count and score_quantiles differ in length")

    @property
    def version(self) -> int:
        """2 when the stage-1 score counts over every input are recorded, else 1."""
        return 1 if self.score_count is None else 2

    @property
    def pass_fraction(self) -> tuple[float, ...]:
        return tuple(c / self.n for c in self.pass_count)

    @property
    def accept_rate(self) -> float:
        return self.accept_count / self.n

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"n": self.n, "pass_count": list(self.pass_count), "accept_count": self.accept_count,
                             "independent": self.independent, "score_levels": list(self.score_levels),
                             "score_quantiles": list(self.score_quantiles),
                             "score_exit_count": list(self.score_exit_count)}
        if self.score_count is not None:
            d = {"version": 2, **d, "score_count": list(self.score_count)}
        return d

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "calibration reference") -> ReferenceRates:
        if not isinstance(d, Mapping):
            raise BadInputError(f"{where}: must be a JSON object")
        n = _get(d, "n", int, where)
        if n < 1:
            raise BadInputError(f"{where}: 'n' must be >= 1, got {n!r}")
        version = _get(d, "version", int, where, optional=True, default=1)
        if version not in (1, 2):
            raise BadInputError(f"{where}: version {version!r}; this wcx reads versions 1 and 2")
        levels = d.get("score_levels") or []
        quantiles = d.get("score_quantiles") or []
        if version == 2 and "score_count" not in d:
            raise BadInputError(f"{where}: version 2 needs 'score_count'")
        return cls(
            n=int(n), pass_count=_counts(d, "pass_count", where, most=n),
            accept_count=_count(d, "accept_count", where, most=n),
            score_levels=_numbers(levels, "score_levels", where) if levels else (),
            score_quantiles=_numbers(quantiles, "score_quantiles", where) if quantiles else (),
            score_exit_count=_counts(d, "score_exit_count", where, most=n) if d.get("score_exit_count") else (),
            independent=_get(d, "independent", bool, where, optional=True, default=False),
            score_count=None if version == 1 else _counts(d, "score_count", where, most=n),
        )


#: the calibration section's fields in the order they are written (target-specific ones follow)
CALIBRATION_FIELDS: tuple[str, ...] = (
    "backend", "precision", "task", "score", "policy", "risk", "delta", "mode", "certified", "risk_upper_bound",
    "n_needed", "seed", "fit_fraction", "n_fit", "n_certify", "coverage", "measured_risk", "pass_fraction",
    "expected_macs", "expected_cost", "cost", "eps", "n_boot", "stage_taus",
)


@dataclass(frozen=True)
class CalibrationSection:
    """What calibration fitted and measured, and the provenance of the logits it used.

    ``risk`` is the target rate (selective risk, or ``1 - tpr`` for OOD), ``measured_risk`` the
    rate at tau on the held-out data, ``mode`` ``empirical`` or ``guaranteed``, ``certified``
    whether Learn-then-Test passed. ``target_fields`` holds what a task adds (OOD:
    ``tpr_target``, ``tpr``, ``tpr_lower_bound``). ``backend``/``precision`` repeat the
    provenance's for readers of the JSON. ``class_names``: the class of each label, when the
    held-out data named them (an image folder's sorted subfolders); absent otherwise.
    ``reference``: the label-free rates a drift monitor compares with (:class:`ReferenceRates`;
    absent in calibrations written before it existed). ``history``: earlier calibrations that a
    re-certification replaced, oldest first, each ``{"replaced": time, "policy": {...},
    "calibration": {...}}`` (absent when none).
    """

    provenance: Provenance
    task: str
    score: str
    policy: str
    risk: float
    mode: str
    certified: bool
    pass_fraction: tuple[float, ...]
    delta: float | None = None
    risk_upper_bound: float | None = None
    n_needed: int | None = None
    seed: int = 0
    fit_fraction: float | None = None
    n_fit: int = 0
    n_certify: int = 0
    coverage: float | None = None
    measured_risk: float | None = None
    expected_macs: float | None = None
    expected_cost: float | None = None
    cost: str = "macs"
    eps: float | None = None
    n_boot: int | None = None
    stage_taus: tuple[float | None, ...] | None = None
    target_fields: Mapping[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None
    reference: ReferenceRates | None = None
    history: tuple[Mapping[str, Any], ...] = ()

    @property
    def backend(self) -> str:
        return self.provenance.backend

    @property
    def precision(self) -> str:
        return self.provenance.precision

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for key in CALIBRATION_FIELDS:
            value = getattr(self, key)
            d[key] = list(value) if isinstance(value, tuple) else value
        d.update(self.target_fields)
        if self.class_names is not None:  # written only by calibrations on data that names its classes
            d["class_names"] = list(self.class_names)
        if self.reference is not None:  # absent in calibrations written before drift monitoring
            d["reference"] = self.reference.to_dict()
        if self.history:
            d["history"] = [dict(h) for h in self.history]
        d["provenance"] = self.provenance.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Any, *, member_names: Sequence[str], where: str = "calibration") -> CalibrationSection:
        if not isinstance(d, Mapping):
            raise BadInputError(f"{where}: must be a JSON object")
        if d.get("provenance") is not None:
            provenance = _input_defaults(Provenance.from_dict(d["provenance"], where=f"{where} provenance"))
        else:
            provenance = Provenance.legacy(_get(d, "backend", str, where), str(d.get("precision") or ""), member_names)
        mode = _get(d, "mode", str, where)
        if mode not in ("empirical", "guaranteed"):
            raise BadInputError(f"{where}: mode must be empirical or guaranteed, got {mode!r}")
        pass_fraction = _numbers(_get(d, "pass_fraction", list, where), "pass_fraction", where)
        stage_taus = d.get("stage_taus")
        if stage_taus is not None and not isinstance(stage_taus, list):
            raise BadInputError(f"{where}: 'stage_taus' must be a list or null")
        known = set(CALIBRATION_FIELDS) | {"provenance", "class_names", "reference", "history"}
        history = d.get("history") or []
        if not isinstance(history, list) or not all(isinstance(h, Mapping) for h in history):
            raise BadInputError(f"{where}: 'history' must be a list of objects")
        class_names = d.get("class_names")
        if class_names is not None and (not isinstance(class_names, list)
                                        or not all(isinstance(c, str) for c in class_names)):
            raise BadInputError(f"{where}: 'class_names' must be a list of strings or null")
        return cls(
            provenance=provenance, task=_get(d, "task", str, where), score=_get(d, "score", str, where),
            policy=_get(d, "policy", str, where), risk=float(_number(d, "risk", where) or 0.0), mode=mode,
            certified=_get(d, "certified", bool, where), pass_fraction=pass_fraction,
            delta=_number(d, "delta", where, optional=True),
            risk_upper_bound=_number(d, "risk_upper_bound", where, optional=True),
            n_needed=_get(d, "n_needed", int, where, optional=True),
            seed=_get(d, "seed", int, where, optional=True, default=0),
            fit_fraction=_number(d, "fit_fraction", where, optional=True),
            n_fit=_get(d, "n_fit", int, where, optional=True, default=0),
            n_certify=_get(d, "n_certify", int, where, optional=True, default=0),
            coverage=_number(d, "coverage", where, optional=True),
            measured_risk=_number(d, "measured_risk", where, optional=True),
            expected_macs=_number(d, "expected_macs", where, optional=True),
            expected_cost=_number(d, "expected_cost", where, optional=True),
            cost=_get(d, "cost", str, where, optional=True, default="macs"),
            eps=_number(d, "eps", where, optional=True),
            n_boot=_get(d, "n_boot", int, where, optional=True),
            stage_taus=None if stage_taus is None else tuple(
                None if t is None else float(t) for t in stage_taus),
            target_fields={k: v for k, v in d.items() if k not in known},
            class_names=None if class_names is None else tuple(class_names),
            reference=None if d.get("reference") is None else ReferenceRates.from_dict(
                d["reference"], where=f"{where} reference"),
            history=tuple(dict(h) for h in history),
        )


def _input_defaults(provenance: Provenance) -> Provenance:
    """Input sections recorded before a field existed, with that field's default (its meaning
    then), so that they compare equal to today's record of the same preprocessing."""
    members = []
    for m in provenance.members:
        if m.input is not None and "normalized" not in m.input:
            m = replace(m, input={**m.input, "normalized": False})
        members.append(m)
    return replace(provenance, members=tuple(members))


# -------------------------------------------------------------------------------------------
# engines
# -------------------------------------------------------------------------------------------
def _profile(value: Any, where: str) -> dict[str, list[int]]:
    if not isinstance(value, Mapping):
        raise BadInputError(f"{where}: 'profile' must be an object with min, opt and max shapes")
    out: dict[str, list[int]] = {}
    for key in ("min", "opt", "max"):
        shape = value.get(key)
        if not isinstance(shape, list) or not shape or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape):
            raise BadInputError(f"{where}: profile '{key}' must be a list of positive integers, got {shape!r}")
        out[key] = [int(v) for v in shape]
    return out


@dataclass(frozen=True)
class EngineRecord:
    """One member's TensorRT engine: file, what built it, for which ONNX, and its profile."""

    member: str
    file: str
    sha256: str
    tensorrt_version: str
    compute_capability: str
    onnx_sha256: str
    profile: Mapping[str, Sequence[int]]
    gpu_name: str | None = None
    precision: str | None = None
    input_name: str | None = None
    output_name: str | None = None
    build_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def max_batch(self) -> int:
        """The largest batch the engine's profile accepts."""
        return int(self.profile["max"][0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "member": self.member, "file": self.file, "sha256": self.sha256,
            "tensorrt_version": self.tensorrt_version, "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability, "onnx_sha256": self.onnx_sha256,
            "precision": self.precision, "input_name": self.input_name, "output_name": self.output_name,
            "build_options": dict(self.build_options),
            "profile": {k: [int(v) for v in self.profile[k]] for k in ("min", "opt", "max")},
        }

    @classmethod
    def from_dict(cls, d: Any, *, where: str) -> EngineRecord:
        if not isinstance(d, Mapping):
            raise BadInputError(f"{where}: an engine record must be an object")
        options = d.get("build_options") or {}
        if not isinstance(options, Mapping):
            raise BadInputError(f"{where}: 'build_options' must be an object")
        return cls(
            member=_get(d, "member", str, where), file=_get(d, "file", str, where), sha256=_sha256(d, "sha256", where),
            tensorrt_version=_get(d, "tensorrt_version", str, where),
            compute_capability=_get(d, "compute_capability", str, where),
            onnx_sha256=_sha256(d, "onnx_sha256", where), profile=_profile(d.get("profile"), where),
            gpu_name=_get(d, "gpu_name", str, where, optional=True),
            precision=_get(d, "precision", str, where, optional=True),
            input_name=_get(d, "input_name", str, where, optional=True),
            output_name=_get(d, "output_name", str, where, optional=True),
            build_options=dict(options),
        )


@dataclass(frozen=True)
class TimingCacheRecord:
    """TensorRT's timing cache kept in the bundle, and what made it."""

    file: str
    sha256: str
    tensorrt_version: str
    compute_capability: str
    gpu_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "tensorrt_version": self.tensorrt_version,
                "gpu_name": self.gpu_name, "compute_capability": self.compute_capability}

    @classmethod
    def from_dict(cls, d: Any, *, where: str) -> TimingCacheRecord:
        if not isinstance(d, Mapping):
            raise BadInputError(f"{where}: the timing cache record must be an object")
        return cls(file=_get(d, "file", str, where), sha256=_sha256(d, "sha256", where),
                   tensorrt_version=_get(d, "tensorrt_version", str, where),
                   compute_capability=_get(d, "compute_capability", str, where),
                   gpu_name=_get(d, "gpu_name", str, where, optional=True))


@dataclass(frozen=True)
class EnginesSection:
    """The TensorRT engines of a bundle: one record per member that has one."""

    members: Mapping[str, EngineRecord]
    timing_cache: TimingCacheRecord | None = None
    backend: str = "tensorrt"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend,
                "timing_cache": None if self.timing_cache is None else self.timing_cache.to_dict(),
                "members": {name: rec.to_dict() for name, rec in self.members.items()}}

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "engines") -> EnginesSection:
        if not isinstance(d, Mapping):
            raise BadInputError(f"{where}: must be a JSON object")
        members = d.get("members") or {}
        if not isinstance(members, Mapping):
            raise BadInputError(f"{where}: 'members' must be an object of engine records")
        records = {}
        for name, rec in members.items():
            record = EngineRecord.from_dict(rec, where=f"{where}, member {name!r}")
            if record.member != name:
                raise BadInputError(f"{where}: the record under {name!r} is for member {record.member!r}")
            records[name] = record
        cache = d.get("timing_cache")
        return cls(members=records, backend=_get(d, "backend", str, where, optional=True, default="tensorrt"),
                   timing_cache=None if cache is None else TimingCacheRecord.from_dict(cache, where=f"{where} cache"))


# -------------------------------------------------------------------------------------------
# files the manifest names
# -------------------------------------------------------------------------------------------
def file_references(node: Any, where: str = "") -> list[tuple[str, str]]:
    """Every ``(file, sha256)`` the manifest's JSON form names, in document order.

    Any JSON object whose ``file`` is a string names a file inside the bundle, wherever it is
    (so a section added later is covered); its ``sha256`` must be present and valid, or the
    manifest is refused: a file without a hash would be used unverified.
    """
    out: list[tuple[str, str]] = []
    prefix = f"{where}: " if where else ""

    def walk(n: Any, at: str) -> None:
        if isinstance(n, Mapping):
            f = n.get("file")
            if f is not None:
                if not isinstance(f, str) or not f:
                    raise BadInputError(f"{prefix}{at}: 'file' must be a path inside the bundle, got {f!r}")
                sha = n.get("sha256")
                if not isinstance(sha, str) or not _SHA256.match(sha):
                    raise BadInputError(f"{prefix}{at}: file {f!r} has no valid sha256 (got {sha!r}); every file "
                                        "the manifest names must carry its hash")
                out.append((f, sha))
            for key, value in n.items():
                walk(value, f"{at}.{key}")
        elif isinstance(n, list):
            for i, value in enumerate(n):
                walk(value, f"{at}[{i}]")

    walk(node, "$")
    return out


# -------------------------------------------------------------------------------------------
# the manifest
# -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Manifest:
    """A whole ``wcx.json``: members in stage order and the sections written later."""

    members: tuple[MemberSection, ...]
    created: str = ""
    export: Mapping[str, Any] = field(default_factory=dict)
    policy: PolicySection | None = None
    calibration: CalibrationSection | None = None
    engines: EnginesSection | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self._check_members()
        file_references(self.to_dict())
        if self.policy is not None:
            self.policy.check(n_stages=len(self.members), num_classes=self.num_classes)

    # -- views -----------------------------------------------------------------------------
    @property
    def member_names(self) -> list[str]:
        return [m.name for m in self.members]

    @property
    def num_classes(self) -> int:
        return self.members[0].num_classes

    @property
    def input(self) -> InputSection:
        """Stage 1's input section (the members' shared one, unless :attr:`takes_frames`)."""
        return self.members[0].input

    @property
    def takes_frames(self) -> bool:
        """Whether the members take raw frames (they resize or crop them, each to its own input):
        a batch (N, C, H, W) is then N uint8 frames of any one size."""
        return any(m.input.prepares_frames for m in self.members)

    def with_sections(self, **sections: Any) -> Manifest:
        """A copy with ``policy``, ``calibration``, ``engines`` or ``export`` replaced; each given
        as its typed section, its JSON form (validated), or None."""
        unknown = set(sections) - {"policy", "calibration", "engines", "export"}
        if unknown:
            raise ValueError(f"cannot replace {', '.join(sorted(unknown))} (members are fixed once written)")
        readers: dict[str, Any] = {
            "policy": (PolicySection, PolicySection.from_dict),
            "calibration": (CalibrationSection,
                            lambda d: CalibrationSection.from_dict(d, member_names=self.member_names)),
            "engines": (EnginesSection, EnginesSection.from_dict),
        }
        typed = {}
        for key, value in sections.items():
            if key in readers and value is not None and not isinstance(value, readers[key][0]):
                value = readers[key][1](value)
            typed[key] = value
        return replace(self, **typed)

    def _check_members(self) -> None:
        if not self.members:
            raise BadInputError("the manifest lists no members")
        first = self.members[0]
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise BadInputError(f"member names are not unique: {names}")
        own_inputs = all(m.input.prepares_frames for m in self.members)  # each makes its input from a frame
        for m in self.members[1:]:
            if m.sample_shape != first.sample_shape and not own_inputs:
                raise BadInputError(f"members {first.name!r} and {m.name!r} have different input shapes "
                                    f"{first.sample_shape} and {m.sample_shape} (one shape per bundle, unless "
                                    "every member resizes or crops raw frames)")
            if m.input.preprocessing() != first.input.preprocessing() and not own_inputs:
                raise BadInputError(f"members {first.name!r} and {m.name!r} use different preprocessing (allowed "
                                    "only when every member resizes or crops raw frames)")
            if m.num_classes != first.num_classes:
                raise BadInputError(f"members {first.name!r} and {m.name!r} have different class counts")

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        # version 3 only where a version-3 field is used, so older wcx still read everything else
        # and refuse (rather than misread) a cascade whose stages keep their own member's output
        uses_v3 = self.policy is not None and self.policy.combine != "mean"
        return {
            "schema_version": COMBINE_SCHEMA_VERSION if uses_v3 else SCHEMA_VERSION,
            "created": self.created,
            "export": dict(self.export),
            "members": [m.to_dict() for m in self.members],
            "policy": None if self.policy is None else self.policy.to_dict(),
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "engines": None if self.engines is None else self.engines.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "manifest") -> Manifest:
        """Read (and migrate) a manifest; ``BadInputError`` naming what is wrong."""
        if not isinstance(d, Mapping):
            raise BadInputError(f"{where}: not a JSON object")
        version = d.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise BadInputError(f"{where}: schema_version {version!r} is not supported by this wcx (it reads "
                                f"{', '.join(map(str, READABLE_VERSIONS))}); re-export the bundle or upgrade wcx")
        original = version
        if version == 1:
            d = migrate_v1(d)
        raw_members = d.get("members")
        if not isinstance(raw_members, list) or not raw_members:
            raise BadInputError(f"{where}: the manifest lists no members")
        members = tuple(MemberSection.from_dict(m, where=where) for m in raw_members)
        export = d.get("export") or {}
        if not isinstance(export, Mapping):
            raise BadInputError(f"{where}: 'export' must be an object")
        try:
            manifest = cls(
                members=members, created=str(d.get("created") or ""), export=dict(export),
                policy=None if d.get("policy") is None else PolicySection.from_dict(d["policy"]),
                calibration=None if d.get("calibration") is None else CalibrationSection.from_dict(
                    d["calibration"], member_names=[m.name for m in members]),
                engines=None if d.get("engines") is None else EnginesSection.from_dict(d["engines"]),
                schema_version=int(original),
            )
        except BadInputError as exc:
            raise BadInputError(f"{where}: {exc}") from None
        return manifest


def migrate_v1(d: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 manifest in version 2's form (see the module docstring); ``d`` is unchanged."""
    out = {k: v for k, v in d.items() if k not in ("provenance", "members")}
    out["schema_version"] = SCHEMA_VERSION
    out["export"] = d.get("provenance") or {}
    members = []
    for m in d.get("members") or []:
        if not isinstance(m, Mapping):
            members.append(m)
            continue
        shape = m.get("input_shape")
        pre_raw = m.get("preprocess")
        pre: Mapping[str, Any] = pre_raw if isinstance(pre_raw, Mapping) else {}
        new = {k: v for k, v in m.items() if k not in ("input_name", "input_shape", "input_dtype", "preprocess")}
        new["input"] = {
            "name": m.get("input_name"), "dtype": m.get("input_dtype", "float32"), "layout": "NCHW",
            "shape": list(shape[1:]) if isinstance(shape, list) else shape,
            "value_range": [0.0, 1.0], "mean": pre.get("mean"), "std": pre.get("std"), "resize": None, "crop": None,
        }
        members.append(new)
    out["members"] = members
    policy = d.get("policy")
    if isinstance(policy, Mapping) and policy.get("kind") == "window" and isinstance(policy.get("windows"), list):
        windows = []
        for w in policy["windows"]:
            # version 1 wrote a stage no input reaches as the inverted pair (1.0, 0.0)
            inverted = (isinstance(w, list) and len(w) == 2 and all(isinstance(v, (int, float)) for v in w)
                        and w[0] > w[1])
            windows.append([] if inverted else w)
        out["policy"] = {**policy, "windows": windows}
    return out
