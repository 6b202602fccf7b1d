"""``export_bundle``: members (PyTorch, TorchScript or ONNX) -> a checked cascade bundle.

For every member, in the order given (stage 1 first):

1. FP32 ONNX: a torch member is exported with a dynamic batch dimension
   (:mod:`wcx.export.onnx_export`); an ONNX member is taken as it is.
2. FP32 parity (torch members): PyTorch and ONNX Runtime on the same preprocessed inputs,
   ``parity_samples`` seeded uniform [0, 1] images plus the given data. The export fails
   (``WorkFailedError``) when ``max_abs_diff > fp32_max_abs_diff * max(1, logit_scale)``:
   float32 rounding error grows with the size of the numbers summed, so the tolerance is
   absolute for logits up to 1 and relative to the largest logit beyond that (the default
   1e-4 is about 800 float32 ulps at 1.0).
3. Precision: FP16 by graph conversion, INT8 by symmetric Q/DQ with ranges from the INT8
   calibration part of ``calib_data`` (:mod:`wcx.export.precision`; at most
   ``max_calib_samples`` of it, drawn at random with ``seed``). The reduced graph is
   compared with the FP32 graph on ONNX Runtime: FP16 on the random inputs and the data, INT8 on
   data *not* used for its ranges (``eval_data``, or a random ``holdout_fraction`` of
   ``calib_data`` held back). Top-1 agreement below ``fp16_min_agreement`` fails the export at
   once; below ``int8_min_agreement`` after every member has been measured, with one message
   that gives each member's agreement and the remedies (:func:`int8_refusal`). Accuracy of both
   is reported when labels exist.
4. MACs per sample from the FP32 graph (:mod:`wcx.export.macs`).
5. For a ``pkg.mod:fn`` member, its ``state_dict`` is saved with safetensors as
   ``members/<name>.safetensors`` and recorded as ``torch_source`` so the torch runtime backend
   can rebuild it (never pickle).

Everything is built in a temporary directory next to ``out`` and the bundle is written with
``write_bundle`` at the end: all members or nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from wcx.atomic import scratch_directory
from wcx.bundle import check_replaceable, sha256_file, write_bundle
from wcx.core.manifest import PRECISIONS, InputSection, MemberSection, QuantizationSection, TorchSource
from wcx.core.preprocess import section_key
from wcx.data import Dataset, is_idx, load_npz, open_data, sample_dataset
from wcx.errors import BadInputError, WorkFailedError, missing_dependency
from wcx.export.float_fallback import AUTO_MARGIN, AUTO_SELECTION_ROWS, quantize_int8_auto
from wcx.export.inputs import input_sections, prepare, random_inputs
from wcx.export.macs import count_macs
from wcx.export.model_source import ModelSource, classify_model, default_name, resolve_model
from wcx.export.onnx_export import DEFAULT_OPSET, export_onnx, read_signature
from wcx.export.parity import Agreement, compare_logits, run_onnx, run_torch
from wcx.export.precision import (
    AUTO,
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_METHOD,
    DEFAULT_FLOAT_LAYERS,
    check_calibration_method,
    check_float_layers,
    convert_to_fp16,
    quantize_int8,
)
from wcx.version import __version__

log = logging.getLogger(__name__)

FP16_NOTE = (
    "FP16 check ran on ONNX Runtime's CPU provider, which has no FP16 convolution: it casts back "
    "to FP32 and computes there, so this check measures the effect of rounding weights (and "
    "activations at the casts) to FP16, not FP16 arithmetic. Check FP16 arithmetic on a GPU backend."
)
MIN_INT8_EVAL = 20  # fewer held-out inputs than this cannot show 98% agreement meaningfully
#: rows read from an image folder or IDX files for the checks (an .npz is read whole, as saved)
CHECK_DATA_ROWS = 20_000
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class Tolerances:
    """When an export is refused (defaults documented in ``wcx export --help``).

    ``fp32_max_abs_diff``: largest allowed |PyTorch - ONNX| logit difference, times
    ``max(1, largest |logit|)``. ``fp16_min_agreement`` / ``int8_min_agreement``: smallest
    allowed top-1 agreement of the FP16 / INT8 graph with the FP32 graph.
    ``int8_float_target``: the agreement ``int8_float_layers="auto"`` aims for (None: the INT8
    gate plus :data:`wcx.export.float_fallback.AUTO_MARGIN`).
    """

    fp32_max_abs_diff: float = 1e-4
    fp16_min_agreement: float = 0.99
    int8_min_agreement: float = 0.98
    int8_float_target: float | None = None

    @property
    def int8_search_target(self) -> float:
        """The agreement the ``auto`` float-layer search aims for."""
        if self.int8_float_target is not None:
            return self.int8_float_target
        return min(1.0, self.int8_min_agreement + AUTO_MARGIN)

    def __post_init__(self) -> None:
        if not self.fp32_max_abs_diff > 0:
            raise BadInputError(f"fp32 tolerance must be positive, got {self.fp32_max_abs_diff}")
        for name in ("fp16_min_agreement", "int8_min_agreement", "int8_float_target"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise BadInputError(f"{name.replace('_', '-')} must be in [0, 1], got {value}")


@dataclass
class MemberReport:
    """What happened to one member: source, exporter, MACs, timings and every check."""

    name: str
    source: str
    kind: str
    precision: str
    exporter: str | None
    opset: int
    num_classes: int
    macs: int
    seconds: float
    checks: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ExportReport:
    """The result of ``export_bundle`` (also what ``wcx export --json`` writes)."""

    bundle: str
    precision: str
    members: list[MemberReport]
    provenance: dict[str, Any]
    notes: list[str]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "precision": self.precision,
            "seconds": self.seconds,
            "notes": list(self.notes),
            "members": [m.to_dict() for m in self.members],
            "provenance": self.provenance,
        }


@dataclass
class _CheckData:
    """Preprocessed inputs of the checks."""

    random: np.ndarray
    data: np.ndarray | None  # calib (all of it) and eval data, for FP32/FP16 parity
    data_labels: np.ndarray | None
    int8_ranges: np.ndarray | None
    int8_eval: np.ndarray | None
    int8_eval_labels: np.ndarray | None
    int8_eval_source: str | None
    int8_range_pool: int = 0  # inputs the range sample was drawn from
    # unlabelled rows for int8_float_layers="auto": neither in the range sample nor judged by the gate
    int8_select: np.ndarray | None = None


def _versions() -> dict[str, str | None]:
    import onnx
    import onnxruntime

    try:
        import torch

        torch_version: str | None = torch.__version__
    except ImportError:
        torch_version = None
    return {"wcx": __version__, "torch": torch_version, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def _check_names(names: Sequence[str] | None, sources: Sequence[str], defaults: list[str]) -> list[str]:
    if names is None:
        counts = {n: defaults.count(n) for n in defaults}
        return [f"{n}-{i}" if counts[n] > 1 else n for i, n in enumerate(defaults)]
    names = list(names)
    if len(names) != len(sources):
        raise BadInputError(f"names: {len(names)} names for {len(sources)} models")
    for n in names:
        if not n or not set(n) <= _NAME_CHARS or n[0] in "._-":
            raise BadInputError(f"names: {n!r} is not a valid member name (letters, digits, '._-')")
    if len(set(names)) != len(names):
        raise BadInputError(f"names: names must be unique, got {names}")
    return names


def _load_data(data: str | Path | Dataset | None, sample_shape: tuple[int, ...] | None) -> Dataset | None:
    if data is None:
        return None
    if isinstance(data, Dataset):
        from wcx.data import validate_inputs

        validate_inputs(data.x, where=str(data.path), sample_shape=sample_shape)
        return data
    path = Path(data)
    if path.is_dir() or (path.suffix != ".npz" and is_idx(path)):
        # an image folder or IDX files: at most CHECK_DATA_ROWS rows, a seeded sample across it
        return sample_dataset(open_data(path, sample_shape=sample_shape), CHECK_DATA_ROWS)
    return load_npz(data, sample_shape=sample_shape)


def _check_labels(ds: Dataset | None, num_classes: int) -> None:
    if ds is not None and ds.y is not None and ds.y.size and int(ds.y.max()) >= num_classes:
        raise BadInputError(
            f"{ds.path}: label {int(ds.y.max())} is out of range for the models' {num_classes} classes"
        )


def _prepare_checks(
    *,
    precision: str,
    sample_shape: tuple[int, ...],
    section: InputSection,
    calib: Dataset | None,
    evald: Dataset | None,
    parity_samples: int,
    holdout_fraction: float,
    max_calib_samples: int,
    seed: int,
) -> _CheckData:
    rand = prepare(random_inputs(parity_samples, sample_shape, seed=seed, value_range=section.value_range), section)
    parts = [d for d in (calib, evald) if d is not None]
    data = np.concatenate([prepare(d.x, section) for d in parts]) if parts else None
    labels = None
    if parts and all(d.y is not None for d in parts):
        labels = np.concatenate([d.y for d in parts])
    ranges = int8_eval = int8_labels = select = None
    source = None
    pool = 0
    if precision == "int8":
        if calib is None:
            raise BadInputError("precision int8 needs calib_data (held-out inputs for the INT8 ranges)")
        if evald is not None:
            range_idx = np.arange(len(calib))
            int8_eval = prepare(evald.x, section)
            int8_labels = evald.y
            source = f"{evald.path} ({len(evald)} inputs)"
        else:
            if not 0.0 < holdout_fraction < 1.0:
                raise BadInputError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
            perm = np.random.default_rng(seed).permutation(len(calib))
            n_eval = round(len(calib) * holdout_fraction)
            eval_idx, range_idx = np.sort(perm[:n_eval]), np.sort(perm[n_eval:])
            if n_eval < MIN_INT8_EVAL or len(range_idx) == 0:
                raise BadInputError(
                    f"{calib.path}: {len(calib)} inputs are too few to hold back {holdout_fraction:.0%} "
                    f"for the INT8 agreement check (needs at least {MIN_INT8_EVAL} held back); "
                    "give more data or eval_data"
                )
            int8_eval = prepare(calib.x[eval_idx], section)
            int8_labels = None if calib.y is None else calib.y[eval_idx]
            source = (f"{n_eval} inputs of {calib.path} held back at random (seed {seed}, "
                      f"fraction {holdout_fraction}), not used for the INT8 ranges")
        if len(int8_eval) < MIN_INT8_EVAL:
            raise BadInputError(
                f"{evald.path if evald else calib.path}: {len(int8_eval)} inputs are too few for the "
                f"INT8 agreement check (needs at least {MIN_INT8_EVAL})"
            )
        pool = len(range_idx)
        if len(range_idx) > max_calib_samples:
            # a seeded random sample, not the first rows: files are often sorted by class
            keep = np.random.default_rng([seed, 1]).choice(len(range_idx), max_calib_samples, replace=False)
            rest = np.delete(range_idx, keep)
            range_idx = range_idx[np.sort(keep)]
            if len(rest) > AUTO_SELECTION_ROWS:
                rest = rest[np.sort(np.random.default_rng([seed, 2]).choice(len(rest), AUTO_SELECTION_ROWS,
                                                                              replace=False))]
            select = prepare(calib.x[rest], section)
        ranges = prepare(calib.x[range_idx], section)
    return _CheckData(random=rand, data=data, data_labels=labels, int8_ranges=ranges,
                      int8_eval=int8_eval, int8_eval_labels=int8_labels, int8_eval_source=source,
                      int8_range_pool=pool, int8_select=select)


def _save_weights(module: Any, path: Path) -> None:
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise missing_dependency("safetensors", "export", "saving a callable member's weights") from None
    # Clones break storage sharing (tied weights), which save_file refuses.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(state, str(path))


def _compare_with_fp32(
    run: Callable[[np.ndarray], np.ndarray],
    fp32_random: np.ndarray,
    fp32_data: np.ndarray | None,
    checks: _CheckData,
    *,
    fp32_is_reference: bool,
) -> tuple[Agreement, Agreement | None]:
    """Compare ``run``'s logits with the FP32 ONNX logits on the random inputs and, when there
    are any, on the data; ``fp32_is_reference`` picks the side ``compare_logits`` judges against."""

    def compare(fp32: np.ndarray, inputs: np.ndarray, labels: np.ndarray | None = None) -> Agreement:
        other = run(inputs)
        return compare_logits(fp32, other, labels) if fp32_is_reference else compare_logits(other, fp32, labels)

    a_rand = compare(fp32_random, checks.random)
    a_data = None
    if checks.data is not None:
        assert fp32_data is not None
        a_data = compare(fp32_data, checks.data, checks.data_labels)
    return a_rand, a_data


def _record_check(report_checks: dict[str, Any], key: str, entry: dict[str, Any], started: float, *,
                  failure: str) -> None:
    """Store check ``key`` with its run time; raise ``WorkFailedError(failure)`` when it did not pass."""
    report_checks[key] = {**entry, "seconds": round(time.perf_counter() - started, 3)}
    if not entry["passed"]:
        raise WorkFailedError(failure)


def int8_refusal(reports: Sequence[MemberReport], *, minimum: float, calibration: str, reduce_range: bool,
                 range_samples: int, calib_inputs: int, float_layers: Sequence[str] = ()) -> str:
    """The one-line refusal of an INT8 export: every member's top-1 agreement with FP32 (those
    below ``minimum`` marked) and what to try instead, as ``export_bundle`` parameters."""
    agreements = [(r.name, r.checks["int8"]["eval"]) for r in reports]
    failed = [name for name, a in agreements if a["top1_agreement"] < minimum]
    n = agreements[0][1]["n"]
    listed = ", ".join(f"{name!r} {a['top1_agreement']:.2%}" + (" (below)" if name in failed else "")
                       for name, a in agreements)
    others = " or ".join(f"int8_calibration={m}" for m in CALIBRATION_METHODS if m != calibration)
    remedies = [f"another INT8 calibration method ({others}; this export used {calibration})"]
    if AUTO in float_layers:
        pass  # the search already tried the layers one at a time
    elif not float_layers:
        remedies.append(f"layers in float chosen by measurement (int8_float_layers={AUTO})")
    elif "first" not in float_layers:
        remedies.append(f"the first layer in float ("
                        f"int8_float_layers={','.join(check_float_layers(['first', *float_layers]))})")
    elif "last" not in float_layers:
        remedies.append("the last layer in float too (int8_float_layers=first,last)")
    if reduce_range:
        remedies.append("full 8-bit weights (int8_reduce_range=False; fine on TensorRT and x86 CPUs with VNNI)")
    else:
        remedies.append("7-bit weights (int8_reduce_range=True; helps where ONNX Runtime's INT8 kernels "
                        "saturate: x86 CPUs without VNNI)")
    if range_samples < calib_inputs:
        remedies.append(f"more calibration inputs (max_calib_samples={calib_inputs}; {range_samples} of "
                        f"{calib_inputs} were used)")
    else:
        remedies.append(f"more calibration data (calib_data; all {calib_inputs} inputs were used)")
    remedies.append("precision=fp16")
    return (f"INT8 top-1 agreement with FP32 is below {minimum:.2%} for {len(failed)} of {len(agreements)} "
            f"members on {n} held-out inputs: {listed}; try {', '.join(remedies[:-1])}, or {remedies[-1]}")


def _agreement_failure(name: str, precision: str, judged: Agreement, minimum: float, inputs: str) -> str:
    """The error message of a failed top-1 agreement check against FP32."""
    return (f"member {name!r}: {precision} top-1 agreement with FP32 is {judged.top1_agreement:.2%} on "
            f"{judged.n} {inputs}, below {minimum:.2%}")


def _build_member(
    source: ModelSource,
    name: str,
    workdir: Path,
    *,
    precision: str,
    sample_shape: tuple[int, ...],
    opset: int,
    max_batch: int,
    checks: _CheckData,
    tolerances: Tolerances,
    chunk: int,
    int8_reduce_range: bool,
    int8_calibration: str,
    int8_float_layers: tuple[str, ...],
    int8_min_agreement_target: float,
) -> tuple[MemberReport, Path, Path | None, str, str]:
    """Build one member in ``workdir``; returns (report, onnx file, weights file, in, out names).

    A failed INT8 agreement check does not raise here: its report says ``passed: false`` and
    ``export_bundle`` refuses once every member is measured."""
    start = time.perf_counter()
    fp32_path = workdir / f"{name}.fp32.onnx"
    exporter: str | None = None
    if source.kind == "onnx":
        assert source.path is not None
        fp32_path.write_bytes(source.path.read_bytes())
    else:
        exporter = export_onnx(source.module, fp32_path, sample_shape=sample_shape, opset=opset,
                               max_batch=max_batch)
    sig = read_signature(fp32_path, sample_shape=sample_shape)
    report_checks: dict[str, Any] = {}

    ref_random = run_onnx(fp32_path, checks.random, chunk=chunk)
    if ref_random.ndim != 2:
        raise BadInputError(f"{source.spec}: the model's output has shape {ref_random.shape}; expected (N, classes)")
    num_classes = int(ref_random.shape[1])
    ref_data = None if checks.data is None else run_onnx(fp32_path, checks.data, chunk=chunk)

    if source.module is not None:
        t0 = time.perf_counter()
        module = source.module
        a_rand, a_data = _compare_with_fp32(lambda x: run_torch(module, x, chunk=chunk), ref_random, ref_data,
                                            checks, fp32_is_reference=False)
        worst = max([a_rand] + ([a_data] if a_data else []), key=lambda a: a.max_abs_diff)
        limit = tolerances.fp32_max_abs_diff * max(1.0, worst.logit_scale)
        _record_check(report_checks, "fp32", {
            "compares": "PyTorch (eager) vs FP32 ONNX on ONNX Runtime (CPU)",
            "random": a_rand.to_dict(),
            "data": None if a_data is None else a_data.to_dict(),
            "max_abs_diff": worst.max_abs_diff,
            "limit": limit,
            "passed": worst.max_abs_diff <= limit,
        }, t0, failure=(
            f"member {name!r} ({source.spec}): the ONNX export differs from PyTorch: max abs diff "
            f"{worst.max_abs_diff:.3g} > {limit:.3g} (tolerance {tolerances.fp32_max_abs_diff:g} x "
            f"max(1, logit scale {worst.logit_scale:.3g})), top-1 agreement {worst.top1_agreement:.1%}"
        ))
    else:
        report_checks["fp32"] = {
            "compares": "nothing: an ONNX member is its own FP32 reference",
            "data": None if ref_data is None or checks.data_labels is None else {
                "n": len(ref_data),
                "accuracy": float(np.mean(ref_data.argmax(1) == checks.data_labels))},
            "passed": True,
        }

    final_path = fp32_path
    if precision == "fp16":
        t0 = time.perf_counter()
        final_path = workdir / f"{name}.fp16.onnx"
        convert_to_fp16(fp32_path, final_path)
        a_rand, a_data = _compare_with_fp32(lambda x: run_onnx(final_path, x, chunk=chunk), ref_random, ref_data,
                                            checks, fp32_is_reference=True)
        judged = a_data if a_data is not None else a_rand
        _record_check(report_checks, "fp16", {
            "compares": "FP16 ONNX vs FP32 ONNX, both on ONNX Runtime (CPU)",
            "random": a_rand.to_dict(),
            "data": None if a_data is None else a_data.to_dict(),
            "judged_on": "data" if a_data is not None else "random",
            "min_agreement": tolerances.fp16_min_agreement,
            "passed": judged.top1_agreement >= tolerances.fp16_min_agreement,
            "note": FP16_NOTE,
        }, t0, failure=_agreement_failure(name, "FP16", judged, tolerances.fp16_min_agreement, "inputs"))
    elif precision == "int8":
        t0 = time.perf_counter()
        assert checks.int8_ranges is not None and checks.int8_eval is not None
        final_path = workdir / f"{name}.int8.onnx"
        if int8_float_layers == (AUTO,):
            select = checks.int8_select
            in_sample = select is None  # every calibration row is in the range sample
            options = quantize_int8_auto(
                fp32_path, final_path, checks.int8_ranges, checks.int8_ranges if select is None else select,
                input_name=sig.input_name, target=int8_min_agreement_target,
                run=lambda path, x: run_onnx(path, x, chunk=chunk),
                selection_source=("the range sample itself (no other calibration rows were left: the "
                                  "agreement it sees is optimistic)" if in_sample else
                                  "calibration rows outside the range sample and the held-out check rows"),
                reduce_range=int8_reduce_range, calibration_method=int8_calibration)
        else:
            options = quantize_int8(fp32_path, final_path, checks.int8_ranges, input_name=sig.input_name,
                                    reduce_range=int8_reduce_range, calibration_method=int8_calibration,
                                    float_layers=int8_float_layers)
        ref_eval = run_onnx(fp32_path, checks.int8_eval, chunk=chunk)
        a_eval = compare_logits(ref_eval, run_onnx(final_path, checks.int8_eval, chunk=chunk),
                                checks.int8_eval_labels)
        a_sim = compare_logits(ref_eval, run_onnx(final_path, checks.int8_eval, chunk=chunk, optimize=False),
                               checks.int8_eval_labels)
        if options.get("float_nodes"):  # what keeping layers in float costs, in the Q/DQ graph's MACs
            q_macs = count_macs(final_path)
            options["float_macs_share"] = round(
                sum(q_macs.by_node.get(n, 0) for n in options["float_nodes"]) / max(q_macs.total, 1), 5)
        else:
            options["float_macs_share"] = 0.0
        report_checks["int8"] = {
            "compares": "INT8 (Q/DQ) ONNX vs FP32 ONNX, both on ONNX Runtime (CPU)",
            "eval": a_eval.to_dict(),
            "eval_simulated": a_sim.to_dict(),
            "simulated_note": ("eval_simulated runs the Q/DQ graph with ORT's optimisations off (float "
                               "math on quantized values, as TensorRT computes); eval (judged) runs ORT's "
                               "own INT8 kernels, what the onnxruntime backend computes on this CPU"),
            "eval_data": checks.int8_eval_source,
            "range_samples": int(len(checks.int8_ranges)),
            "min_agreement": tolerances.int8_min_agreement,
            "passed": a_eval.top1_agreement >= tolerances.int8_min_agreement,
            "quantization": options,
            "seconds": round(time.perf_counter() - t0, 3),
        }

    macs = count_macs(fp32_path)
    if macs.uncounted:
        log.warning("member %s: MACs of %d nodes could not be counted (unknown shapes): %s",
                    name, len(macs.uncounted), ", ".join(macs.uncounted[:5]))
    report_checks["macs"] = {"by_op": macs.by_op, "uncounted_nodes": macs.uncounted}

    weights = None
    if source.kind == "callable":
        weights = workdir / f"{name}.safetensors"
        _save_weights(source.module, weights)

    report = MemberReport(
        name=name, source=source.spec, kind=source.kind, precision=precision, exporter=exporter,
        opset=sig.opset, num_classes=num_classes, macs=macs.total,
        seconds=round(time.perf_counter() - start, 3), checks=report_checks,
    )
    return report, final_path, weights, sig.input_name, sig.output_name


def export_bundle(
    models: Sequence[str | Path | Any],
    out: str | Path,
    *,
    input_shape: Sequence[int] | Sequence[Sequence[int]],
    precision: str | Sequence[str] = "fp32",
    calib_data: str | Path | Dataset | None = None,
    eval_data: str | Path | Dataset | None = None,
    names: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
    max_batch: int = 256,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_range: Sequence[float] | None = None,
    resize: Any = None,
    crop: Any = None,
    interpolation: str = "bilinear",
    tolerances: Tolerances | None = None,
    holdout_fraction: float = 0.2,
    parity_samples: int = 64,
    max_calib_samples: int = 1024,
    int8_reduce_range: bool = False,
    int8_calibration: str = DEFAULT_CALIBRATION_METHOD,
    int8_float_layers: str | Sequence[str] = DEFAULT_FLOAT_LAYERS,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[int, str], None] | None = None,
) -> ExportReport:
    """Export ``models`` (stage 1 first) into a new bundle at ``out``; return the report.

    ``models``: ``.onnx`` paths, TorchScript paths, ``"pkg.mod:fn"`` strings (imported and
    called: this runs that code) or ``torch.nn.Module`` objects. ``input_shape`` is (C, H, W).
    ``mean``/``std``: per-channel preprocessing applied after scaling to [0, 1] (defaults 0, 1;
    recorded in the manifest). ``input_range`` ``(low, high)`` instead declares data that arrives
    already normalised: float inputs in that range are what the members take (no scaling, no
    mean/std, uint8 refused); the runtime refuses inputs outside the declared range either way.
    ``resize`` (S: the shorter side becomes S; or (H, W)) and ``crop`` (S or (H, W), center) make
    the members take raw uint8 frames of any size, resized with ``interpolation`` by Pillow and
    center-cropped to their (H, W), recorded in their input sections (:mod:`wcx.core.frames`);
    ``input_shape``, ``resize`` and ``crop`` may each be a list with one value per member, for
    members at different resolutions (then every member needs a resize or crop). With a resize,
    the data below holds uint8 frames of one size, which each member prepares as it will at run
    time. ``calib_data``/``eval_data``: ``.npz`` files (or ``Dataset``)
    used by the checks; INT8 needs ``calib_data`` and measures agreement on ``eval_data`` or on
    a held-back ``holdout_fraction`` of ``calib_data``, with activation ranges from at most
    ``max_calib_samples`` of the rest (a seeded random sample) chosen by the INT8 calibration
    method ``int8_calibration`` (``minmax``, ``percentile`` or ``entropy``);
    ``precision`` is one of ``fp32``, ``fp16``, ``int8`` for every member, or a list with one per
    model (a pool may hold the same model at several precisions under different ``names``, for
    ``wcx plan`` to choose from); the INT8 options apply to the INT8 members.
    ``int8_reduce_range`` keeps INT8 weights in 7 bits, for ONNX Runtime on x86 CPUs without
    VNNI, and ``int8_float_layers`` (``"first"``, ``"last"``, both, or none) keeps those layers in
    float32 (see :mod:`wcx.export.precision`). ``progress(done, name)`` is called
    before each member and once at the end with ``(len(models), "")``.

    Raises ``BadInputError`` for bad options, models or data (nothing is written), and
    ``WorkFailedError`` when an export or a check fails (nothing is written either).
    """
    started = time.perf_counter()
    tolerances = tolerances or Tolerances()
    out = Path(out)
    if not models:
        raise BadInputError("give at least one model")
    precisions = member_precisions(precision, len(models))
    any_int8 = "int8" in precisions
    sections = input_sections(len(models), input_shape, mean, std, input_range, resize=resize, crop=crop,
                              interpolation=interpolation)
    section = sections[0]
    sample_shape = tuple(int(d) for d in section.shape)
    if opset < 13:
        raise BadInputError(f"opset: {opset} is too old (per-channel Q/DQ needs 13 or newer)")
    if max_batch < 1 or parity_samples < 1:
        raise BadInputError("max_batch and parity_samples must be positive")
    if max_calib_samples < 1:
        raise BadInputError(f"max_calib_samples must be positive, got {max_calib_samples}")
    check_calibration_method(int8_calibration, name="int8_calibration")
    float_layers = ((AUTO,) if int8_float_layers in (AUTO, [AUTO], (AUTO,))
                    else check_float_layers(int8_float_layers, name="int8_float_layers"))
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise BadInputError(f"{out} already exists (pass overwrite=True to replace it)")
        check_replaceable(out)  # before minutes of work: only a wcx bundle is ever replaced
    mean_l, std_l = list(section.mean), list(section.std)

    specs = [m if not isinstance(m, (str, Path)) else str(m) for m in models]
    kinds = [classify_model(m) if isinstance(m, str) else "module" for m in specs]
    if any(k != "onnx" for k in kinds):
        try:
            import torch  # noqa: F401
        except ImportError:
            raise missing_dependency("torch", "export", "exporting a PyTorch model") from None
    defaults = [default_name(m, k) for m, k in zip(specs, kinds, strict=True)]
    member_names = _check_names(names, [str(s) for s in specs], defaults)

    data_shape = None if section.prepares_frames else sample_shape  # frames may have any size
    calib = _load_data(calib_data, data_shape)
    evald = _load_data(eval_data, data_shape)
    checks = _prepare_checks(
        precision="int8" if any_int8 else precisions[0], sample_shape=sample_shape, section=section, calib=calib,
        evald=evald, parity_samples=parity_samples, holdout_fraction=holdout_fraction,
        max_calib_samples=max_calib_samples, seed=seed,
    )
    member_checks = {section_key(section): checks}

    def checks_for(s: InputSection) -> _CheckData:
        """The checks' inputs as a member of input section ``s`` takes them."""
        key = section_key(s)
        if key not in member_checks:
            member_checks[key] = _prepare_checks(
                precision="int8" if any_int8 else precisions[0], sample_shape=tuple(int(d) for d in s.shape),
                section=s, calib=calib,
                evald=evald, parity_samples=parity_samples, holdout_fraction=holdout_fraction,
                max_calib_samples=max_calib_samples, seed=seed)
        return member_checks[key]

    chunk = max(1, min(max_batch, 64))

    versions = _versions()
    options = {
        "models": [str(s) if isinstance(s, str) else f"<{type(s).__name__} object>" for s in specs],
        "names": member_names,
        "input_shape": list(sample_shape) if len({s.shape for s in sections}) == 1 else [
            list(s.shape) for s in sections],
        **({"inputs": [{"resize": None if s.resize is None else s.resize.to_dict(),
                        "crop": None if s.crop is None else s.crop.to_dict()} for s in sections]}
           if section.prepares_frames else {}),
        "precision": precisions[0] if len(set(precisions)) == 1 else precisions,
        "opset": opset,
        "max_batch": max_batch,
        "mean": mean_l,
        "std": std_l,
        "input_range": None if not section.normalized else list(section.value_range),
        "tolerances": asdict(tolerances),
        "calib_data": None if calib is None else {"path": str(calib.path), "n": len(calib),
                                                  "sha256": _maybe_sha(calib.path)},
        "eval_data": None if evald is None else {"path": str(evald.path), "n": len(evald),
                                                 "sha256": _maybe_sha(evald.path)},
        "holdout_fraction": holdout_fraction if any_int8 and evald is None else None,
        "parity_samples": parity_samples,
        "int8_reduce_range": int8_reduce_range if any_int8 else None,
        "int8_calibration": int8_calibration if any_int8 else None,
        "int8_float_layers": list(float_layers) if any_int8 else None,
        "max_calib_samples": max_calib_samples if any_int8 else None,
        "seed": seed,
    }
    provenance = dict(versions, export_options=options)

    reports: list[MemberReport] = []
    pairs: list[tuple[MemberSection, Path]] = []
    extra: list[tuple[str, Path]] = []
    with scratch_directory(out) as workdir:
        for index, (spec, name) in enumerate(zip(specs, member_names, strict=True)):
            if progress is not None:
                progress(index, name)
            source = resolve_model(spec)
            report, onnx_path, weights, in_name, out_name = _build_member(
                source, name, workdir, precision=precisions[index],
                sample_shape=tuple(int(d) for d in sections[index].shape),
                opset=opset, max_batch=max_batch, checks=checks_for(sections[index]), tolerances=tolerances,
                chunk=chunk,
                int8_reduce_range=int8_reduce_range, int8_calibration=int8_calibration,
                int8_float_layers=float_layers,
                int8_min_agreement_target=tolerances.int8_search_target,
            )
            if reports and report.num_classes != reports[0].num_classes:
                raise BadInputError(
                    f"member {name!r} has {report.num_classes} classes but {reports[0].name!r} has "
                    f"{reports[0].num_classes}; all members must share one label set"
                )
            _check_labels(calib, report.num_classes)
            _check_labels(evald, report.num_classes)
            torch_source = None
            if weights is not None:
                rel = f"members/{name}.safetensors"
                torch_source = TorchSource(str(source.callable), rel, sha256_file(weights))
                extra.append((rel, weights))
            member = MemberSection(
                name=name, file=f"members/{name}.onnx", sha256=sha256_file(onnx_path), precision=precisions[index],
                input=replace(sections[index], name=in_name),
                output_name=out_name, num_classes=report.num_classes, macs=report.macs,
                torch_source=torch_source, export_report=report.to_dict(),
                quantization=None if precisions[index] != "int8" else QuantizationSection(
                    reduce_range=int8_reduce_range, calibration=int8_calibration,
                    samples=int(report.checks["int8"]["range_samples"]),
                    float_layers=tuple(report.checks["int8"]["quantization"]["float_layers"])),
            )
            reports.append(report)
            pairs.append((member, onnx_path))
            del source
        int8_reports = [r for r in reports if r.precision == "int8"]
        if not all(r.checks["int8"]["passed"] for r in int8_reports):
            assert checks.int8_ranges is not None
            raise WorkFailedError(int8_refusal(
                int8_reports, minimum=tolerances.int8_min_agreement, calibration=int8_calibration,
                reduce_range=int8_reduce_range, range_samples=len(checks.int8_ranges),
                calib_inputs=checks.int8_range_pool, float_layers=float_layers))
        write_bundle(out, pairs, provenance, extra_files=extra, overwrite=overwrite)
    if progress is not None:
        progress(len(specs), "")
    notes = []
    if "fp16" in precisions:
        notes.append(FP16_NOTE)
    if any_int8:
        notes.append("INT8 agreement and accuracy are measured on " + str(checks.int8_eval_source) + ".")
        bits = "7 bits ([-64, 64], for x86 CPUs without VNNI)" if int8_reduce_range else "8 bits ([-127, 127])"
        n_ranges = 0 if checks.int8_ranges is None else len(checks.int8_ranges)
        notes.append(f"INT8 weights in {bits}; activation ranges by {int8_calibration} on "
                     f"{n_ranges} of {checks.int8_range_pool} calibration inputs.")
        kept = {r.name: r.checks["int8"]["quantization"] for r in int8_reports}
        if any(q["float_layers"] for q in kept.values()):
            notes.append("Kept in float32" + (" (chosen by measurement, int8_float_layers=auto)"
                                              if float_layers == (AUTO,) else "") + ": " + "; ".join(
                f"{name}: {', '.join(q['float_layers'])} ({q['float_macs_share']:.1%} of its MACs)"
                if q["float_layers"] else f"{name}: none" for name, q in kept.items()) + ".")
    shown = precisions[0] if len(set(precisions)) == 1 else ",".join(precisions)  # as Provenance.precision
    return ExportReport(bundle=str(out), precision=shown, members=reports, provenance=provenance,
                        notes=notes, seconds=round(time.perf_counter() - started, 3))


def member_precisions(precision: str | Sequence[str], n_models: int) -> list[str]:
    """One precision per model: ``precision`` for all, or its list (one per model, or a
    comma-separated string of them); ``BadInputError`` naming what is wrong."""
    values = ([v.strip() for v in precision.split(",")] if isinstance(precision, str)
              else [str(v).strip() for v in precision])
    if len(values) == 1:
        values = values * n_models
    if len(values) != n_models:
        raise BadInputError(f"precision: one for every member or one per model ({n_models}), got {len(values)}: "
                            f"{','.join(values)}")
    for v in values:
        if v not in PRECISIONS:
            raise BadInputError(f"precision: {v!r} is not one of {', '.join(PRECISIONS)}")
    return values


def _maybe_sha(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None
