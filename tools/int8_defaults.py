"""Measure the INT8 export options and choose the defaults: weight range x calibration method,
and which layers stay in float.

For every zoo member (the shipped FP32 bundle's ONNX files) and for small CNNs that are *not*
from the zoo (other architectures, trained here for a few epochs on the zoo's
``heldout_train`` split), export INT8 with wcx's own exporter for each of
``{reduce_range off, on} x {minmax, percentile, entropy}`` and record the top-1 agreement with
FP32 (ONNX Runtime's INT8 kernels, as the export check judges it, and simulated quantization,
as TensorRT computes), the accuracy of both, and the export time. Activation ranges come from
the ``calib`` split (a seeded sample of 1,024, the exporter's default), three times with
different seeds (``--seeds``): the choice must not hang on one lucky sample. Agreement and
accuracy are measured on the ``test`` split (5,000 images never used for the ranges), as
``tools/export_zoo.py`` does. Every export runs with the gate off (``int8_min_agreement=0``) so
that every number is measured; the 98% gate (the exporter's default) is applied here.

Two studies (``--study``):

* ``ranges``: weight range x calibration method. The default is the configuration that passes
  the gate on the most members with every seed, then on the most (member, seed) pairs, then has
  the highest mean agreement. For the 8-bit configurations (first seed) it also measures each
  member with the graph input left unquantized (simulated quantization, by removing the input's
  Q/DQ pair), which shows how much quantizing the input costs.
* ``float-layers``: the exporter's weight range and calibration method with the layers of
  :data:`FLOAT_LAYER_CONFIGS` kept in float32 by the exporter (``int8_float_layers``), the share of
  each member's MACs they hold, and the ONNX Runtime latency at batch 32 of
  :data:`LATENCY_MEMBERS` (FP32 and each INT8 graph). The rule (:func:`choose_float_layers`): the
  configuration with the fewest MACs in float among those that pass the gate on every member with
  every seed, if its latency costs at most :data:`LATENCY_LIMIT`; else none.

One command (CPU; needs torch, ``pip install torch==2.13.0 -e ".[export]"``)::

    python tools/int8_defaults.py                        # both, about 25 minutes on 2 cores
    python tools/int8_defaults.py --study float-layers   # about 10 minutes; keeps the ranges results

The models not from the zoo are trained once and kept in ``--cache`` for later runs.

Writes ``docs/results/int8_defaults.json`` and ``.md`` (``--out DIR`` to write elsewhere). Logs go
to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from machine_facts import cpu_model  # noqa: E402

from wcx.atomic import atomic_write, write_text_atomic  # noqa: E402
from wcx.zoo import ZOO_DIR, load_manifest, split_path  # noqa: E402

log = logging.getLogger("int8_defaults")

GATE = 0.98
METHODS = ("minmax", "percentile", "entropy")
CONFIGS = [(rr, m) for rr in (False, True) for m in METHODS]
TRAIN_SEED = 0
#: the float-layers study's configurations (``int8_float_layers``)
FLOAT_LAYER_CONFIGS: list[tuple[str, ...]] = [(), ("first",), ("last",), ("first", "last"), ("auto",)]
#: members whose latency the float-layers study measures: the one with the largest share of its
#: MACs in the first layer (the smallest) and the largest
LATENCY_MEMBERS = ("b0_s0", "b4_s0")
#: the largest latency ratio (INT8 with float layers / INT8 without) that counts as a small cost
LATENCY_LIMIT = 1.10


# ---------------------------------------------------------------------------------------------
# models that are not from the zoo
# ---------------------------------------------------------------------------------------------
def build_resnet(seed: int) -> Any:
    """A small residual CNN: stem, three stages of one residual block (stride-2 convolutions
    between stages, skip connections added), global average pool, linear. Unlike the zoo: skip
    connections, strided convolutions instead of max pooling."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.skip = (nn.Sequential() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 12, 3, 1, 1, bias=False), nn.BatchNorm2d(12), nn.ReLU())
            self.stages = nn.Sequential(Block(12, 12, 1), Block(12, 24, 2), Block(24, 48, 2))
            self.head = nn.Linear(48, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.stages(self.stem(x)).mean((2, 3)))

    torch.manual_seed(seed)
    return ResNet()


def build_separable(seed: int) -> Any:
    """A depthwise-separable CNN with a hidden fully connected layer: depthwise 3x3 + pointwise
    1x1 pairs with ReLU6, stride-2 depthwise convolutions, then flatten (no global pooling),
    Linear-ReLU-Linear. Unlike the zoo: grouped convolutions, ReLU6, a two-layer head."""
    import torch
    from torch import nn

    def sep(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                             nn.ReLU6(), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        sep(16, 32, 2), sep(32, 32, 1), sep(32, 64, 2), sep(64, 32, 2),  # 28 -> 14 -> 7 -> 4
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )


OTHER_MODELS = {"resnet_s": build_resnet, "separable_s": build_separable}


