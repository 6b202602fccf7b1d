"""Export the trained zoo members into the two bundles that ship with wcx.

One command (CPU, a few minutes; needs ``pip install torch==2.13.0 -e ".[export]"`` and the
trained zoo from ``tools/train_zoo.py``)::

    python tools/export_zoo.py

Writes, with wcx's own exporter (:func:`wcx.export.export_bundle`, what ``wcx export`` runs):

- ``wcx/zoo/bundles/fp32/``: all 15 members (``b0_s0`` .. ``b4_s2``, in ``zoo.json``'s order) as
  FP32 ONNX, each checked against PyTorch on 64 random inputs and the ``calib`` split.
- ``wcx/zoo/bundles/int8/``: the same members as INT8 (symmetric Q/DQ, per-channel weights) with
  the exporter's INT8 defaults: 8-bit weights and MinMax activation ranges from a seeded sample
  of 1,024 ``calib`` images; the top-1 agreement with FP32 is measured on the ``test`` split
  (never used for the ranges). The *shipped* INT8 bundle predates those defaults: 7-bit weights
  (``int8_reduce_range``) and MinMax on the first 1,024 ``calib`` images, as its manifest records;
  rerunning this tool replaces it and moves the INT8 numbers of ``tools/zoo_numbers.sh``. The
  smallest members lose most: b0_s0 (4 channels in its first layer) agrees with FP32 on about
  96% of the test images whatever the weight range or calibration method
  (``docs/results/int8_defaults.md``), so the zoo is still exported with
  ``--int8-min-agreement 0.95`` (the exporter's default is 0.98). With the current defaults and
  the default seed the other 14 members passed 0.98 there (b0_s2 with 98.7%, but 97.7% with
  another range sample). Every member's measured agreement and accuracy are in its report.
- ``wcx/zoo/bundles/{fp32,int8}.export.json``: the export reports (parity, agreement, accuracy,
  MACs by operator), besides the per-member copies inside each manifest.

Members are given as ``wcx.zoo.architectures:<name>`` callables, so every member's weights are
also stored in its bundle (safetensors) and the torch backend can rebuild it. The input is
``uint8`` (N, 1, 28, 28) scaled to [0, 1] and normalised with ``zoo.json``'s mean/std.

Logs go to stderr; the summary (sizes, agreement) goes to stdout. Exit 1 when an export check
fails (nothing is written for that bundle), 2 for bad input (e.g. the zoo is not trained yet).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from wcx.errors import BadInputError, WcxError  # noqa: E402
from wcx.zoo import ZOO_DIR, load_manifest, split_path, weights_path  # noqa: E402

log = logging.getLogger("export_zoo")

PRECISIONS = ("fp32", "int8")
SIZE_BUDGET_MB = 20.0


def dir_size(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def zoo_members(manifest: dict) -> list[dict]:
    """The members of ``zoo.json`` with their weights present, or a ``BadInputError``."""
    members = manifest.get("members") or []
    if not members:
        raise BadInputError(f"{ZOO_DIR / 'zoo.json'} lists no members; run tools/train_zoo.py first")
    missing = [m["name"] for m in members if not weights_path(m["name"]).is_file()]
    if missing:
        raise BadInputError(f"no trained weights for {', '.join(missing)}; run tools/train_zoo.py first")
    return members


def export_precision(precision: str, members: list[dict], manifest: dict, out_root: Path, *,
                     int8_min_agreement: float = 0.95) -> dict:
    """Export every member at ``precision`` into ``out_root/precision``; return the report dict."""
    from wcx.export import Tolerances, export_bundle

    out = out_root / precision
    pre = manifest["preprocess"]
    started = time.perf_counter()

    def progress(done: int, name: str) -> None:
        if name:
            log.info("%s: exporting %s (%d/%d)", precision, name, done + 1, len(members))

    report = export_bundle(
        [m["callable"] for m in members],
        out,
        input_shape=(1, 28, 28),
        precision=precision,
        calib_data=_rel(split_path("calib")),
        eval_data=_rel(split_path("test")) if precision == "int8" else None,
        names=[m["name"] for m in members],
        mean=pre["mean"],
        std=pre["std"],
        tolerances=Tolerances(int8_min_agreement=int8_min_agreement),
        overwrite=True,
        progress=progress,
    )
    log.info("%s: %d members in %.0f s", precision, len(members), time.perf_counter() - started)
    data = report.to_dict()
    # relative paths: the report ships with the package and must not name this machine's folders
    data["bundle"] = f"wcx/zoo/bundles/{precision}"
    (out_root / f"{precision}.export.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    return data


def _rel(path: Path) -> Path:
    """``path`` relative to the repository (the tool runs from there), so that the provenance
    recorded in the shipped manifests names no folder of the machine that exported them."""
    return path.resolve().relative_to(REPO)


def summarize(report: dict) -> list[str]:
    """One line per member: MACs and the checks' key figures."""
    lines = []
    for m in report["members"]:
        checks = m["checks"]
        line = f"  {m['name']:7s} MACs {m['macs']:>10,d}  fp32 max|diff| {checks['fp32']['max_abs_diff']:.2e}"
        int8 = checks.get("int8")
        if int8:
            ev = int8["eval"]
            line += f"  int8 top-1 agreement {ev['top1_agreement']:.2%} on {ev['n']}"
            if ev.get("reference_accuracy") is not None:
                line += f"  accuracy fp32 {ev['reference_accuracy']:.2%} int8 {ev['candidate_accuracy']:.2%}"
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ZOO_DIR / "bundles", help="bundles root (default wcx/zoo/bundles)")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                        help="precisions to export (default: all)")
    parser.add_argument("--int8-min-agreement", type=float, default=0.95,
                        help="refuse an INT8 member whose top-1 agreement with FP32 on test is lower")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.chdir(REPO)
    try:
        manifest = load_manifest()
        members = zoo_members(manifest)
        args.out.mkdir(parents=True, exist_ok=True)
        for precision in args.precision:
            report = export_precision(precision, members, manifest, args.out,
                                      int8_min_agreement=args.int8_min_agreement)
            print(f"{precision}: {dir_size(args.out / precision) / 1e6:.2f} MB")
            print("\n".join(summarize(report)))
    except WcxError as exc:
        log.error("%s", exc)
        return exc.exit_code
    total = dir_size(ZOO_DIR) / 1e6
    print(f"wcx/zoo total: {total:.2f} MB (budget {SIZE_BUDGET_MB:.0f} MB)")
    if total > SIZE_BUDGET_MB:
        log.warning("wcx/zoo is %.1f MB, over the %.0f MB budget", total, SIZE_BUDGET_MB)
    return 0


if __name__ == "__main__":
    sys.exit(main())
