"""The few array operations wcx's math needs, for numpy arrays and torch tensors alike.

Scores, policies and the cascade's running state are written once against an :class:`ArrayOps`
(the array-namespace pattern) instead of once per library. :func:`ops_for` picks the operations
that fit an array: numpy for numpy arrays (and Python numbers), torch for torch tensors. torch is
never imported here: a tensor is recognised by its type's module, so numpy-only installs work.

Only what the core uses is here; each method states its numpy meaning. Row indices (``rows``)
are ``None`` for "every row" or a 1-D integer array of *distinct* row indices.
"""

from __future__ import annotations

from typing import Any

Array = Any  # a numpy.ndarray or a torch.Tensor: one type alias keeps signatures readable


class ArrayOps:
    """Array operations of one library. Subclasses: :class:`NumpyOps`, :class:`TorchOps`."""

    name: str = ""

    def max(self, x: Array, axis: int) -> Array:
        """Largest value along ``axis`` (``np.max``)."""
        raise NotImplementedError

    def sum(self, x: Array, axis: int) -> Array:
        """Sum along ``axis`` (``np.sum``)."""
        raise NotImplementedError

    def argmax(self, x: Array, axis: int) -> Array:
        """Index of the largest value along ``axis``; the first one on ties (``np.argmax``)."""
        raise NotImplementedError

    def exp(self, x: Array) -> Array:
        raise NotImplementedError

    def log(self, x: Array) -> Array:
        raise NotImplementedError

    def where(self, condition: Array, a: Array, b: Array | float) -> Array:
        """``a`` where ``condition`` holds, else ``b`` (``np.where``)."""
        raise NotImplementedError

    def zeros(self, shape: tuple[int, ...], dtype: Any, like: Array | None = None) -> Array:
        """A new zero array of ``dtype`` (on ``like``'s device for torch)."""
        raise NotImplementedError

    def full_bool(self, n: int, value: bool, like: Array) -> Array:
        """A new boolean vector of length ``n`` filled with ``value``, on ``like``'s device."""
        raise NotImplementedError

    def arange(self, n: int, like: Array) -> Array:
        """``0 .. n-1`` as an integer vector on ``like``'s device."""
        raise NotImplementedError

    def take(self, x: Array, rows: Array | None) -> Array:
        """The rows ``rows`` of ``x`` (all of ``x`` when ``rows`` is None)."""
        raise NotImplementedError

    def pick(self, x: Array, index: Array) -> Array:
        """``x[i, index[i]]`` for every row i of ``x`` (N, K), ``index`` (N,) integers."""
        raise NotImplementedError

    def put(self, target: Array, rows: Array | None, values: Array) -> None:
        """``target[rows] = values`` in place (all rows when ``rows`` is None)."""
        raise NotImplementedError

    def add_to(self, target: Array, rows: Array | None, values: Array) -> None:
        """``target[rows] += values`` in place (``rows`` distinct; all rows when None)."""
        raise NotImplementedError

    def fill(self, target: Array, rows: Array | None, value: float) -> None:
        """``target[rows] = value`` in place (all rows when ``rows`` is None)."""
        raise NotImplementedError

    def concat(self, arrays: list[Array]) -> Array:
        """The arrays joined along the first axis (``np.concatenate``)."""
        raise NotImplementedError

    def astype(self, x: Array, dtype: Any) -> Array:
        raise NotImplementedError

    def float64(self) -> Any:
        raise NotImplementedError


