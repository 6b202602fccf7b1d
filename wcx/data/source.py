"""The one interface every kind of data is read through: a :class:`DataSource`.

A source is rows of inputs, with labels where it has them, read as :class:`Batch` chunks of at
most a given number of rows, in order, so that what reads it (calibration, ``wcx run``) holds one
chunk at a time. What a source knows before it is read:

* ``n``: its rows, or None when only reading tells (an iterable of batches);
* ``y``: its labels when it has them and they are known before reading (files: yes), else None;
  ``labels_known`` says which of the two a None means;
* ``class_names``: the name of each label, where the data names them (an image folder);
* ``sample_shape``: (C, H, W) when every row has it, None for images of varying size;
* ``yields_frames``: whether a batch's ``x`` is a list of frames (uint8 (H, W, C) images of any
  size, :mod:`wcx.core.frames`) instead of an (N, C, H, W) array;
* :meth:`DataSource.content_key`: a hash of its content (the logits cache keys on it), or None
  when it has none (data in memory without a key the caller names).

>>> source = ArraySource(np.zeros((5, 1, 2, 2), np.uint8), np.arange(5))
>>> [len(b) for b in source.batches(2)]
[2, 2, 1]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from wcx.data.validation import validate_inputs, validate_labels
from wcx.errors import BadInputError

#: a batch's inputs: an (N, C, H, W) array, or N frames ((H, W, C) uint8 arrays of any size)
BatchInputs = np.ndarray | list[np.ndarray]


@dataclass(frozen=True)
class Batch:
    """One chunk of a source: inputs ``x``, labels ``y`` (None without labels), ``names`` of the
    rows where the source has them (file paths, for error messages), and ``start``, the index of
    the first row in the source."""

    x: BatchInputs
    y: np.ndarray | None = None
    names: tuple[str, ...] | None = None
    start: int = 0

    def __len__(self) -> int:
        return len(self.x)


class DataSource(ABC):
    """Rows read in chunks (module docstring). Subclasses set the attributes and write
    :meth:`batches`; the rest derives from them."""

    #: what errors name: a path, or a description of data in memory
    name: str = "data"
    #: the file or folder the rows come from, if any
    path: Path | None = None
    y: np.ndarray | None = None
    labels_known: bool = True
    class_names: tuple[str, ...] | None = None
    yields_frames: bool = False

    @property
    @abstractmethod
    def n(self) -> int | None:
        """Rows, or None when only reading tells."""

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        """(C, H, W) of every row, or None when rows differ or it is unknown before reading."""
        return None

    @abstractmethod
    def batches(self, rows: int) -> Iterator[Batch]:
        """The rows in order, in chunks of at most ``rows`` (each validated as it is read)."""

    def chunks(self, rows: int) -> Iterator[BatchInputs]:
        """The inputs of :meth:`batches` alone."""
        for batch in self.batches(rows):
            yield batch.x

    def content_key(self) -> str | None:
        """A hash of the content (files: of their bytes), or None when the source has none."""
        return None

    def __len__(self) -> int:
        if self.n is None:
            raise TypeError(f"{self.name}: the number of rows is known only after reading")
        return self.n


def check_rows(rows: int) -> int:
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
        raise BadInputError(f"rows must be >= 1, got {rows}")
    return int(rows)


@dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` (N, C, H, W) and optional labels ``y`` (N,) read from one file.

    ``sha256`` is the hash of the file ``x`` and ``y`` were read from (None for data built in
    memory); calibration keys its logits cache on it.
    """

    x: np.ndarray
    y: np.ndarray | None
    path: Path
    sha256: str | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


