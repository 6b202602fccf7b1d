"""``TorchRunner``: one member as a PyTorch module, FP16 on CUDA with CUDA graphs per shape bucket.

Where the module comes from (the decision of issue 4): a bundle member that the torch backend can
run records ``torch_source = {"callable": "pkg.mod:fn", "file": "members/<name>.safetensors",
"sha256": ...}``. The runner imports ``pkg.mod``, calls ``fn()`` with no arguments to build the
``nn.Module`` (source code travels as an importable package such as ``wcx.zoo.architectures``, not
inside the bundle), and loads the member's weights from the bundle's safetensors file with
``safetensors.torch.load_file`` (never pickle), ``strict=True``. Plain source + safetensors load on
any torch version, unlike a ``torch.export`` file made with a newer torch. Importing the callable
runs that package's code: treat a bundle like code and only run bundles you trust.

On CUDA (the default ``device="cuda"``) the module runs in FP16 (``precision="fp16"``), in
channels-last memory format, and every shape bucket (batch sizes rounded up to powers of two up
to ``max_batch``) is captured as a CUDA graph on first use: static input and output buffers per
bucket, three warm-up runs on a side stream before capture, graphs of one *slot* (one in-flight
batch, see the executor) sharing one memory pool. ``device="cpu"`` runs the same code eagerly in
FP32 without graphs (how the tests run it). Outputs are float32 torch tensors on the device (the
running ensemble state stays there).

Works with torch 2.4 and newer (the lent GPU machine has 2.11). torch is imported when the runner
is built; without it the runner raises ``MissingDependencyError`` naming ``wcx[torch]``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from wcx.bundle import Bundle, MemberSpec, sha256_file
from wcx.errors import BadInputError, MissingDependencyError, missing_dependency
from wcx.runtime.runner import LOGITS, Runner

#: warm-up runs on a side stream before each CUDA-graph capture
GRAPH_WARMUP = 3


def import_torch(purpose: str = "The torch backend") -> Any:
    try:
        import torch
    except ImportError:
        raise missing_dependency("torch", "torch", purpose) from None
    return torch


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
    """Smallest bucket >= ``n`` (``n`` <= ``max_batch``).

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
    """``[start, stop)`` pieces of at most ``max_batch`` rows covering ``n`` rows.

    >>> chunk_bounds(600, 256)
    [(0, 256), (256, 512), (512, 600)]
    """
    return [(a, min(a + max_batch, n)) for a in range(0, n, max_batch)]


def load_torch_source(bundle: Bundle | None, member: MemberSpec) -> Any:
    """Build member's ``nn.Module`` from its ``torch_source`` (callable + safetensors weights)."""
    torch = import_torch()
    src = member.torch_source
    if not src or not isinstance(src, dict) or not src.get("callable"):
        raise BadInputError(
            f"member {member.name!r} has no torch_source: the torch backend needs members exported "
            "from a 'module:callable' with their weights as safetensors (torch_source in the "
            "manifest); run this bundle with backend='onnxruntime' or re-export it that way"
        )
    ref = str(src["callable"])
    mod_name, sep, attr = ref.partition(":")
    if not sep or not mod_name or not attr:
        raise BadInputError(f"member {member.name!r}: torch_source callable {ref!r} is not 'module:callable'")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise BadInputError(
            f"member {member.name!r}: cannot import {mod_name!r} for torch_source {ref!r} ({exc})"
        ) from None
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise BadInputError(f"member {member.name!r}: {mod_name!r} has no {attr!r} (torch_source {ref!r})") from None
    module = obj()
    if not isinstance(module, torch.nn.Module):
        raise BadInputError(f"member {member.name!r}: {ref}() returned {type(module).__name__}, not an nn.Module")
    rel = src.get("file")
    if rel:
        if bundle is None:
            raise BadInputError(f"member {member.name!r}: torch_source names a file but no bundle was given")
        path = bundle.file(rel)
        if not path.is_file():
            raise BadInputError(f"{bundle.path}: torch weights {rel} are missing from the bundle")
        if src.get("sha256") and sha256_file(path) != src["sha256"]:
            raise BadInputError(f"{bundle.path}: torch weights {rel} were altered (sha256 mismatch)")
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise missing_dependency("safetensors", "torch", "Loading torch weights") from None
        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise BadInputError(f"{path}: not a readable safetensors file ({exc})") from None
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise BadInputError(f"{path}: weights do not fit {ref}() ({first})") from None
    return module.eval()