class NumpyOps(ArrayOps):
    name = "numpy"

    def __init__(self) -> None:
        import numpy

        self.np = numpy

    def max(self, x: Array, axis: int) -> Array:
        return x.max(axis=axis)

    def sum(self, x: Array, axis: int) -> Array:
        return x.sum(axis=axis)

    def argmax(self, x: Array, axis: int) -> Array:
        return x.argmax(axis=axis)

    def exp(self, x: Array) -> Array:
        return self.np.exp(x)

    def log(self, x: Array) -> Array:
        return self.np.log(x)

    def where(self, condition: Array, a: Array, b: Array | float) -> Array:
        return self.np.where(condition, a, b)

    def zeros(self, shape: tuple[int, ...], dtype: Any, like: Array | None = None) -> Array:
        return self.np.zeros(shape, dtype=dtype)

    def full_bool(self, n: int, value: bool, like: Array) -> Array:
        return self.np.full(n, value, dtype=bool)

    def arange(self, n: int, like: Array) -> Array:
        return self.np.arange(n)

    def take(self, x: Array, rows: Array | None) -> Array:
        return x if rows is None else x[rows]

    def pick(self, x: Array, index: Array) -> Array:
        return self.np.take_along_axis(x, index[:, None], axis=-1)[:, 0]

    def put(self, target: Array, rows: Array | None, values: Array) -> None:
        if rows is None:
            target[...] = values
        else:
            target[rows] = values

    def add_to(self, target: Array, rows: Array | None, values: Array) -> None:
        if rows is None:
            target += values
        else:
            target[rows] += values  # rows are distinct, so this equals np.add.at and is faster

    def fill(self, target: Array, rows: Array | None, value: float) -> None:
        if rows is None:
            target[...] = value
        else:
            target[rows] = value

    def concat(self, arrays: list[Array]) -> Array:
        return arrays[0] if len(arrays) == 1 else self.np.concatenate(arrays)

    def astype(self, x: Array, dtype: Any) -> Array:
        return x.astype(dtype)

    def float64(self) -> Any:
        return self.np.float64


class TorchOps(ArrayOps):
    """The same operations on torch tensors (any device); torch is imported when built."""

    name = "torch"

    def __init__(self) -> None:
        import torch

        self.torch = torch

    def max(self, x: Array, axis: int) -> Array:
        return self.torch.amax(x, dim=axis)

    def sum(self, x: Array, axis: int) -> Array:
        return self.torch.sum(x, dim=axis)

    def argmax(self, x: Array, axis: int) -> Array:
        return self.torch.argmax(x, dim=axis)

    def exp(self, x: Array) -> Array:
        return self.torch.exp(x)

    def log(self, x: Array) -> Array:
        return self.torch.log(x)

    def where(self, condition: Array, a: Array, b: Array | float) -> Array:
        return self.torch.where(condition, a, b)

    def zeros(self, shape: tuple[int, ...], dtype: Any, like: Array | None = None) -> Array:
        device = None if like is None else like.device
        return self.torch.zeros(shape, dtype=dtype, device=device)

    def full_bool(self, n: int, value: bool, like: Array) -> Array:
        return self.torch.full((n,), value, dtype=self.torch.bool, device=like.device)

    def arange(self, n: int, like: Array) -> Array:
        return self.torch.arange(n, device=like.device)

    def take(self, x: Array, rows: Array | None) -> Array:
        return x if rows is None else x.index_select(0, rows)

    def pick(self, x: Array, index: Array) -> Array:
        return x.gather(-1, index[:, None]).squeeze(-1)

    def put(self, target: Array, rows: Array | None, values: Array) -> None:
        if rows is None:
            target.copy_(values)
        else:
            target.index_copy_(0, rows, values.to(target.dtype))

    def add_to(self, target: Array, rows: Array | None, values: Array) -> None:
        if rows is None:
            target += values
        else:
            target.index_add_(0, rows, values.to(target.dtype))

    def fill(self, target: Array, rows: Array | None, value: float) -> None:
        if rows is None:
            target.fill_(value)
        else:
            target.index_fill_(0, rows, value)

    def concat(self, arrays: list[Array]) -> Array:
        return arrays[0] if len(arrays) == 1 else self.torch.cat(arrays)

    def astype(self, x: Array, dtype: Any) -> Array:
        return x.to(dtype)

    def float64(self) -> Any:
        return self.torch.float64


_NUMPY: NumpyOps | None = None
_TORCH: TorchOps | None = None


def numpy_ops() -> NumpyOps:
    """The numpy operations (one shared instance)."""
    global _NUMPY
    if _NUMPY is None:
        _NUMPY = NumpyOps()
    return _NUMPY


def torch_ops() -> TorchOps:
    """The torch operations (one shared instance); imports torch."""
    global _TORCH
    if _TORCH is None:
        _TORCH = TorchOps()
    return _TORCH


def is_torch(x: object) -> bool:
    """Whether ``x`` is a torch tensor, without importing torch."""
    return type(x).__module__.startswith("torch")


def ops_for(x: object) -> ArrayOps:
    """The operations that fit ``x``: torch for a torch tensor, numpy otherwise."""
    return torch_ops() if is_torch(x) else numpy_ops()
