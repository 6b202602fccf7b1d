"""The backend registry: the one place that turns a backend name into runners.

Every part of wcx that needs a backend reads this registry: ``Cascade.load`` (including
``backend="auto"``), calibration (which runs the members on held-out data), the benchmarks and
the command line (its ``--backend`` choices). A :class:`Backend` says which runner class to build
(imported only when used), which options its constructor takes, how to tell whether it can run a
bundle here, and where ``"auto"`` tries it.

wcx registers ``onnxruntime`` (CPU, always available), ``torch`` (PyTorch on CUDA) and
``tensorrt``. Another package adds a backend with :func:`register_backend` or through the
``wcx.backends`` entry point group (an entry point naming a :class:`Backend` instance).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from wcx.bundle import Bundle
from wcx.core.provenance import Provenance
from wcx.core.registry import Registry
from wcx.errors import BadInputError, MissingDependencyError
from wcx.runtime.runner import Runner

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Backend:
    """How to build runners of one backend.

    ``runner``: the :class:`Runner` subclass, or ``"module:Class"`` (imported when first used).
    ``options``: the keyword options its constructor takes (others given to the library are not
    passed). ``availability(bundle, options)`` returns ``(True, "")`` or ``(False, why)`` without
    raising; it should be cheap when the backend's packages are missing. ``auto_rank``: the order
    in which ``backend="auto"`` tries backends (lower first; None: never automatically).
    """

    name: str
    runner: str | type[Runner]
    options: tuple[str, ...] = ()
    availability: Callable[[Bundle, dict[str, Any]], tuple[bool, str]] | None = None
    auto_rank: int | None = None
    description: str = ""

    def runner_class(self) -> type[Runner]:
        if isinstance(self.runner, type):
            return self.runner
        module, _, attr = self.runner.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            raise MissingDependencyError(f"the {self.name} backend cannot be loaded here ({exc}); "
                                         "use backend='onnxruntime'") from None
        if not (isinstance(cls, type) and issubclass(cls, Runner)):
            raise TypeError(f"backend {self.name!r}: {self.runner} is not a Runner subclass")
        return cls

    def available(self, bundle: Bundle, options: dict[str, Any] | None = None) -> tuple[bool, str]:
        """Whether this backend can run ``bundle`` here (never raises)."""
        if self.availability is None:
            return True, ""
        try:
            return self.availability(bundle, dict(options or {}))
        except Exception as exc:  # a broken driver, for instance: report, never raise
            return False, f"{type(exc).__name__}: {exc}"

    def create(self, bundle: Bundle, member_index: int, **options: Any) -> Runner:
        """A (not yet active) runner for one member; options it does not take are left out."""
        taken = {k: v for k, v in options.items() if k in self.options and v is not None}
        ignored = sorted(k for k, v in options.items() if k not in self.options and v is not None)
        if ignored:
            log.debug("backend %s ignores option(s) %s", self.name, ", ".join(ignored))
        return self.runner_class()(bundle, member_index, **taken)


BACKEND_REGISTRY: Registry[Backend] = Registry("backend", "wcx.backends", lambda b: b.name)


def register_backend(backend: Backend, *, replace: bool = False) -> Backend:
    """Make ``backend`` available by name to the library and the command line."""
    if not isinstance(backend, Backend):
        raise TypeError(f"register_backend takes a Backend, got {type(backend).__name__}")
    return BACKEND_REGISTRY.register(backend, replace=replace)


def get_backend(name: str) -> Backend:
    """The backend called ``name``; ``BadInputError`` listing the valid ones otherwise."""
    return BACKEND_REGISTRY.get(name)


def backend_names() -> list[str]:
    """Every registered backend name (plugins included)."""
    return BACKEND_REGISTRY.names()


def backend_available(bundle: Bundle, backend: str, **options: Any) -> tuple[bool, str]:
    """Whether ``backend`` can run ``bundle`` on this machine, and why not."""
    return get_backend(backend).available(bundle, options)


def create_runners(bundle: Bundle, backend: str, **options: Any) -> list[Runner]:
    """One (not yet active) runner per member of ``bundle``, stage order."""
    spec = get_backend(backend)
    return [spec.create(bundle, i, **options) for i in range(len(bundle.members))]


def pick_backend(bundle: Bundle, requested: str, *, calibrated: str | None = None, strict: bool = False,
                 options: dict[str, Any] | None = None) -> str:
    """Resolve ``requested`` (a name or ``"auto"``) to a backend that can run ``bundle`` here.

    ``"auto"``: the calibrated backend if it can run here (``strict`` refuses anything else);
    otherwise the available backend of lowest ``auto_rank``.
    """
    if requested != "auto":
        get_backend(requested)
        return requested
    if calibrated is not None and calibrated in BACKEND_REGISTRY:
        ok, why = backend_available(bundle, calibrated, **(options or {}))
        if ok:
            return calibrated
        if strict:
            raise BadInputError(f"{bundle.path}: calibrated on the {calibrated} backend, which cannot run here "
                                f"({why}) (strict mode refuses another backend)")
    ranked = sorted((b for b in BACKEND_REGISTRY if b.auto_rank is not None), key=lambda b: b.auto_rank or 0)
    reasons = []
    for b in ranked:
        ok, why = b.available(bundle, dict(options or {}))
        if ok:
            return b.name
        reasons.append(f"{b.name}: {why}")
    raise BadInputError(f"no backend can run {bundle.path} here ({'; '.join(reasons)})")


def provenance_of(runners: Sequence[Runner], backend: str) -> Provenance:
    """The provenance of the logits these runners produce (see :mod:`wcx.core.provenance`)."""
    info: dict[str, Any] = {}
    for r in runners:
        info.update(r.info())
    return Provenance(backend, tuple(r.provenance() for r in runners), info)


# -------------------------------------------------------------------------------------------
# the backends that ship with wcx
# -------------------------------------------------------------------------------------------
def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (one already imported counts)."""
    import sys

    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def _onnxruntime_available(bundle: Bundle, options: dict[str, Any]) -> tuple[bool, str]:
    if not _installed("onnxruntime"):
        return False, "onnxruntime is not installed"
    return True, ""


