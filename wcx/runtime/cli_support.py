"""The library calls behind ``wcx run`` and ``wcx monitor`` (the CLI only parses options and
renders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wcx.atomic import atomic_write, check_output_file
from wcx.bundle import Bundle
from wcx.data import ImageFolder, stack_rows
from wcx.errors import BadInputError
from wcx.runtime.bundle_data import open_data_for
from wcx.runtime.cascade import Cascade, CascadeOutput, prediction_metrics
from wcx.runtime.monitor import DEFAULT_HORIZON, Monitor


def run_on_file(
    bundle: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    backend: str = "auto",
    batch_size: int = 256,
    threads: int | None = None,
    strict: bool = False,
    probs: bool = False,
    monitor: bool = False,
) -> dict[str, Any]:
    """Run the cascade of ``bundle`` on ``data`` (an ``.npz``, an IDX images file or an image
    folder: :func:`wcx.runtime.bundle_data.open_data_for`); write to ``out`` (an ``.npz``,
    atomically) one entry per row of ``pred`` (the exit stage's ensemble prediction), ``score``
    (its score), ``accept`` (``score >= tau``: the decision), ``exit_stage`` (1-based stage the
    row exited at), ``first_score`` (its stage-1 score, also where a later stage decided), with
    ``probs`` also ``probs`` (N, K) float32, the exit stage's ensemble probabilities, and for an
    image folder ``files`` (each row's image, relative to the folder) and ``class_names``.
    Returns a summary: ``n``, ``accepted``, ``pass_fraction``, ``backend``, ``precision`` and,
    when the data has labels, ``accuracy``, ``coverage`` and ``risk`` (None
    when nothing is accepted). With ``monitor`` the calibration's drift monitor watches every
    batch (:mod:`wcx.runtime.monitor`; label-free) and the summary's ``monitor`` is its status.

    The data is read ``batch_size`` rows at a time (an ``.npz`` memory-mapped when stored
    uncompressed, images decoded a chunk at a time), so memory grows only with the outputs; an
    output path that cannot be a file is refused before anything runs, and nothing is written
    unless every row ran."""
    if batch_size < 1:
        raise BadInputError(f"batch_size must be >= 1, got {batch_size}")
    out = check_output_file(out)
    b = Bundle.load(bundle)
    source = open_data_for(b, data)
    watch = Monitor.for_bundle(b) if monitor else None  # refuses a calibration without reference rates first
    pieces: list[CascadeOutput] = []
    start = 0
    with Cascade.load(b, backend, strict=strict, threads=threads) as cascade:
        if watch is not None:
            cascade.attach(watch)
        try:
            if source.yields_frames:
                for batch in source.batches(batch_size):
                    pieces.append(cascade.predict_images(batch.x, batch_size=batch_size, return_probs=probs))
                    start += len(pieces[-1])
            else:
                chunks = (stack_rows(x, where=source.name) for x in source.chunks(batch_size))
                for piece in cascade.stream(chunks, return_probs=probs):  # pipelined on CUDA
                    pieces.append(piece)
                    start += len(piece)
        except BadInputError as exc:
            if str(exc).startswith(source.name):
                raise
            raise BadInputError(f"{source.name} (from row {start}): {exc}") from None
        summary: dict[str, Any] = {"backend": cascade.backend, "precision": cascade.precision,
                                   "tau": cascade.tau, "score": cascade.score_name}
        n_stages = cascade.n_stages
    result = CascadeOutput(
        pred=np.concatenate([p.pred for p in pieces]), score=np.concatenate([p.score for p in pieces]),
        accept=np.concatenate([p.accept for p in pieces]), exit_stage=np.concatenate([p.exit_stage for p in pieces]),
        probs=np.concatenate([p.probs for p in pieces if p.probs is not None]) if probs else None,
        n_stages=n_stages,
        first_score=(np.concatenate([p.first_score for p in pieces if p.first_score is not None])
                     if pieces and all(p.first_score is not None for p in pieces) else None),
    )
    arrays: dict[str, np.ndarray] = {"pred": result.pred, "score": result.score, "accept": result.accept,
                                     "exit_stage": result.exit_stage}
    if result.first_score is not None:
        arrays["first_score"] = result.first_score
    if result.probs is not None:
        arrays["probs"] = result.probs
    if isinstance(source, ImageFolder):
        arrays["files"] = np.asarray(source.relative_names(), dtype=str)
    if source.class_names is not None:
        arrays["class_names"] = np.asarray(source.class_names, dtype=str)
    with atomic_write(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    summary.update(n=len(result), accepted=int(np.count_nonzero(result.accept)),
                   coverage=float(np.mean(result.accept)), pass_fraction=result.pass_fraction)
    if source.class_names is not None:
        summary["class_names"] = list(source.class_names)
    if source.y is not None:
        summary.update(prediction_metrics(result, source.y))
    if watch is not None:
        summary["monitor"] = watch.status()
    return summary


def monitor_file(
    bundle: str | Path,
    data: str | Path,
    *,
    batch_size: int = 64,
    alpha: float = 0.01,
    backend: str = "auto",
    threads: int | None = None,
    strict: bool = False,
    state: str | Path | None = None,
    horizon: int | None = DEFAULT_HORIZON,
) -> dict[str, Any]:
    """Replay ``data`` (an ``.npz``, IDX images file or image folder) through ``bundle``'s
    cascade as a stream of ``batch_size`` rows, in order, watched by the calibration's drift
    :class:`~wcx.runtime.monitor.Monitor` at false-alarm level ``alpha``. Labels in the data are
    given to the monitor after each batch (the selective-risk alarm). ``state``: a monitor state
    file to resume from when it exists (with its own alpha and horizon), and to save to at the end
    (atomically). ``horizon``: see :class:`~wcx.runtime.monitor.Monitor`.

    Returns the monitor's status (``n_seen``, ``alarmed``, ``alarms``, every statistic) plus
    ``backend``, ``precision``, ``first_alarm_at`` (inputs seen at the first alarm, or None)."""
    if batch_size < 1:
        raise BadInputError(f"batch_size must be >= 1, got {batch_size}")
    b = Bundle.load(bundle)
    resume = state is not None and Path(state).exists()
    watch = Monitor.load(state) if resume and state is not None else Monitor.for_bundle(b, alpha=alpha,
                                                                                          horizon=horizon)
    source = open_data_for(b, data)
    labels = source.y if watch.risk_target is not None else None
    start = watch.n_seen  # ids continue across resumed runs
    row = 0
    with Cascade.load(b, backend, strict=strict, threads=threads) as cascade:
        for batch in source.batches(batch_size):
            out = (cascade.predict_images(batch.x, batch_size=batch_size) if source.yields_frames
                   else cascade(stack_rows(batch.x, where=source.name)))
            ids = list(range(start + row, start + row + len(out))) if labels is not None else None
            watch.observe(out, ids=ids)
            if ids is not None and labels is not None:
                watch.label(ids, labels[row : row + len(out)])
            row += len(out)
        backend_name, precision = cascade.backend, cascade.precision
    if state is not None:
        watch.save(state)
    report = watch.status()
    alarms = report["alarms"]
    report.update(backend=backend_name, precision=precision, rows=row,
                  first_alarm_at=alarms[0]["at_input"] if alarms else None)
    return report
