"""The serving contract: the tensors a served cascade takes and returns, and the checks on them.

One contract serves both ways of putting a cascade behind Triton (``wcx serve`` through PyTriton,
and the Python-backend model of ``wcx export-triton``), so a client sees the same model either
way. Conventions, per request of N rows (Triton's batch dimension is the first one):

* input ``x``: (N, C, H, W) in the bundle's input contract (method.md section 5), as one dtype
  per server: ``float32`` (values in the bundle's input range, [0, 1] unless declared otherwise)
  or ``uint8`` (raw pixels; the only choice for bundles whose members resize frames);
* outputs, one row per input row: ``pred`` INT64 (N, 1), ``score`` FP64 (N, 1), ``accept`` BOOL
  (N, 1), ``exit_stage`` INT64 (N, 1) (1-based: how many members ran), and with probabilities
  on, ``probs`` FP32 (N, K). The trailing 1 is Triton's per-row shape of a scalar.

A request that breaks the contract (another shape or dtype: refused by Triton itself; a float
outside the input range, NaN or infinity: refused by :meth:`ServingContract.check_request`)
gets an error response naming the problem, and the server goes on serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from wcx.core.manifest import InputSection
from wcx.core.preprocess import Preprocessor
from wcx.data import validate_inputs
from wcx.errors import BadInputError

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "INPUT_DTYPES", "TensorSpec", "ServingContract", "rows_of"]

INPUT_NAME = "x"
#: the outputs every served cascade returns, in order (``probs`` is added when asked)
OUTPUT_NAMES = ("pred", "score", "accept", "exit_stage")
#: the input dtypes a server can take
INPUT_DTYPES = ("float32", "uint8")


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the served model: its name, numpy dtype and per-row shape (no batch dim)."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]

    @property
    def triton_dtype(self) -> str:
        """Triton's name of the dtype (``TYPE_FP32`` in a config.pbtxt is ``"TYPE_" + this``)."""
        return _TRITON_DTYPES[self.dtype.name]


_TRITON_DTYPES = {"float32": "FP32", "float64": "FP64", "uint8": "UINT8", "int64": "INT64", "bool": "BOOL"}


@dataclass(frozen=True)
class ServingContract:
    """What a served cascade takes and returns.

    ``sample_shape``: (C, H, W); ``input_dtype``: ``"float32"`` or ``"uint8"``; ``probs``:
    whether ``probs`` is an output; ``preprocessor``: the bundle's input section's checks
    (its range check refuses floats outside the input contract).
    """

    sample_shape: tuple[int, ...]
    num_classes: int
    input_dtype: str
    probs: bool
    preprocessor: Preprocessor

    def __post_init__(self) -> None:
        if self.input_dtype not in INPUT_DTYPES:
            raise BadInputError(f"input_dtype {self.input_dtype!r}: use one of {', '.join(INPUT_DTYPES)}")

    @classmethod
    def for_cascade(cls, cascade: Any, *, input_dtype: str | None = None, probs: bool = False) -> ServingContract:
        """The contract of a loaded :class:`~wcx.runtime.cascade.Cascade`. ``input_dtype``
        defaults to uint8 for bundles whose members resize frames (they take pixels only), and
        float32 otherwise."""
        return cls.for_input(cascade.input, num_classes=cascade.num_classes, takes_frames=cascade.takes_frames,
                             input_dtype=input_dtype, probs=probs)

    @classmethod
    def for_input(cls, section: InputSection, *, num_classes: int, takes_frames: bool, input_dtype: str | None = None,
                  probs: bool = False) -> ServingContract:
        """The contract for a cascade whose first member's input section is ``section``
        (``takes_frames``: some member resizes or crops frames)."""
        if input_dtype is None:
            input_dtype = "uint8" if takes_frames else "float32"
        if takes_frames and input_dtype != "uint8":
            raise BadInputError("input_dtype: this bundle's members resize raw frames, which are uint8 images: "
                                "serve it with input_dtype='uint8'")
        return cls(sample_shape=tuple(int(d) for d in section.shape), num_classes=int(num_classes),
                   input_dtype=input_dtype, probs=probs, preprocessor=Preprocessor(section))

    # -- tensors -----------------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec(INPUT_NAME, np.dtype(self.input_dtype), self.sample_shape),)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        specs = [TensorSpec("pred", np.dtype(np.int64), (1,)), TensorSpec("score", np.dtype(np.float64), (1,)),
                 TensorSpec("accept", np.dtype(np.bool_), (1,)), TensorSpec("exit_stage", np.dtype(np.int64), (1,))]
        if self.probs:
            specs.append(TensorSpec("probs", np.dtype(np.float32), (self.num_classes,)))
        return tuple(specs)

    # -- checks and responses ----------------------------------------------------------------
    def check_request(self, x: Any, *, where: str = "request") -> np.ndarray:
        """``x`` if it keeps the contract, else a ``BadInputError`` naming ``where`` and the
        problem (shape, dtype, values outside the input range, NaN or infinity)."""
        if not isinstance(x, np.ndarray):
            raise BadInputError(f"{where}: input {INPUT_NAME!r} is missing")
        if x.dtype != np.dtype(self.input_dtype):
            raise BadInputError(f"{where}: input {INPUT_NAME!r} must be {self.input_dtype}, got {x.dtype}")
        checked: np.ndarray = validate_inputs(x, where=where, sample_shape=self.sample_shape)
        if checked.dtype == np.float32:
            self.preprocessor.check_range(checked, where=where)
        return checked

    def response(self, out: Any) -> dict[str, np.ndarray]:
        """The output tensors of a :class:`~wcx.runtime.executor.CascadeOutput` (N rows)."""
        tensors = {
            "pred": np.asarray(out.pred, dtype=np.int64).reshape(-1, 1),
            "score": np.asarray(out.score, dtype=np.float64).reshape(-1, 1),
            "accept": np.asarray(out.accept, dtype=np.bool_).reshape(-1, 1),
            "exit_stage": np.asarray(out.exit_stage, dtype=np.int64).reshape(-1, 1),
        }
        if self.probs:
            tensors["probs"] = np.asarray(out.probs, dtype=np.float32)
        return tensors


def rows_of(sizes: list[int]) -> list[tuple[int, int]]:
    """The (start, stop) rows of consecutive requests of ``sizes`` rows in one concatenated batch.

    >>> rows_of([2, 1, 3])
    [(0, 2), (2, 3), (3, 6)]
    """
    bounds, start = [], 0
    for n in sizes:
        bounds.append((start, start + n))
        start += n
    return bounds
