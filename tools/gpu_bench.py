#!/usr/bin/env python
"""Benchmark wcx's own cascade executor and torch runner on a CUDA GPU.

What it measures, all through ``wcx.runtime`` (``TorchRunner`` + ``Executor`` + ``Cascade``):

1. each model alone (torchvision EfficientNet-B0..B4, random weights: latency does not depend
   on weights), FP16, channels-last, one CUDA graph per shape bucket, at batch sizes 1/32/256 and
   at the bucket sizes the cascades' second stages run at (these are the cascades' floors);
2. two-member cascades of one model (two instances, so two sets of graphs) with *forced* pass
   fractions of 10/25/50% (``ForcedFractionPolicy``: that fraction of the rows continues whatever
   their score), input a raw uint8 batch on the device (so preprocessing, scoring, the subset-size
   copy, gather and scatter are all inside the timing), compared with the floor (sum of the
   stages alone at the sizes the cascade ran them) and with B4 alone;
3. the pipelined mode (``Cascade.stream``) against plain calls on host uint8 batches;
4. the executor's host path against its device path with the same torch-CUDA runners, on host
   uint8 batches: on the host path (what a TensorRT cascade runs, to stay torch-free) every stage's
   logits come back to the host, scores and row selection run in numpy and the selected rows are
   uploaded again;
5. the torch runner against ONNX Runtime on a real zoo member (``wcx.zoo.architectures``) on
   real Fashion-MNIST inputs: top-1 agreement (target >= 99.5%). Skipped with a message when the
   zoo or its weights are absent.

Baselines are rerun in the same run (an H100 and an H200 differ). The table comes last.
Latency = host clock around a call after ``torch.cuda.synchronize()``, warm-up excluded;
p50 and mean over ``--repeats`` calls.

Usage::

    python tools/gpu_bench.py                 # the GPU run (about 3-6 minutes)
    python tools/gpu_bench.py --tiny          # CPU, tiny stand-in models: checks the script in seconds
    python tools/gpu_bench.py --json out.json # also write every measurement
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wcx.core.manifest import InputSection  # noqa: E402
from wcx.core.policy import AllPolicy, ForcedFractionPolicy  # noqa: E402
from wcx.core.preprocess import Preprocessor  # noqa: E402
from wcx.runtime.buckets import pick_bucket  # noqa: E402
from wcx.runtime.cascade import Cascade  # noqa: E402
from wcx.runtime.executor import Executor  # noqa: E402
from wcx.runtime.runner import LOGITS, Runner  # noqa: E402
from wcx.runtime.torch_runner import TorchRunner  # noqa: E402

#: torchvision builder and input resolution of each size
MODELS = {"b0": ("efficientnet_b0", 224), "b1": ("efficientnet_b1", 240), "b2": ("efficientnet_b2", 260),
          "b3": ("efficientnet_b3", 300), "b4": ("efficientnet_b4", 380)}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class HostLogits(Runner):
    """A torch runner whose logits come back to the host as numpy: a cascade of these runs the
    executor's host path, as a TensorRT cascade does."""

    backend = "torch-host"
    array_library = "numpy"
    pads_to_buckets = False  # the inner runner pads to its buckets itself

    def __init__(self, inner: TorchRunner) -> None:
        super().__init__(None, 0, member=inner.member)
        self.inner = inner

    def activate_impl(self) -> None:
        if not self.inner.is_active:
            self.inner.activate()

    def infer_impl(self, x: Any, rows: int) -> Any:
        return self.inner.infer({self.member.input.name: x})[LOGITS].cpu().numpy()

    def deactivate_impl(self) -> None:
        self.inner.deactivate()


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
def tiny_factory(size: str) -> Callable[[], Any]:
    """A small conv net standing in for EfficientNet-<size> in --tiny mode (no torchvision)."""
    import torch
    from torch import nn

    width = 4 * (1 + int(size[1]))

    def build() -> Any:
        torch.manual_seed(int(size[1]))
        return nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10),
        ).eval()

    return build


