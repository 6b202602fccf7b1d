"""Calibrating a bundle: run its members on held-out data once, fit, write the manifest.

This is what ``wcx calibrate BUNDLE`` does (method.md section 3): every member runs on the whole
held-out set on the *deployment* backend (precision and engine shift scores), in chunks of rows
read from the data as they are needed (:class:`wcx.data.DataSource`: an ``.npz``, IDX files, an
image folder, arrays, or any iterable of batches such as a torch ``DataLoader``), so memory
grows only with the logits (N x M x K floats), never with the data. The logits are cached in
the user's cache directory, never in the bundle (:mod:`wcx.calibration.logits_cache`: keyed by
the identity of what produced them and by the data's content hash, each entry hash-checked;
data in memory is cached only under a key the caller names), a ``CascadeCalibrator`` is fitted
on them, and the policy and calibration sections are written into the manifest atomically,
recording that provenance (and the class names, where the data names its classes). Nothing
derived from the held-out data but the manifest's sections enters the bundle. A certified
calibration is only replaced by an uncertified (empirical) one when the caller asks
(``replace_certified``). :func:`calibrate_logits` is the same flow on logits the user already
has (``wcx calibrate --logits``). Progress is reported through a callback; nothing here draws or
prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from wcx.bundle import Bundle
from wcx.calibration import logits_cache
from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.result import CalibrationResult
from wcx.core.preprocess import MemberInputs
from wcx.core.provenance import Provenance
from wcx.data import DataFile, Dataset, DataSource, as_source, read_rows, validate_labels
from wcx.errors import BadInputError
from wcx.runtime.backends import create_runners, provenance_of
from wcx.runtime.bundle_data import data_sample_shape, open_data_for
from wcx.runtime.runner import LOGITS

__all__ = ["BundleCalibration", "HeldOutLogits", "LogitsCalibration", "LogitsFile", "calibrate_bundle",
           "calibrate_logits", "collect_logits", "latency_costs", "load_dataset_for", "load_logits",
           "open_data_for", "run_members"]

ProgressFn = Callable[[int, int], None]
#: what the members can run on: an (N, C, H, W) array, a data set read from a file, any
#: :class:`~wcx.data.DataSource` (a data file, IDX files, an image folder), or an iterable of
#: ``(x, y)`` batches
HeldOutData = np.ndarray | Dataset | DataSource | Iterable[Any]


def cache_key(provenance: Provenance, data_key: str, batch_size: int = 512) -> str:
    """The logits cache key: what produces the logits (identity only), the data's key (its
    content hash) and the rows per member call."""
    return logits_cache.entry_key(provenance, data_key, batch_size)


def _check_shape(bundle: Bundle, source: DataSource) -> None:
    want = data_sample_shape(bundle)
    have = source.sample_shape
    if want is not None and have is not None and tuple(have) != tuple(want):
        raise BadInputError(f"{source.name}: sample shape {tuple(have)} does not match the bundle's {tuple(want)}")


@dataclass(frozen=True)
class HeldOutLogits:
    """Logits ``(M, N, K)`` float32 of every member on every row, what produced them, and the
    data's labels (None when it has none) and class names (where it names them)."""

    logits: np.ndarray
    provenance: Provenance
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None


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
    """Every member of ``bundle`` on every row of ``x`` (no cascade), on ``backend`` with each
    member's preprocessing, plus the provenance of those logits and the data's labels.

    ``x``: see :data:`HeldOutData` (:func:`wcx.data.as_source`). It is read in chunks of
    ``batch_size`` rows, each fed to every member, so it is read once and never held whole;
    members whose input sections resize raw frames each prepare their own input from the chunk.
    ``options`` go to the backend's runners (e.g. ``threads``, ``device``). With ``cache`` the
    logits are kept in the user's logits cache (:mod:`wcx.calibration.logits_cache`) when the
    data has a key: its content hash (a file, IDX files, an image folder), or ``data_key`` for
    data in memory (without one it is never cached). ``progress(done, total)`` is called after
    each chunk (``total`` 0 while the number of rows is unknown).
    """
    if batch_size < 1:
        raise BadInputError(f"batch_size must be >= 1, got {batch_size}")
    source = as_source(x, name="held-out data", key=data_key)
    _check_shape(bundle, source)
    runners = create_runners(bundle, backend, **options)
    provenance = provenance_of(runners, backend)
    n, m, k = source.n, len(bundle.members), bundle.num_classes
    key = None
    if cache:
        named = data_key if data_key is not None else source.content_key()
        key = None if named is None else cache_key(provenance, named, batch_size)
    if key is not None:
        cached = logits_cache.read_entry(key, (m, n, k))
        labels = source.y if source.labels_known else (
            None if cached is None else logits_cache.read_labels(key, int(cached.shape[1])))
        if cached is not None and (source.labels_known or labels is not None):
            return HeldOutLogits(cached, provenance, labels, source.class_names)
    logits, labels = _run_on_source(bundle, source, runners, batch_size, progress)
    if not np.isfinite(logits).all():
        raise BadInputError(f"{bundle.path}: members produced NaN or infinite logits on the held-out data")
    if key is not None:
        logits_cache.write_entry(key, logits, None if source.labels_known else labels)
    return HeldOutLogits(logits, provenance, labels, source.class_names)


