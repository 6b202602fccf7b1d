"""Reading the data files wcx takes: ``.npz`` arrays and MNIST-style IDX files.

An ``.npz`` data file holds ``x`` with shape (N, C, H, W), float32 (already in [0, 1]) or uint8
(scaled to [0, 1] by the runtime before the manifest's mean/std), and optionally ``y`` with shape
(N,), integer class labels. Every problem is reported as a one-line ``BadInputError`` that names
the file.
"""

from __future__ import annotations

import gzip
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wcx.errors import BadInputError

# IDX type codes (http://yann.lecun.com/exdb/mnist/): the third byte of the magic number.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` (N, C, H, W) and optional labels ``y`` (N,) read from one file."""

    x: np.ndarray
    y: np.ndarray | None
    path: Path

    def __len__(self) -> int:
        return int(self.x.shape[0])


def validate_inputs(
    x: np.ndarray,
    *,
    where: str = "input",
    sample_shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Check a batch of inputs and return it unchanged.

    Accepts float32 (values taken as already in [0, 1]) or uint8, shape (N, C, H, W) with N >= 1,
    and when ``sample_shape`` is given, (C, H, W) equal to it. Float inputs must be finite.
    Raises ``BadInputError`` naming ``where`` otherwise.
    """
    if not isinstance(x, np.ndarray):
        raise BadInputError(f"{where}: expected a numpy array, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.uint8):
        raise BadInputError(f"{where}: dtype {x.dtype} is not supported (use float32 in [0, 1] or uint8)")
    if x.ndim != 4:
        raise BadInputError(f"{where}: expected shape (N, C, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise BadInputError(f"{where}: the batch is empty")
    if sample_shape is not None and tuple(x.shape[1:]) != tuple(sample_shape):
        raise BadInputError(
            f"{where}: sample shape {tuple(x.shape[1:])} does not match the expected {tuple(sample_shape)}"
        )
    if x.dtype == np.float32 and not np.isfinite(x).all():
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


def load_npz(
    path: str | Path,
    *,
    require_labels: bool = False,
    sample_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> Dataset:
    """Read and validate an ``.npz`` data file with ``x`` and optional ``y``.

    Raises ``BadInputError`` (one line, naming the file) for a missing or corrupt file, a
    missing key, a wrong shape or dtype, NaN/inf, or labels out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such data file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if "x" not in keys:
                raise BadInputError(f"{path}: missing key 'x' (found: {', '.join(sorted(keys)) or 'none'})")
            x = archive["x"]
            y = archive["y"] if "y" in keys else None
    except BadInputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BadInputError(f"{path}: not a readable .npz file ({exc})") from None
    validate_inputs(x, where=str(path), sample_shape=sample_shape)
    if y is None:
        if require_labels:
            raise BadInputError(f"{path}: labels 'y' are required here but the file has none")
    else:
        y = validate_labels(y, x.shape[0], where=str(path), num_classes=num_classes)
    return Dataset(x=x, y=y, path=path)


def save_npz(path: str | Path, x: np.ndarray, y: np.ndarray | None = None) -> None:
    """Write ``x`` (and ``y``) as a compressed ``.npz``, atomically."""
    from wcx.atomic import atomic_write

    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        if y is None:
            np.savez_compressed(fh, x=x)
        else:
            np.savez_compressed(fh, x=x, y=y)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST / Fashion-MNIST format), gzipped or not, into a numpy array.

    Multi-byte values are big-endian in the file; the result is in native byte order.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such IDX file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise BadInputError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise BadInputError(f"{path}: not an IDX file (bad magic number)")
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BadInputError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise BadInputError(
            f"{path}: IDX body has {len(raw) - header} bytes, the header promises {expected}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))