def preprocess(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return ((x.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def train(name: str, epochs: int, mean: float, std: float) -> tuple[Any, dict[str, Any]]:
    """Train ``name`` on the zoo's ``heldout_train`` split (5,000 images, never used for INT8
    ranges or evaluation here): AdamW, OneCycle, batch 128, seeded."""
    import torch

    data = np.load(split_path("heldout_train"))
    x = torch.from_numpy(preprocess(data["x"], mean, std))
    y = torch.from_numpy(data["y"].astype(np.int64))
    model = OTHER_MODELS[name](TRAIN_SEED)
    steps = epochs * -(-len(x) // 128)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    started = time.perf_counter()
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), 128):
            idx = order[start:start + 128]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(round(total / len(x), 4))
    model.eval()
    info = {"architecture": " ".join((OTHER_MODELS[name].__doc__ or "").split()),
            "parameters": int(sum(p.numel() for p in model.parameters())), "epochs": epochs,
            "train_split": "heldout_train (5,000 images)", "loss_per_epoch": losses,
            "train_seconds": round(time.perf_counter() - started, 1)}
    log.info("trained %s in %.0f s, losses %s", name, info["train_seconds"], losses)
    return model, info


# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------
def export_config(members: list[str], names: list[str], out: Path, *, reduce_range: bool, method: str,
                  mean: float, std: float, seed: int, float_layers: tuple[str, ...]) -> dict[str, Any]:
    """One INT8 export of every member with these options; the export report as a dict."""
    from wcx.export import Tolerances, export_bundle
    from wcx.export.float_fallback import AUTO_MARGIN

    report = export_bundle(members, out, input_shape=(1, 28, 28), precision="int8",
                           calib_data=split_path("calib"), eval_data=split_path("test"), names=names,
                           mean=[mean], std=[std], int8_reduce_range=reduce_range, int8_calibration=method,
                           int8_float_layers=float_layers,
                           tolerances=Tolerances(int8_min_agreement=0.0, int8_float_target=GATE + AUTO_MARGIN),
                           seed=seed, overwrite=True)
    return report.to_dict()


def input_float_agreement(int8_path: Path, fp32_path: Path, x: np.ndarray) -> float:
    """Top-1 agreement with FP32 of the INT8 graph with its input's Q/DQ pair removed
    (simulated quantization: ORT's optimisations off), i.e. with the input left in float."""
    import onnx

    from wcx.export.parity import run_onnx

    model = onnx.load(str(int8_path))
    graph = model.graph
    name = graph.input[0].name
    q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == name)
    dqs = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]]
    for dq in dqs:
        for node in graph.node:
            for i, inp in enumerate(node.input):
                if inp == dq.output[0]:
                    node.input[i] = name
        graph.node.remove(dq)
    graph.node.remove(q)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "float_input.onnx"
        onnx.save(model, str(path))
        candidate = run_onnx(path, x, optimize=False).argmax(1)
    return float(np.mean(candidate == run_onnx(fp32_path, x).argmax(1)))


