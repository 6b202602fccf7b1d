#!/usr/bin/env python
"""The README's "Your own models and data" section, done end to end: an image folder and two
PyTorch checkpoints in, a calibrated cascade out, run on camera frames and benchmarked.

It plays the user: it makes an image folder (Fashion-MNIST PNGs in class sub-folders), writes a
model file and trains two small CNNs of different sizes and input resolutions into
checkpoints, then runs exactly the README's commands (``wcx export``, ``wcx calibrate``,
``wcx run``, ``wcx bench``, in a subprocess each, from the folder holding the model file) and
its Python calls (``Cascade.load(...).predict_images(frames)`` on camera-like frames: RGB, of
varied sizes). ``summary.json`` in ``--out`` holds every figure; the exit status is non-zero when
a step fails.

Data: the full Fashion-MNIST IDX files of Debian's ``dataset-fashion-mnist`` package when they
are installed (60,000 training images; 10,000 test images split into validation and test),
otherwise the splits shipped in ``wcx/zoo/data`` (said in the summary). ``--tiny`` (used by CI)
takes a few hundred images, tiny models, four short epochs and a 30% risk target: it checks that
the steps work, not the figures.

Usage::

    python tools/own_data_walkthrough.py --out walkthrough            # about 6 minutes on 2 cores
    python tools/own_data_walkthrough.py --out /tmp/w --tiny          # about 20 s
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["0_tshirt", "1_trouser", "2_pullover", "3_dress", "4_coat", "5_sandal", "6_shirt", "7_sneaker",
           "8_bag", "9_boot"]
MEAN, STD = 0.286, 0.353

#: The user's model file, as the README shows it: a network per size and a function per
#: checkpoint that builds it and loads the weights (what ``wcx export module:function`` calls).
MODEL_FILE = '''\
"""Two CNNs of different sizes and input resolutions, and their trained checkpoints."""
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent


class SmallCNN(nn.Module):  # takes 1x{small}x{small}
    def __init__(self, width: int = {small_width}) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(2 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class LargeCNN(nn.Module):  # takes 1x{large}x{large}
    def __init__(self, width: int = {large_width}) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(4 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def _load(net: nn.Module, checkpoint: str) -> nn.Module:
    net.load_state_dict(torch.load(HERE / checkpoint, weights_only=True))
    return net.eval()


def small() -> nn.Module:
    return _load(SmallCNN(), "small.pt")


def large() -> nn.Module:
    return _load(LargeCNN(), "large.pt")
'''


# -------------------------------------------------------------------------------------------
# the user's situation: an image folder and two trained checkpoints
# -------------------------------------------------------------------------------------------
def fashion_mnist(tiny: bool) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """``{"train", "val", "test"}: (x (N, 1, 28, 28) uint8, y)`` and where they came from."""
    if (DEBIAN / "train-images-idx3-ubyte.gz").exists():
        from wcx.data import read_idx

        def split(name: str) -> tuple[np.ndarray, np.ndarray]:
            x = read_idx(DEBIAN / f"{name}-images-idx3-ubyte.gz")[:, None]
            return x, read_idx(DEBIAN / f"{name}-labels-idx1-ubyte.gz").astype(np.int64)

        (xt, yt), (x10, y10) = split("train"), split("t10k")
        order = np.random.default_rng(0).permutation(len(y10))
        val, test = order[:5000], order[5000:]
        data = {"train": (xt, yt), "val": (x10[val], y10[val]), "test": (x10[test], y10[test])}
        origin = f"Fashion-MNIST IDX files from Debian's dataset-fashion-mnist ({DEBIAN})"
    else:
        z = {s: np.load(ROOT / "wcx" / "zoo" / "data" / f"{s}.npz") for s in ("heldout_train", "calib", "test")}
        data = {"train": (z["heldout_train"]["x"], z["heldout_train"]["y"]),
                "val": (z["calib"]["x"], z["calib"]["y"]), "test": (z["test"]["x"], z["test"]["y"])}
        origin = "the Fashion-MNIST splits shipped in wcx/zoo/data (Debian's package is not installed)"
    if tiny:
        data = {k: _per_class(x, y, {"train": 100, "val": 30, "test": 20}[k]) for k, (x, y) in data.items()}
    return data, origin


def _per_class(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    keep = np.concatenate([np.flatnonzero(y == c)[:n] for c in range(10)])
    keep.sort()
    return x[keep], y[keep]


def resized(x: np.ndarray, size: int) -> np.ndarray:
    """(N, 1, 28, 28) uint8 -> (N, 1, size, size) uint8 with Pillow's bilinear filter, as the
    user's own training pipeline (and the export's --resize) does."""
    from PIL import Image

    out = [np.asarray(Image.fromarray(img[0]).resize((size, size), Image.Resampling.BILINEAR)) for img in x]
    return np.stack(out)[:, None]


def train(net: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    xt = (torch.from_numpy(x).float() / 255.0 - MEAN) / STD
    yt = torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(yt)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    net.eval()


def make_checkpoints(work: Path, x: np.ndarray, y: np.ndarray, *, tiny: bool, epochs: int) -> dict[str, Any]:
    import torch

    sizes = {"small": 24, "large": 32}
    widths = {"small": 4, "large": 4} if tiny else {"small": 8, "large": 16}
    (work / "own_models.py").write_text(MODEL_FILE.format(small=sizes["small"], large=sizes["large"],
                                                          small_width=widths["small"], large_width=widths["large"]))
    sys.path.insert(0, str(work))
    try:
        import own_models  # the file just written
    finally:
        sys.path.pop(0)
    out: dict[str, Any] = {}
    for name, cls in (("small", own_models.SmallCNN), ("large", own_models.LargeCNN)):
        t0 = time.perf_counter()
        net = cls()
        train(net, resized(x, sizes[name]), y, epochs=epochs, seed={"small": 1, "large": 2}[name])
        torch.save(net.state_dict(), work / f"{name}.pt")
        out[name] = {"input": sizes[name], "parameters": sum(p.numel() for p in net.parameters()),
                     "train_seconds": round(time.perf_counter() - t0, 1)}
    return out


def camera_frames(x: np.ndarray, *, keep_aspect: bool, seed: int = 0) -> list[np.ndarray]:
    """Camera-like frames: RGB, upscaled to varied sizes (40 to 95 pixels a side). With
    ``keep_aspect`` the scene is the same as in the held-out images, only at another resolution;
    without it each frame is also stretched to a random aspect ratio, which the members' resize
    and center crop do not undo (a distribution shift the calibration did not see)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    frames = []
    for img in x:
        h = int(rng.integers(40, 96))
        w = h if keep_aspect else int(rng.integers(40, 96))
        frames.append(np.asarray(Image.fromarray(img[0]).convert("RGB").resize((w, h), Image.Resampling.BILINEAR)))
    return frames


