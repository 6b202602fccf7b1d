"""The cascade executor: stage 1 on the whole batch, later stages only on rows still in their window.

For every batch (method.md section 5):

1. preprocess the batch once (:mod:`wcx.runtime.preprocess`);
2. run stage 1 on every row, add its logits to the running sums (:mod:`wcx.runtime.scoring`),
   compute the stage-1 score and prediction of every row;
3. for m = 2..M: the rows whose stage-(m-1) score is inside the exit rule's window are gathered
   into a smaller batch, member m runs on that batch only, its logits are scattered back into
   those rows' running sums, and their stage-m scores and predictions replace the old ones.
   A stage whose subset is empty is skipped (and so are all later ones). No member ever runs on
   a row that has exited;
4. ``accept = score >= tau``.

Two paths, chosen by the runners:

* **host** (``OnnxRuntimeRunner``): numpy throughout, float64 scores, exact subset sizes (a runner
  with ``pads_to_buckets`` is fed zero-padded power-of-two buckets instead).
* **device** (runners with a ``torch_device``, e.g. ``TorchRunner``): the batch is uploaded once,
  preprocessed on the device, the running sums and scores stay there (float32 on CUDA). Subset
  sizes are rounded up to shape buckets (powers of two up to ``max_batch``) so CUDA graphs are
  reused. On CUDA every in-flight batch has its own stream (a *slot*); after each stage the host
  needs the subset size, which is the one small device-to-host copy per stage (issued
  asynchronously and waited for on an event). Splitting a batch into :meth:`Executor.start`
  (upload, stage 1, stage-1 decision) and :meth:`Executor.finish` (the rest) lets the cascade's
  pipelined mode issue stage 1 of batch i+1 on one stream before it waits for batch i's subset
  size on another, so the two overlap on the GPU.

Timing (``timing=True``): per stage the rows that reached it, the rows actually run (padded) and
the seconds its member took (CUDA events on the GPU, a host clock on the CPU), and the end-to-end
seconds measured on the host after synchronisation.

Exit rules (:class:`WindowRule`, :class:`AllRule`, :class:`NoneRule`, :class:`ForcedFractionRule`)
work on numpy arrays and torch tensors alike. Threshold policies are windows ``(-inf, t]``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wcx.errors import BadInputError, WcxError
from wcx.runtime.preprocess import Preprocessor
from wcx.runtime.runner import LOGITS, Runner
from wcx.runtime.scoring import NumpyScoreState, TorchScoreState, check_score
from wcx.runtime.torch_runner import chunk_bounds, pick_bucket


def _is_torch(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


def _runner_device(runner: Runner) -> Any:
    """The torch device a runner's outputs live on (``torch_device``; TensorRT runners keep theirs
    in ``_device`` once active), or None for host (numpy) runners."""
    device = getattr(runner, "torch_device", None)
    if device is None and runner.backend == "tensorrt":
        import torch

        device = getattr(runner, "_device", None) or torch.device("cuda", torch.cuda.current_device())
    return device


# ---------------------------------------------------------------------------------------------
# exit rules
# ---------------------------------------------------------------------------------------------
class ExitRule:
    """Decides which rows continue from a non-final stage, given their stage scores."""

    kind = "rule"

    def continues(self, stage: int, scores: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def check_stages(self, n_stages: int) -> None:
        """Raise ``BadInputError`` if the rule does not fit a cascade of ``n_stages``."""


class WindowRule(ExitRule):
    """Continue from stage m iff ``lo_m <= s_m <= hi_m`` (one window per non-final stage)."""

    kind = "window"

    def __init__(self, windows: Sequence[tuple[float, float]]) -> None:
        self.windows = [(float(lo), float(hi)) for lo, hi in windows]
        if any(math.isnan(v) for w in self.windows for v in w):
            raise BadInputError("window bounds must not be NaN")

    def continues(self, stage: int, scores: Any) -> Any:
        lo, hi = self.windows[stage - 1]
        return (scores >= lo) & (scores <= hi)

    def check_stages(self, n_stages: int) -> None:
        if len(self.windows) != n_stages - 1:
            raise BadInputError(
                f"the policy has {len(self.windows)} windows/thresholds but the cascade has "
                f"{n_stages} stages (it needs {n_stages - 1})"
            )


class AllRule(ExitRule):
    """Every row runs every stage (the full ensemble)."""

    kind = "all"

    def continues(self, stage: int, scores: Any) -> Any:
        if _is_torch(scores):
            import torch

            return torch.ones_like(scores, dtype=torch.bool)
        return np.ones(np.shape(scores), dtype=bool)


class NoneRule(ExitRule):
    """Every row exits at stage 1 (the first member alone)."""

    kind = "none"

    def continues(self, stage: int, scores: Any) -> Any:
        if _is_torch(scores):
            import torch

            return torch.zeros_like(scores, dtype=torch.bool)
        return np.zeros(np.shape(scores), dtype=bool)


class ForcedFractionRule(ExitRule):
    """For benchmarks: a fixed fraction of the rows reaching stage m continues, whatever the score.

    Rows are taken from the front of the subset. Over successive calls the number passed is
    ``floor(f * rows_seen_so_far)`` differences, so the long-run pass fraction is exactly ``f``
    even at batch size 1 (e.g. 25%: one call in four passes its row on).
    """

    kind = "forced"

    def __init__(self, fractions: float | Sequence[float]) -> None:
        self.fractions = [float(fractions)] if isinstance(fractions, (int, float)) else [float(f) for f in fractions]
        if any(not 0.0 <= f <= 1.0 for f in self.fractions):
            raise BadInputError(f"forced pass fractions must be in [0, 1], got {self.fractions}")
        self._seen: dict[int, int] = {}

    def continues(self, stage: int, scores: Any) -> Any:
        f = self.fractions[min(stage - 1, len(self.fractions) - 1)]
        n = int(scores.shape[0])
        seen = self._seen.get(stage, 0)
        k = math.floor(f * (seen + n) + 1e-9) - math.floor(f * seen + 1e-9)
        self._seen[stage] = seen + n
        if _is_torch(scores):
            import torch

            return torch.arange(n, device=scores.device) < k
        return np.arange(n) < k


def rule_from_policy(policy: dict[str, Any], n_stages: int) -> ExitRule:
    """The exit rule of a manifest ``policy`` section (windows / thresholds, null = infinite)."""
    kind = policy.get("kind")
    try:
        if kind == "window":
            rule: ExitRule = WindowRule(
                [
                    (-math.inf if lo is None else float(lo), math.inf if hi is None else float(hi))
                    for lo, hi in policy["windows"]
                ]
            )
        elif kind == "threshold":
            rule = WindowRule(
                [(-math.inf, -math.inf if t is None else float(t)) for t in policy["thresholds"]]
            )
        elif kind == "all":
            rule = AllRule()
        elif kind == "none":
            rule = NoneRule()
        else:
            raise BadInputError(f"unknown policy kind {kind!r}; valid kinds: window, threshold, none, all")
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BadInputError):
            raise
        raise BadInputError(f"malformed {kind} policy ({exc!r})") from None
    rule.check_stages(n_stages)
    return rule


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
@dataclass
class StageTiming:
    """One stage of one call: rows that reached it, rows actually run (buckets), its seconds."""

    stage: int
    rows: int
    padded_rows: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "rows": self.rows, "padded_rows": self.padded_rows,
                "seconds": self.seconds}


@dataclass
class CallTiming:
    """Timing record of one call; ``stages`` has one entry per stage (0 rows when skipped)."""

    stages: list[StageTiming]
    total_seconds: float

    @property
    def stage_rows(self) -> list[int]:
        return [s.rows for s in self.stages]

    @property
    def padded_rows(self) -> list[int]:
        return [s.padded_rows for s in self.stages]

    @property
    def stage_seconds(self) -> list[float]:
        return [s.seconds for s in self.stages]

    def to_dict(self) -> dict[str, Any]:
        return {"stages": [s.to_dict() for s in self.stages], "total_seconds": self.total_seconds}


@dataclass
class CascadeOutput:
    """Per-row results of a cascade call (numpy arrays of length N).

    ``pred`` (int64): the exit stage's ensemble prediction; ``score`` (float64): its score;
    ``accept`` (bool): ``score >= tau`` (all True when the policy has no tau); ``exit_stage``
    (int64, 1-based); ``probs`` (float32 (N, K), only when asked): the exit stage's ensemble
    probabilities ``P_m``; ``timing``: a :class:`CallTiming` when asked.
    """

    pred: np.ndarray
    score: np.ndarray
    accept: np.ndarray
    exit_stage: np.ndarray
    probs: np.ndarray | None = None
    timing: CallTiming | None = None
    n_stages: int = 1

    def __len__(self) -> int:
        return int(self.pred.shape[0])

    @property
    def pass_fraction(self) -> list[float]:
        """Fraction of the rows that reached each stage (the first is 1.0)."""
        n = max(len(self), 1)
        return [float(np.count_nonzero(self.exit_stage >= m)) / n for m in range(1, self.n_stages + 1)]


# ---------------------------------------------------------------------------------------------
# the executor
# ---------------------------------------------------------------------------------------------
@dataclass
class _Job:
    """One batch in flight (device path)."""

    slot: int
    n: int
    rule: ExitRule
    return_probs: bool
    timing: bool
    t0: float
    keep: list[Any] = field(default_factory=list)  # host buffers that must outlive async copies
    xp: Any = None
    state: Any = None
    score: Any = None
    pred: Any = None
    exit_stage: Any = None
    next_rows: Any = None  # device: sorted indices, continuing rows first
    count: Any = None  # device: number of continuing rows (host copy pending)
    count_event: Any = None
    stage: int = 1
    stage_records: list[tuple[int, int, int, Any]] = field(default_factory=list)


class Executor:
    """Runs a batch through ``runners`` (already active) under an exit rule.

    ``score`` is the score name, ``tau`` the accept threshold (``None``: accept everything),
    ``max_batch`` the largest bucket of padding runners on the host path.
    """

    def __init__(
        self,
        runners: Sequence[Runner],
        *,
        rule: ExitRule,
        preprocess: Preprocessor,
        num_classes: int,
        score: str = "msp",
        tau: float | None = None,
        max_batch: int = 256,
    ) -> None:
        if not runners:
            raise BadInputError("a cascade needs at least one member")
        self.runners = list(runners)
        self.rule = rule
        rule.check_stages(len(self.runners))
        self.preprocess = preprocess
        self.num_classes = int(num_classes)
        self.score = check_score(score)
        self.tau = None if tau is None else float(tau)
        self.max_batch = int(max_batch)
        devices = {_runner_device(r) for r in self.runners}
        if len(devices) > 1:
            raise BadInputError("all runners of a cascade must be on one device (one backend per cascade)")
        self.device = devices.pop()
        self._streams: dict[int, Any] = {}
        if self.device is not None:
            import torch

            self.torch = torch
            self.on_cuda = self.device.type == "cuda"
            self.compute_dtype = getattr(self.runners[0], "dtype", torch.float32)
            self.state_dtype = torch.float32 if self.on_cuda else torch.float64
            self.channels_last = bool(getattr(self.runners[0], "channels_last", False))
        else:
            self.on_cuda = False

    @property
    def n_stages(self) -> int:
        return len(self.runners)

    # -- public entry points -----------------------------------------------------------------
    def run(
        self,
        x: Any,
        *,
        rule: ExitRule | None = None,
        return_probs: bool = False,
        timing: bool = False,
        slot: int = 0,
    ) -> CascadeOutput:
        """Run one (validated) batch through the cascade."""
        return self.finish(self.start(x, rule=rule, return_probs=return_probs, timing=timing, slot=slot))

    def start(
        self, x: Any, *, rule: ExitRule | None = None, return_probs: bool = False,
        timing: bool = False, slot: int = 0,
    ) -> Any:
        rule = rule or self.rule
        if rule is not self.rule:
            rule.check_stages(self.n_stages)
        if self.device is None:
            return self._run_host(x, rule, return_probs, timing)
        return self._start_device(x, rule, return_probs, timing, slot)

    def finish(self, job: Any) -> CascadeOutput:
        if isinstance(job, CascadeOutput):
            return job
        return self._finish_device(job)

    def prepare(self, x: Any, *, slot: int = 0) -> Any:
        """Preprocess ``x`` as the cascade does (numpy on the host path, a device tensor else)."""
        if self.device is None:
            return self.preprocess(x)
        with self._stream_ctx(slot), self.torch.inference_mode():
            return self._prepare_device(x, [])

    def run_member(self, index: int, xp: Any, *, slot: int = 0) -> tuple[Any, int]:
        """Run member ``index`` alone on a prepared batch; returns ``(logits, rows_run)``."""
        if self.device is None:
            return self._run_member_host(index, xp)
        with self._stream_ctx(slot), self.torch.inference_mode():
            return self._run_member_device(index, xp, slot)

    def synchronize(self, slot: int = 0) -> None:
        """Wait for the device work of ``slot`` (no-op on the host path)."""
        if self.on_cuda:
            self._stream(slot).synchronize()

    # -- host path ---------------------------------------------------------------------------
    def _run_member_host(self, index: int, xs: np.ndarray) -> tuple[np.ndarray, int]:
        runner = self.runners[index]
        name = runner.member.input_name
        n = int(xs.shape[0])
        if not runner.pads_to_buckets:
            return np.asarray(runner.infer({name: xs})[LOGITS]), n
        pieces, padded = [], 0
        for a, b in chunk_bounds(n, self.max_batch):
            bucket = pick_bucket(b - a, self.max_batch)
            chunk = xs[a:b]
            if bucket > b - a:
                chunk = np.concatenate([chunk, np.zeros((bucket - (b - a), *xs.shape[1:]), xs.dtype)])
            pieces.append(np.asarray(runner.infer({name: chunk})[LOGITS])[: b - a])
            padded += bucket
        return (pieces[0] if len(pieces) == 1 else np.concatenate(pieces)), padded

    def _run_host(self, x: np.ndarray, rule: ExitRule, return_probs: bool, timing: bool) -> CascadeOutput:
        t0 = time.perf_counter()
        xp = self.preprocess(x)
        n = int(xp.shape[0])
        m_total = self.n_stages
        state = NumpyScoreState(n, self.num_classes, self.score)
        score = np.empty(n, dtype=np.float64)
        pred = np.empty(n, dtype=np.int64)
        exit_stage = np.ones(n, dtype=np.int64)
        records: list[StageTiming] = []
        rows: Any = slice(None)
        active = np.arange(n)
        for m in range(1, m_total + 1):
            k = int(active.shape[0])
            if k == 0:
                records.append(StageTiming(m, 0, 0, 0.0))
                continue
            xs = xp if m == 1 else xp[active]
            ts = time.perf_counter()
            logits, padded = self._run_member_host(m - 1, xs)
            records.append(StageTiming(m, k, padded, time.perf_counter() - ts))
            if logits.shape != (k, self.num_classes):
                raise WcxError(
                    f"member {self.runners[m - 1].member.name!r} returned logits of shape "
                    f"{logits.shape}, expected {(k, self.num_classes)}"
                )
            state.add(rows, logits)
            s, p = state.score(rows, m)
            score[rows] = s
            pred[rows] = p
            exit_stage[rows] = m
            if m < m_total:
                cont = np.asarray(rule.continues(m, s), dtype=bool)
                active = active[cont]
                rows = active
        probs = None
        if return_probs:
            probs = (state.sum_probs / exit_stage[:, None]).astype(np.float32)
        accept = np.ones(n, dtype=bool) if self.tau is None else score >= self.tau
        total = time.perf_counter() - t0
        return CascadeOutput(
            pred=pred, score=score, accept=accept, exit_stage=exit_stage, probs=probs,
            timing=CallTiming(records, total) if timing else None, n_stages=m_total,
        )

    # -- device path -------------------------------------------------------------------------
    def _stream(self, slot: int) -> Any:
        if slot not in self._streams:
            self._streams[slot] = self.torch.cuda.Stream(self.device)
        return self._streams[slot]

    def _stream_ctx(self, slot: int) -> Any:
        if self.on_cuda:
            return self.torch.cuda.stream(self._stream(slot))
        return contextlib.nullcontext()

    def _event(self) -> Any:
        if self.on_cuda:
            ev = self.torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def _prepare_device(self, x: Any, keep: list[Any]) -> Any:
        torch = self.torch
        if isinstance(x, np.ndarray):
            t = torch.from_numpy(x)
            if self.on_cuda:
                t = t.pin_memory()
                keep.append(t)
                t = t.to(self.device, non_blocking=True)
            x = t
        elif x.device != self.device:
            x = x.to(self.device, non_blocking=True)
        return self.preprocess.torch(x, dtype=self.compute_dtype, channels_last=self.channels_last)

    def _run_member_device(self, index: int, xs: Any, slot: int) -> tuple[Any, int]:
        runner = self.runners[index]
        if hasattr(runner, "run_padded"):
            return runner.run_padded(xs, slot=slot)
        # a device runner with only the generic interface: pad here, run through infer()
        torch = self.torch
        n = int(xs.shape[0])
        name = runner.member.input_name
        pieces, padded = [], 0
        limit = min(self.max_batch, int(getattr(runner, "max_batch", 0) or self.max_batch))
        for a, b in chunk_bounds(n, limit):
            bucket = pick_bucket(b - a, limit) if runner.pads_to_buckets else b - a
            chunk = xs[a:b]
            if bucket > b - a:
                chunk = torch.cat([chunk, chunk.new_zeros((bucket - (b - a), *xs.shape[1:]))])
            pieces.append(runner.infer({name: chunk})[LOGITS][: b - a].float())
            padded += bucket
        return (pieces[0] if len(pieces) == 1 else torch.cat(pieces)), padded

    def _start_device(self, x: Any, rule: ExitRule, return_probs: bool, timing: bool, slot: int) -> _Job:
        torch = self.torch
        job = _Job(slot=slot, n=int(x.shape[0]), rule=rule, return_probs=return_probs, timing=timing,
                   t0=time.perf_counter())
        if self.on_cuda:
            # Stage 1 of this batch goes after the work already issued for other in-flight
            # batches (their stage 1): a runner (e.g. one TensorRT context) is never used by two
            # streams at once, while this batch's stage 1 still overlaps their later stages.
            mine = self._stream(slot)
            for other_slot, other in self._streams.items():
                if other_slot != slot:
                    mine.wait_stream(other)
        with self._stream_ctx(slot), torch.inference_mode():
            job.xp = self._prepare_device(x, job.keep)
            n = job.n
            job.state = TorchScoreState(n, self.num_classes, self.score, device=self.device, dtype=self.state_dtype)
            job.score = torch.empty(n, dtype=self.state_dtype, device=self.device)
            job.pred = torch.empty(n, dtype=torch.int64, device=self.device)
            job.exit_stage = torch.ones(n, dtype=torch.int64, device=self.device)
            self._device_stage(job, None, n)
        return job

    def _device_stage(self, job: _Job, rows: Any, k: int) -> None:
        """Run stage ``job.stage`` on ``rows`` (None = all), update state, decide who continues."""
        torch = self.torch
        m = job.stage
        xs = job.xp if rows is None else job.xp.index_select(0, rows)
        ev0 = self._event() if job.timing else None
        logits, padded = self._run_member_device(m - 1, xs, job.slot)
        ev1 = self._event() if job.timing else None
        job.stage_records.append((m, k, padded, (ev0, ev1)))
        if tuple(logits.shape) != (k, self.num_classes):
            raise WcxError(
                f"member {self.runners[m - 1].member.name!r} returned logits of shape "
                f"{tuple(logits.shape)}, expected {(k, self.num_classes)}"
            )
        job.state.add(rows, logits)
        s, p = job.state.score(rows, m)
        if rows is None:
            job.score.copy_(s)
            job.pred.copy_(p)
        else:
            job.score.index_copy_(0, rows, s)
            job.pred.index_copy_(0, rows, p)
            job.exit_stage.index_fill_(0, rows, m)
        if m < self.n_stages:
            cont = job.rule.continues(m, s)
            order = torch.argsort((~cont).to(torch.uint8), stable=True)
            all_rows = rows if rows is not None else torch.arange(k, device=self.device)
            job.next_rows = all_rows.index_select(0, order)
            count = cont.sum()
            if self.on_cuda:
                job.count = count.to("cpu", non_blocking=True)
                job.count_event = torch.cuda.Event()
                job.count_event.record()
            else:
                job.count = count

    def _finish_device(self, job: _Job) -> CascadeOutput:
        torch = self.torch
        with self._stream_ctx(job.slot), torch.inference_mode():
            while job.stage < self.n_stages:
                if job.count_event is not None:
                    job.count_event.synchronize()  # the one small device-to-host copy per stage
                k = int(job.count)
                job.stage += 1
                if k == 0:
                    break
                rows = job.next_rows[:k]
                job.count_event = None
                self._device_stage(job, rows, k)
            seen = {r[0] for r in job.stage_records}
            for m in range(1, self.n_stages + 1):
                if m not in seen:
                    job.stage_records.append((m, 0, 0, None))
            job.stage_records.sort(key=lambda r: r[0])
            outs = [job.pred, job.score.to(torch.float64), job.exit_stage]
            if job.return_probs:
                probs = job.state.sum_probs / job.exit_stage.to(job.state.dtype)[:, None]
                outs.append(probs.to(torch.float32))
            host = [t.to("cpu", non_blocking=True) for t in outs]
            if self.on_cuda:
                self._stream(job.slot).synchronize()
        total = time.perf_counter() - job.t0
        pred, score, exit_stage = (h.numpy() for h in host[:3])
        probs_np = host[3].numpy() if job.return_probs else None
        accept = np.ones(job.n, dtype=bool) if self.tau is None else score >= self.tau
        timing_rec = None
        if job.timing:
            stages = []
            for m, k, padded, evs in job.stage_records:
                if evs is None:
                    secs = 0.0
                elif self.on_cuda:
                    secs = evs[0].elapsed_time(evs[1]) / 1000.0
                else:
                    secs = evs[1] - evs[0]
                stages.append(StageTiming(m, k, padded, secs))
            timing_rec = CallTiming(stages, total)
        return CascadeOutput(
            pred=pred, score=score, accept=accept, exit_stage=exit_stage, probs=probs_np,
            timing=timing_rec, n_stages=self.n_stages,
        )