def weight_extremes(path: Path) -> list[int]:
    """[min, max] over the int8 weight initializers of a Q/DQ graph."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    values = [numpy_helper.to_array(inits[n.input[0]]).astype(np.int32) for n in model.graph.node
              if n.op_type == "DequantizeLinear" and n.input[0] in inits
              and inits[n.input[0]].data_type == TensorProto.INT8 and len(inits[n.input[0]].dims) > 1]
    return [int(min(v.min() for v in values)), int(max(v.max() for v in values))]


def summarize(rows: list[dict[str, Any]], config: str) -> dict[str, Any]:
    """One configuration over all members and seeds."""
    mine = [r for r in rows if r["config"] == config]
    members = list(dict.fromkeys(r["member"] for r in mine))
    seeds = sorted({r["seed"] for r in mine})
    agreements = [r["agreement"] for r in mine]
    failed = {m: sum(r["agreement"] < GATE for r in mine if r["member"] == m) for m in members}
    return {"config": config, "members": len(members), "seeds": seeds,
            "members_always_passing": sum(n == 0 for n in failed.values()),
            "pairs_passing": sum(a >= GATE for a in agreements), "pairs": len(agreements),
            "min_agreement": min(agreements), "mean_agreement": round(float(np.mean(agreements)), 5),
            "failed": {m: n for m, n in failed.items() if n},
            "export_seconds_per_seed": round(sum(r["int8_seconds"] for r in mine) / len(seeds), 1)}


def config_name(reduce_range: bool, method: str) -> str:
    return f"{'7-bit' if reduce_range else '8-bit'} {method}"


def layers_name(layers: tuple[str, ...] | list[str]) -> str:
    """``int8_float_layers`` as written on the command line: ``none``, ``first``, ``first,last``."""
    return ",".join(layers) or "none"


def machine() -> dict[str, Any]:
    import onnxruntime

    from wcx.runtime.onnxruntime_runner import cpu_description

    return {"cpu": cpu_model(default=""), "flags": cpu_description(), "cores": os.cpu_count(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__}


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> str:
    """The report: the float-layers study (if measured), then the weight range x method study."""
    lines = ["# INT8 export defaults", "",
             "Two studies by `tools/int8_defaults.py`: which layers INT8 export keeps in float, and which weight "
             "range and calibration method it uses.", ""]
    if "float_layers" in result:
        lines += float_layers_markdown(result["float_layers"]) + [""]
    if "rows" in result:
        lines += ranges_markdown(result)
    return "\n".join(lines)


def ranges_markdown(result: dict[str, Any]) -> list[str]:
    from wcx.export.precision import DEFAULT_CALIBRATION_METHOD

    m = result["machine"]
    in_float = result.get("float_layers_in_ranges", [])  # absent: measured before the option existed
    lines = [
        "## Weight range x calibration method",
        "",
        f"Made by `python tools/int8_defaults.py --study ranges` ({result['seconds']:.0f} s) on {m['cpu']} "
        f"({m['flags']}; {m['cores']} cores, shared: load average {result['load_before']} before, "
        f"{result['load_after']} after, other work ran beside it), onnxruntime {m['onnxruntime']}. Timings are "
        "wall-clock on that shared machine and only indicative; agreements and accuracies do not depend on the load.",
        "",
        "Every member is exported to INT8 by `wcx.export.export_bundle` with each configuration: weights in "
        "8 bits ([-127, 127], `int8_reduce_range=False`) or 7 bits ([-64, 64], onnxruntime's reduce_range), "
        "activation ranges by onnxruntime's MinMax, Percentile (99.999%) or Entropy calibrator on a seeded "
        "sample of 1,024 `calib` images; agreement (top-1 with FP32, ONNX Runtime's INT8 kernels: what the "
        "export check judges) and accuracy on the 5,000 `test` images. The gate is 98% agreement. "
        f"Zoo members: the shipped FP32 bundle's ONNX files. Not from the zoo: {', '.join(result['others'])}, "
        "trained here (below). Layers kept in float in this study: "
        f"{layers_name(in_float) if in_float else 'none (every layer quantized)'}.",
        "",
        "### Summary",
        "",
        f"Seeds of the range sample: {result['seeds']}.",
        "",
        "| configuration | members passing 98% with every seed | (member, seed) pairs passing | lowest agreement | "
        "mean agreement | below the gate (member: seeds) | INT8 step s (all members, one seed) |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for s in result["summary"]:
        below = ", ".join(f"{m}: {n}" for m, n in s["failed"].items()) or "-"
        lines.append(f"| {s['config']} | {s['members_always_passing']} / {s['members']} | "
                     f"{s['pairs_passing']} / {s['pairs']} | {s['min_agreement']:.2%} | {s['mean_agreement']:.2%} | "
                     f"{below} | {s['export_seconds_per_seed']:.1f} |")
    best = result["best"]
    lines += [
        "",
        f"Best by the rule (most members passing with every seed, then most pairs passing, then the highest "
        f"mean agreement): "
        f"**{best}**. The exporter's defaults: **{result['code_default']}** "
        f"(`int8_reduce_range=False`, `int8_calibration={DEFAULT_CALIBRATION_METHOD!r}`)"
        + (". They agree." if best == result["code_default"] else ". THEY DIFFER: update the defaults or say why.")
        + "",
        "",
        "### Per member",
        "",
        "Agreement with FP32 in % (ONNX Runtime's INT8 kernels), mean over the seeds, `*n`: below the gate "
        "with n seeds. For the default configuration and the first seed: `sim`, the agreement of simulated "
        "quantization (ORT's optimisations off: float arithmetic on the quantized values, as TensorRT computes), "
        "and the accuracy (FP32 -> INT8). `float input`: the simulated agreement with the graph input left "
        "unquantized, 8-bit configurations (minmax / percentile / entropy), first seed.",
        "",
        "| member | " + " | ".join(result["configs"]) + " | sim | float input | accuracy |",
        "| --- | " + " | ".join("---:" for _ in result["configs"]) + " | ---: | ---: | ---: |",
    ]
    first = result["seeds"][0]
    by_member: dict[str, dict[str, dict[str, Any]]] = {}
    for r in result["rows"]:
        if r["seed"] == first:
            by_member.setdefault(r["member"], {})[r["config"]] = r
    for member, rows in by_member.items():
        d = rows[result["code_default"]]
        cells = []
        for c in result["configs"]:
            values = [r["agreement"] for r in result["rows"] if r["member"] == member and r["config"] == c]
            below = sum(a < GATE for a in values)
            cells.append(f"{100 * float(np.mean(values)):.2f}" + (f" *{below}" if below else ""))
        floats = " / ".join(f"{rows[config_name(False, m)]['input_float_agreement']:.2%}".replace("%", "")
                            if "input_float_agreement" in rows[config_name(False, m)] else "-" for m in METHODS)
        lines.append(f"| {member} | " + " | ".join(cells) + f" | {d['agreement_simulated']:.2%} | "
                     f"{floats} | {d['fp32_accuracy']:.2%} -> {d['int8_accuracy']:.2%} |")
    lines += ["", "### Models not from the zoo", ""] + others_lines(result["others"])
    lines += ["", "### Findings", ""] + [f"- {f}" for f in result["findings"]] + [""]
    return lines


def others_lines(others: dict[str, dict[str, Any]]) -> list[str]:
    return [f"- `{name}`: {info['architecture']} {info['parameters']:,} parameters, {info['epochs']} epochs "
            f"on {info['train_split']}, loss per epoch {info['loss_per_epoch']}, {info['train_seconds']:.0f} s."
            for name, info in others.items()]


def choose_float_layers(study: dict[str, Any]) -> dict[str, Any]:
    """The rule: the configuration with the most members passing the gate with every seed, then
    the most (member, seed) pairs passing, then the smallest mean share of MACs in float; it is
    chosen if its latency is at most :data:`LATENCY_LIMIT` times the fully quantized graph's on
    every latency member, else ``none``. Returns the configuration and the reason."""
    by = {s["config"]: s for s in study["summary"]}

    def mean_share(config: str) -> float:
        return float(np.mean([r["float_macs_share"] for r in study["rows"] if r["config"] == config]))

    best = max(study["configs"], key=lambda c: (by[c]["members_always_passing"], by[c]["pairs_passing"],
                                                 -mean_share(c)))
    if best == "none":
        return {"config": "none", "reason": "no configuration with layers in float passes more often"}
    ratios = {lat["member"]: lat["median_ms"][f"int8 {best}"] / lat["median_ms"]["int8 none"]
              for lat in study["latency"]}
    worst = max(ratios.values(), default=1.0)
    s = by[best]
    passing = (f"{s['members_always_passing']}/{s['members']} members with every seed, "
               f"{s['pairs_passing']}/{s['pairs']} pairs; {mean_share(best):.1%} of the MACs in float on average")
    if worst > LATENCY_LIMIT:
        return {"config": "none", "candidate": best, "latency_ratio": round(worst, 3), "reason": (
            f"{best} passes most often ({passing}) but costs {worst:.2f}x the latency of the fully quantized "
            f"graph (limit {LATENCY_LIMIT:.2f}x)")}
    return {"config": best, "latency_ratio": round(worst, 3), "mean_float_macs_share": mean_share(best),
            "reason": (f"it passes most often ({passing}); latency {worst:.2f}x the fully quantized graph's at "
                       f"most (limit {LATENCY_LIMIT:.2f}x)")}


def float_layers_markdown(study: dict[str, Any]) -> list[str]:
    m = study["machine"]
    lines = [
        "## Layers kept in float",
        "",
        f"Made by `python tools/int8_defaults.py --study float-layers` ({study['seconds']:.0f} s, "
        f"{study['total_seconds']:.0f} s with training the models not from the zoo) on {m['cpu']} ({m['flags']}; "
        f"{m['cores']} cores, shared: load average {study['load_before']} before, {study['load_after']} after, "
        f"other work ran beside it), onnxruntime {m['onnxruntime']}. Timings are wall-clock on that shared "
        "machine and only indicative; agreements and accuracies do not depend on the load.",
        "",
        "Every member is exported to INT8 by `wcx.export.export_bundle` with 8-bit weights and MinMax ranges "
        "on a seeded sample of 1,024 `calib` images (the exporter's defaults, chosen below), with "
        "`int8_float_layers` = none (every layer quantized), first (the graph input and the first layer in "
        "float: onnxruntime's `nodes_to_exclude`), last (the layer that makes the logits in float), "
        "first,last, or auto (every layer quantized unless the agreement on the other 3,976 `calib` images, "
        "outside the range sample, falls below 98.5%; then the fewest layers in float that bring it up, "
        "searched one layer at a time: `wcx.export.float_fallback`); agreement (top-1 with FP32, ONNX "
        "Runtime's INT8 kernels, what the export check judges) "
        "and accuracy on the 5,000 `test` images; gate 98%. Seeds of the range sample: "
        f"{study['seeds']}. Same members as below.",
        "",
        "| int8_float_layers | members passing 98% with every seed | (member, seed) pairs passing | "
        "lowest agreement | mean agreement | below the gate (member: seeds) | MACs in float (share, range over "
        "members) |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for s in study["summary"]:
        shares = [r["float_macs_share"] for r in study["rows"] if r["config"] == s["config"]]
        below = ", ".join(f"{k}: {n}" for k, n in s["failed"].items()) or "-"
        lines.append(f"| {s['config']} | {s['members_always_passing']} / {s['members']} | "
                     f"{s['pairs_passing']} / {s['pairs']} | {s['min_agreement']:.2%} | {s['mean_agreement']:.2%} | "
                     f"{below} | {min(shares):.2%} to {max(shares):.2%} |")
    choice = study["choice"]
    lines += [
        "",
        f"Chosen by the rule (the configuration with the most members passing with every seed, then the most "
        f"(member, seed) pairs, then the fewest MACs in float, if its latency is at most {LATENCY_LIMIT:.2f}x the "
        f"fully quantized graph's): **{choice['config']}** ({choice['reason']}). The exporter's default: "
        f"**{study['code_default']}**"
        + (". They agree." if choice["config"] == study["code_default"] else
           ". THEY DIFFER: update the default or say why."),
        "",
        "Per member: agreement with FP32 in %, each seed (`*`: below the gate); MACs in float with `first` "
        "and `last`; accuracy FP32 -> INT8 (first seed) without and with the first layer in float.",
        "",
        "| member | " + " | ".join(study["configs"]) + " | MACs first / last | accuracy none / first |",
        "| --- | " + " | ".join("---" for _ in study["configs"]) + " | ---: | --- |",
    ]
    members = list(dict.fromkeys(r["member"] for r in study["rows"]))
    first_seed = study["seeds"][0]
    for member in members:
        mine = [r for r in study["rows"] if r["member"] == member]
        cells = []
        for config in study["configs"]:
            values = [r["agreement"] for r in mine if r["config"] == config]
            cells.append(" / ".join(f"{100 * v:.2f}" + ("*" if v < GATE else "") for v in values))
        one = {r["config"]: r for r in mine if r["seed"] == first_seed}
        lines.append(f"| {member} | " + " | ".join(cells) + f" | {one['first']['float_macs_share']:.2%} / "
                     f"{one['last']['float_macs_share']:.2%} | {one['none']['fp32_accuracy']:.2%} -> "
                     f"{one['none']['int8_accuracy']:.2%} / {one['first']['int8_accuracy']:.2%} |")
    auto = [r for r in study["rows"] if r["config"] == "auto"]
    if auto:
        lines += ["", "What `auto` kept in float (member, seed: layers, share of MACs, graphs quantized by the "
                  "search):", ""]
        lines += [f"- {r['member']}, seed {r['seed']}: {', '.join(r['float_layers'])}, "
                  f"{r['float_macs_share']:.2%} of the MACs, {len(r['auto_trials'] or [])} graphs"
                  for r in auto if r["float_layers"]]
        kept_none = sum(1 for r in auto if not r["float_layers"])
        lines.append(f"- every other (member, seed) pair ({kept_none} of {len(auto)}): nothing, one graph")
    lines += ["", "Latency on ONNX Runtime (CPU, the onnxruntime backend's session options, batch 32 test images, "
              "median ms of interleaved runs; p90 in brackets):", "",
              "| member | " + " | ".join(study["latency"][0]["median_ms"]) + " |",
              "| --- | " + " | ".join("---:" for _ in study["latency"][0]["median_ms"]) + " |"]
    for lat in study["latency"]:
        lines.append(f"| {lat['member']} ({lat['rounds']} runs) | " + " | ".join(
            f"{v:.3f} ({lat['p90_ms'][k]:.3f})" for k, v in lat["median_ms"].items()) + " |")
    lines += ["", "### Findings", ""] + [f"- {f}" for f in study["findings"]]
    return lines


def float_layers_findings(study: dict[str, Any]) -> list[str]:
    """Plain statements computed from the float-layers study's numbers."""
    by = {s["config"]: s for s in study["summary"]}
    out = []
    for config in study["configs"]:
        s = by[config]
        out.append(f"{config}: {s['members_always_passing']}/{s['members']} members pass with every seed, "
                   f"{s['pairs_passing']}/{s['pairs']} (member, seed) pairs, lowest {s['min_agreement']:.2%}, "
                   f"mean {s['mean_agreement']:.2%}.")
    rows = {(r["member"], r["seed"], r["config"]): r for r in study["rows"]}
    for config in study["configs"]:
        if config == "none":
            continue
        gains = [rows[(mm, sd, config)]["agreement"] - r["agreement"]
                 for (mm, sd, c), r in rows.items() if c == "none"]
        out.append(f"{config} vs none, per (member, seed): agreement change from {min(gains):+.2%} to "
                   f"{max(gains):+.2%}, mean {float(np.mean(gains)):+.2%}.")
    for lat in study["latency"]:
        base = lat["median_ms"]["int8 none"]
        ratios = ", ".join(f"{k.removeprefix('int8 ')} {v / base:.2f}x" for k, v in lat["median_ms"].items()
                           if k.startswith("int8 ") and k != "int8 none")
        out.append(f"{lat['member']} at batch 32: INT8 {base:.3f} ms (FP32 {lat['median_ms']['fp32']:.3f} ms); "
                   f"with float layers: {ratios} of the fully quantized graph.")
    return out