class TorchRunner(Runner):
    """A member as a PyTorch module on ``device`` (CUDA: FP16 + CUDA graphs; CPU: FP32, eager)."""

    backend = "torch"
    pads_to_buckets = True

    def __init__(
        self,
        bundle: Bundle | None,
        member_index: int,
        *,
        device: str | None = None,
        precision: str | None = None,
        cuda_graphs: bool | None = None,
        max_batch: int = 256,
        channels_last: bool = True,
        cudnn_benchmark: bool = True,
        module_factory: Callable[[], Any] | None = None,
        member: MemberSpec | None = None,
    ) -> None:
        if member is not None:  # built by from_module: no bundle behind it
            self.bundle = bundle  # type: ignore[assignment]
            self.member_index = member_index
            self.member = member
            self.is_active = False
        else:
            if bundle is None:
                raise BadInputError("TorchRunner needs a bundle (or use TorchRunner.from_module)")
            super().__init__(bundle, member_index)
        self.torch = import_torch()
        torch = self.torch
        self.device = torch.device(device or "cuda")
        self.on_cuda = self.device.type == "cuda"
        if precision is None:
            precision = "fp16" if self.on_cuda else "fp32"
        if precision not in ("fp16", "fp32"):
            raise BadInputError(f"the torch backend runs fp16 or fp32, not {precision!r}")
        self._precision = precision
        if cuda_graphs is None:
            cuda_graphs = self.on_cuda
        if cuda_graphs and not self.on_cuda:
            raise BadInputError("CUDA graphs need device='cuda'")
        self.cuda_graphs = bool(cuda_graphs)
        self.max_batch = int(max_batch)
        self.buckets = bucket_sizes(self.max_batch)
        self.channels_last = channels_last and len(self.member.sample_shape) == 3
        self.cudnn_benchmark = cudnn_benchmark
        self._module_factory = module_factory
        self.module: Any = None
        self._graphs: dict[tuple[int, int], tuple[Any, Any, Any]] = {}
        self._pools: dict[int, Any] = {}
        self.rows_received = 0
        self.rows_run = 0
        self.calls = 0

    @classmethod
    def from_module(
        cls,
        module_factory: Callable[[], Any],
        *,
        name: str,
        sample_shape: tuple[int, ...],
        num_classes: int,
        **options: Any,
    ) -> TorchRunner:
        """A runner for a module that is not in a bundle (benchmarks): ``module_factory()``
        builds the ``nn.Module``. ``options`` are those of the constructor."""
        spec = MemberSpec(
            name=name, file="", sha256="", precision="fp32", input_name="input",
            input_shape=[None, *sample_shape], input_dtype="float32", output_name="logits",
            num_classes=num_classes, macs=0, preprocess={},
        )
        return cls(None, 0, member=spec, module_factory=module_factory, **options)

    # -- facts -------------------------------------------------------------------------------
    @property
    def precision(self) -> str:
        return self._precision

    @property
    def torch_device(self) -> Any:
        return self.device

    @property
    def dtype(self) -> Any:
        return self.torch.float16 if self._precision == "fp16" else self.torch.float32

    # -- lifecycle ---------------------------------------------------------------------------
    def activate_impl(self) -> None:
        torch = self.torch
        if self.on_cuda and not torch.cuda.is_available():
            raise MissingDependencyError(
                "the torch backend on CUDA needs an NVIDIA GPU and a CUDA build of torch "
                f"(torch {torch.__version__} sees no GPU); use backend='onnxruntime' here"
            )
        module = self._module_factory() if self._module_factory else load_torch_source(self.bundle, self.member)
        module = module.eval().to(self.device, dtype=self.dtype)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        for p in module.parameters():
            p.requires_grad_(False)
        if self.on_cuda and self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self.module = module

    def deactivate_impl(self) -> None:
        self._graphs.clear()
        self._pools.clear()
        self.module = None
        if self.on_cuda:
            self.torch.cuda.empty_cache()

    # -- running -----------------------------------------------------------------------------
    def to_device(self, x: Any) -> Any:
        """A numpy batch or tensor as a tensor on the device in the runner's dtype/layout."""
        torch = self.torch
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        x = x.to(self.device, dtype=self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def infer_impl(self, feed: dict[str, Any]) -> dict[str, Any]:
        x = feed[self.member.input_name]
        with self.torch.inference_mode():
            logits, _ = self.run_padded(self.to_device(x))
        return {LOGITS: logits}

    def run_padded(self, x: Any, *, slot: int = 0) -> tuple[Any, int]:
        """Run ``x`` (n rows, on the device) in bucket-sized pieces of at most ``max_batch`` rows.

        Returns ``(logits, padded_rows)``: a new float32 (n, K) tensor (never a view of a graph's
        static buffer) and the number of rows the module actually ran (buckets included).
        Call it inside ``torch.inference_mode()`` and, on CUDA, on the stream of ``slot``.
        """
        n = int(x.shape[0])
        if n <= self.max_batch:
            bucket = pick_bucket(n, self.max_batch)
            return self._run_bucket(x, bucket, slot), bucket
        pieces, padded = [], 0
        for a, b in chunk_bounds(n, self.max_batch):
            bucket = pick_bucket(b - a, self.max_batch)
            pieces.append(self._run_bucket(x[a:b], bucket, slot))
            padded += bucket
        return self.torch.cat(pieces), padded

    def _run_bucket(self, x: Any, bucket: int, slot: int) -> Any:
        torch = self.torch
        n = int(x.shape[0])
        self.rows_received += n
        self.rows_run += bucket
        self.calls += 1
        if self.cuda_graphs:
            static_in, static_out, graph = self._graphs.get((slot, bucket)) or self._capture(slot, bucket)
            static_in[:n].copy_(x)
            graph.replay()
            out = static_out[:n]
            return out.float() if out.dtype != torch.float32 else out.clone()
        x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if bucket > n:
            x = torch.cat([x, x.new_zeros((bucket - n, *x.shape[1:]))])
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        return self.module(x)[:n].float()

    def _capture(self, slot: int, bucket: int) -> tuple[Any, Any, Any]:
        torch = self.torch
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        static_in = torch.zeros(
            (bucket, *self.member.sample_shape), dtype=self.dtype, device=self.device
        ).contiguous(memory_format=fmt)
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP):
                self.module(static_in)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if slot not in self._pools:
            self._pools[slot] = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self._pools[slot], capture_error_mode="thread_local"):
            static_out = self.module(static_in)
        entry = (static_in, static_out, graph)
        self._graphs[(slot, bucket)] = entry
        return entry

    def prepare_buckets(self, buckets: list[int], *, slot: int = 0) -> None:
        """Capture the graphs of ``buckets`` now (otherwise each is captured on first use)."""
        if not self.cuda_graphs:
            return
        torch = self.torch
        with torch.inference_mode():
            for b in buckets:
                if (slot, b) not in self._graphs:
                    self._capture(slot, b)
