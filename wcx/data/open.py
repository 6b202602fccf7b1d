"""Opening data by what it is: a path (an ``.npz`` file, an IDX images file, an image folder) or,
in the library, arrays and iterables of batches.

:func:`open_data` tells the kind of a path by the path itself: a folder is an image folder
(:mod:`wcx.data.image_folder`), a file that starts like an IDX file is an IDX images file with
its labels file beside it (:mod:`wcx.data.idx`), and any other file is read as an ``.npz``
(:mod:`wcx.data.npz`). :func:`as_source` turns what a library caller holds into a source.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from wcx.data.batches import BatchIterable
from wcx.data.idx import IdxFiles, is_idx
from wcx.data.image_folder import ImageFolder
from wcx.data.npz import DataFile
from wcx.data.source import ArraySource, Dataset, DataSource
from wcx.errors import BadInputError


def open_data(
    path: str | Path,
    *,
    require_labels: bool = False,
    sample_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> DataSource:
    """Open the data at ``path`` for reading in chunks: an image folder, an IDX images file or
    an ``.npz`` (module docstring). Labels are read now and checked (``require_labels``,
    ``num_classes``); ``sample_shape`` (C, H, W) is checked now where the file's header tells it
    (``.npz``, IDX) and as images are read otherwise. Errors are one-line ``BadInputError``
    naming the path."""
    path = Path(path)
    if path.is_dir():
        return ImageFolder(path, require_labels=require_labels, num_classes=num_classes)
    if not path.exists():
        raise BadInputError(f"{path}: no such data file or image folder")
    if path.suffix != ".npz" and is_idx(path):
        return IdxFiles(path, require_labels=require_labels, sample_shape=sample_shape, num_classes=num_classes)
    return DataFile(path, require_labels=require_labels, sample_shape=sample_shape, num_classes=num_classes)


def as_source(data: Any, *, name: str = "data", key: str | None = None) -> DataSource:
    """A :class:`DataSource` for ``data``: a source as it is, a path (:func:`open_data`), a
    :class:`Dataset`, an (N, C, H, W) array, or an iterable of batches
    (:class:`~wcx.data.batches.BatchIterable`). ``key`` names in-memory data for the logits
    cache (a file's content hash is its key)."""
    if isinstance(data, DataSource):
        return data
    if isinstance(data, (str, Path)):
        return open_data(data)
    if isinstance(data, Dataset):
        return ArraySource(data.x, data.y, name=str(data.path), path=data.path,
                           key=key if key is not None else data.sha256)
    if isinstance(data, np.ndarray):
        return ArraySource(data, name=name, key=key)
    if isinstance(data, Iterable):
        return BatchIterable(data, name=name, key=key)
    raise BadInputError(f"{name}: expected a path, an array, a Dataset or an iterable of batches, got "
                        f"{type(data).__name__}")
