"""The one interface every backend implements (Polygraphy's runner model).

A runner wraps one member of a bundle on one backend. Its lifecycle::

    runner = OnnxRuntimeRunner(bundle, member_index)   # cheap: nothing loaded yet
    with runner:                                       # activate(): session / context / stream
        out = runner.infer({"input": x})               # named arrays in, named arrays out
    # deactivate(): everything released

The base class owns what every backend shares, so a backend only writes ``activate_impl``,
``infer_impl`` and ``deactivate_impl``:

* the activation state (``infer`` before ``activate`` is a ``UsageError``);
* the published facts: :meth:`input_metadata` (name, shape, dtype of the one input),
  ``precision`` (as actually run), ``device``, ``array_library`` (what ``infer`` returns),
  ``max_batch`` and :meth:`provenance` (what the runner's numbers depend on);
* checking the feed against the metadata;
* chunking (at most ``max_batch`` rows per ``infer_impl`` call) and bucketing (each chunk's
  row count rounded up to a shape bucket when ``pads_to_buckets``); ``infer_impl`` gets the
  chunk and the number of rows to run it as, pads, and returns logits of the real rows only.

``infer`` takes ``{input_name: batch}``, a preprocessed float batch (N, C, H, W): always a host
numpy array, or an array of the runner's own ``array_library`` on its ``device``. It returns
``{"logits": (N, K)}`` float32 in the runner's ``array_library`` on its ``device`` (GPU runners
keep logits on the device so that the cascade's running state stays there). Heavy dependencies
are imported in ``activate_impl`` (or when the runner is built), never at ``import wcx``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from wcx.bundle import Bundle
from wcx.core.arrays import Array, ops_for
from wcx.core.manifest import MemberSection
from wcx.core.provenance import MemberProvenance
from wcx.errors import BadInputError, UsageError
from wcx.runtime.buckets import chunk_bounds, pick_bucket

LOGITS = "logits"


@dataclass(frozen=True)
class TensorMeta:
    """One input of a runner: its name, shape (None for the dynamic batch dimension), dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


class Runner(abc.ABC):
    """One member on one backend. Subclasses set ``backend`` and implement the three hooks."""

    backend: ClassVar[str] = ""
    #: what ``infer`` returns: ``"numpy"`` (host arrays) or ``"torch"`` (tensors on ``device``)
    array_library: ClassVar[str] = "numpy"
    #: whether chunks are padded up to shape buckets (GPU backends) or run at exact sizes (CPU)
    pads_to_buckets: ClassVar[bool] = False

    def __init__(self, bundle: Bundle | None, member_index: int, *, member: MemberSection | None = None) -> None:
        if member is None:
            if bundle is None:
                raise UsageError(f"{type(self).__name__} needs a bundle or a member section")
            member = bundle.members[member_index]
        self.bundle = bundle
        self.member_index = member_index
        self.member: MemberSection = member
        self.is_active = False
        #: most rows per call of ``infer_impl`` (None: any number)
        self.max_batch: int | None = None
        #: whether device tensors should be in channels-last memory format (torch runners)
        self.channels_last = False
        #: rows given to ``infer``, rows actually run (padding included) and ``infer_impl`` calls
        self.rows_received = 0
        self.rows_run = 0
        self.calls = 0

    # -- published facts ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self.backend}:{self.member.name}"

    @property
    def precision(self) -> str:
        """The precision the member actually runs at (default: the member graph's)."""
        return self.member.precision

    @property
    def device(self) -> str:
        """Where inputs are taken and logits returned: ``"cpu"``, ``"cuda:0"``, ..."""
        return "cpu"

    @property
    def input_dtype(self) -> str:
        """The float dtype the runner computes its input in (``float32`` or ``float16``)."""
        return "float32"

    def input_metadata(self) -> dict[str, TensorMeta]:
        """The runner's one input: ``{name: TensorMeta}``."""
        spec = self.member.input
        return {spec.name: TensorMeta(spec.name, (None, *spec.shape), self.input_dtype)}

    def bucket(self, rows: int) -> int:
        """Rows a chunk of ``rows`` rows is run as (its shape bucket, or ``rows`` itself)."""
        if not self.pads_to_buckets or rows == 0:
            return rows
        return pick_bucket(rows, self.max_batch or rows)

    def rows_for(self, n: int) -> int:
        """Rows the runner actually runs for a batch of ``n`` (padding included)."""
        return sum(self.bucket(b - a) for a, b in chunk_bounds(n, self.max_batch or max(n, 1)))

    def provenance(self) -> MemberProvenance:
        """The identity of this member's numbers as this runner produces them."""
        return MemberProvenance(self.member.name, self.precision, onnx_sha256=self.member.sha256,
                                input=self.member.input.to_dict())

    def info(self) -> dict[str, Any]:
        """Informational facts (library versions, device name); recorded, never compared."""
        return {}

    # -- lifecycle ---------------------------------------------------------------------------
    def activate(self) -> Runner:
        if self.is_active:
            raise UsageError(f"runner {self.name} is already active")
        self.activate_impl()
        self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            try:
                self.deactivate_impl()
            finally:
                self.is_active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # -- inference ---------------------------------------------------------------------------
    def infer(self, feed: Mapping[str, Array]) -> dict[str, Array]:
        """Run the member on ``feed`` (``{input_name: batch}``); return ``{"logits": ...}``."""
        if not self.is_active:
            raise UsageError(f"runner {self.name} is not active: use it inside 'with runner:'")
        x = self._checked(feed)
        n = int(x.shape[0])
        if n == 0:
            return {LOGITS: self.empty_logits()}
        pieces = []
        for a, b in chunk_bounds(n, self.max_batch or n):
            rows = self.bucket(b - a)
            pieces.append(self.infer_impl(x[a:b], rows))
            self.rows_run += rows
            self.calls += 1
        self.rows_received += n
        logits = ops_for(pieces[0]).concat(pieces)
        if tuple(logits.shape) != (n, self.member.num_classes):
            raise BadInputError(f"member {self.member.name!r} returned logits of shape {tuple(logits.shape)} on "
                                f"{self.backend}; the manifest says {(n, self.member.num_classes)}")
        return {LOGITS: logits}

    def _checked(self, feed: Mapping[str, Array]) -> Array:
        (meta,) = self.input_metadata().values()
        if set(feed) != {meta.name}:
            raise BadInputError(f"runner {self.name} takes one input named {meta.name!r}, got {sorted(feed)}")
        x = feed[meta.name]
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != len(meta.shape) or shape[1:] != meta.shape[1:]:
            want = ", ".join("n" if d is None else str(d) for d in meta.shape)
            raise BadInputError(f"runner {self.name} takes ({want}), got {shape}")
        if "float" not in str(getattr(x, "dtype", "")):
            raise BadInputError(f"runner {self.name} takes a preprocessed float batch, got dtype {x.dtype}")
        return x

    def empty_logits(self) -> Array:
        """Logits of an empty batch, shape (0, K)."""
        import numpy as np

        return np.zeros((0, self.member.num_classes), dtype=np.float32)

    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, x: Array, rows: int) -> Array:
        """Logits ``(len(x), K)`` float32 of one chunk (at most ``max_batch`` rows), run as
        ``rows`` rows (``rows > len(x)``: pad with zero rows and drop their logits)."""

    @abc.abstractmethod
    def deactivate_impl(self) -> None: ...