def findings(result: dict[str, Any]) -> list[str]:
    """Plain statements computed from the numbers (the markdown adds no claim of its own)."""
    rows = result["rows"]
    out = []
    by = {s["config"]: s for s in result["summary"]}
    for method in METHODS:
        full, reduced = by[config_name(False, method)], by[config_name(True, method)]
        out.append(f"{method}: with 8-bit weights {full['pairs_passing']}/{full['pairs']} (member, seed) pairs pass "
                   f"(mean agreement {full['mean_agreement']:.2%}), with 7-bit weights "
                   f"{reduced['pairs_passing']}/{reduced['pairs']} ({reduced['mean_agreement']:.2%}).")
    default = result["code_default"]
    mine = [r for r in rows if r["config"] == default]
    gap = max(abs(r["agreement"] - r["agreement_simulated"]) for r in mine)
    out.append(f"Default configuration: ONNX Runtime's INT8 kernels and simulated quantization differ by at most "
               f"{gap:.2%} agreement on this CPU ({result['machine']['flags']}).")
    failing = [r for r in mine if r["agreement"] < GATE and "input_float_agreement" in r]
    for r in failing:
        mine_all = [x for x in rows if x["member"] == r["member"] and x["seed"] == r["seed"]]
        best = max(mine_all, key=lambda x: x["agreement"])
        floats = ", ".join(f"{x['calibration']} {x['input_float_agreement']:.2%}" for x in mine_all
                           if not x["reduce_range"])
        out.append(f"{r['member']} (seed {r['seed']}) stays below the gate in the default configuration "
                   f"({r['agreement']:.2%}; "
                   f"best of all configurations {best['agreement']:.2%}, {best['config']}). With its input "
                   f"left in float (simulated, 8-bit weights): {floats}.")
    ranges = {r["config"]: r["weight_range"] for r in rows}
    out.append("int8 weight values seen: " + "; ".join(f"{c} {ranges[c]}" for c in result["configs"]) + ".")
    return out


