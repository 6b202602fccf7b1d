""".npz data files: ``x`` (N, C, H, W) and optional labels ``y`` (N,), read in bounded memory.

An ``.npz`` data file holds ``x`` with shape (N, C, H, W), float32 (already in the bundle's input
range, [0, 1] by default) or uint8 (scaled to [0, 1] by the runtime before the manifest's
mean/std), and optionally ``y`` with shape (N,), integer class labels. Every problem is reported
as a one-line ``BadInputError`` that names the file.

Large files are read in bounded memory (:class:`DataFile`): the labels are read whole, ``x`` in
chunks of rows. An ``x`` stored uncompressed (``np.savez``) is memory-mapped in place; a
compressed one (``np.savez_compressed``) is decompressed chunk by chunk as it is read, so only
one pass over it is cheap. :func:`load_npz` reads a file whole (memory-mapped where it can).
"""

from __future__ import annotations

import math
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from wcx.data.source import Batch, Dataset, DataSource, check_rows
from wcx.data.validation import check_input_layout, validate_inputs, validate_labels
from wcx.errors import BadInputError
from wcx.file_hash import sha256_file

_ZIP_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip member's local header (PKWARE APPNOTE 4.3.7)


class DataFile(DataSource):
    """An ``.npz`` data file opened for reading in bounded memory.

    Opening reads the labels ``y`` (validated) and the header of ``x`` (dtype and shape checked,
    no pixel read yet); :meth:`chunks` then yields validated blocks of rows, :meth:`read` all of
    ``x`` (memory-mapped when it is stored uncompressed). ``sha256`` hashes the file on demand.
    """

    path: Path

    def __init__(
        self,
        path: str | Path,
        *,
        require_labels: bool = False,
        sample_shape: tuple[int, ...] | None = None,
        num_classes: int | None = None,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"{path}: no such data file")
        self.path = path
        self.name = str(path)
        stat = path.stat()
        self._stat = (stat.st_size, stat.st_mtime_ns)
        self._sha256: str | None = None
        try:
            with zipfile.ZipFile(path) as archive:
                keys = {n[:-4] for n in archive.namelist() if n.endswith(".npy")}
                if "x" not in keys:
                    raise BadInputError(f"{path}: missing key 'x' (found: {', '.join(sorted(keys)) or 'none'})")
                info = archive.getinfo("x.npy")
                with archive.open(info) as fh:
                    shape, fortran, dtype = _npy_header(fh)
                    header_bytes = fh.tell()
                y = None
                if "y" in keys:
                    with archive.open("y.npy") as fh:
                        y = np.lib.format.read_array(fh, allow_pickle=False)
                offset = self._data_offset(info, header_bytes)
        except BadInputError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError, struct.error) as exc:
            raise BadInputError(f"{path}: not a readable .npz file ({exc})") from None
        check_input_layout(dtype, shape, where=str(path), sample_shape=sample_shape)
        self.dtype = np.dtype(dtype)
        self.shape = shape
        self._fortran = fortran
        self._offset = None if fortran else offset
        if y is None:
            if require_labels:
                raise BadInputError(f"{path}: labels 'y' are required here but the file has none")
        else:
            y = validate_labels(y, shape[0], where=str(path), num_classes=num_classes)
        self.y: np.ndarray | None = y

    def _data_offset(self, info: zipfile.ZipInfo, header_bytes: int) -> int | None:
        """Where ``x``'s data start in the file, when it is stored uncompressed (else None)."""
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            return None
        with open(self.path, "rb") as fh:
            fh.seek(info.header_offset)
            fields = _ZIP_LOCAL_HEADER.unpack(fh.read(_ZIP_LOCAL_HEADER.size))
        if fields[0] != b"PK\x03\x04":
            return None
        return int(info.header_offset + _ZIP_LOCAL_HEADER.size + fields[10] + fields[11] + header_bytes)

    @property
    def n(self) -> int:
        return int(self.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.shape[1:])

    @property
    def memory_mapped(self) -> bool:
        """Whether ``x`` is read in place (stored uncompressed) rather than decompressed."""
        return self._offset is not None

    def __len__(self) -> int:
        return self.n

    def _mapped(self) -> np.ndarray:
        assert self._offset is not None
        x: np.ndarray = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self._offset, shape=self.shape)
        return x

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        """``x`` in blocks of at most ``rows`` rows, in order, each validated (finite floats)."""
        rows = check_rows(rows)
        n = self.n
        if self._offset is not None:
            x = self._mapped()
            for a in range(0, n, rows):
                yield validate_inputs(np.asarray(x[a : a + rows]), where=f"{self.path} rows {a}..{min(a + rows, n)}")
            return
        if self._fortran:
            x = self.read()
            for a in range(0, n, rows):
                yield x[a : a + rows]
            return
        row_bytes = self.dtype.itemsize * math.prod(self.sample_shape)
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open("x.npy") as fh:
                _npy_header(fh)
                for a in range(0, n, rows):
                    k = min(rows, n - a)
                    buf = bytearray(k * row_bytes)
                    if fh.readinto(buf) != len(buf):  # type: ignore[attr-defined]
                        raise BadInputError(f"{self.path}: 'x' is truncated (row {a} of {n})")
                    chunk = np.frombuffer(buf, dtype=self.dtype).reshape((k, *self.sample_shape))
                    yield validate_inputs(chunk, where=f"{self.path} rows {a}..{a + k}")
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise BadInputError(f"{self.path}: not a readable .npz file ({exc})") from None

    def batches(self, rows: int) -> Iterator[Batch]:
        """:meth:`chunks` with the labels of their rows."""
        start = 0
        for x in self.chunks(rows):
            k = int(x.shape[0])
            yield Batch(x, None if self.y is None else self.y[start : start + k], start=start)
            start += k

    def content_key(self) -> str:
        """The file's sha256 (:meth:`sha256`)."""
        return self.sha256()

    def read(self) -> np.ndarray:
        """All of ``x``, validated: memory-mapped when stored uncompressed, else read whole."""
        if self._offset is not None:
            return validate_inputs(self._mapped(), where=str(self.path))
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open("x.npy") as fh:
                x = np.lib.format.read_array(fh, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise BadInputError(f"{self.path}: not a readable .npz file ({exc})") from None
        return validate_inputs(np.ascontiguousarray(x), where=str(self.path))

    def sha256(self) -> str:
        """Hex sha256 of the file (computed once); ``BadInputError`` when the file changed since
        it was opened (its numbers would not be the ones the hash names)."""
        if self._sha256 is None:
            digest = sha256_file(self.path)
            stat = self.path.stat()
            if (stat.st_size, stat.st_mtime_ns) != self._stat:
                raise BadInputError(f"{self.path}: the file changed while it was being read")
            self._sha256 = digest
        return self._sha256

    def dataset(self, *, digest: bool = False) -> Dataset:
        """The whole file as a :class:`Dataset` (``x`` memory-mapped when it can be); with
        ``digest`` its ``sha256`` is filled in."""
        x = self.read()
        return Dataset(x=x, y=self.y, path=self.path, sha256=self.sha256() if digest else None)


def _npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(int(d) for d in shape), bool(fortran), np.dtype(dtype)


def open_npz(
    path: str | Path,
    *,
    require_labels: bool = False,
    sample_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> DataFile:
    """Open an ``.npz`` data file for reading in chunks (see :class:`DataFile`)."""
    return DataFile(path, require_labels=require_labels, sample_shape=sample_shape, num_classes=num_classes)


def load_npz(
    path: str | Path,
    *,
    require_labels: bool = False,
    sample_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    digest: bool = False,
) -> Dataset:
    """Read and validate an ``.npz`` data file with ``x`` and optional ``y``.

    ``x`` is memory-mapped when stored uncompressed (read-only). With ``digest`` the file's
    sha256 is recorded in the dataset. Raises ``BadInputError`` (one line, naming the file) for
    a missing or corrupt file, a missing key, a wrong shape or dtype, NaN/inf, or labels out of
    range.
    """
    return open_npz(path, require_labels=require_labels, sample_shape=sample_shape,
                    num_classes=num_classes).dataset(digest=digest)


def save_npz(path: str | Path, x: np.ndarray, y: np.ndarray | None = None) -> None:
    """Write ``x`` (and ``y``) as a compressed ``.npz``, atomically."""
    from wcx.atomic import atomic_write

    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        if y is None:
            np.savez_compressed(fh, x=x)
        else:
            np.savez_compressed(fh, x=x, y=y)
