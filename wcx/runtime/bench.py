"""Measured latency of a cascade, its full ensemble and each member alone (``wcx bench``).

For every batch size ``b`` the benchmark takes the first ``b`` rows of the data (repeated when
the data has fewer), so every repetition runs the same batch and the cascade's subset sizes are
the same each time. It measures, after ``warmup`` untimed calls, ``repeats`` timed calls of:

* ``cascade``: the cascade's public call (validation, preprocessing, stages, scores, decisions);
* ``ensemble``: the same call with every member on every row (the ``all`` rule);
* ``member:<name>``: that member alone on the preprocessed batch.

The configurations are timed in interleaved rounds (each once per round), so drifting machine
load affects them alike.

Times are host wall-clock after the device has synchronised, in milliseconds; ``throughput`` is
rows per second at the mean latency. ``pass_fraction`` is the fraction of the batch that reached
each stage. The cascade's ``overhead`` is its median latency divided by the sum of the median
latencies of its stages measured standalone at the sizes the cascade actually ran them
(``floor_ms``; padded bucket sizes on backends that pad, exact sizes on ONNX Runtime): 1.0 means
the cascade costs nothing beyond its members.

Progress is reported through a ``progress(done, total)`` callback (the command line draws the
bar); the library never prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wcx.bundle import Bundle
from wcx.core.policy import AllPolicy
from wcx.data import validate_inputs
from wcx.errors import BadInputError
from wcx.runtime.cascade import Cascade

ProgressFn = Callable[[int, int], None]


@dataclass
class BenchRow:
    """One configuration at one batch size (one row of ``wcx bench --json``)."""

    config: str
    batch_size: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput: float
    pass_fraction: list[float] | None = None
    overhead: float | None = None
    floor_ms: float | None = None
    stage_rows: list[int] | None = None
    padded_rows: list[int] | None = None
    backend: str = ""
    repeats: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stats(times: list[float], batch_size: int) -> dict[str, float]:
    t = np.asarray(times, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "throughput": float(batch_size / (t.mean() / 1000.0))}


def _row(config: str, times: list[float], batch_size: int, backend: str, repeats: int, *,
         pass_fraction: list[float], stage_rows: list[int] | None = None,
         padded_rows: list[int] | None = None) -> BenchRow:
    """The :class:`BenchRow` of one configuration's timed calls ``times`` at ``batch_size``."""
    stats = _stats(times, batch_size)
    return BenchRow(
        config=config,
        batch_size=batch_size,
        p50_ms=stats["p50_ms"],
        p90_ms=stats["p90_ms"],
        p99_ms=stats["p99_ms"],
        throughput=stats["throughput"],
        pass_fraction=pass_fraction,
        stage_rows=stage_rows,
        padded_rows=padded_rows,
        backend=backend,
        repeats=repeats,
    )


def benchmark(
    bundle: Bundle | str | Path | Cascade,
    x: np.ndarray,
    batch_sizes: Sequence[int],
    backend: str = "auto",
    *,
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
    strict: bool = False,
    policy: str | dict[str, Any] | None = None,
    device: str | None = None,
    progress: ProgressFn | None = None,
) -> list[BenchRow]:
    """Benchmark the cascade, the full ensemble and each member at every batch size.

    ``bundle`` may also be a loaded :class:`Cascade` (it is not closed). Returns one
    :class:`BenchRow` per configuration and batch size: cascade first, then ensemble, then the
    members, for each batch size in order. ``progress(done, total)`` is called after each round.
    """
    if warmup < 0 or repeats < 1:
        raise BadInputError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise BadInputError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    cascade: Cascade
    if isinstance(bundle, Cascade):
        cascade, own = bundle, False
    else:
        cascade = Cascade.load(bundle, backend, strict=strict, threads=threads, policy=policy, device=device)
        own = True
    try:
        validate_inputs(x, where="benchmark data", sample_shape=cascade.sample_shape)
        return _run(cascade, x, [int(b) for b in batch_sizes], warmup, repeats, progress)
    finally:
        if own:
            cascade.close()


def _run(cascade: Cascade, x: np.ndarray, sizes: list[int], warmup: int, repeats: int,
         progress: ProgressFn | None) -> list[BenchRow]:
    ex = cascade.executor
    m_total = cascade.n_stages
    names = cascade.member_names
    total_rounds = len(sizes) * (warmup + repeats)
    rows: list[BenchRow] = []
    for i, b in enumerate(sizes):
        batch = x[np.arange(b) % x.shape[0]]
        # the cascade's subset sizes on this batch (the same on every call)
        probe = cascade(batch, timing=True)
        timing = probe.timing
        assert timing is not None
        needed = {(m, b) for m in range(m_total)}
        needed |= {(m, p) for m, p in enumerate(timing.padded_rows) if p > 0}
        xp_all = ex.prepare(x[np.arange(max(s for _, s in needed)) % x.shape[0]])

        def member_fn(m: int, size: int, xp_all: Any = xp_all) -> Callable[[], Any]:
            xp = xp_all[:size]

            def run_alone() -> None:
                ex.run_member(m, xp)
                ex.synchronize()

            return run_alone

        def run_cascade(batch: np.ndarray = batch) -> Any:
            return cascade(batch)

        def run_ensemble(batch: np.ndarray = batch) -> Any:
            return cascade(batch, policy=AllPolicy())

        configs: dict[Any, Callable[[], Any]] = {
            "cascade": run_cascade,
            "ensemble": run_ensemble,
        }
        for key in sorted(needed):
            configs[key] = member_fn(*key)
        # Interleaved rounds: every configuration is timed once per round, so a change in
        # machine load affects the cascade and the stages it is compared with alike.
        times: dict[Any, list[float]] = {k: [] for k in configs}
        for r in range(warmup + repeats):
            for key, fn in configs.items():
                t0 = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - t0
                if r >= warmup:
                    times[key].append(elapsed)
            if progress is not None:
                progress(i * (warmup + repeats) + r + 1, total_rounds)
        cascade_row = _row("cascade", times["cascade"], b, cascade.backend, repeats,
                           pass_fraction=probe.pass_fraction, stage_rows=timing.stage_rows,
                           padded_rows=timing.padded_rows)
        floor = sum(float(np.median(times[(m, p)])) * 1000.0
                    for m, p in enumerate(timing.padded_rows) if p > 0)
        cascade_row.floor_ms = floor
        cascade_row.overhead = cascade_row.p50_ms / floor if floor > 0 else None
        rows.append(cascade_row)
        rows.append(_row("ensemble", times["ensemble"], b, cascade.backend, repeats, pass_fraction=[1.0] * m_total))
        rows.extend(_row(f"member:{names[m]}", times[(m, b)], b, cascade.backend, repeats, pass_fraction=[1.0])
                    for m in range(m_total))
    return rows
