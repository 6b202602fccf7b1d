"""wcx.data: .npz data files and MNIST-style IDX files; every problem is a one-line BadInputError."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from wcx.data import load_npz, read_idx, save_npz, validate_inputs, validate_labels
from wcx.errors import BadInputError


def _one_line(exc: pytest.ExceptionInfo, path: Path) -> None:
    text = str(exc.value)
    assert "\n" not in text and str(path) in text


def test_round_trip_float_and_uint8(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((5, 1, 4, 4), dtype=np.float32)
    y = np.array([0, 1, 2, 1, 0], dtype=np.int32)
    save_npz(tmp_path / "a.npz", x, y)
    ds = load_npz(tmp_path / "a.npz", require_labels=True, sample_shape=(1, 4, 4), num_classes=3)
    assert np.array_equal(ds.x, x) and ds.y.dtype == np.int64 and np.array_equal(ds.y, y) and len(ds) == 5
    xu = np.zeros((2, 3, 2, 2), np.uint8)
    save_npz(tmp_path / "u.npz", xu)
    ds = load_npz(tmp_path / "u.npz")
    assert ds.x.dtype == np.uint8 and ds.y is None


@pytest.mark.parametrize(
    ("arrays", "kwargs", "message"),
    [
        ({"images": np.zeros((2, 1, 2, 2), np.float32)}, {}, "missing key 'x'"),
        ({"x": np.zeros((2, 4), np.float32)}, {}, "expected shape"),
        ({"x": np.zeros((2, 1, 2, 2), np.float64)}, {}, "dtype float64"),
        ({"x": np.zeros((0, 1, 2, 2), np.float32)}, {}, "empty"),
        ({"x": np.full((2, 1, 2, 2), np.nan, np.float32)}, {}, "NaN or infinite"),
        ({"x": np.full((2, 1, 2, 2), np.inf, np.float32)}, {}, "NaN or infinite"),
        ({"x": np.zeros((2, 1, 2, 2), np.float32)}, {"sample_shape": (1, 3, 3)}, "does not match"),
        ({"x": np.zeros((2, 1, 2, 2), np.float32)}, {"require_labels": True}, "labels 'y' are required"),
        ({"x": np.zeros((2, 1, 2, 2), np.float32), "y": np.array([0, 5])}, {"num_classes": 5}, "out of range"),
        ({"x": np.zeros((2, 1, 2, 2), np.float32), "y": np.array([0, -1])}, {}, "negative"),
        ({"x": np.zeros((2, 1, 2, 2), np.float32), "y": np.array([0.0, 1.0])}, {}, "must be integers"),
        ({"x": np.zeros((2, 1, 2, 2), np.float32), "y": np.array([0, 1, 2])}, {}, "must have shape"),
    ],
)
def test_bad_npz_files(tmp_path: Path, arrays, kwargs, message) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(BadInputError, match=message) as exc:
        load_npz(path, **kwargs)
    _one_line(exc, path)


def test_missing_and_corrupt_npz(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such data file") as exc:
        load_npz(tmp_path / "none.npz")
    _one_line(exc, tmp_path / "none.npz")
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(BadInputError, match="not a readable .npz") as exc:
        load_npz(bad)
    _one_line(exc, bad)


def test_pickled_object_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(BadInputError):
        load_npz(path)


def test_validate_helpers_directly() -> None:
    with pytest.raises(BadInputError, match="numpy array"):
        validate_inputs([[1.0]], where="input")  # type: ignore[arg-type]
    assert validate_labels(np.array([1, 2], np.uint8), 2, where="y", num_classes=3).dtype == np.int64


def _write_idx(path: Path, arr: np.ndarray, code: int, *, compress: bool) -> Path:
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    body = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(body)
    else:
        path.write_bytes(body)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    images = np.random.default_rng(1).integers(0, 256, (3, 4, 5), dtype=np.uint8)
    path = _write_idx(tmp_path / ("img.idx3" + (".gz" if compress else "")), images, 0x08, compress=compress)
    assert np.array_equal(read_idx(path), images)
    floats = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    got = read_idx(_write_idx(tmp_path / "f.idx", floats, 0x0D, compress=False))
    assert got.dtype == np.float32 and got.dtype.byteorder in ("=", "<", "|") and np.array_equal(got, floats)
    labels = np.array([1, 2, 300], dtype=np.int32)
    assert np.array_equal(read_idx(_write_idx(tmp_path / "l.idx", labels, 0x0C, compress=False)), labels)


def test_bad_idx_files(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such IDX file"):
        read_idx(tmp_path / "none.idx")
    (tmp_path / "magic.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(BadInputError, match="bad magic"):
        read_idx(tmp_path / "magic.idx")
    (tmp_path / "trunc.idx").write_bytes(bytes([0, 0, 8, 2]) + struct.pack(">I", 3))
    with pytest.raises(BadInputError, match="truncated IDX header"):
        read_idx(tmp_path / "trunc.idx")
    (tmp_path / "short.idx").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 4)
    with pytest.raises(BadInputError, match="header promises 10"):
        read_idx(tmp_path / "short.idx")
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(BadInputError, match="cannot read"):
        read_idx(tmp_path / "bad.gz")
