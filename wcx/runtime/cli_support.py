"""The library calls behind ``wcx run`` (the CLI only parses options and renders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wcx.bundle import Bundle
from wcx.data import load_npz
from wcx.errors import BadInputError
from wcx.runtime.cascade import Cascade, prediction_metrics


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
    ``coverage`` and ``risk`` (None when nothing is accepted)."""
    from wcx.atomic import atomic_write

    if batch_size < 1:
        raise BadInputError(f"batch_size must be >= 1, got {batch_size}")
    b = Bundle.load(bundle)
    ds = load_npz(data, sample_shape=b.sample_shape, num_classes=b.num_classes)
    with Cascade.load(b, backend, strict=strict, threads=threads) as cascade:
        result = cascade.predict(ds.x, batch_size=batch_size)
        summary: dict[str, Any] = {"backend": cascade.backend, "precision": cascade.precision,
                                   "tau": cascade.tau, "score": cascade.score_name}
    with atomic_write(Path(out)) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, pred=result.pred, score=result.score, accept=result.accept,
                 exit_stage=result.exit_stage)
    summary.update(n=len(result), accepted=int(np.count_nonzero(result.accept)),
                   coverage=float(np.mean(result.accept)), pass_fraction=result.pass_fraction)
    if ds.y is not None:
        summary.update(prediction_metrics(result, ds.y))
    return summary
