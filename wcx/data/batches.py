"""Any iterable of batches as a :class:`~wcx.data.source.DataSource` (e.g. a torch ``DataLoader``).

Each item the iterable yields is a pair ``(x, y)`` (a tuple or list of two, ``y`` one-dimensional
or None) or ``x`` alone. ``x`` is an (N, C, H, W) batch, float32 in the bundle's input range or
uint8, or a list of frames ((H, W[, C]) uint8 images of any size, :mod:`wcx.core.frames`); ``y``
holds N integer labels. Arrays may be anything array-like: numpy arrays, or objects converted by
duck typing (``.detach().cpu().numpy()``, ``.numpy()``, ``__array__``), so a ``DataLoader`` of
torch tensors works without wcx importing torch. A ``DataLoader`` whose transforms normalise
(``Normalize``) gives inputs outside [0, 1]: the input contract refuses them, since the bundle
applies its own mean/std.

The batches are regrouped into chunks of the size the reader asks for
(:func:`~wcx.data.source.rechunk`), so the rows are batched as from a file. The number of rows
and the labels are known only once the iterable has been read (unless ``n`` is given); the data
has no content hash, so calibration caches its logits only under a ``key`` the caller names.
An iterator (which can be read once) can be read once here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from wcx.data.source import Batch, BatchInputs, DataSource, as_numpy, rechunk
from wcx.data.validation import validate_inputs, validate_labels
from wcx.errors import BadInputError, UsageError


def _is_pair(item: Any) -> bool:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        return False
    return item[1] is None or np.ndim(as_numpy(item[1])) == 1


class BatchIterable(DataSource):
    """The batches of ``batches`` (module docstring). ``n``: the rows, when the caller knows
    them; ``key``: a name of the data for the logits cache; ``class_names``: the labels' names."""

    labels_known = False

    def __init__(self, batches: Iterable[Any], *, name: str = "batches", n: int | None = None,
                 key: str | None = None, class_names: tuple[str, ...] | None = None) -> None:
        if not isinstance(batches, Iterable):
            raise BadInputError(f"{name}: expected an iterable of batches, got {type(batches).__name__}")
        self._batches = batches
        self._once = isinstance(batches, Iterator)  # its items are gone once read
        self._read = False
        self.name = name
        self._n = n
        self._key = key
        self.class_names = class_names
        self.y = None

    @property
    def n(self) -> int | None:
        return self._n

    def batches(self, rows: int) -> Iterator[Batch]:
        if self._once and self._read:
            raise UsageError(f"{self.name}: an iterator can be read only once; pass a re-iterable object (a list, a "
                             "DataLoader) to read it again")
        self._read = True
        return rechunk(self._items(), rows)

    def _items(self) -> Iterator[Batch]:
        start = 0
        labelled: bool | None = None
        for index, item in enumerate(self._batches):
            where = f"{self.name} batch {index}"
            x_raw, y_raw = item if _is_pair(item) else (item, None)
            x = _inputs(x_raw, where=where)
            y = None
            if y_raw is not None:
                y = validate_labels(as_numpy(y_raw), len(x), where=where)
            if labelled is not None and labelled != (y is not None):
                raise BadInputError(f"{where}: some batches have labels and others not")
            labelled = y is not None
            if len(x):
                yield Batch(x, y, start=start)
            start += len(x)
        if start == 0:
            raise BadInputError(f"{self.name}: no rows (the iterable yielded no batches)")
        if self._n is not None and start != self._n:
            raise BadInputError(f"{self.name}: {start} rows read, {self._n} announced")

    def content_key(self) -> str | None:
        return self._key


def _inputs(value: Any, *, where: str) -> BatchInputs:
    if isinstance(value, (list, tuple)):
        return [as_numpy(frame) for frame in value]
    return validate_inputs(as_numpy(value), where=where)