def frame_figures(cascade: Any, frames: list[np.ndarray], y: np.ndarray) -> dict[str, Any]:
    out = cascade.predict_images(frames)
    accepted = out.accept
    return {"frames": len(frames), "coverage": float(accepted.mean()),
            "risk": float((out.pred[accepted] != y[accepted]).mean()) if accepted.any() else None,
            "pass_to_stage_2": float((out.exit_stage >= 2).mean())}


def int8_figures(bundle: Path) -> dict[str, Any]:
    """Each INT8 member's top-1 agreement with FP32 on the export's held-out check rows, and the
    layers its export kept in float."""
    from wcx.bundle import Bundle

    b = Bundle.load(bundle)
    out = {}
    for m in b.members:
        check = m.export_report["checks"]["int8"]
        out[m.name] = {"agreement": check["eval"]["top1_agreement"], "check_rows": check["eval"]["n"],
                       "gate": check["min_agreement"], "passed": check["passed"],
                       "float_layers": list(m.quantization.float_layers) if m.quantization else None,
                       "graphs_tried": len(check["quantization"].get("auto", {}).get("trials", []))}
    return out


# -------------------------------------------------------------------------------------------
# the README's commands
# -------------------------------------------------------------------------------------------
def wcx(args: list[str], cwd: Path) -> dict[str, Any]:
    """Run ``wcx ARGS`` as the user would (a new process, in ``cwd``); fail loudly."""
    t0 = time.perf_counter()
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-m", "wcx.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = round(time.perf_counter() - t0, 1)
    print(f"$ wcx {' '.join(args)}   ({seconds} s, exit {done.returncode})", flush=True)
    if done.returncode != 0:
        print(textwrap.indent(done.stdout[-3000:] + done.stderr[-3000:], "  "), file=sys.stderr)
        raise SystemExit(f"wcx {args[0]} failed with exit code {done.returncode}")
    return {"command": "wcx " + " ".join(args), "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="working folder (created; replaced with --overwrite)")
    ap.add_argument("--tiny", action="store_true", help="a few hundred images, tiny models, risk 0.3 (CI)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 2, or 4 with --tiny)")
    ap.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = ap.parse_args(argv)
    work: Path = args.out.resolve()
    if work.exists():
        if not args.overwrite:
            ap.error(f"{work} exists (pass --overwrite)")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    epochs = args.epochs or (4 if args.tiny else 2)
    summary: dict[str, Any] = {"tiny": args.tiny, "steps": []}

    from wcx.data import save_image_folder

    data, summary["data"] = fashion_mnist(args.tiny)
    for split in ("train", "val", "test"):
        save_image_folder(work / "data" / split, *data[split], class_names=CLASSES)
    summary["images"] = {k: int(len(v[1])) for k, v in data.items()}
    summary["models"] = make_checkpoints(work, *data["train"], tiny=args.tiny, epochs=epochs)

    bundle = work / "bundle"
    steps = summary["steps"]
    steps.append(wcx(["export", "own_models:small", "own_models:large", "--input-shape", "1,24,24",
                      "--input-shape", "1,32,32", "--resize", "24", "--resize", "32", "--crop", "24", "--crop", "32",
                      "--mean", str(MEAN),
                      "--std", str(STD), "--calib-data", "data/val", "--out", "bundle"], cwd=work))
    if not args.tiny:  # the README's INT8 variant, with its defaults (tiny models are not worth the gate)
        steps.append(wcx(["export", "own_models:small", "own_models:large", "--input-shape", "1,24,24",
                          "--input-shape", "1,32,32", "--resize", "24", "--resize", "32", "--crop", "24", "--crop",
                          "32", "--mean", str(MEAN), "--std", str(STD), "--calib-data", "data/val",
                          "--precision", "int8", "--out", "bundle_int8"], cwd=work))
        summary["int8"] = int8_figures(work / "bundle_int8")
    # tiny models trained on a few hundred images cannot reach 5% risk, nor certify it
    risk = ["--risk", "0.3"] if args.tiny else ["--risk", "0.05", "--delta", "0.1"]
    calibrate = ["calibrate", "bundle", "--data", "data/val", "--test", "data/test", *risk, "--json",
                 "calibration.json"]
    steps.append(wcx(calibrate, cwd=work))
    steps.append(wcx(["run", "bundle", "--data", "data/test", "--out", "predictions.npz"], cwd=work))
    bench = ["bench", "bundle", "--data", "data/test", "--batch-size", "1,32", "--json", "bench.json"]
    if args.tiny:
        bench += ["--rows", "64", "--warmup", "1"]
    steps.append(wcx(bench, cwd=work))

    # the Python API on camera frames
    import wcx as wcx_api

    x_test, y_test = data["test"]
    with wcx_api.Cascade.load(bundle) as cascade:
        summary["camera_frames"] = {
            "same_scene": frame_figures(cascade, camera_frames(x_test, keep_aspect=True), y_test),
            "stretched": frame_figures(cascade, camera_frames(x_test, keep_aspect=False), y_test),
            "note": "RGB frames 40-95 pixels a side of the test images; same_scene keeps their aspect ratio, "
                    "stretched gives each a random one (not seen in calibration)",
        }
    cal = json.loads((work / "calibration.json").read_text())
    summary["calibration"] = {k: cal.get(k) for k in ("mode", "certified", "tau", "windows", "coverage", "risk",
                                                      "risk_upper_bound", "pass_fraction")}
    summary["calibration"]["test"] = {k: (cal.get("test") or {}).get(k) for k in ("coverage", "risk",
                                                                                   "pass_fraction")}
    rows = json.loads((work / "bench.json").read_text())
    summary["bench"] = [{k: r.get(k) for k in ("config", "batch_size", "p50_ms", "p50_ci_ms", "pass_fraction")}
                        for r in rows if r.get("config") in ("cascade", "member:large", "ensemble")]
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("calibration", "camera_frames")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
