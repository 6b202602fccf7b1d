"""The library calls behind ``wcx run`` (the CLI only parses options and renders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wcx.atomic import atomic_write, check_output_file
from wcx.bundle import Bundle
from wcx.data import open_data
from wcx.errors import BadInputError
from wcx.runtime.cascade import Cascade, CascadeOutput, prediction_metrics


def run_on_file(
    bundle: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    backend: str = "auto",
    batch_size: int = 256,
    threads: int | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """Run the cascade of ``bundle`` on the ``.npz`` ``data``; write ``pred``, ``score``,
    ``accept``, ``exit_stage`` to ``out`` (atomically). Returns a summary: ``n``, ``accepted``,
    ``pass_fraction``, ``backend``, ``precision`` and, when the data has labels, ``accuracy``,
    ``coverage`` and ``risk`` (None when nothing is accepted).

    The data file is read ``batch_size`` rows at a time (memory-mapped when stored uncompressed),
    so memory stays bounded whatever its size; an output path that cannot be a file is refused
    before anything runs, and nothing is written unless every row ran."""
    if batch_size < 1:
        raise BadInputError(f"batch_size must be >= 1, got {batch_size}")
    out = check_output_file(out)
    b = Bundle.load(bundle)
    source = open_data(data, sample_shape=b.sample_shape, num_classes=b.num_classes)
    pieces: list[CascadeOutput] = []
    start = 0
    with Cascade.load(b, backend, strict=strict, threads=threads) as cascade:
        try:
            for piece in cascade.stream(source.chunks(batch_size)):  # pipelined on CUDA
                pieces.append(piece)
                start += len(piece)
        except BadInputError as exc:
            if str(exc).startswith(str(source.path)):
                raise
            raise BadInputError(f"{source.path} (from row {start}): {exc}") from None
        summary: dict[str, Any] = {"backend": cascade.backend, "precision": cascade.precision,
                                   "tau": cascade.tau, "score": cascade.score_name}
        n_stages = cascade.n_stages
    result = CascadeOutput(
        pred=np.concatenate([p.pred for p in pieces]), score=np.concatenate([p.score for p in pieces]),
        accept=np.concatenate([p.accept for p in pieces]), exit_stage=np.concatenate([p.exit_stage for p in pieces]),
        n_stages=n_stages,
    )
    with atomic_write(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, pred=result.pred, score=result.score, accept=result.accept,
                 exit_stage=result.exit_stage)
    summary.update(n=len(result), accepted=int(np.count_nonzero(result.accept)),
                   coverage=float(np.mean(result.accept)), pass_fraction=result.pass_fraction)
    if source.y is not None:
        summary.update(prediction_metrics(result, source.y))
    return summary