@dataclass
class Members:
    """The members every study exports: FP32 ONNX files by name (zoo first, then the others)."""

    fp32_paths: dict[str, Path]
    zoo_names: list[str]
    others: dict[str, dict[str, Any]]
    mean: float
    std: float
    x_test: np.ndarray


def prepare_members(args: argparse.Namespace, root: Path) -> Members:
    """The zoo's FP32 members and the others, trained here and exported to FP32 ONNX in ``root``.

    The others' FP32 ONNX files and training records are kept in ``args.cache`` (by name, epochs
    and torch version) and taken from there when present: training is seeded, so a rerun would
    make the same models (the losses per epoch show it)."""
    import torch

    from wcx.export import export_bundle

    manifest = load_manifest()
    mean, std = float(manifest["preprocess"]["mean"][0]), float(manifest["preprocess"]["std"][0])
    zoo_names = args.members or [m["name"] for m in manifest["members"]]
    fp32_dir = ZOO_DIR / "bundles" / "fp32" / "members"
    x_test = preprocess(np.load(split_path("test"))["x"], mean, std)
    fp32_paths = {n: fp32_dir / f"{n}.onnx" for n in zoo_names}
    others: dict[str, dict[str, Any]] = {}
    to_train = []
    for name in args.others:
        key = Path(args.cache) / f"{name}.e{args.epochs}.torch{torch.__version__}" if args.cache else None
        if key is not None and (key / "info.json").is_file():
            others[name] = json.loads((key / "info.json").read_text())
            fp32_paths[name] = key / "model.onnx"
            log.info("%s: the FP32 model trained earlier, from %s", name, key)
        else:
            to_train.append((name, key))
    torch.manual_seed(TRAIN_SEED)
    modules = []
    for name, _ in to_train:
        module, info = train(name, args.epochs, mean, std)
        others[name] = info
        modules.append(module)
    if modules:  # FP32 ONNX once (checked against PyTorch), then used as ONNX members below
        names = [name for name, _ in to_train]
        export_bundle(modules, root / "others_fp32", input_shape=(1, 28, 28), names=names,
                      mean=[mean], std=[std], calib_data=split_path("calib"))
        for name, key in to_train:
            fp32_paths[name] = root / "others_fp32" / "members" / f"{name}.onnx"
            if key is not None:
                key.mkdir(parents=True, exist_ok=True)
                with atomic_write(key / "model.onnx") as tmp:
                    tmp.write_bytes(fp32_paths[name].read_bytes())
                write_text_atomic(key / "info.json", json.dumps(others[name], indent=2) + "\n")
    others = {name: others[name] for name in args.others}
    return Members(fp32_paths, zoo_names, others, mean, std, x_test)


