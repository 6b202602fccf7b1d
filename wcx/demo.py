"""``wcx demo``: the zoo's headline result, offline on a CPU in about a minute.

What :func:`run_demo` does (``wcx demo --out DIR`` is a thin layer over it):

1. builds a cascade bundle ``DIR/bundle`` from two members of one size of the shipped FP32 zoo
   bundle (:func:`wcx.bundle.select_members`);
2. calibrates it with :func:`wcx.calibration.held_out.calibrate_bundle` (what ``wcx calibrate``
   runs) at 5% risk with a guarantee (delta 0.1, Learn-then-Test) on the ``calib`` split, with
   the searched window, writing policy and calibration into ``DIR/bundle/wcx.json``, and
   measures it on the ``test`` split with the fitted thresholds (never re-fitted);
3. fits the comparisons the same way on the same splits (:mod:`wcx.zoo.experiment`, shared
   with ``tools/paper_benchmark.py``): the same cascade with the reference method's fixed
   +-10% band instead of the searched window (not written to the bundle), the two-member full
   ensemble, the first member alone, and the single first-seed model of every larger size;
4. measures latency on ONNX Runtime at batch 1 and 256 with the runtime's benchmark
   (:func:`wcx.runtime.bench.benchmark`): the cascade and the full ensemble from the cascade
   bundle, each single model as a one-member bundle through the same cascade call, all in one
   run (the same interleaved rounds on the same batches, so machine load hits them alike), over
   at least ``images`` (1,000) different test images per batch size; each latency is a median with
   its 95% confidence interval, and the claim's latency ratios come with the range those
   intervals allow;
5. writes ``DIR/results.json`` (``calibration``: the JSON of ``wcx calibrate --json``;
   ``bench``: the rows of ``wcx bench --json`` plus the ``single:<name>`` rows; ``table``: the
   rows shown) and the plots (``DIR/plots``, risk-coverage on the test split and the window
   search's cost/quality curve).

Nothing is downloaded and torch is not needed. Numbers depend only on the shipped files, except
latencies, which are measured on the machine that runs it.

``DIR`` must be new, empty, or the output of an earlier demo (:func:`check_demo_dir`): a folder
holding anything else is refused before anything is written, so the demo never deletes a user's
files; ``DIR/bundle`` is replaced only when it holds a wcx bundle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wcx.errors import BadInputError

#: the size whose two-member cascade best shows the claim on the zoo, measured in this demo's own
#: configuration (guaranteed, searched window) against the next larger single model: b3 -2.7
#: points of coverage at 35% of b4's MACs and about 60% of its batch-256 latency; b1 -3.4 points
#: at 48% of b2's MACs but slower than b2 on ONNX Runtime (b1's 5/10/20 channels run
#: inefficiently); b2 -4.5 points; b0 -17 points (docs/results/benchmark.md)
DEFAULT_SIZE = "b3"
RISK = 0.05
DELTA = 0.1
BATCH_SIZES: tuple[int, ...] = (1, 256)

ProgressFn = Callable[[int, int], None]
#: what a demo writes into its folder
DEMO_ENTRIES = frozenset({"bundle", "plots", "results.json"})


def check_demo_dir(out: Path) -> None:
    """Refuse (``BadInputError``) a demo folder that is not new, not empty and not an earlier
    demo's output (only ``bundle``, ``plots``, ``results.json`` and hidden staging leftovers,
    with ``results.json`` from a demo or, when an earlier run stopped before it, a wcx bundle)."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise BadInputError(f"{out} exists and is not a folder; give a new or empty folder for the demo")
    names = sorted(e.name for e in out.iterdir() if not e.name.startswith("."))
    if not names:
        return
    others = [n for n in names if n not in DEMO_ENTRIES]
    if not others and _earlier_demo(out):
        return
    shown = ", ".join((others or names)[:5]) + (", ..." if len(others or names) > 5 else "")
    raise BadInputError(f"{out} is not empty and is not the output of an earlier wcx demo (it holds {shown}); "
                        "give a new or empty folder, nothing was written")


def _earlier_demo(out: Path) -> bool:
    import json

    from wcx.bundle import Bundle

    results = out / "results.json"
    if results.is_file() and not results.is_symlink():
        try:
            return "demo" in json.loads(results.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, TypeError):
            return False
    try:
        Bundle.load(out / "bundle", verify=False)
    except BadInputError:
        return False
    return True


