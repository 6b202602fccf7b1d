"""Shape buckets and chunks: how a runner turns any number of rows into few distinct shapes.

GPU engines and CUDA graphs want few distinct batch shapes (method.md section 5): a subset of
``n`` rows runs as a *bucket*, ``n`` rounded up to a power of two (at most ``max_batch``), with
padding rows; more than ``max_batch`` rows run in *chunks* of at most ``max_batch``. On the CPU a
runner runs exact sizes (padding would be pure waste) but may still chunk to bound memory.
"""

from __future__ import annotations

from wcx.errors import BadInputError


def bucket_sizes(max_batch: int) -> list[int]:
    """Powers of two up to ``max_batch`` (and ``max_batch`` itself when it is not one).

    >>> bucket_sizes(20)
    [1, 2, 4, 8, 16, 20]
    """
    if max_batch < 1:
        raise BadInputError(f"max_batch must be >= 1, got {max_batch}")
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch)
    return sizes


def pick_bucket(n: int, max_batch: int) -> int:
    """Smallest bucket >= ``n`` (``1 <= n <= max_batch``).

    >>> [pick_bucket(n, 256) for n in (1, 3, 64, 65, 256)]
    [1, 4, 64, 128, 256]
    """
    if n < 1 or n > max_batch:
        raise ValueError(f"cannot bucket {n} rows with max_batch {max_batch}")
    b = 1
    while b < n:
        b *= 2
    return min(b, max_batch)


def chunk_bounds(n: int, max_batch: int) -> list[tuple[int, int]]:
    """``[start, stop)`` pieces of at most ``max_batch`` rows covering ``n`` rows (none for 0).

    >>> chunk_bounds(600, 256)
    [(0, 256), (256, 512), (512, 600)]
    >>> chunk_bounds(0, 4)
    []
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return [(a, min(a + max_batch, n)) for a in range(0, n, max_batch)]