def measure_ranges(members: Members, root: Path, seeds: list[int]) -> list[dict[str, Any]]:
    """The weight range x calibration method study: one row per (configuration, seed, member)."""
    default_layers: tuple[str, ...] = ()  # every layer quantized: the weight range and method alone
    names = list(members.fp32_paths)
    rows: list[dict[str, Any]] = []
    for (reduce_range, method), seed in [(c, s) for s in seeds for c in CONFIGS]:
        config = config_name(reduce_range, method)
        t0 = time.perf_counter()
        out = root / "int8"
        report = export_config([str(members.fp32_paths[n]) for n in names], names, out, reduce_range=reduce_range,
                               method=method, mean=members.mean, std=members.std, seed=seed,
                               float_layers=default_layers)
        log.info("%s, seed %d: %d members in %.0f s", config, seed, len(names), time.perf_counter() - t0)
        for m in report["members"]:
            check = m["checks"]["int8"]
            row = {
                "member": m["name"], "zoo": m["name"] in members.zoo_names, "config": config, "seed": seed,
                "reduce_range": reduce_range, "calibration": method,
                "agreement": check["eval"]["top1_agreement"],
                "agreement_simulated": check["eval_simulated"]["top1_agreement"],
                "fp32_accuracy": check["eval"]["reference_accuracy"],
                "int8_accuracy": check["eval"]["candidate_accuracy"],
                "int8_seconds": check["seconds"],
                "quantize_seconds": check["quantization"].get("seconds"),
                "member_seconds": m["seconds"],
                "range_samples": check["range_samples"],
                "weight_range": weight_extremes(out / "members" / f"{m['name']}.onnx"),
            }
            if not reduce_range and seed == seeds[0] and not default_layers:
                row["input_float_agreement"] = input_float_agreement(
                    out / "members" / f"{m['name']}.onnx", members.fp32_paths[m["name"]], members.x_test)
            rows.append(row)
    return rows