@dataclass
class DemoResult:
    """What :func:`run_demo` produced (``rows`` are the table, in display order)."""

    out_dir: Path
    bundle: Path
    size: str
    members: list[str]
    rows: list[dict[str, Any]]
    calibration: dict[str, Any]
    bench: list[dict[str, Any]]
    plots: list[Path]
    results: Path
    seconds: float
    claim: dict[str, Any] = field(default_factory=dict)


def _row(label: str, config: str, members: Sequence[str], ev: dict[str, Any], bench: list[dict[str, Any]],
         bench_config: str) -> dict[str, Any]:
    from wcx.zoo.experiment import latency, latency_interval

    return {
        "label": label,
        "config": config,
        "members": list(members),
        "coverage": ev["coverage"],
        "risk": ev["risk"],
        "risk_upper_bound": ev["risk_upper_bound"],
        "certified": ev["certified"],
        "expected_macs": ev["expected_macs"],
        "latency_ms": {str(b): latency(bench, bench_config, b) for b in BATCH_SIZES},
        "latency_ci_ms": {str(b): latency_interval(bench, bench_config, b) for b in BATCH_SIZES},
        "pass_fraction": ev["pass_fraction"],
        "bench_config": bench_config,
    }


def run_demo(
    out_dir: str | Path,
    *,
    size: str | None = None,
    threads: int | None = None,
    repeats: int = 20,
    warmup: int = 3,
    images: int = 1000,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> DemoResult:
    """Run the demo into ``out_dir`` (created; new, empty or an earlier demo's output, whose
    ``bundle`` is replaced) and return it.

    ``size``: the zoo size of the cascade's two members (default :data:`DEFAULT_SIZE`).
    ``threads``: ONNX Runtime intra-op threads (default: one per core). ``repeats``/``warmup``:
    timed (at least)/untimed calls per benchmark configuration and batch size (fewer for a quick
    check, e.g. in tests); ``images``/``seed``: the benchmark times at least ``images`` different
    test images per batch size, drawn with ``seed`` (:mod:`wcx.runtime.bench`).
    ``progress(done, total)`` is called after each step. Raises ``BadInputError`` when the zoo
    bundles are not there or the size is unknown, ``WorkFailedError`` when no threshold can
    be certified.
    """
    from wcx.bundle import select_members
    from wcx.calibration.held_out import calibrate_bundle, load_dataset_for
    from wcx.calibration.report import write_report
    from wcx.zoo import split_path
    from wcx.zoo.experiment import (
        bench_cascade,
        evaluate_selective,
        load_zoo_bundle,
        make_calibrator,
        member_logits,
        size_members,
        zoo_sizes,
    )

    started = time.perf_counter()
    steps = 5
    step = 0

    def advance() -> None:
        nonlocal step
        step += 1
        if progress is not None:
            progress(step, steps)

    if repeats < 1 or warmup < 0:
        raise BadInputError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    size = DEFAULT_SIZE if size is None else size
    out = Path(out_dir)
    check_demo_dir(out)
    zoo = load_zoo_bundle("fp32")
    sizes = zoo_sizes(zoo)
    if size not in sizes[:-1]:
        raise BadInputError(
            f"size: {size!r} is not a zoo size with a larger one to compare with; "
            f"valid sizes: {', '.join(sizes[:-1])}"
        )
    members = size_members(zoo, size, 2)
    larger = [size_members(zoo, s, 1)[0] for s in sizes[sizes.index(size) + 1 :]]
    out.mkdir(parents=True, exist_ok=True)
    bundle = select_members(zoo, members, out / "bundle", overwrite=True)
    advance()

    # calibrate exactly as `wcx calibrate --risk 0.05 --delta 0.1 --test test.npz` does
    calib = load_dataset_for(bundle, split_path("calib"), require_labels=True)
    test = load_dataset_for(bundle, split_path("test"), require_labels=True)
    assert calib.y is not None and test.y is not None  # require_labels=True
    calibrator = make_calibrator("window", risk=RISK, delta=DELTA)
    done = calibrate_bundle(bundle, calib, calibrator, threads=threads, test=test)
    calibrator.raise_if_failed()
    report = done.report
    assert done.test_logits is not None
    plots = write_report(calibrator, done.test_logits, test.y, out / "plots")
    report["plots"] = [str(p) for p in plots]
    advance()

    # the comparisons, fitted the same way on the same splits
    macs = [float(m) for m in bundle.member_macs]
    fixed = evaluate_selective("window_fixed", done.logits, calib.y, done.test_logits, test.y, macs,
                               risk=RISK, delta=DELTA)
    ens = evaluate_selective("ensemble", done.logits, calib.y, done.test_logits, test.y, macs,
                             risk=RISK, delta=DELTA)
    first = evaluate_selective("single", done.logits[:1], calib.y, done.test_logits[:1], test.y, macs[:1],
                               risk=RISK, delta=DELTA)
    big_calib = member_logits(zoo, larger, calib.x, threads=threads)
    big_test = member_logits(zoo, larger, test.x, threads=threads)
    by_name = {m.name: m for m in zoo.members}
    singles = [
        evaluate_selective("single", big_calib[i : i + 1], calib.y, big_test[i : i + 1], test.y,
                           [float(by_name[name].macs)], risk=RISK, delta=DELTA)
        for i, name in enumerate(larger)
    ]
    advance()

    # latency on ONNX Runtime, every configuration of the table in one run: cascade, ensemble and
    # members from the bundle, the fixed band on the same bundle, single models alone
    policies = {} if fixed["policy"] is None else {"window_fixed": fixed["policy"]}
    bench = bench_cascade(bundle, test.x, BATCH_SIZES, repeats=repeats, warmup=warmup, rows=images, seed=seed,
                          threads=threads, policies=policies, singles=(zoo, [members[0], *larger]))
    advance()

    t = report["test"]
    cascade_ev = {
        "coverage": t["coverage"], "risk": t["risk"], "risk_upper_bound": report["risk_upper_bound"],
        "certified": report["certified"], "expected_macs": t["expected_macs"], "pass_fraction": t["pass_fraction"],
    }
    pair = "+".join(members)
    rows = [
        _row(f"cascade {members[0]}->{members[1]}, searched", "window", members,
             cascade_ev, bench, "cascade"),
        _row(f"cascade {members[0]}->{members[1]}, +-10%", "window_fixed", members, fixed, bench,
             "cascade:window_fixed"),
        _row(f"ensemble {pair}", "ensemble", members, ens, bench, "ensemble"),
        *[_row(f"single {name}", "single", [name], ev, bench, f"single:{name}")
          for name, ev in zip(larger, singles, strict=True)],
        _row(f"first member {members[0]}", "single", members[:1], first, bench, f"single:{members[0]}"),
    ]
    claim = _claim(rows[0], rows[3])
    claim["fixed_band"] = _claim(rows[1], rows[3])
    seconds = time.perf_counter() - started
    results = out / "results.json"
    payload = {
        "demo": {
            "size": size, "members": members, "larger": larger, "risk": RISK, "delta": DELTA,
            "batch_sizes": list(BATCH_SIZES), "repeats": repeats, "warmup": warmup, "images": images, "seed": seed,
            "threads": threads,
            "backend": "onnxruntime", "seconds": round(seconds, 1), "claim": claim,
        },
        "calibration": report,
        "bench": bench,
        "table": rows,
    }
    from wcx.atomic import write_json_atomic

    write_json_atomic(results, payload)
    advance()
    return DemoResult(out_dir=out, bundle=bundle.path, size=size, members=members, rows=rows, calibration=report,
                      bench=bench, plots=plots, results=results, seconds=seconds, claim=claim)


def _claim(cascade: dict[str, Any], single: dict[str, Any]) -> dict[str, Any]:
    """The cascade against the next larger single model: coverage difference (points), MACs and
    median latency at batch 256 and 1 as fractions of the single model's.

    ``latency_ratio_<b>_range`` is the range of ratios both medians' 95% confidence intervals
    allow (cascade low / single high to cascade high / single low): a conservative interval for
    the ratio, which says whether a difference is more than noise."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    def ratio_range(b: str) -> list[float] | None:
        c, s = cascade.get("latency_ci_ms", {}).get(b), single.get("latency_ci_ms", {}).get(b)
        if not c or not s or not s[0] or not s[1]:
            return None
        return [c[0] / s[1], c[1] / s[0]]

    return {
        "against": single["members"][0],
        "coverage_points": 100.0 * (cascade["coverage"] - single["coverage"]),
        "macs_ratio": ratio(cascade["expected_macs"], single["expected_macs"]),
        "latency_ratio_256": ratio(cascade["latency_ms"]["256"], single["latency_ms"]["256"]),
        "latency_ratio_1": ratio(cascade["latency_ms"]["1"], single["latency_ms"]["1"]),
        "latency_ratio_256_range": ratio_range("256"),
        "latency_ratio_1_range": ratio_range("1"),
    }


