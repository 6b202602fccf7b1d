"""The one interface every backend implements (in the spirit of Polygraphy's runners).

A runner wraps one member of a bundle on one backend. Its lifecycle::

    runner = OnnxRuntimeRunner(bundle, member_index)   # cheap: nothing loaded yet
    with runner:                                       # activate(): session / context / stream
        out = runner.infer({"input": x})               # named arrays in, named arrays out
    # deactivate(): everything released

``infer`` takes the member's input name mapped to a batch that is already preprocessed
(float32, (n, C, H, W), mean/std applied) and returns ``{"logits": (n, K) array}``: a numpy
float32 array on the CPU backends, a torch tensor on the device for the GPU backends (so that
running ensemble state stays on the device). Backends import their heavy dependencies lazily in
``activate`` (or their module), never at ``import wcx``.
"""

from __future__ import annotations

import abc
from typing import Any

from wcx.bundle import Bundle, MemberSpec
from wcx.errors import WcxError

LOGITS = "logits"


class Runner(abc.ABC):
    """One member on one backend. Subclasses set ``backend`` and implement the three hooks."""

    backend: str = ""
    #: whether subset sizes are rounded up to shape buckets (GPU backends) or run exactly (CPU)
    pads_to_buckets: bool = False

    def __init__(self, bundle: Bundle, member_index: int) -> None:
        self.bundle = bundle
        self.member_index = member_index
        self.member: MemberSpec = bundle.members[member_index]
        self.is_active = False

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.member.name}"

    def activate(self) -> Runner:
        if self.is_active:
            raise WcxError(f"runner {self.name} is already active")
        self.activate_impl()
        self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            try:
                self.deactivate_impl()
            finally:
                self.is_active = False

    def infer(self, feed: dict[str, Any]) -> dict[str, Any]:
        """Run the member on ``feed`` (``{input_name: batch}``); return ``{"logits": ...}``."""
        if not self.is_active:
            raise WcxError(f"runner {self.name} is not active: use it inside 'with runner:'")
        if set(feed) != {self.member.input_name}:
            raise WcxError(
                f"runner {self.name} takes one input named {self.member.input_name!r}, "
                f"got {sorted(feed)}"
            )
        return self.infer_impl(feed)

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, feed: dict[str, Any]) -> dict[str, Any]: ...

    @abc.abstractmethod
    def deactivate_impl(self) -> None: ...