class ArraySource(DataSource):
    """Arrays in memory as a source: ``x`` (N, C, H, W) (validated), optional labels ``y``.
    ``key`` names the data for the logits cache (None: never cached)."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None = None, *, name: str = "data",
                 path: Path | None = None, key: str | None = None,
                 class_names: tuple[str, ...] | None = None) -> None:
        self.name = name
        self.path = path
        self.x = validate_inputs(x, where=name)
        self.y = None if y is None else validate_labels(np.asarray(y), int(x.shape[0]), where=name)
        self.class_names = class_names
        self._key = key

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    def batches(self, rows: int) -> Iterator[Batch]:
        rows = check_rows(rows)
        for a in range(0, self.n, rows):
            yield Batch(self.x[a : a + rows], None if self.y is None else self.y[a : a + rows], start=a)

    def content_key(self) -> str | None:
        return self._key


def rechunk(batches: Iterable[Batch], rows: int) -> Iterator[Batch]:
    """``batches`` regrouped into chunks of exactly ``rows`` rows (the last may be shorter), in
    order: a larger batch is split, smaller ones are joined. At most ``rows`` rows plus one
    incoming batch are held at a time."""
    rows = check_rows(rows)
    held: list[Batch] = []
    count = start = 0
    for batch in batches:
        offset = 0
        while offset < len(batch):
            take = min(rows - count, len(batch) - offset)
            held.append(_slice(batch, offset, offset + take))
            offset += take
            count += take
            if count == rows:
                yield _join(held, start)
                start += count
                held, count = [], 0
    if held:
        yield _join(held, start)


def _slice(batch: Batch, a: int, b: int) -> Batch:
    if a == 0 and b == len(batch):
        return batch
    return Batch(batch.x[a:b], None if batch.y is None else batch.y[a:b],
                 None if batch.names is None else batch.names[a:b], batch.start + a)


def _join(parts: list[Batch], start: int) -> Batch:
    if len(parts) == 1:
        return replace(parts[0], start=start)
    x: BatchInputs
    if all(isinstance(p.x, np.ndarray) for p in parts):
        x = np.concatenate([p.x for p in parts])
    else:
        x = [frame for p in parts for frame in p.x]
    y = None if any(p.y is None for p in parts) else np.concatenate([p.y for p in parts if p.y is not None])
    names = None if any(p.names is None for p in parts) else tuple(n for p in parts for n in p.names or ())
    return Batch(x, y, names, start)


def stack_rows(x: BatchInputs, *, where: str) -> np.ndarray:
    """A batch's inputs as one (N, C, H, W) array: frames are stacked, which needs one size."""
    if isinstance(x, np.ndarray):
        return x
    shapes = {f.shape for f in x}
    if len(shapes) != 1:
        raise BadInputError(f"{where}: images of {len(shapes)} different sizes cannot form one (N, C, H, W) batch "
                            f"(e.g. {', '.join(str(s) for s in sorted(shapes)[:2])})")
    return np.ascontiguousarray(np.stack(x).transpose(0, 3, 1, 2))


def read_rows(source: DataSource, n: int) -> np.ndarray:
    """The first ``n`` rows of ``source`` (fewer when it has fewer) as one (N, C, H, W) array,
    reading no further than needed."""
    check_rows(n)
    parts: list[np.ndarray] = []
    have = 0
    for batch in source.batches(n):
        part = stack_rows(batch.x, where=source.name)
        parts.append(part[: n - have])
        have += len(parts[-1])
        if have >= n:
            break
    if not parts:
        raise BadInputError(f"{source.name}: no rows")
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


#: rows read at a time while sampling (bounds the memory of one read)
SAMPLE_CHUNK_ROWS = 1024


def sample_dataset(source: DataSource, n: int, *, seed: int = 0) -> Dataset:
    """All rows of ``source`` as a :class:`Dataset` when it has at most ``n``, else a seeded
    uniform sample of ``n`` rows in their original order, read in one pass that keeps only the
    chosen rows (a class-sorted image folder is sampled across its classes, not cut after the
    first ones). ``source`` must know its number of rows."""
    check_rows(n)
    total = source.n
    if total is None:
        raise BadInputError(f"{source.name}: the number of rows must be known to sample it")
    keep = None if total <= n else np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    start = 0
    for batch in source.batches(SAMPLE_CHUNK_ROWS):
        x = stack_rows(batch.x, where=source.name)
        rows = slice(None) if keep is None else keep[(keep >= start) & (keep < start + len(x))] - start
        xs.append(x[rows])
        if batch.y is not None:
            ys.append(np.asarray(batch.y)[rows])
        start += len(x)
    if not xs:
        raise BadInputError(f"{source.name}: no rows")
    y = np.concatenate(ys) if ys and len(ys) == len(xs) else None
    path = getattr(source, "path", None)
    return Dataset(x=np.concatenate(xs), y=y, path=Path(path) if path is not None else Path(source.name),
                   sha256=source.content_key())


def as_numpy(value: Any) -> np.ndarray:
    """An array from anything array-like, by duck typing (no import of its library): a torch
    tensor through ``.detach().cpu().numpy()``, other objects through ``.numpy()`` or
    ``__array__``."""
    if isinstance(value, np.ndarray):
        return value
    for step in ("detach", "cpu"):
        method = getattr(value, step, None)
        if callable(method):
            value = method()
    to_numpy = getattr(value, "numpy", None)
    if callable(to_numpy):
        return np.asarray(to_numpy())
    return np.asarray(value)
