"""The content hash wcx records for files (members, weights, engines, data files).

One function, below every layer that hashes files, so that a bundle's file digests and a data
file's cache key are computed the same way.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: str | Path, *, follow_links: bool = True) -> str:
    """Hex sha256 of a file's bytes, read in chunks of 1 MiB (memory does not grow with the file).

    ``follow_links=False`` opens the file without following a symbolic link (where the OS has
    ``O_NOFOLLOW``): a link swapped in after the path was checked is refused by the OS.
    """
    flags = os.O_RDONLY | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0))
    digest = hashlib.sha256()
    with os.fdopen(os.open(path, flags), "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
