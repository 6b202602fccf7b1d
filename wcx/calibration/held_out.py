"""Calibrating a bundle: run its members on held-out data once, fit, write the manifest.

This is what ``wcx calibrate BUNDLE`` does (method.md section 3): every member runs on the whole
held-out set on the *deployment* backend (precision and engine shift scores), in chunks of rows
read from the data file as they are needed (memory stays bounded), the logits are cached in the
user's cache directory, never in the bundle (:mod:`wcx.calibration.logits_cache`: keyed by the
identity of what produced them and by the data file's hash, each entry hash-checked), a
``CascadeCalibrator`` is fitted on them, and the policy and calibration sections are written into
the manifest atomically, recording that provenance. Nothing derived from the held-out data but
the manifest's sections enters the bundle. A certified calibration is only replaced by an
uncertified (empirical) one when the caller asks (``replace_certified``).
:func:`calibrate_logits` is the same flow on logits the user already has (``wcx calibrate
--logits``). Progress is reported through a callback; nothing here draws or prints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wcx.bundle import Bundle
from wcx.calibration import logits_cache
from wcx.calibration.calibrator import CascadeCalibrator
from wcx.core.preprocess import Preprocessor
from wcx.core.provenance import Provenance
from wcx.data import DataFile, Dataset, open_data, validate_inputs
from wcx.errors import BadInputError
from wcx.runtime.backends import create_runners, provenance_of
from wcx.runtime.runner import LOGITS

ProgressFn = Callable[[int, int], None]
#: what the members can run on: an array in memory, a data set read from a file, or a data file
#: read in chunks
HeldOutData = np.ndarray | Dataset | DataFile


def cache_key(provenance: Provenance, data_key: str, batch_size: int = 512) -> str:
    """The logits cache key: what produces the logits (identity only), the data's key (a data
    file's sha256) and the rows per member call."""
    return logits_cache.entry_key(provenance, data_key, batch_size)


def _rows(data: HeldOutData) -> int:
    return len(data) if not isinstance(data, np.ndarray) else int(data.shape[0])


def _data_key(data: HeldOutData) -> str | None:
    if isinstance(data, DataFile):
        return data.sha256()
    if isinstance(data, Dataset):
        return data.sha256
    return None


def _chunks(data: HeldOutData, rows: int) -> Iterator[tuple[np.ndarray, str]]:
    if isinstance(data, DataFile):
        for chunk in data.chunks(rows):
            yield chunk, str(data.path)
        return
    x = data.x if isinstance(data, Dataset) else data
    where = str(data.path) if isinstance(data, Dataset) else "held-out data"
    for start in range(0, int(x.shape[0]), rows):
        yield x[start : start + rows], where


@dataclass(frozen=True)
class HeldOutLogits:
    """Logits ``(M, N, K)`` float32 of every member on every row, and what produced them."""

    logits: np.ndarray
    provenance: Provenance


def run_members(
    bundle: Bundle,
    x: HeldOutData,
    *,
    backend: str = "onnxruntime",
    batch_size: int = 512,
    cache: bool = True,
    data_key: str | None = None,
    progress: ProgressFn | None = None,
    **options: Any,
) -> HeldOutLogits:
    """Every member of ``bundle`` on every row of ``x`` (no cascade), on ``backend`` with the
    bundle's preprocessing, plus the provenance of those logits.

    ``x``: an array, a :class:`~wcx.data.Dataset` or a :class:`~wcx.data.DataFile` (read in
    chunks of ``batch_size`` rows, each fed to every member, so a file is read once and never
    held whole). ``options`` go to the backend's runners (e.g. ``threads``, ``device``). With
    ``cache`` the logits are kept in the user's logits cache (:mod:`wcx.calibration.logits_cache`)
    when the data has a key: a data file's sha256, or ``data_key`` for data in memory (data in
    memory without one is never cached). ``progress(done, total)`` is called after each chunk.
    """
    if batch_size < 1:
        raise BadInputError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(x, np.ndarray):
        validate_inputs(x, where="held-out data", sample_shape=bundle.sample_shape)
    else:
        data_shape = x.x.shape[1:] if isinstance(x, Dataset) else x.sample_shape
        if tuple(data_shape) != tuple(bundle.sample_shape):
            raise BadInputError(f"{x.path}: sample shape {tuple(data_shape)} does not match the bundle's "
                                f"{tuple(bundle.sample_shape)}")
    runners = create_runners(bundle, backend, **options)
    provenance = provenance_of(runners, backend)
    n = _rows(x)
    shape = (len(bundle.members), n, bundle.num_classes)
    key = None
    if cache:
        named = data_key if data_key is not None else _data_key(x)
        key = None if named is None else cache_key(provenance, named, batch_size)
    if key is not None:
        cached = logits_cache.read_entry(key, shape)
        if cached is not None:
            return HeldOutLogits(cached, provenance)
    pre = Preprocessor(bundle.input)
    out = np.empty(shape, dtype=np.float32)
    total, done, start = len(bundle.members) * n, 0, 0
    with contextlib.ExitStack() as active:
        for runner in runners:
            active.enter_context(runner)
        for chunk, where in _chunks(x, batch_size):
            k = int(chunk.shape[0])
            xp = pre(chunk, where=where)
            for i, (member, runner) in enumerate(zip(bundle.members, runners, strict=True)):
                out[i, start : start + k] = _to_numpy(runner.infer({member.input.name: xp})[LOGITS])
            start += k
            done += k * len(runners)
            if progress is not None:
                progress(done, total)
    if start != n:
        raise BadInputError(f"held-out data: read {start} rows, expected {n}")
    if not np.isfinite(out).all():
        raise BadInputError(f"{bundle.path}: members produced NaN or infinite logits on the held-out data")
    if key is not None:
        logits_cache.write_entry(key, out)
    return HeldOutLogits(out, provenance)


