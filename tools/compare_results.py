#!/usr/bin/env python
"""Compare the numbers of two wcx result files (``wcx calibrate --json``, ``wcx demo``'s
``results.json``, a manifest): every number, boolean and null of OLD must be in NEW, equal.

Used to check that a refactoring changed no result: run the same commands before and after
and compare. Fields only NEW has are fine (reported with ``--verbose``). Measured times
(latencies, throughput, seconds, overheads) and file paths differ from run to run and are
skipped; so are timestamps. Strings that differ are listed but do not fail the comparison
unless ``--strings`` is given.

Usage::

    python tools/compare_results.py OLD.json NEW.json [--rtol 0] [--strings] [--verbose]
    python tools/compare_results.py OLD_DIR NEW_DIR      # every *.json of OLD_DIR (recursive)

Exit code 0 when the numbers agree, 1 when one differs or is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

#: keys whose values are measurements of time, paths or timestamps: never compared
SKIPPED_KEYS = frozenset({
    "bench", "latency_ms", "seconds", "p50_ms", "p90_ms", "p99_ms", "throughput", "overhead",
    "floor_ms", "latency_ratio_256", "latency_ratio_1", "plots", "created", "bundle", "results",
    "mean_ms", "p50_ci_ms", "expected_ms", "latency_ci_ms", "latency_ratio_256_range", "latency_ratio_1_range",
    "out_dir", "path", "selected_from", "threads",
})


def _walk(old: Any, new: Any, where: str, out: dict[str, list[str]], rtol: float) -> None:
    if isinstance(old, dict):
        if not isinstance(new, dict):
            out["differ"].append(f"{where}: object became {type(new).__name__}")
            return
        for key, value in old.items():
            if key in SKIPPED_KEYS:
                continue
            if key not in new:
                out["missing"].append(f"{where}.{key}")
                continue
            _walk(value, new[key], f"{where}.{key}", out, rtol)
        out["added"].extend(f"{where}.{k}" for k in new if k not in old)
        return
    if isinstance(old, list):
        if not isinstance(new, list) or len(new) != len(old):
            out["differ"].append(f"{where}: list of {len(old)} became {_short(new)}")
            return
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _walk(a, b, f"{where}[{i}]", out, rtol)
        return
    if isinstance(old, str):
        if old != new:
            out["strings"].append(f"{where}: {old!r} -> {_short(new)}")
        return
    if old is None or isinstance(old, bool):
        if old is not new:
            out["differ"].append(f"{where}: {old!r} -> {_short(new)}")
        return
    if isinstance(new, bool) or not isinstance(new, (int, float)):
        out["differ"].append(f"{where}: {old!r} -> {_short(new)}")
        return
    if old != new and not (rtol > 0 and math.isclose(old, new, rel_tol=rtol, abs_tol=0.0)):
        out["differ"].append(f"{where}: {old!r} -> {new!r}")


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) < 60 else text[:57] + "..."


def compare(old: Any, new: Any, *, rtol: float = 0.0) -> dict[str, list[str]]:
    """Differences of ``new`` against ``old``: ``differ``, ``missing``, ``strings``, ``added``."""
    out: dict[str, list[str]] = {"differ": [], "missing": [], "strings": [], "added": []}
    _walk(old, new, "$", out, rtol)
    return out


def _pairs(old: Path, new: Path) -> list[tuple[Path, Path]]:
    if old.is_dir():
        return [(p, new / p.relative_to(old)) for p in sorted(old.rglob("*.json"))]
    return [(old, new)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", type=Path, help="result file (or folder of them) from before")
    p.add_argument("new", type=Path, help="the same from after")
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for numbers (default: exact)")
    p.add_argument("--strings", action="store_true", help="also fail when a string differs")
    p.add_argument("--verbose", action="store_true", help="also list the fields only NEW has")
    args = p.parse_args(argv)
    failed = False
    for old_file, new_file in _pairs(args.old, args.new):
        if not new_file.is_file():
            print(f"{new_file}: missing")
            failed = True
            continue
        d = compare(json.loads(old_file.read_text()), json.loads(new_file.read_text()), rtol=args.rtol)
        bad = d["differ"] + d["missing"] + (d["strings"] if args.strings else [])
        status = "DIFFERS" if bad else "same numbers"
        print(f"{old_file.name}: {status}")
        for line in d["differ"] + [f"{m}: missing" for m in d["missing"]]:
            print(f"  {line}")
        for line in d["strings"]:
            print(f"  (text) {line}")
        if args.verbose:
            for line in d["added"]:
                print(f"  (new) {line}")
        failed = failed or bool(bad)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
