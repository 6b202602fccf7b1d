"""Opening data for a bundle: the one place ``wcx calibrate``, ``wcx run`` and ``wcx bench`` open
their ``--data`` (an ``.npz``, an IDX images file or an image folder, told by the path,
:func:`wcx.data.open_data`), checked against what the bundle's members take.

A bundle whose members take (N, C, H, W) batches as they are needs data of its sample shape
(checked from the file's header where it has one, else as images are read); a bundle whose
members resize or crop raw frames takes uint8 images of any size, so no shape is checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wcx.bundle import Bundle
from wcx.data import DataFile, DataSource, open_data, sample_dataset


def data_sample_shape(bundle: Bundle) -> tuple[int, ...] | None:
    """The (C, H, W) the bundle's data must have, or None when its members take raw frames."""
    return None if bundle.manifest.takes_frames else bundle.sample_shape


def open_data_for(bundle: Bundle, path: str | Path, *, require_labels: bool = False) -> DataSource:
    """Open ``path`` for reading in chunks, checked against the bundle's inputs and class count
    (labels are read and checked now, inputs as they are read)."""
    return open_data(path, require_labels=require_labels, sample_shape=data_sample_shape(bundle),
                     num_classes=bundle.num_classes)


def read_data_for(bundle: Bundle, path: str | Path, rows: int, *, seed: int = 0) -> np.ndarray:
    """The inputs at ``path`` as one (N, C, H, W) array, for a bundle: an ``.npz`` stored
    uncompressed memory-mapped whole (nothing read into memory yet), any other data ``rows`` of
    its rows drawn uniformly with ``seed`` (all of them when it has fewer), in their order; not
    its first rows, which in an image folder are all of one class (images must share one
    size)."""
    source = open_data_for(bundle, path)
    if isinstance(source, DataFile) and source.memory_mapped:
        return source.read()
    return sample_dataset(source, rows, seed=seed).x
