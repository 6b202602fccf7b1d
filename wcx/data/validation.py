"""The checks every batch of inputs and every label array passes, wherever it came from.

A batch is (N, C, H, W), float32 (in the bundle's input range, [0, 1] by default: that range is
the input section's business, :class:`wcx.core.preprocess.Preprocessor`) or uint8, N >= 1,
finite. Labels are integers (N,) in [0, num_classes). Every problem is a one-line
``BadInputError`` naming where the data came from.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from wcx.errors import BadInputError

_INPUT_DTYPES = (np.dtype(np.float32), np.dtype(np.uint8))


def check_input_layout(dtype: Any, shape: tuple[int, ...], *, where: str = "input",
                       sample_shape: tuple[int, ...] | None = None) -> None:
    """The dtype and shape rules of :func:`validate_inputs`, on a header before any data is read."""
    if np.dtype(dtype) not in _INPUT_DTYPES:
        raise BadInputError(f"{where}: dtype {np.dtype(dtype)} is not supported (use float32 in [0, 1] or uint8)")
    if len(shape) != 4:
        raise BadInputError(f"{where}: expected shape (N, C, H, W), got {tuple(shape)}")
    if shape[0] == 0:
        raise BadInputError(f"{where}: the batch is empty")
    if sample_shape is not None and tuple(shape[1:]) != tuple(sample_shape):
        raise BadInputError(
            f"{where}: sample shape {tuple(shape[1:])} does not match the expected {tuple(sample_shape)}"
        )


def validate_inputs(
    x: np.ndarray,
    *,
    where: str = "input",
    sample_shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Check a batch of inputs and return it unchanged.

    Accepts float32 or uint8, shape (N, C, H, W) with N >= 1, and when ``sample_shape`` is
    given, (C, H, W) equal to it. Float inputs must be finite (their range is the input
    section's business: :class:`wcx.core.preprocess.Preprocessor`). Raises ``BadInputError``
    naming ``where`` otherwise.
    """
    if not isinstance(x, np.ndarray):
        raise BadInputError(f"{where}: expected a numpy array, got {type(x).__name__}")
    check_input_layout(x.dtype, tuple(x.shape), where=where, sample_shape=sample_shape)
    # min and max propagate NaN and show infinities without a temporary array of flags
    if x.dtype == np.float32 and not (math.isfinite(float(x.min())) and math.isfinite(float(x.max()))):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise BadInputError(f"{where}: {bad} values are NaN or infinite")
    return x


def validate_labels(y: np.ndarray, n: int, *, where: str, num_classes: int | None = None) -> np.ndarray:
    """Check labels: shape (n,), integer dtype, values in [0, num_classes). Returns them as int64."""
    if y.ndim != 1 or y.shape[0] != n:
        raise BadInputError(f"{where}: labels 'y' must have shape ({n},), got {tuple(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise BadInputError(f"{where}: labels 'y' must be integers, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise BadInputError(f"{where}: labels 'y' contain negative values (min {y.min()})")
    if num_classes is not None and y.size and y.max() >= num_classes:
        raise BadInputError(
            f"{where}: label {int(y.max())} is out of range for {num_classes} classes"
        )
    return y.astype(np.int64, copy=False)