def float_macs_share(path: Path, float_nodes: list[str]) -> float:
    """The share of a member's MACs in the nodes kept in float (counted on its Q/DQ graph, whose
    counted nodes keep their names and shapes)."""
    from wcx.export.macs import count_macs

    count = count_macs(path)
    return sum(count.by_node.get(n, 0) for n in float_nodes) / count.total


def measure_float_layers(members: Members, root: Path,
                         seeds: list[int]) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """The float-layers study: the exporter's weight range and calibration method with each of
    :data:`FLOAT_LAYER_CONFIGS`; one row per (configuration, seed, member). Also returns the first
    seed's INT8 bundles by configuration (for the latency measurement)."""
    from wcx.export.precision import DEFAULT_CALIBRATION_METHOD

    names = list(members.fp32_paths)
    rows: list[dict[str, Any]] = []
    bundles: dict[str, Path] = {}
    for seed in seeds:
        for layers in FLOAT_LAYER_CONFIGS:
            config = layers_name(layers)
            t0 = time.perf_counter()
            out = root / f"int8_{config.replace(',', '_')}_{seed}"
            report = export_config([str(members.fp32_paths[n]) for n in names], names, out, reduce_range=False,
                                   method=DEFAULT_CALIBRATION_METHOD, mean=members.mean, std=members.std, seed=seed,
                                   float_layers=layers)
            log.info("float layers %s, seed %d: %d members in %.0f s", config, seed, len(names),
                     time.perf_counter() - t0)
            if seed == seeds[0]:
                bundles[config] = out
            for m in report["members"]:
                check = m["checks"]["int8"]
                nodes = check["quantization"]["float_nodes"]
                rows.append({
                    "member": m["name"], "zoo": m["name"] in members.zoo_names, "config": config, "seed": seed,
                    "float_layers": check["quantization"]["float_layers"], "requested": list(layers),
                    "auto_trials": check["quantization"].get("auto", {}).get("trials"), "float_nodes": nodes,
                    "float_macs_share": round(float_macs_share(out / "members" / f"{m['name']}.onnx", nodes), 5),
                    "agreement": check["eval"]["top1_agreement"],
                    "agreement_simulated": check["eval_simulated"]["top1_agreement"],
                    "fp32_accuracy": check["eval"]["reference_accuracy"],
                    "int8_accuracy": check["eval"]["candidate_accuracy"],
                    "int8_seconds": check["seconds"],
                })
    return rows, bundles


