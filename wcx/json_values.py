"""The one way wcx turns results into strict JSON (no ``NaN`` or ``Infinity``, which many JSON
readers refuse).

:func:`json_safe` turns numpy scalars and arrays into Python values, tuples into lists, paths
into strings, keys into strings and non-finite floats into ``null``; :func:`dumps` writes the
result with ``allow_nan=False``, so anything that slipped through fails loudly instead of
producing invalid JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath
from typing import Any

import numpy as np


def json_safe(obj: Any) -> Any:
    """``obj`` with every value JSON can hold strictly (see the module docstring).

    >>> json_safe({"a": np.float32(0.5), "b": (1, float("inf")), 2: np.arange(2)})
    {'a': 0.5, 'b': [1, None], '2': [0, 1]}
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, PurePath):
        return str(obj)
    return obj


def dumps(obj: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` (after :func:`json_safe`)."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)
