"""The held-out logits cache, kept in a user cache directory and never inside a bundle.

Running every member on the held-out set is the slow part of ``wcx calibrate``; its logits are
cached so that a second fit (another risk, score or policy) on the same data and members starts
at once. An entry is keyed by

* the :class:`~wcx.core.provenance.Provenance` identity of what produced the logits (backend,
  each member's precision as run, the hashes of its ONNX, weights or engine, TensorRT and GPU,
  the input section), so a new file, engine, precision or preprocessing never reuses old
  logits;
* a key naming the data: the sha256 of the data file, or a key the caller names for data held
  in memory (data in memory without a key is never cached);
* the rows per member call (how rows are batched can change the last bits of the logits).

Each entry stores the sha256 of its logits and is checked on read: a damaged or edited entry
(or one of the wrong shape) is ignored and recomputed, never trusted. An entry may also hold the
labels read with the logits (data whose labels are known only once it is read: an iterable of
batches), with their own sha256. Entries are written
atomically. The cache directory is ``$WCX_CACHE_DIR`` when set, else the platform's user cache
(``$XDG_CACHE_HOME/wcx`` or ``~/.cache/wcx`` on Linux, ``~/Library/Caches/wcx`` on macOS,
``%LOCALAPPDATA%\\wcx\\Cache`` on Windows), in its ``logits`` folder. A cache that cannot be
written (a read-only home) only costs the speed-up: a warning, and the calibration goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from wcx.atomic import atomic_write
from wcx.core.provenance import Provenance
from wcx.errors import WcxError

ENV_VAR = "WCX_CACHE_DIR"
FORMAT = 1

log = logging.getLogger(__name__)
_warned: set[str] = set()


def cache_dir() -> Path:
    """Where wcx keeps cached held-out logits (see the module docstring)."""
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Caches" / "wcx"
    elif os.name == "nt":
        root = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "wcx" / "Cache"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "wcx"
    return root / "logits"


def entry_key(provenance: Provenance, data_key: str, batch_size: int) -> str:
    """The key of the logits of ``provenance`` on the data named ``data_key``."""
    text = json.dumps({"format": FORMAT, "provenance": provenance.key(), "data": str(data_key),
                       "batch_size": int(batch_size)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _digest(logits: np.ndarray) -> str:
    h = hashlib.sha256(f"{logits.dtype.str}{logits.shape}".encode())
    h.update(np.ascontiguousarray(logits).data)
    return h.hexdigest()


def entry_path(key: str) -> Path:
    return cache_dir() / f"{key}.npz"


def read_entry(key: str, shape: tuple[int | None, ...]) -> np.ndarray | None:
    """The cached logits of ``key`` when an entry exists, is intact (its stored sha256 matches)
    and has ``shape`` (a None dimension matches any size); None otherwise (the caller recomputes
    and overwrites it)."""
    path = entry_path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as entry:
            logits: np.ndarray = entry["logits"]
            stored_key, stored_sha = str(entry["key"]), str(entry["sha256"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        log.info("logits cache entry %s is unreadable; recomputing", path)
        return None
    same_shape = len(logits.shape) == len(shape) and all(
        want is None or int(have) == want for have, want in zip(logits.shape, shape, strict=True))
    if stored_key != key or logits.dtype != np.float32 or not same_shape:
        log.info("logits cache entry %s is not for this data and these members; recomputing", path)
        return None
    if _digest(logits) != stored_sha:
        log.warning("logits cache entry %s does not match its sha256 (damaged or edited); recomputing", path)
        return None
    return logits


def read_labels(key: str, n: int) -> np.ndarray | None:
    """The labels stored in the entry of ``key`` (int64, ``n`` of them) when it holds intact ones;
    None otherwise."""
    path = entry_path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as entry:
            if "y" not in entry.files or str(entry["key"]) != key:
                return None
            y: np.ndarray = entry["y"]
            stored_sha = str(entry["y_sha256"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if y.dtype != np.int64 or y.shape != (n,) or _digest(y) != stored_sha:
        return None
    return y


def write_entry(key: str, logits: np.ndarray, labels: np.ndarray | None = None) -> Path | None:
    """Store ``logits`` (and ``labels``) under ``key`` atomically with their sha256; returns the
    entry, or None (with one warning per directory) when the cache cannot be written."""
    path = entry_path(key)
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    extra: dict[str, Any] = {}
    if labels is not None:
        y = np.ascontiguousarray(labels, dtype=np.int64)
        extra = {"y": y, "y_sha256": np.array(_digest(y))}
    try:
        with atomic_write(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, logits=logits, key=np.array(key), sha256=np.array(_digest(logits)), **extra)
    except (OSError, WcxError) as exc:
        where = str(path.parent)
        if where not in _warned:
            _warned.add(where)
            log.warning("cannot write the logits cache in %s (%s); set %s to a writable folder to cache held-out "
                        "logits", where, exc, ENV_VAR)
        return None
    return path
