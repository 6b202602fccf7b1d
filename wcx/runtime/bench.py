"""Measured latency of a cascade, its full ensemble and each member alone (``wcx bench``).

**Which rows are timed.** A cascade's cost depends on its input: a row that leaves at stage 1
costs one member, a row that goes on costs two. So every batch size ``b`` walks through a
permutation of the data's rows drawn with ``seed`` (:func:`batch_rows`): each call takes the next
``b`` rows, wrapping around at the end. After ``warmup`` untimed rounds, ``max(repeats,
ceil(rows / b))`` calls per configuration are timed (:func:`timed_calls`): at batch 1 and the
default ``rows=1000`` that is 1,000 calls on 1,000 different rows (the whole data when it holds
fewer), so later stages run as often as the pass fraction says and the reported
``pass_fraction`` is measured over as many inputs as a calibration report's.

**Configurations**, timed in interleaved rounds (each once per round, on that round's batch),
so drifting machine load affects them alike:

* ``cascade``: the cascade's public call (validation, preprocessing, stages, scores, decisions);
* ``ensemble``: the same call with every member on every row (the ``all`` policy);
* ``member:<name>``: that member alone on the round's preprocessed batch;
* the *floor* (no row of its own): the cascade's stages alone at the sizes the cascade ran them
  in that round (padded bucket sizes on backends that pad, exact sizes on ONNX Runtime);
* ``alongside`` cascades (a name each): their public call on the same batch, so a comparison
  with another deployment (a single larger model, another policy) is paired round by round.

**Statistics** per configuration and batch size (host wall-clock after the device has
synchronised, in milliseconds):

* ``p50_ms``, ``p90_ms``, ``p99_ms``: percentiles of the timed calls (linear interpolation);
* ``p50_ci_ms``: a distribution-free 95% confidence interval for the median from order
  statistics (:func:`median_interval`: the ranks come from ``scipy.stats.binom``, the number of
  calls below the true median being Binomial(n, 1/2)); ``p50_ci_coverage`` is its exact coverage,
  at least 0.95 from 6 calls on (with fewer, the interval is [min, max] and covers less). It
  assumes independent calls, so it shows this run's sampling noise, not drift between runs;
* ``mean_ms``, and ``throughput``: rows per second at the mean;
* ``pass_fraction``: per stage, the fraction of all rows timed that reached it (public calls);
  ``stage_rows`` / ``padded_rows``: the rows that reached / were run at each stage, summed over
  the timed calls; ``repeats``: the number of timed calls, ``rows_timed`` the rows they held,
  ``distinct_rows`` how many different data rows those were;
* ``expected_ms`` (cascade and ensemble): sum over stages of the pass fraction into the stage
  times that stage's mean latency alone at this batch size (its ``member:`` row),
  :func:`expected_latency_ms`, beside the measured ``mean_ms``. At batch 1 it is the expected
  cost of the stages (a row runs a stage or not); at larger batches it charges a stage in
  proportion to the rows it runs, so the measured mean also pays what a stage costs beyond that
  share on a small subset, and the cascade call's own overhead;
* ``floor_ms`` (cascade): the floor's mean; ``overhead``: ``mean_ms / floor_ms`` (1.0 means
  the cascade costs nothing beyond its stages at the sizes it ran them).

Progress is reported through a ``progress(done, total)`` callback (the command line draws the
bar); the library never prints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wcx.bundle import Bundle
from wcx.core.frames import frames_of
from wcx.core.policy import AllPolicy
from wcx.data import validate_inputs
from wcx.errors import BadInputError
from wcx.runtime.buckets import chunk_bounds
from wcx.runtime.cascade import Cascade

ProgressFn = Callable[[int, int], None]

#: rows timed per batch size by default (at least): enough that a stage reached by 15% of the
#: inputs runs about 150 times at batch 1, and a pass fraction is known to about +-3 points
DEFAULT_ROWS = 1000
#: nominal coverage of the median's confidence interval
CI_LEVEL = 0.95
#: the configuration key of the floor (the cascade's stages alone); never a row
FLOOR = "floor"
_RESERVED = frozenset({"cascade", "ensemble", FLOOR})


@dataclass
class BenchRow:
    """One configuration at one batch size (one row of ``wcx bench --json``; the module
    docstring defines the fields)."""

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
    mean_ms: float | None = None
    p50_ci_ms: list[float] | None = None
    p50_ci_coverage: float | None = None
    expected_ms: float | None = None
    rows_timed: int = 0
    distinct_rows: int = 0
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RoundTimes:
    """The record of one batch size's timed rounds, from which :func:`summarize` makes rows.

    ``seconds[config]``: one wall-clock time per timed call, for ``cascade``, ``ensemble``,
    ``member:<name>``, :data:`FLOOR` and each alongside name. ``stage_rows[config]`` /
    ``padded_rows[config]``: for each public-call configuration (cascade, ensemble, alongside),
    the rows that reached / were run at each stage, summed over the timed calls.
    ``distinct_rows``: how many different data rows the timed calls held.
    """

    batch_size: int
    seconds: dict[str, list[float]]
    stage_rows: dict[str, list[int]] = field(default_factory=dict)
    padded_rows: dict[str, list[int]] = field(default_factory=dict)
    distinct_rows: int = 0

    @property
    def calls(self) -> int:
        """Timed calls per configuration."""
        return len(self.seconds["cascade"])


# ---------------------------------------------------------------------------------------------
# the plan and the statistics (pure functions)
# ---------------------------------------------------------------------------------------------
def timed_calls(batch_size: int, repeats: int, rows: int) -> int:
    """Timed calls per configuration at ``batch_size``: at least ``repeats``, and enough to hold
    ``rows`` rows.

    >>> [timed_calls(b, 30, 1000) for b in (1, 8, 32, 256)]
    [1000, 125, 32, 30]
    """
    return max(int(repeats), math.ceil(int(rows) / int(batch_size)))


def batch_rows(n_rows: int, batch_size: int, calls: int, seed: int) -> np.ndarray:
    """Indices ``(calls, batch_size)`` into data of ``n_rows`` rows: consecutive stretches of one
    permutation drawn with ``seed``, wrapping around at its end (so ``calls * batch_size <=
    n_rows`` rows are all different).

    >>> batch_rows(5, 2, 3, seed=0).shape
    (3, 2)
    >>> sorted(batch_rows(5, 1, 5, seed=0).ravel().tolist())
    [0, 1, 2, 3, 4]
    """
    order = np.random.default_rng(seed).permutation(n_rows)
    positions = np.arange(calls * batch_size, dtype=np.int64) % n_rows
    return order[positions].reshape(calls, batch_size)


def median_interval(seconds: Sequence[float] | np.ndarray, level: float = CI_LEVEL) -> tuple[float, float, float]:
    """A distribution-free confidence interval for the median of i.i.d. times: ``(low, high,
    coverage)``.

    With the times sorted, ``[x_(j), x_(n+1-j)]`` (1-based ranks) covers the true median unless
    fewer than ``j`` or more than ``n-j`` times fall below it; that count is Binomial(n, 1/2), so
    the coverage is ``1 - 2 F(j-1)``. ``j`` is the largest rank with coverage at least ``level``
    (``scipy.stats.binom``); when even ``[min, max]`` covers less (n < 6 at 95%), that is the
    interval and ``coverage`` says how much less.

    >>> low, high, cov = median_interval(range(1, 101))
    >>> (low, high, round(cov, 3))
    (40.0, 61.0, 0.965)
    """
    from scipy.stats import binom

    t = np.sort(np.asarray(seconds, dtype=np.float64))
    n = t.size
    if n == 0:
        raise BadInputError("median_interval needs at least one time")
    # ppf(q) is the smallest k with F(k) >= q, so F(j - 1) < (1 - level) / 2 for j = ppf(q)
    j = max(1, int(binom.ppf((1.0 - level) / 2.0, n, 0.5)))
    coverage = 1.0 - 2.0 * float(binom.cdf(j - 1, n, 0.5))
    return float(t[j - 1]), float(t[n - j]), coverage


def latency_stats(seconds: Sequence[float] | np.ndarray, batch_size: int) -> dict[str, Any]:
    """Percentiles, the median's confidence interval, the mean (all in ms) and throughput of
    timed calls of ``batch_size`` rows each."""
    t = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    low, high, coverage = median_interval(t)
    mean = float(t.mean())
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": mean,
            "p50_ci_ms": [low, high], "p50_ci_coverage": coverage,
            "throughput": float(batch_size / (mean / 1000.0)) if mean > 0 else math.inf}


def expected_latency_ms(pass_fraction: Sequence[float], stage_ms: Sequence[float]) -> float:
    """Expected latency of a cascade call: ``sum_m pass_fraction[m] * stage_ms[m]`` (the stage's
    measured per-call latency alone at the batch size).

    >>> expected_latency_ms([1.0, 0.25], [2.0, 4.0])
    3.0
    """
    if len(pass_fraction) != len(stage_ms):
        raise BadInputError(f"expected_latency_ms needs one latency per stage: {len(pass_fraction)} pass "
                            f"fractions, {len(stage_ms)} latencies")
    return float(sum(p * t for p, t in zip(pass_fraction, stage_ms, strict=True)))


def summarize(times: RoundTimes, member_names: Sequence[str], *, backend: str = "",
              backends: Mapping[str, str] | None = None, seed: int | None = None) -> list[BenchRow]:
    """The rows of one batch size's record: cascade, ensemble, the members, then the alongside
    configurations in their order. ``backends`` names the backend of an alongside configuration
    (default ``backend``)."""
    b = times.batch_size
    member_keys = [f"member:{n}" for n in member_names]
    member_ms = [latency_stats(times.seconds[k], b)["mean_ms"] for k in member_keys]

    def row(config: str, **extra: Any) -> BenchRow:
        seconds = times.seconds[config]
        stats = latency_stats(seconds, b)
        rows_timed = len(seconds) * b
        reached = times.stage_rows.get(config)
        if reached is None and config == "ensemble":  # every member on every row
            reached = [rows_timed] * len(member_keys)
        return BenchRow(
            config=config, batch_size=b, backend=(backends or {}).get(config, backend), repeats=len(seconds),
            rows_timed=rows_timed, distinct_rows=times.distinct_rows, seed=seed,
            pass_fraction=[r / rows_timed for r in reached] if reached is not None else [1.0],
            stage_rows=reached, padded_rows=times.padded_rows.get(config), **stats, **extra,
        )

    cascade = row("cascade")
    assert cascade.pass_fraction is not None
    cascade.expected_ms = expected_latency_ms(cascade.pass_fraction, member_ms)
    if FLOOR in times.seconds:
        cascade.floor_ms = latency_stats(times.seconds[FLOOR], b)["mean_ms"]
        assert cascade.mean_ms is not None
        cascade.overhead = cascade.mean_ms / cascade.floor_ms if cascade.floor_ms > 0 else None
    ensemble = row("ensemble")
    assert ensemble.pass_fraction is not None
    ensemble.expected_ms = expected_latency_ms(ensemble.pass_fraction, member_ms)
    members = [row(k) for k in member_keys]
    others = [row(k) for k in times.seconds if k not in _RESERVED and k not in member_keys]
    return [cascade, ensemble, *members, *others]


# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------
def benchmark(
    bundle: Bundle | str | Path | Cascade,
    x: np.ndarray,
    batch_sizes: Sequence[int],
    backend: str = "auto",
    *,
    warmup: int = 5,
    repeats: int = 30,
    rows: int = DEFAULT_ROWS,
    seed: int = 0,
    threads: int | None = None,
    strict: bool = False,
    policy: str | dict[str, Any] | None = None,
    device: str | None = None,
    alongside: Mapping[str, Cascade] | None = None,
    progress: ProgressFn | None = None,
) -> list[BenchRow]:
    """Benchmark the cascade, the full ensemble and each member at every batch size.

    ``bundle`` may also be a loaded :class:`Cascade` (it is not closed). ``repeats``: timed calls
    per configuration and batch size, at least; ``rows``: rows timed per batch size, at least
    (the module docstring says how rows are drawn, with ``seed``). ``alongside``: other loaded
    cascades (name -> cascade, not closed) timed in the same rounds on the same batches, one row
    each under its name. Returns one :class:`BenchRow` per configuration and batch size:
    cascade first, then ensemble, the members and the alongside cascades, for each batch size in
    order. ``progress(done, total)`` is called after each round.
    """
    if warmup < 0 or repeats < 1 or rows < 1:
        raise BadInputError(f"need warmup >= 0, repeats >= 1 and rows >= 1, got {warmup}, {repeats} and {rows}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise BadInputError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    if seed < 0:
        raise BadInputError(f"seed must be a non-negative integer, got {seed}")
    others = dict(alongside or {})
    clash = [k for k in others if k in _RESERVED or k.startswith("member:")]
    if clash:
        raise BadInputError(f"alongside names {clash} are taken: use names other than cascade, ensemble, "
                            f"{FLOOR} and member:<name>")
    cascade: Cascade
    if isinstance(bundle, Cascade):
        cascade, own = bundle, False
    else:
        cascade = Cascade.load(bundle, backend, strict=strict, threads=threads, policy=policy, device=device)
        own = True
    try:
        if cascade.takes_frames:  # raw frames of one size: each member resizes them to its own
            validate_inputs(x, where="benchmark data")
        else:
            validate_inputs(x, where="benchmark data", sample_shape=cascade.sample_shape)
        for name, other in others.items():
            if other.sample_shape != cascade.sample_shape:
                raise BadInputError(f"alongside cascade {name!r} takes inputs of shape {other.sample_shape}, "
                                    f"the benchmarked one {cascade.sample_shape}")
        sizes = [int(b) for b in batch_sizes]
        plan = {b: timed_calls(b, repeats, rows) for b in sizes}
        total = sum(warmup + c for c in plan.values())
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        out: list[BenchRow] = []
        backends = {k: c.backend for k, c in others.items()}
        for b in sizes:
            times = _measure(cascade, others, x, b, plan[b], warmup, seed, tick)
            out.extend(summarize(times, cascade.member_names, backend=cascade.backend, backends=backends, seed=seed))
        return out
    finally:
        if own:
            cascade.close()


def _stage_sizes(c: Cascade, exit_stage: np.ndarray) -> list[list[int]]:
    """Rows that reached each stage of ``c`` in one call, per block of the call (as it ran)."""
    return [[int(np.count_nonzero(exit_stage[a:e] >= m)) for m in range(1, c.n_stages + 1)]
            for a, e in chunk_bounds(int(exit_stage.shape[0]), c.block_rows)]


def _add_counts(c: Cascade, blocks: list[list[int]], reached: list[int], padded: list[int]) -> None:
    for sizes in blocks:
        for m, k in enumerate(sizes):
            reached[m] += k
            padded[m] += c.runners[m].rows_for(k) if k else 0


def _measure(cascade: Cascade, others: dict[str, Cascade], x: np.ndarray, b: int, calls: int, warmup: int,
             seed: int, tick: Callable[[], None]) -> RoundTimes:
    """Time ``warmup`` untimed and ``calls`` timed interleaved rounds at batch size ``b``."""
    ex = cascade.executor
    plan = batch_rows(int(x.shape[0]), b, warmup + calls, seed)
    member_keys = [f"member:{n}" for n in cascade.member_names]
    publics: dict[str, Cascade] = {"cascade": cascade, "ensemble": cascade, **others}
    seconds: dict[str, list[float]] = {k: [] for k in ("cascade", FLOOR, "ensemble", *member_keys, *others)}
    reached = {k: [0] * c.n_stages for k, c in publics.items()}
    padded = {k: [0] * c.n_stages for k, c in publics.items()}
    all_stages = AllPolicy()

    def clock(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        return time.perf_counter() - t0, result

    def run_alone(m: int, xps: list[Any]) -> None:
        ex.run_member(m, xps[m])
        ex.synchronize()

    def run_floor(xps: list[Any], blocks: list[list[int]]) -> None:
        # the stages alone at the sizes the cascade ran them, block by block as it did
        for (a, _), sizes in zip(chunk_bounds(b, cascade.block_rows), blocks, strict=True):
            for m, k in enumerate(sizes):
                if k:
                    ex.run_member(m, xps[m][a : a + k])
        ex.synchronize()

    def prepared(batch: np.ndarray) -> list[Any]:
        # untimed: each member alone gets its input ready-made (its own resolution when the
        # members resize raw frames; otherwise one preparation shared by all)
        if cascade.takes_frames:
            frames = list(frames_of(batch))
            return [ex.prepare_frames(m, frames) for m in range(cascade.n_stages)]
        return [ex.prepare(batch)] * cascade.n_stages

    for r, idx in enumerate(plan):
        timed = r >= warmup
        batch = x[idx]
        xps = prepared(batch)
        results: dict[str, tuple[float, Any]] = {"cascade": clock(cascade, batch)}
        blocks = _stage_sizes(cascade, results["cascade"][1].exit_stage)
        results[FLOOR] = clock(run_floor, xps, blocks)
        results["ensemble"] = clock(cascade, batch, policy=all_stages)
        for m, key in enumerate(member_keys):
            results[key] = clock(run_alone, m, xps)
        for key, other in others.items():
            results[key] = clock(other, batch)
        if timed:
            for key, (t, result) in results.items():
                seconds[key].append(t)
                if key in publics:
                    _add_counts(publics[key], _stage_sizes(publics[key], result.exit_stage), reached[key],
                                padded[key])
        tick()
    distinct = int(np.unique(plan[warmup:]).size)
    return RoundTimes(batch_size=b, seconds=seconds, stage_rows=reached, padded_rows=padded, distinct_rows=distinct)
