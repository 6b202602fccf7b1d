"""``TorchRunner``: one member as a PyTorch module, FP16 on CUDA with CUDA graphs per shape bucket.

Where the module comes from: a bundle member that the torch backend can run records
``torch_source = {"callable": "pkg.mod:fn", "file": "members/<name>.safetensors", "sha256": ...}``.
The runner imports ``pkg.mod``, calls ``fn()`` with no arguments to build the
``nn.Module`` (source code travels as an importable package such as ``wcx.zoo.architectures``, not
inside the bundle), and loads the member's weights from the bundle's safetensors file with
``safetensors.torch.load_file`` (never pickle), ``strict=True``. Plain source + safetensors load on
any torch version, unlike a ``torch.export`` file made with a newer torch. Importing the callable
runs that package's code: treat a bundle like code and only run bundles you trust.

On CUDA (the default ``device="cuda"``) the module runs in FP16 (``precision="fp16"``), in
channels-last memory format, and every shape bucket (batch sizes rounded up to powers of two up
to ``max_batch``) is captured as a CUDA graph on first use: static input and output buffers per
bucket, three warm-up runs on a side stream before capture. Graphs are kept per CUDA stream (the
executor gives every in-flight batch its own stream, so two batches never share a graph's static
buffers); the graphs of one stream share one memory pool. ``device="cpu"`` runs the same code
eagerly in FP32 without graphs (how the tests run it). Outputs are float32 torch tensors on the
device (the running ensemble state stays there); numpy inputs are copied to the device.

Works with torch 2.4 and newer. torch is imported when the runner is built; without it the
runner raises ``MissingDependencyError`` saying how to install the ``torch`` extra from the
checkout (:func:`wcx.errors.install_hint`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from wcx.bundle import Bundle, sha256_file
from wcx.core.manifest import InputSection, MemberSection
from wcx.core.provenance import MemberProvenance
from wcx.errors import BadInputError, MissingDependencyError, missing_dependency
from wcx.runtime.buckets import bucket_sizes
from wcx.runtime.runner import Runner

#: warm-up runs on a side stream before each CUDA-graph capture
GRAPH_WARMUP = 3


def import_torch(purpose: str = "The torch backend") -> Any:
    try:
        import torch
    except ImportError:
        raise missing_dependency("torch", "torch", purpose) from None
    return torch


def load_torch_source(bundle: Bundle | None, member: MemberSection) -> Any:
    """Build member's ``nn.Module`` from its ``torch_source`` (callable + safetensors weights)."""
    torch = import_torch()
    src = member.torch_source
    if src is None:
        raise BadInputError(
            f"member {member.name!r} has no torch_source: the torch backend needs members exported "
            "from a 'module:callable' with their weights as safetensors (torch_source in the "
            "manifest); run this bundle with backend='onnxruntime' or re-export it that way"
        )
    ref = src.callable
    mod_name, _, attr = ref.partition(":")
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
    rel = src.file
    if rel:
        if bundle is None:
            raise BadInputError(f"member {member.name!r}: torch_source names a file but no bundle was given")
        path = bundle.file(rel)
        if not path.is_file():
            raise BadInputError(f"{bundle.path}: torch weights {rel} are missing from the bundle")
        if sha256_file(path) != src.sha256:
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
    array_library = "torch"
    pads_to_buckets = True

    def __init__(
        self,
        bundle: Bundle | None,
        member_index: int,
        *,
        device: str | None = None,
        precision: str | None = None,
        cuda_graphs: bool | None = None,
        max_batch: int | None = None,
        channels_last: bool = True,
        cudnn_benchmark: bool = True,
        module_factory: Callable[[], Any] | None = None,
        member: MemberSection | None = None,
    ) -> None:
        super().__init__(bundle, member_index, member=member)
        self.torch = import_torch()
        torch = self.torch
        self._device = torch.device(device or "cuda")
        self.on_cuda = self._device.type == "cuda"
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
        self.max_batch = 256 if max_batch is None else int(max_batch)
        bucket_sizes(self.max_batch)  # refuses a max_batch below 1
        self.channels_last = channels_last and len(self.member.sample_shape) == 3
        self.cudnn_benchmark = cudnn_benchmark
        self._module_factory = module_factory
        self.module: Any = None
        self._graphs: dict[tuple[int, int], tuple[Any, Any, Any]] = {}
        self._pools: dict[int, Any] = {}

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
        spec = MemberSection(
            name=name, file="", sha256="0" * 64, precision="fp32",
            input=InputSection(name="input", shape=tuple(sample_shape), mean=(0.0,), std=(1.0,)),
            output_name="logits", num_classes=num_classes, macs=0,
        )
        return cls(None, 0, member=spec, module_factory=module_factory, **options)

    # -- facts -------------------------------------------------------------------------------
    @property
    def precision(self) -> str:
        return self._precision

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def input_dtype(self) -> str:
        return "float16" if self._precision == "fp16" else "float32"

    @property
    def dtype(self) -> Any:
        return self.torch.float16 if self._precision == "fp16" else self.torch.float32

    def provenance(self) -> MemberProvenance:
        base = super().provenance()
        src = self.member.torch_source
        return MemberProvenance(base.name, base.precision, onnx_sha256=base.onnx_sha256, input=base.input,
                                weights_sha256=None if src is None else src.sha256)

    def info(self) -> dict[str, Any]:
        torch = self.torch
        facts: dict[str, Any] = {"torch": torch.__version__}
        if self.on_cuda and torch.cuda.is_available():
            facts["gpu_name"] = torch.cuda.get_device_name(self._device)
            facts["cuda"] = torch.version.cuda
        return facts

    # -- lifecycle ---------------------------------------------------------------------------
    def activate_impl(self) -> None:
        torch = self.torch
        if self.on_cuda and not torch.cuda.is_available():
            raise MissingDependencyError(
                "the torch backend on CUDA needs an NVIDIA GPU and a CUDA build of torch "
                f"(torch {torch.__version__} sees no GPU); use backend='onnxruntime' here"
            )
        module = self._module_factory() if self._module_factory else load_torch_source(self.bundle, self.member)
        module = module.eval().to(self._device, dtype=self.dtype)
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
    def empty_logits(self) -> Any:
        return self.torch.zeros((0, self.member.num_classes), dtype=self.torch.float32, device=self._device)

    def infer_impl(self, x: Any, rows: int) -> Any:
        """Logits of one chunk as a new float32 tensor (never a view of a graph's buffer).

        On CUDA the work is enqueued on the current stream; call under ``torch.inference_mode()``
        to avoid autograd bookkeeping (``infer`` does so itself when it is not).
        """
        torch = self.torch
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        x = x.to(self._device, non_blocking=True)
        with torch.inference_mode():
            return self._run_bucket(x, rows)

    def _run_bucket(self, x: Any, bucket: int) -> Any:
        torch = self.torch
        n = int(x.shape[0])
        if self.cuda_graphs:
            stream = torch.cuda.current_stream(self._device).cuda_stream
            static_in, static_out, graph = self._graphs.get((stream, bucket)) or self._capture(stream, bucket)
            static_in[:n].copy_(x)
            graph.replay()
            out = static_out[:n]
            return out.float() if out.dtype != torch.float32 else out.clone()
        x = x.to(self.dtype)
        if bucket > n:
            x = torch.cat([x, x.new_zeros((bucket - n, *x.shape[1:]))])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.module(x)[:n].float()

    def _capture(self, stream: int, bucket: int) -> tuple[Any, Any, Any]:
        torch = self.torch
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        static_in = torch.zeros(
            (bucket, *self.member.sample_shape), dtype=self.dtype, device=self._device
        ).contiguous(memory_format=fmt)
        current = torch.cuda.current_stream(self._device)
        side = torch.cuda.Stream(self._device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP):
                self.module(static_in)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if stream not in self._pools:
            self._pools[stream] = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self._pools[stream], capture_error_mode="thread_local"):
            static_out = self.module(static_in)
        entry = (static_in, static_out, graph)
        self._graphs[(stream, bucket)] = entry
        return entry