def collect_logits(
    bundle: Bundle,
    x: HeldOutData,
    *,
    backend: str = "onnxruntime",
    threads: int | None = None,
    batch_size: int = 512,
    cache: bool = True,
    data_key: str | None = None,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Logits ``(M, N, K)`` float32 of every member on every row of ``x`` (see
    :func:`run_members`, which also returns their provenance)."""
    return run_members(bundle, x, backend=backend, threads=threads, batch_size=batch_size, cache=cache,
                       data_key=data_key, progress=progress).logits


def _to_numpy(array: Any) -> np.ndarray:
    if isinstance(array, np.ndarray):
        return array
    host: np.ndarray = array.detach().float().cpu().numpy()  # a torch tensor from a GPU backend
    return host


@dataclass(frozen=True)
class LogitsFile:
    """Cached logits read from an ``.npz`` with ``logits`` (M, N, K), optional ``y`` (N,) and
    optional ``macs`` (M,) (cost per member; without it each member costs 1)."""

    logits: np.ndarray
    y: np.ndarray | None
    macs: np.ndarray | None
    path: Path


def load_logits(path: str | Path, *, require_labels: bool = False) -> LogitsFile:
    """Read and validate a logits ``.npz`` file (one-line ``BadInputError`` naming the file)."""
    import zipfile

    from wcx.data import validate_labels

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such logits file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "logits" not in archive.files:
                raise BadInputError(f"{path}: missing key 'logits' (found: {', '.join(archive.files)})")
            logits = archive["logits"]
            y = archive["y"] if "y" in archive.files else None
            macs = archive["macs"] if "macs" in archive.files else None
    except BadInputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BadInputError(f"{path}: not a readable .npz file ({exc})") from None
    if logits.ndim != 3 or min(logits.shape) < 1:
        raise BadInputError(f"{path}: 'logits' must have shape (M, N, K), got {tuple(logits.shape)}")
    if not np.issubdtype(logits.dtype, np.floating) or not np.isfinite(logits).all():
        raise BadInputError(f"{path}: 'logits' must be finite floats")
    if y is not None:
        y = validate_labels(y, logits.shape[1], where=str(path), num_classes=logits.shape[2])
    elif require_labels:
        raise BadInputError(f"{path}: labels 'y' are required here but the file has none")
    if macs is not None and (macs.shape != (logits.shape[0],) or not np.isfinite(macs).all() or (macs < 0).any()):
        raise BadInputError(f"{path}: 'macs' must hold one non-negative value per member")
    return LogitsFile(logits=logits, y=y, macs=macs, path=path)


def latency_costs(bench_rows: list[dict[str, Any]], member_names: list[str]) -> list[float]:
    """Per-input latency (ms) of each member from ``wcx bench --json`` rows, at the largest
    batch size benchmarked for that member (``--cost latency``)."""
    costs = []
    for name in member_names:
        rows = [r for r in bench_rows if r.get("config") == f"member:{name}"]
        if not rows:
            raise BadInputError(f"the bench file has no rows for member {name!r} (config 'member:{name}')")
        row = max(rows, key=lambda r: int(r["batch_size"]))
        costs.append(float(row["p50_ms"]) / int(row["batch_size"]))
    return costs


@dataclass
class BundleCalibration:
    """What :func:`calibrate_bundle` produced: the fitted calibrator, its report, the logits and
    their provenance."""

    calibrator: CascadeCalibrator
    report: dict[str, Any]
    logits: np.ndarray
    labels: np.ndarray | None
    provenance: Provenance | None = None
    test_logits: np.ndarray | None = None
    test_labels: np.ndarray | None = None


def calibrate_bundle(
    bundle: Bundle,
    data: Dataset | DataFile,
    calibrator: CascadeCalibrator,
    *,
    backend: str = "onnxruntime",
    threads: int | None = None,
    member_costs: list[float] | None = None,
    test: Dataset | DataFile | None = None,
    ood: Dataset | DataFile | None = None,
    write_manifest: bool = True,
    replace_certified: bool = False,
    progress: ProgressFn | None = None,
    **options: Any,
) -> BundleCalibration:
    """Fit ``calibrator`` on ``bundle``'s logits for ``data`` and (when certified or when the
    empirical fit found a threshold) write the policy and calibration into the manifest.

    ``member_costs`` default to the members' MACs. ``test`` is evaluated with the fitted
    thresholds, never re-fitted. ``ood`` (OOD task) only reports FPR and AUROC. ``options`` go
    to the backend's runners. The report is returned even when the fit failed; the caller
    decides the exit (``raise_if_failed``). Too little data for a certificate is an
    :class:`~wcx.errors.InsufficientDataError` (with ``n_needed``) raised before any member
    runs. A bundle whose calibration is certified is only given an uncertified (empirical) one
    with ``replace_certified``; otherwise that is refused before any work.
    """
    if calibrator.target.needs_labels and data.y is None:
        raise BadInputError(f"{data.path}: {calibrator.task} calibration needs labels 'y'")
    existing = bundle.calibration
    if write_manifest and existing is not None and existing.certified and calibrator.delta is None \
            and not replace_certified:
        raise BadInputError(
            f"{bundle.path}: holds a certified calibration (risk {existing.risk:g}, delta {existing.delta:g}) that an "
            "empirical fit would replace with an uncertified one; pass replace_certified=True to replace it, or "
            "fit with a guarantee (delta) instead")
    calibrator.check_data_size(len(data))
    kw: dict[str, Any] = {"backend": backend, "threads": threads, "progress": progress, **options}
    held = run_members(bundle, data, **kw)
    ood_logits = run_members(bundle, ood, **kw).logits if ood is not None else None
    macs = [float(m) for m in bundle.member_macs]
    calibrator.fit(
        held.logits, data.y, member_costs=macs if member_costs is None else member_costs,
        member_macs=macs, ood_logits=ood_logits,
    )
    test_report = None
    test_logits = None
    if test is not None:
        if calibrator.target.needs_labels and test.y is None:
            raise BadInputError(f"{test.path}: the test set needs labels 'y'")
        test_logits = run_members(bundle, test, **kw).logits
        test_report = calibrator.evaluate(test_logits, test.y, ood_logits=ood_logits)
    result = calibrator.result_
    report = result.report_dict(test=test_report)
    report["backend"] = backend
    report["precision"] = held.provenance.precision
    report["bundle"] = str(bundle.path)
    if write_manifest and result.deployable:
        bundle.update_sections(policy=result.policy_section(),
                               calibration=result.calibration_section(held.provenance))
    report["manifest_written"] = bool(write_manifest and result.deployable)
    return BundleCalibration(
        calibrator=calibrator, report=report, logits=held.logits, labels=data.y, provenance=held.provenance,
        test_logits=test_logits, test_labels=None if test is None else test.y,
    )


@dataclass
class LogitsCalibration:
    """What :func:`calibrate_logits` produced: the fitted calibrator, its report and the logits."""

    calibrator: CascadeCalibrator
    report: dict[str, Any]
    logits: np.ndarray
    labels: np.ndarray | None


def calibrate_logits(
    logits: str | Path | LogitsFile,
    calibrator: CascadeCalibrator,
    *,
    test: str | Path | LogitsFile | None = None,
) -> LogitsCalibration:
    """Fit ``calibrator`` on cached logits (``wcx calibrate --logits``): a logits ``.npz`` with
    ``logits`` (M, N, K), labels ``y`` when the task needs them, and optional ``macs`` (M,)
    (the cost per member; without it each member costs 1). ``test`` (same format) is evaluated
    with the fitted thresholds, never re-fitted. Nothing is written into a bundle."""
    if calibrator.cost == "latency":
        raise BadInputError("cost 'latency' needs a bundle (member names to match the bench rows)")
    need = calibrator.target.needs_labels
    cal = logits if isinstance(logits, LogitsFile) else load_logits(logits, require_labels=need)
    costs = cal.macs if (calibrator.cost == "macs" and cal.macs is not None) else None
    calibrator.fit(cal.logits, cal.y, member_costs=costs, member_macs=cal.macs)
    test_report = None
    if test is not None:
        t = test if isinstance(test, LogitsFile) else load_logits(test, require_labels=need)
        test_report = calibrator.evaluate(t.logits, t.y)
    report = calibrator.report_dict(test=test_report)
    report["backend"] = None
    report["manifest_written"] = False
    return LogitsCalibration(calibrator=calibrator, report=report, logits=cal.logits, labels=cal.y)


def open_data_for(bundle: Bundle, path: str | Path, *, require_labels: bool) -> DataFile:
    """Open a data file for reading in chunks, checked against the bundle's input shape and
    class count (labels are read and checked now, inputs as they are read)."""
    return open_data(path, require_labels=require_labels, sample_shape=bundle.sample_shape,
                     num_classes=bundle.num_classes)


def load_dataset_for(bundle: Bundle, path: str | Path, *, require_labels: bool) -> Dataset:
    """Read a data file checked against the bundle's input shape and class count (inputs
    memory-mapped where the file allows; its sha256 recorded for the logits cache)."""
    return open_data_for(bundle, path, require_labels=require_labels).dataset(digest=True)