def _torch_available(bundle: Bundle, options: dict[str, Any]) -> tuple[bool, str]:
    missing = [m.name for m in bundle.members if m.torch_source is None]
    if missing:
        return False, f"members {', '.join(missing)} have no torch_source"
    if not _installed("torch"):
        return False, "torch is not installed (install wcx with its 'torch' extra)"
    if str(options.get("device") or "cuda").startswith("cpu"):
        return True, ""
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible to torch"
    return True, ""


def _tensorrt_available(bundle: Bundle, options: dict[str, Any]) -> tuple[bool, str]:
    if bundle.engines is None or not bundle.engines.members:
        return False, "the bundle has no TensorRT engines (wcx build-engines)"
    if not _installed("tensorrt"):
        return False, "tensorrt is not installed"
    from wcx.cuda_runtime import Cuda

    try:
        Cuda(purpose="The TensorRT backend")
    except MissingDependencyError as exc:
        return False, str(exc)
    return True, ""


ONNXRUNTIME = register_backend(Backend(
    "onnxruntime", "wcx.runtime.onnxruntime_runner:OnnxRuntimeRunner", options=("threads", "max_batch"),
    availability=_onnxruntime_available, auto_rank=30, description="ONNX Runtime on the CPU (the default)",
))
TORCH = register_backend(Backend(
    "torch", "wcx.runtime.torch_runner:TorchRunner", options=("device", "max_batch", "cuda_graphs"),
    availability=_torch_available, auto_rank=20, description="PyTorch on CUDA: FP16, CUDA graphs per shape bucket",
))
TENSORRT = register_backend(Backend(
    "tensorrt", "wcx.runtime.tensorrt_runner:TensorRTRunner", options=("log_level",),
    availability=_tensorrt_available, auto_rank=10,
    description="TensorRT engines built by wcx build-engines (CUDA through cuda-bindings, no torch)",
))