def measure_latency(bundles: dict[str, Path], fp32_paths: dict[str, Path], members: list[str], *, batch: int,
                    rounds: int, x: np.ndarray) -> list[dict[str, Any]]:
    """Median ms per batch of ``batch`` test images on ONNX Runtime (the onnxruntime backend's
    session options: all optimisations, sequential, no spinning), FP32 and each INT8
    configuration, measured in interleaved rounds so that load from other work hits all alike."""
    import onnxruntime as ort

    def session(path: Path) -> Any:
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    batch_x = np.ascontiguousarray(x[:batch])
    out = []
    for member in members:
        paths = {"fp32": fp32_paths[member], **{f"int8 {c}": b / "members" / f"{member}.onnx"
                                                  for c, b in bundles.items()}}
        sessions = {k: session(p) for k, p in paths.items()}
        names = {k: s.get_inputs()[0].name for k, s in sessions.items()}
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for k, s in sessions.items():  # warm-up
            for _ in range(5):
                s.run(None, {names[k]: batch_x})
        for _ in range(rounds):
            for k, s in sessions.items():
                t0 = time.perf_counter()
                s.run(None, {names[k]: batch_x})
                times[k].append(1000 * (time.perf_counter() - t0))
        out.append({"member": member, "batch": batch, "rounds": rounds,
                    "median_ms": {k: round(float(np.median(v)), 4) for k, v in times.items()},
                    "p90_ms": {k: round(float(np.percentile(v, 90)), 4) for k, v in times.items()}})
        log.info("latency %s: %s", member, out[-1]["median_ms"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results", help="folder for the .json and .md")
    parser.add_argument("--study", choices=("all", "ranges", "float-layers"), default="all", help=(
        "ranges: weight range x calibration method (about 14 min); float-layers: the default with layers kept "
        "in float (about 10 min); a single study keeps the other's results from OUT/int8_defaults.json"))
    parser.add_argument("--members", nargs="*", default=None, help="zoo members (default: all 15)")
    parser.add_argument("--others", nargs="*", default=list(OTHER_MODELS), choices=list(OTHER_MODELS),
                        help="models not from the zoo to train and measure")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs of the models not from the zoo")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "wcx-int8-defaults"), help=(
        "folder that keeps the trained models not from the zoo for the next run ('' to train them again)"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the range sample")
    parser.add_argument("--latency-members", nargs="*", default=list(LATENCY_MEMBERS),
                        help="members whose ONNX Runtime latency is measured in the float-layers study")
    parser.add_argument("--latency-rounds", type=int, default=300, help="timed runs per graph and member")
    parser.add_argument("--from-json", type=Path, default=None, help=(
        "measure nothing: read an earlier int8_defaults.json and write the summary, choice and report again "
        "(after the exporter's defaults changed)"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.from_json is not None:
        return finish(json.loads(args.from_json.read_text()), args.out)
    previous = args.out / "int8_defaults.json"
    result: dict[str, Any] = json.loads(previous.read_text()) if args.study != "all" and previous.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="int8-defaults-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        load_before = [round(v, 2) for v in os.getloadavg()]
        members = prepare_members(args, root)
        common = {"machine": machine(), "seeds": args.seeds, "others": members.others,
                  "data": {"ranges": "calib split, seeded sample of 1,024 per seed",
                           "eval": "test split, 5,000 images"}}
        if args.study in ("all", "ranges"):
            t0 = time.perf_counter()
            rows = measure_ranges(members, root, args.seeds)
            result.update(common, tool="tools/int8_defaults.py", gate=GATE, load_before=load_before,
                          load_after=[round(v, 2) for v in os.getloadavg()],
                          seconds=round(time.perf_counter() - t0, 1),
                          configs=[config_name(rr, m) for rr, m in CONFIGS], rows=rows,
                          float_layers_in_ranges=[])
        if args.study in ("all", "float-layers"):
            t0 = time.perf_counter()
            load_float = [round(v, 2) for v in os.getloadavg()]
            rows, bundles = measure_float_layers(members, root, args.seeds)
            latency = measure_latency(bundles, members.fp32_paths, args.latency_members, batch=32,
                                      rounds=args.latency_rounds, x=members.x_test)
            result.setdefault("tool", "tools/int8_defaults.py")
            result.setdefault("gate", GATE)
            result["float_layers"] = dict(
                common, load_before=load_float, load_after=[round(v, 2) for v in os.getloadavg()],
                seconds=round(time.perf_counter() - t0, 1), total_seconds=round(time.perf_counter() - started, 1),
                configs=[layers_name(c) for c in FLOAT_LAYER_CONFIGS], rows=rows, latency=latency)
    return finish(result, args.out)


def finish(result: dict[str, Any], out: Path) -> int:
    """Summarize the measured ``result`` (its ``rows``, and its ``float_layers`` study), choose,
    compare with the exporter's defaults, write the .json and .md into ``out`` and print the summary."""
    from wcx.export.precision import AUTO, DEFAULT_CALIBRATION_METHOD, DEFAULT_FLOAT_LAYERS, check_float_layers

    lines = []
    if "rows" in result:
        summary = [summarize(result["rows"], c) for c in result["configs"]]
        best = max(summary, key=lambda s: (s["members_always_passing"], s["pairs_passing"],
                                           s["mean_agreement"]))["config"]
        result.update(summary=summary, best=best, code_default=config_name(False, DEFAULT_CALIBRATION_METHOD))
        result["findings"] = findings(result)
        lines += [f"{s['config']:18s} always {s['members_always_passing']}/{s['members']}  pairs "
                  f"{s['pairs_passing']}/{s['pairs']}  min {s['min_agreement']:.2%}  mean {s['mean_agreement']:.2%}  "
                  f"below: {s['failed'] or '-'}" for s in summary]
        lines.append(f"best: {best}; code default: {result['code_default']}")
    if "float_layers" in result:
        study = result["float_layers"]
        study["summary"] = [summarize(study["rows"], c) for c in study["configs"]]
        study["choice"] = choose_float_layers(study)
        study["code_default"] = (AUTO if DEFAULT_FLOAT_LAYERS == AUTO
                                 else layers_name(check_float_layers(DEFAULT_FLOAT_LAYERS)))
        study["findings"] = float_layers_findings(study)
        lines += [f"float {s['config']:12s} always {s['members_always_passing']}/{s['members']}  pairs "
                  f"{s['pairs_passing']}/{s['pairs']}  min {s['min_agreement']:.2%}  mean {s['mean_agreement']:.2%}  "
                  f"below: {s['failed'] or '-'}" for s in study["summary"]]
        lines.append(f"float layers: choice {study['choice']['config']}; code default {study['code_default']}")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "int8_defaults.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(out / "int8_defaults.md", markdown(result))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
