"""MNIST-style IDX files: ``*-images-idx3-ubyte[.gz]`` and their ``*-labels-idx1-ubyte[.gz]``.

An IDX file (http://yann.lecun.com/exdb/mnist/) is a big-endian header (two zero bytes, a type
code, the number of dimensions, then each dimension as 4 bytes) and the values, gzipped or not.
:func:`read_idx` reads one whole; :class:`IdxFiles` is an images file (N, H, W) with the labels
file beside it as a :class:`~wcx.data.source.DataSource`: the labels are read whole (N bytes),
the images as (N, 1, H, W) chunks of rows streamed from the (decompressed) file, so memory stays
bounded whatever N. The labels file is found by its name (``images-idx3`` -> ``labels-idx1``).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from wcx.atomic import atomic_write
from wcx.data.source import Batch, DataSource, check_rows
from wcx.data.validation import check_input_layout, validate_inputs, validate_labels
from wcx.errors import BadInputError
from wcx.file_hash import sha256_file

# IDX type codes (http://yann.lecun.com/exdb/mnist/): the third byte of the magic number.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _open(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed when it is gzipped (its name ends in ``.gz``, or its first
    bytes say so)."""
    with open(path, "rb") as fh:
        gzipped = path.suffix == ".gz" or fh.read(2) == _GZIP_MAGIC
    opener: Any = gzip.open if gzipped else open
    stream: IO[bytes] = opener(path, "rb")
    return stream


def _header(fh: IO[bytes], path: Path) -> tuple[np.dtype[Any], tuple[int, ...]]:
    magic = fh.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise BadInputError(f"{path}: not an IDX file (bad magic number)")
    ndim = magic[3]
    dims = fh.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise BadInputError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
    return _IDX_DTYPES[magic[2]], shape


def is_idx(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts like an IDX file (gzipped or not)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with _open(path) as fh:
            magic = fh.read(4)
    except (OSError, EOFError):
        return False
    return len(magic) == 4 and magic[0] == 0 and magic[1] == 0 and magic[2] in _IDX_DTYPES


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST / Fashion-MNIST format), gzipped or not, into a numpy array.

    Multi-byte values are big-endian in the file; the result is in native byte order.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such IDX file")
    try:
        with _open(path) as fh:
            dtype, shape = _header(fh, path)
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise BadInputError(f"{path}: cannot read ({exc})") from None
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise BadInputError(f"{path}: IDX body has {len(raw)} bytes, the header promises {expected}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def labels_path_for(images: Path) -> Path:
    """The labels file named like ``images`` (``...-images-idx3-ubyte[.gz]`` ->
    ``...-labels-idx1-ubyte[.gz]``); the images path itself when the name has no such part."""
    return images.with_name(images.name.replace("images-idx3", "labels-idx1"))


class IdxFiles(DataSource):
    """An IDX images file (N, H, W) of uint8 (or float32 in [0, 1]) and its labels file.

    ``labels``: the labels file, or None to look for it beside the images
    (:func:`labels_path_for`); without one the data has no labels. Opening reads the labels and
    the images' header; :meth:`batches` streams the images as (k, 1, H, W) rows.
    """

    def __init__(
        self,
        images: str | Path,
        labels: str | Path | None = None,
        *,
        require_labels: bool = False,
        sample_shape: tuple[int, ...] | None = None,
        num_classes: int | None = None,
    ) -> None:
        images = Path(images)
        if not images.is_file():
            raise BadInputError(f"{images}: no such IDX file")
        self.path = images
        self.name = str(images)
        try:
            with _open(images) as fh:
                dtype, shape = _header(fh, images)
        except (OSError, EOFError) as exc:
            raise BadInputError(f"{images}: cannot read ({exc})") from None
        if len(shape) == 1:
            raise BadInputError(f"{images}: this is an IDX labels file (one dimension); give the images file")
        if len(shape) != 3:
            raise BadInputError(f"{images}: IDX images must be (N, H, W), got {shape}")
        self._dtype = dtype
        self._raw_shape = shape
        out_dtype = np.dtype(np.float32) if dtype.kind == "f" else dtype.newbyteorder("=")
        self.dtype = out_dtype
        check_input_layout(out_dtype, (shape[0], 1, shape[1], shape[2]), where=str(images),
                           sample_shape=sample_shape)
        found = Path(labels) if labels is not None else labels_path_for(images)
        self.labels_path: Path | None = None
        if found != images and found.is_file():
            y = read_idx(found)
            if y.ndim != 1:
                raise BadInputError(f"{found}: IDX labels must have one dimension, got shape {y.shape}")
            self.y = validate_labels(y, shape[0], where=str(found), num_classes=num_classes)
            self.labels_path = found
        elif labels is not None:
            raise BadInputError(f"{found}: no such IDX labels file")
        elif require_labels:
            raise BadInputError(f"{images}: labels are required here, but there is no labels file {found.name} "
                                "beside it")

    @property
    def n(self) -> int:
        return int(self._raw_shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (1, int(self._raw_shape[1]), int(self._raw_shape[2]))

    def batches(self, rows: int) -> Iterator[Batch]:
        rows = check_rows(rows)
        n, (h, w) = self.n, self._raw_shape[1:]
        row_bytes = self._dtype.itemsize * h * w
        try:
            with _open(self.path) as fh:  # type: ignore[arg-type]
                _header(fh, self.path)  # type: ignore[arg-type]
                for a in range(0, n, rows):
                    k = min(rows, n - a)
                    buf = fh.read(k * row_bytes)
                    if len(buf) != k * row_bytes:
                        raise BadInputError(f"{self.path}: the images are truncated (row {a} of {n})")
                    x = np.frombuffer(buf, dtype=self._dtype).reshape(k, 1, h, w).astype(self.dtype)
                    where = f"{self.path} rows {a}..{a + k}"
                    yield Batch(validate_inputs(x, where=where), None if self.y is None else self.y[a : a + k],
                                start=a)
        except (OSError, EOFError) as exc:
            raise BadInputError(f"{self.path}: cannot read ({exc})") from None

    def content_key(self) -> str:
        """``idx:`` and the sha256 of the images file, and of the labels file when there is one."""
        assert self.path is not None
        parts = [sha256_file(self.path)] + ([] if self.labels_path is None else [sha256_file(self.labels_path)])
        return "idx:" + "+".join(parts)


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` (uint8, or another IDX type) as an IDX file, gzipped when ``compress``
    (default: when the name ends in ``.gz``)."""
    path = Path(path)
    codes = {v.newbyteorder("=") if v.itemsize > 1 else v: k for k, v in _IDX_DTYPES.items()}
    dtype = array.dtype.newbyteorder("=") if array.dtype.itemsize > 1 else array.dtype
    if dtype not in codes:
        raise BadInputError(f"{path}: IDX cannot hold dtype {array.dtype}")
    header = bytes([0, 0, codes[dtype], array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    body = np.ascontiguousarray(array).astype(array.dtype.newbyteorder(">")).tobytes()
    gzipped = compress if compress is not None else path.suffix == ".gz"
    with atomic_write(path) as tmp:
        opener: Any = gzip.open if gzipped else open
        with opener(tmp, "wb") as fh:
            fh.write(header + body)
    return path