def _run_on_source(bundle: Bundle, source: DataSource, runners: list[Any], batch_size: int,
                   progress: ProgressFn | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The members' logits (M, N, K) on every chunk of ``source``, and its labels."""
    import contextlib

    n, m, k = source.n, len(bundle.members), bundle.num_classes
    inputs = MemberInputs([member.input for member in bundle.members])
    out = np.empty((m, n, k), dtype=np.float32) if n is not None else None
    pieces: list[np.ndarray] = []  # (M, rows, K) per chunk while the number of rows is unknown
    read_labels: list[np.ndarray] = []
    unlabelled = False
    start = 0
    with contextlib.ExitStack() as active:
        for runner in runners:
            active.enter_context(runner)
        for batch in source.batches(batch_size):
            rows = len(batch)
            if n is not None and start + rows > n:
                raise BadInputError(f"{source.name}: more than the {n} rows announced")
            xs = inputs(batch.x, where=source.name, names=batch.names)
            chunk = out[:, start : start + rows] if out is not None else np.empty((m, rows, k), np.float32)
            for i, (member, runner) in enumerate(zip(bundle.members, runners, strict=True)):
                chunk[i] = _to_numpy(runner.infer({member.input.name: xs[i]})[LOGITS])
            if out is None:
                pieces.append(chunk)
            if not source.labels_known:
                if batch.y is None:
                    unlabelled = True
                else:
                    read_labels.append(batch.y)
            start += rows
            if progress is not None:
                progress(start * m, 0 if n is None else n * m)
    if n is not None and start != n:
        raise BadInputError(f"{source.name}: read {start} rows, expected {n}")
    logits = out if out is not None else np.concatenate(pieces, axis=1)
    if source.labels_known:
        return logits, source.y
    labels = None if unlabelled or not read_labels else np.concatenate(read_labels)
    if labels is not None:
        labels = validate_labels(labels, start, where=source.name, num_classes=k)
    return logits, labels


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


def latency_costs(bench_rows: Sequence[Mapping[str, Any]], member_names: list[str]) -> list[float]:
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

    @property
    def result(self) -> CalibrationResult:
        """The frozen result: what was fitted and its figures, the certificate included."""
        return self.calibrator.result_

    @property
    def certified(self) -> bool:
        """A finite-sample certificate was obtained (guaranteed mode only)."""
        return self.result.settings.delta is not None and bool(self.result.threshold.certified)

    def raise_if_failed(self) -> None:
        """``WorkFailedError`` (exit 1) when nothing deployable was fitted."""
        self.result.raise_if_failed()


def calibrate_bundle(
    bundle: Bundle,
    data: HeldOutData,
    calibrator: CascadeCalibrator,
    *,
    backend: str = "onnxruntime",
    threads: int | None = None,
    member_costs: list[float] | None = None,
    test: HeldOutData | None = None,
    ood: HeldOutData | None = None,
    write_manifest: bool = True,
    replace_certified: bool = False,
    data_key: str | None = None,
    progress: ProgressFn | None = None,
    **options: Any,
) -> BundleCalibration:
    """Fit ``calibrator`` on ``bundle``'s logits for ``data`` and (when certified or when the
    empirical fit found a threshold) write the policy and calibration into the manifest.

    ``data``, ``test`` and ``ood``: see :data:`HeldOutData` (files, image folders, arrays,
    iterables of ``(x, y)`` batches); ``data_key`` names in-memory ``data`` for the logits
    cache. ``member_costs`` default to the members' MACs. ``test`` is evaluated with the fitted
    thresholds, never re-fitted. ``ood`` (OOD task) only reports FPR and AUROC. ``options`` go
    to the backend's runners. The report is returned even when the fit failed; the caller
    decides the exit (``raise_if_failed``). Too little data for a certificate is an
    :class:`~wcx.errors.InsufficientDataError` (with ``n_needed``) raised before any member
    runs where the number of rows is known beforehand (after running them otherwise). A bundle
    whose calibration is certified is only given an uncertified (empirical) one with
    ``replace_certified``; otherwise that is refused before any work. Where the data names its
    classes (an image folder), the names are in the report and the calibration section; a test
    set naming other classes is refused.
    """
    source = as_source(data, name="held-out data", key=data_key)
    test_source = None if test is None else as_source(test, name="test data")
    ood_source = None if ood is None else as_source(ood, name="OOD data")
    needs_labels = calibrator.target.needs_labels
    for s, what in ((source, "calibration"), (test_source, "the test set")):
        if s is not None and needs_labels and s.labels_known and s.y is None:
            raise BadInputError(f"{s.name}: {calibrator.task} {what} needs labels 'y'")
    if (test_source is not None and source.class_names is not None and test_source.class_names is not None
            and test_source.class_names != source.class_names):
        raise BadInputError(f"{test_source.name}: its classes {list(test_source.class_names)} are not the held-out "
                            f"data's {list(source.class_names)}")
    existing = bundle.calibration
    if write_manifest and existing is not None and existing.certified and calibrator.delta is None \
            and not replace_certified:
        raise BadInputError(
            f"{bundle.path}: holds a certified calibration (risk {existing.risk:g}, delta {existing.delta:g}) that an "
            "empirical fit would replace with an uncertified one; pass replace_certified=True to replace it, or "
            "fit with a guarantee (delta) instead")
    if source.n is not None:
        calibrator.check_data_size(source.n)
    kw: dict[str, Any] = {"backend": backend, "threads": threads, "progress": progress, **options}
    held = run_members(bundle, source, **kw)
    labels = held.labels
    if needs_labels and labels is None:
        raise BadInputError(f"{source.name}: {calibrator.task} calibration needs labels 'y'")
    if source.n is None:
        calibrator.check_data_size(int(held.logits.shape[1]))
    ood_logits = run_members(bundle, ood_source, **kw).logits if ood_source is not None else None
    macs = [float(m) for m in bundle.member_macs]
    calibrator.fit(
        held.logits, labels, member_costs=macs if member_costs is None else member_costs,
        member_macs=macs, ood_logits=ood_logits,
    )
    test_report = None
    test_logits = test_labels = None
    if test_source is not None:
        tested = run_members(bundle, test_source, **kw)
        test_logits, test_labels = tested.logits, tested.labels
        if needs_labels and test_labels is None:
            raise BadInputError(f"{test_source.name}: the test set needs labels 'y'")
        test_report = calibrator.evaluate(test_logits, test_labels, ood_logits=ood_logits)
    result = calibrator.result_
    report = result.report_dict(test=test_report)
    report["backend"] = backend
    report["precision"] = held.provenance.precision
    report["bundle"] = str(bundle.path)
    if held.class_names is not None:
        report["class_names"] = list(held.class_names)
    if write_manifest and result.deployable:
        section = result.calibration_section(held.provenance)
        if held.class_names is not None:
            section = replace(section, class_names=held.class_names)
        bundle.update_sections(policy=result.policy_section(), calibration=section)
    report["manifest_written"] = bool(write_manifest and result.deployable)
    return BundleCalibration(
        calibrator=calibrator, report=report, logits=held.logits, labels=labels, provenance=held.provenance,
        test_logits=test_logits, test_labels=test_labels,
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


def load_dataset_for(bundle: Bundle, path: str | Path, *, require_labels: bool) -> Dataset:
    """Read data checked against the bundle's input shape and class count, whole: an ``.npz``'s
    inputs memory-mapped where the file allows, other data read into memory; its content hash
    recorded for the logits cache. (Calibration itself reads data in chunks:
    :func:`open_data_for`.)"""
    source = open_data_for(bundle, path, require_labels=require_labels)
    if isinstance(source, DataFile):
        return source.dataset(digest=True)
    assert source.n is not None and source.path is not None
    return Dataset(x=read_rows(source, source.n), y=source.y, path=source.path, sha256=source.content_key())
