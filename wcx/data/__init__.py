"""The data wcx reads: sources of rows read in chunks, whatever the data is.

* :mod:`wcx.data.source`: the :class:`DataSource` interface (rows if known, labels, chunks of
  ``(x, y)``, a content hash), arrays in memory, and the helpers every reader shares;
* :mod:`wcx.data.npz`: ``.npz`` files with ``x`` (N, C, H, W) and optional ``y`` (N,);
* :mod:`wcx.data.idx`: MNIST-style IDX images and labels files;
* :mod:`wcx.data.image_folder`: folders of image files in torchvision's ImageFolder layout;
* :mod:`wcx.data.batches`: any iterable of ``(x, y)`` batches (a torch ``DataLoader``, by duck
  typing);
* :mod:`wcx.data.open`: :func:`open_data` (a path, by what it is) and :func:`as_source`;
* :mod:`wcx.data.validation`: the checks of inputs and labels.

Every problem is a one-line ``BadInputError`` naming where the data came from.
"""

from __future__ import annotations

from wcx.data.batches import BatchIterable
from wcx.data.idx import IdxFiles, is_idx, labels_path_for, read_idx, write_idx
from wcx.data.image_folder import IMAGE_EXTENSIONS, ImageFolder, save_image_folder
from wcx.data.npz import DataFile, load_npz, open_npz, save_npz
from wcx.data.open import as_source, open_data
from wcx.data.source import (
    ArraySource,
    Batch,
    Dataset,
    DataSource,
    as_numpy,
    read_rows,
    rechunk,
    sample_dataset,
    stack_rows,
)
from wcx.data.validation import check_input_layout, validate_inputs, validate_labels

__all__ = [
    "IMAGE_EXTENSIONS", "ArraySource", "Batch", "BatchIterable", "DataFile", "DataSource", "Dataset", "IdxFiles",
    "ImageFolder", "as_numpy", "as_source", "check_input_layout", "is_idx", "labels_path_for", "load_npz",
    "open_data", "open_npz", "read_idx", "read_rows", "rechunk", "sample_dataset", "save_image_folder", "save_npz",
    "stack_rows",
    "validate_inputs", "validate_labels", "write_idx",
]