def tv_factory(size: str) -> Callable[[], Any]:
    import torchvision

    builder = getattr(torchvision.models, MODELS[size][0])
    return lambda: builder(weights=None).eval()


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.torch = torch
        self.args = args
        self.tiny = args.tiny
        self.device = "cpu" if args.tiny else "cuda"
        self.graphs = not args.tiny
        self.sizes = [1, 4, 8] if args.tiny else args.batch_sizes
        self.fractions = args.fractions
        self.warmup = 1 if args.tiny else args.warmup
        self.repeats = 3 if args.tiny else args.repeats
        self.factory = tiny_factory if args.tiny else tv_factory
        self.records: list[dict[str, Any]] = []
        self.alone: dict[tuple[str, int], dict[str, float]] = {}

    def res(self, size: str) -> int:
        return 16 if self.tiny else MODELS[size][1]

    def input_section(self, size: str) -> InputSection:
        res = self.res(size)
        return InputSection(name="input", shape=(3, res, res), mean=tuple(IMAGENET_MEAN), std=tuple(IMAGENET_STD))

    def num_classes(self) -> int:
        return 10 if self.tiny else 1000

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def time(self, fn: Callable[[], Any]) -> dict[str, float]:
        for _ in range(self.warmup):
            fn()
        self.sync()
        times = []
        for _ in range(self.repeats):
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append((time.perf_counter() - t0) * 1000.0)
        t = np.asarray(times)
        return {"p50_ms": float(np.median(t)), "mean_ms": float(t.mean()), "p90_ms": float(np.percentile(t, 90))}

    def runner(self, size: str, seed: int) -> TorchRunner:
        r = TorchRunner.from_module(
            self.factory(size), name=f"{size}_{seed}", sample_shape=(3, self.res(size), self.res(size)),
            num_classes=self.num_classes(), device=self.device, cuda_graphs=self.graphs,
            max_batch=max(self.sizes),
        )
        return r.activate()

    def images(self, size: str, n: int) -> Any:
        """A raw uint8 image batch on the device."""
        g = self.torch.Generator().manual_seed(0)
        x = self.torch.randint(0, 256, (n, 3, self.res(size), self.res(size)), dtype=self.torch.uint8, generator=g)
        return x.to(self.device)

    # -- 1. models alone ---------------------------------------------------------------------
    def cascade_buckets(self, bs: int) -> set[int]:
        out = set()
        for f in self.fractions:
            for k in {math.floor(f * bs), math.ceil(f * bs)}:
                if k > 0:
                    out.add(pick_bucket(k, max(self.sizes)))
        return out

    def models_alone(self, sizes: list[str], cascade_models: list[str]) -> None:
        torch = self.torch
        for size in sizes:
            log(f"[alone] {size}")
            r = self.runner(size, 0)
            want = set(self.sizes)
            if size in cascade_models:
                for bs in self.sizes:
                    want |= self.cascade_buckets(bs)
            prep = Preprocessor(self.input_section(size))
            x = prep(self.images(size, max(want)), dtype=r.dtype, channels_last=r.channels_last)
            with torch.inference_mode():
                for n in sorted(want):
                    stats = self.time(lambda n=n, r=r, x=x: r.infer({"input": x[:n]}))
                    self.alone[(size, n)] = stats
                    self.records.append({"config": f"{size} alone", "batch_size": n, **stats})
            r.deactivate()
            del r, x

    # -- 2. forced-fraction cascades ---------------------------------------------------------
    def cascades(self, cascade_models: list[str]) -> None:
        for size in cascade_models:
            log(f"[cascade] {size}+{size}")
            runners = [self.runner(size, 0), self.runner(size, 1)]
            ex = Executor(runners, policy=AllPolicy(), preprocess=Preprocessor(self.input_section(size)),
                          num_classes=self.num_classes(), score="msp")
            x = self.images(size, max(self.sizes))
            for bs in self.sizes:
                for f in self.fractions:
                    policy = ForcedFractionPolicy(f)
                    padded: list[int] = []

                    def call(bs: int = bs, policy: ForcedFractionPolicy = policy, padded: list[int] = padded,
                             ex: Executor = ex, x: Any = x) -> None:
                        out = ex.run(x[:bs], policy=policy, timing=True)
                        assert out.timing is not None
                        padded.append(out.timing.padded_rows[1])

                    stats = self.time(call)
                    timed = padded[self.warmup:]
                    floors = [self.alone[(size, bs)]["p50_ms"] + (self.alone[(size, p)]["p50_ms"] if p else 0.0)
                              for p in timed]
                    floor = float(np.median(floors))
                    b4 = self.alone.get(("b4", bs), {}).get("p50_ms")
                    self.records.append({
                        "config": f"{size}+{size} cascade {round(f * 100)}%", "batch_size": bs, **stats,
                        "floor_ms": floor, "overhead": stats["p50_ms"] / floor,
                        "vs_b4": stats["p50_ms"] / b4 if b4 else None,
                        "stage2_padded": sorted(set(timed)),
                    })
            for r in runners:
                r.deactivate()

    # -- 3. pipelined stream vs plain calls --------------------------------------------------
    def pipelined(self, size: str, fraction: float, n_batches: int = 20) -> None:
        log(f"[stream] {size}+{size} {round(fraction * 100)}%")
        runners = [self.runner(size, 0), self.runner(size, 1)]
        res = self.res(size)
        for bs in [b for b in self.sizes if b > 1]:
            c = Cascade(runners, policy=ForcedFractionPolicy(fraction), input=self.input_section(size),
                        num_classes=self.num_classes(), backend="torch")
            batch = np.random.default_rng(0).integers(0, 256, (bs, 3, res, res)).astype(np.uint8)
            for _ in range(3):
                c(batch)
                list(c.stream([batch] * 3))
            self.sync()
            t0 = time.perf_counter()
            for _ in range(n_batches):
                c(batch)
            plain = (time.perf_counter() - t0) * 1000.0 / n_batches
            t0 = time.perf_counter()
            for _ in c.stream([batch] * n_batches):
                pass
            streamed = (time.perf_counter() - t0) * 1000.0 / n_batches
            self.records.append({"config": f"{size}+{size} {round(fraction * 100)}% host uint8, plain calls",
                                 "batch_size": bs, "mean_ms": plain})
            self.records.append({"config": f"{size}+{size} {round(fraction * 100)}% host uint8, stream()",
                                 "batch_size": bs, "mean_ms": streamed, "speedup": plain / streamed})
        for r in runners:
            r.deactivate()

    # -- 4. the executor's host path against its device path --------------------------------
    def host_vs_device(self, size: str, fraction: float, sizes: list[int]) -> None:
        log(f"[host path] {size}+{size} {round(fraction * 100)}%")
        runners = [self.runner(size, 0), self.runner(size, 1)]
        res = self.res(size)
        device = Cascade(runners, policy=ForcedFractionPolicy(fraction), input=self.input_section(size),
                         num_classes=self.num_classes(), backend="torch")
        host = Cascade([HostLogits(r) for r in runners], policy=ForcedFractionPolicy(fraction),
                       input=self.input_section(size), num_classes=self.num_classes(), backend="torch-host")
        for bs in sizes:
            batch = np.random.default_rng(1).integers(0, 256, (bs, 3, res, res)).astype(np.uint8)
            on_device = self.time(lambda batch=batch: device(batch))
            on_host = self.time(lambda batch=batch: host(batch))
            self.records.append({"config": f"{size}+{size} {round(fraction * 100)}% device path", "batch_size": bs,
                                 **on_device})
            self.records.append({"config": f"{size}+{size} {round(fraction * 100)}% host path", "batch_size": bs,
                                 **on_host, "host_over_device": on_host["p50_ms"] / on_device["p50_ms"]})
        for r in runners:
            r.deactivate()

    # -- 5. torch runner vs ONNX Runtime on a zoo member -------------------------------------
    def zoo_parity(self, member: str, n_rows: int) -> None:
        log(f"[zoo] torch vs onnxruntime on {member}")
        try:
            import wcx.zoo.architectures as arch  # noqa: F401
        except Exception as exc:
            self.records.append({"config": f"zoo parity {member}", "skipped": f"zoo not importable ({exc})"})
            return
        data_file = ROOT / "wcx" / "zoo" / "data" / "test.npz"
        try:
            getattr(arch, member)()
        except Exception as exc:
            self.records.append({"config": f"zoo parity {member}", "skipped": f"zoo member unavailable ({exc})"})
            return
        if not data_file.is_file():
            self.records.append({"config": f"zoo parity {member}", "skipped": f"{data_file} is missing"})
            return
        from wcx.bundle import Bundle
        from wcx.export.exporter import export_bundle
        from wcx.runtime.onnxruntime_runner import OnnxRuntimeRunner
        from wcx.runtime.runner import LOGITS

        with np.load(data_file) as z:
            x = z["x"][:n_rows]
        zoo_json = ROOT / "wcx" / "zoo" / "zoo.json"
        pre = json.loads(zoo_json.read_text()).get("preprocess") if zoo_json.is_file() else None
        pre = pre or {"mean": [0.286], "std": [0.353]}
        with tempfile.TemporaryDirectory() as tmp:
            export_bundle([f"wcx.zoo.architectures:{member}"], Path(tmp) / "bundle",
                          input_shape=x.shape[1:], mean=pre["mean"], std=pre["std"], names=[member])
            bundle = Bundle.load(Path(tmp) / "bundle")
            xp = Preprocessor(bundle.input)(x)
            with OnnxRuntimeRunner(bundle, 0) as ort_runner:
                a = ort_runner.infer({"input": xp})[LOGITS]
            with TorchRunner(bundle, 0, device=self.device, cuda_graphs=self.graphs, max_batch=256) as tr:
                b = tr.infer({"input": xp})[LOGITS].cpu().numpy()
        agree = float(np.mean(a.argmax(1) == b.argmax(1)))
        self.records.append({"config": f"zoo parity {member} ({tr.precision} torch vs onnxruntime fp32)",
                             "batch_size": n_rows, "top1_agreement": agree,
                             "max_abs_logit_diff": float(np.abs(a - b).max()), "pass": agree >= 0.995})


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def fmt(v: Any, spec: str = ".2f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def print_table(records: list[dict[str, Any]], device: str) -> None:
    print(f"\nwcx tools/gpu_bench.py on {device}")
    header = (f"{'config':<44} {'batch':>5} {'p50 ms':>8} {'mean ms':>8} {'floor ms':>8} "
              f"{'overhead':>8} {'vs B4':>6}  other")
    print(header)
    print("-" * len(header))
    for r in records:
        other = {k: v for k, v in r.items() if k not in
                 ("config", "batch_size", "p50_ms", "mean_ms", "p90_ms", "floor_ms", "overhead", "vs_b4")}
        print(f"{r['config']:<44} {fmt(r.get('batch_size')):>5} {fmt(r.get('p50_ms')):>8} "
              f"{fmt(r.get('mean_ms')):>8} {fmt(r.get('floor_ms')):>8} {fmt(r.get('overhead'), '.3f'):>8} "
              f"{fmt(r.get('vs_b4'), '.3f'):>6}  {json.dumps(other) if other else ''}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="CPU, tiny stand-in models, few repeats (seconds)")
    p.add_argument("--models", default="b0,b1,b2,b3,b4", help="models measured alone")
    p.add_argument("--cascade-models", default="b2", help="models measured as two-member cascades")
    p.add_argument("--batch-sizes", default="1,32,256", help="comma-separated batch sizes")
    p.add_argument("--fractions", default="0.10,0.25,0.50", help="forced pass fractions of the cascades")
    p.add_argument("--repeats", type=int, default=40, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls before timing")
    p.add_argument("--host-sizes", default="1,8,32", help="batch sizes of the host-path vs device-path comparison")
    p.add_argument("--zoo-member", default="b2_s0", help="zoo member of the torch-vs-ONNX Runtime check")
    p.add_argument("--zoo-rows", type=int, default=5000, help="test images of that check")
    p.add_argument("--json", type=Path, default=None, help="also write every record here")
    args = p.parse_args(argv)
    args.batch_sizes = [int(v) for v in args.batch_sizes.split(",")]
    args.fractions = [float(v) for v in args.fractions.split(",")]
    args.host_sizes = [int(v) for v in args.host_sizes.split(",")]
    models = args.models.split(",")
    cascade_models = [m for m in args.cascade_models.split(",") if m]
    if "b4" not in models and not args.tiny:
        models.append("b4")  # the baseline every cascade is compared with

    import torch

    if not args.tiny and not torch.cuda.is_available():
        log("no CUDA GPU: run with --tiny to check the script on the CPU")
        return 2
    device = "cpu (--tiny)" if args.tiny else torch.cuda.get_device_name(0)
    log(f"torch {torch.__version__} on {device}")
    bench = Bench(args)
    t0 = time.perf_counter()
    status = 0
    steps: list[tuple[str, Callable[[], None]]] = [
        ("alone", lambda: bench.models_alone(sorted(set(models) | set(cascade_models)), cascade_models)),
        ("cascades", lambda: bench.cascades(cascade_models)),
        ("stream", lambda: bench.pipelined(cascade_models[0] if cascade_models else "b2", 0.25)),
        ("host path", lambda: bench.host_vs_device(cascade_models[0] if cascade_models else "b2", 0.25,
                                                   [1, 4, 8] if args.tiny else args.host_sizes)),
        ("zoo", lambda: bench.zoo_parity(args.zoo_member, 64 if args.tiny else args.zoo_rows)),
    ]
    for name, step in steps:
        try:
            step()
        except Exception:  # keep the other measurements
            status = 1
            log(f"step {name} failed:\n{traceback.format_exc()}")
            bench.records.append({"config": f"step {name}", "error": traceback.format_exc().splitlines()[-1]})
    elapsed = time.perf_counter() - t0
    if args.json:
        args.json.write_text(json.dumps({"device": device, "torch": torch.__version__, "seconds": elapsed,
                                         "records": bench.records}, indent=2))
    for size in cascade_models:
        for bs, limit in ((256, 0.45), (32, 0.65)):
            rec = next((r for r in bench.records if r["config"] == f"{size}+{size} cascade 25%"
                        and r.get("batch_size") == bs), None)
            if rec and rec.get("vs_b4") is not None:
                ok = rec["vs_b4"] <= limit
                print(f"target {size}+{size} 25% at batch {bs}: {rec['vs_b4']:.3f}x of B4 "
                      f"(<= {limit}x): {'PASS' if ok else 'FAIL'}")
    print_table(bench.records, f"{device}, torch {torch.__version__}, {elapsed:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
