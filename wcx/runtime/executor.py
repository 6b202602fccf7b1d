"""The cascade executor: stage 1 on the whole batch, later stages only on rows still in their window.

For every batch (method.md section 5):

1. preprocess the batch once, where the runners take it (host, or uploaded to the GPU);
2. run stage 1 on every row, add its logits to the running sums
   (:class:`wcx.core.scores.ScoreState`), compute every row's stage-1 score and prediction;
3. for m = 2..M: the rows the policy lets continue (:class:`wcx.core.policy.Policy`) are
   gathered into a smaller batch, member m runs on that batch only, its logits are scattered
   back into those rows' sums, and their stage-m scores and predictions replace the old ones.
   A stage whose subset is empty is skipped (and so are all later ones). No member ever runs on
   a row that has exited;
4. ``accept = score >= tau``.

One loop serves every backend: the scores and policies are the core's (numpy or torch), the
runners pad, bucket and chunk for themselves, and what differs between the host and a torch
device (streams, the asynchronous subset size, timing) is :mod:`wcx.runtime.device`'s.

A bundle whose members resize or crop raw frames runs :meth:`Executor.run_frames` instead: the
batch is a list of frames (uint8 (H, W, C) images of any size, :mod:`wcx.core.frames`) kept on
the host, and each stage prepares its member's input from the frames of the rows that reach it
(members with the same input section share one preparation of the whole batch), so a member at
another resolution never resizes a frame that exited before it.

Splitting a batch into :meth:`Executor.start` (upload, stage 1, stage-1 decision) and
:meth:`Executor.finish` (the rest) lets the cascade's pipelined mode issue stage 1 of batch i+1
on its own CUDA stream before it waits for batch i's subset size, so the two overlap on the GPU.

Timing (``timing=True``): per stage the rows that reached it, the rows actually run (padded) and
the seconds its member took (CUDA events on the GPU, a host clock elsewhere), and the end-to-end
seconds measured on the host after synchronisation.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wcx.core.arrays import Array
from wcx.core.frames import frames_to_input
from wcx.core.policy import Policy
from wcx.core.preprocess import Preprocessor, section_key
from wcx.core.scores import ScoreState, check_combine, get_score
from wcx.errors import BadInputError
from wcx.runtime.device import Count, ExecutionDevice, device_for
from wcx.runtime.runner import LOGITS, Runner


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

    ``pred`` (int64): the exit stage's ensemble prediction (the argmax of ``P_m``, the mean of
    the softmax of members 1..m); ``score`` (float64): its confidence score (higher = more
    confident); ``accept`` (bool): the decision, ``score >= tau``: True means act on ``pred``,
    False means reject it (send it to a human, a fallback, or flag it as out of distribution);
    all True when the policy has no tau; ``exit_stage`` (int64, 1-based): the stage the row left
    the cascade at, i.e. how many members ran on it (1: the first member alone was far enough
    from tau; M: it reached the last member); ``probs`` (float32 (N, K), only when asked): the
    exit stage's ensemble probabilities ``P_m``; ``timing``: a :class:`CallTiming` when asked;
    ``first_score`` (float64): every row's stage-1 score (member 1 alone), also of the rows that
    went on (their ``score`` is a later stage's), which a drift monitor compares with the
    calibration's; equal to ``score`` where ``exit_stage == 1``. None in outputs not made by the
    executor (e.g. built by hand).
    """

    pred: np.ndarray
    score: np.ndarray
    accept: np.ndarray
    exit_stage: np.ndarray
    probs: np.ndarray | None = None
    timing: CallTiming | None = None
    n_stages: int = 1
    first_score: np.ndarray | None = None

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
    """One batch in flight."""

    slot: int
    n: int
    policy: Policy
    return_probs: bool
    timing: bool
    t0: float
    xp: Array = None
    state: ScoreState | None = None
    score: Array = None
    first_score: Array = None  # stage-1 scores of every row, kept for the output
    pred: Array = None
    exit_stage: Array = None
    next_rows: Array = None  # the rows that continue come first
    count: Count | None = None
    stage: int = 1
    keep: list[Any] = field(default_factory=list)  # host buffers that must outlive async copies
    records: list[tuple[int, int, int, Any]] = field(default_factory=list)
    frames: list[np.ndarray] | None = None  # raw frames (members that resize), on the host
    prepared: dict[str, Array] = field(default_factory=dict)  # whole-batch inputs per input section


class Executor:
    """Runs batches through active ``runners`` under ``policy``.

    ``score`` is the score name (or a :class:`~wcx.core.scores.Score`), ``tau`` the accept
    threshold (None: accept everything). All runners must return arrays of one library on one
    device (one backend per cascade).
    """

    def __init__(
        self,
        runners: Sequence[Runner],
        *,
        policy: Policy,
        preprocess: Preprocessor,
        num_classes: int,
        score: str = "msp",
        tau: float | None = None,
        combine: str = "mean",
    ) -> None:
        if not runners:
            raise BadInputError("a cascade needs at least one member")
        self.runners = list(runners)
        self.policy = policy
        policy.check_stages(len(self.runners))
        self.preprocess = preprocess
        self.num_classes = int(num_classes)
        self.score = get_score(score)
        self.combine = check_combine(combine)
        self.tau = None if tau is None else float(tau)
        places = {(r.array_library, r.device) for r in self.runners}
        if len(places) > 1:
            raise BadInputError("all runners of a cascade must run on one device (one backend per cascade), "
                                f"got {sorted(places)}")
        library, device = places.pop()
        self.device: ExecutionDevice = device_for(library, device)
        first = self.runners[0]
        (meta,) = first.input_metadata().values()
        self.input_dtype = getattr(getattr(self.device, "torch", None), meta.dtype, None)
        self.channels_last = bool(first.channels_last)
        # per member, for batches of raw frames (each member prepares its own input)
        self._frame_pre = [Preprocessor(r.member.input) for r in self.runners]
        self._frame_keys = [section_key(r.member.input) for r in self.runners]
        self._frame_dtypes = [getattr(getattr(self.device, "torch", None), next(iter(
            r.input_metadata().values())).dtype, None) for r in self.runners]

    @property
    def n_stages(self) -> int:
        return len(self.runners)

    @property
    def on_cuda(self) -> bool:
        return self.device.on_cuda

    # -- public entry points -----------------------------------------------------------------
    def run(self, x: Any, *, policy: Policy | None = None, return_probs: bool = False, timing: bool = False,
            slot: int = 0, rule: Policy | None = None) -> CascadeOutput:
        """Run one (validated) batch through the cascade (``policy`` overrides the cascade's
        for this call; ``rule`` is its wcx 0.1 name)."""
        return self.finish(self.start(x, policy=policy or rule, return_probs=return_probs, timing=timing,
                                      slot=slot))

    def run_frames(self, frames: list[np.ndarray], *, policy: Policy | None = None, return_probs: bool = False,
                   timing: bool = False, slot: int = 0) -> CascadeOutput:
        """Run one batch of raw frames ((H, W, C) uint8 arrays, checked) through the cascade, each
        stage preparing its member's input from the frames of the rows that reach it."""
        return self.finish(self.start(None, frames=frames, policy=policy, return_probs=return_probs,
                                      timing=timing, slot=slot))

    def start(self, x: Any, *, policy: Policy | None = None, return_probs: bool = False, timing: bool = False,
              slot: int = 0, frames: list[np.ndarray] | None = None) -> _Job:
        """Upload, preprocess and run stage 1 of a batch ``x`` (or of raw ``frames``, with ``x``
        None); returns the job :meth:`finish` takes."""
        policy = policy or self.policy
        if policy is not self.policy:
            policy.check_stages(self.n_stages)
        n = len(frames) if frames is not None else int(x.shape[0])
        job = _Job(slot=slot, n=n, policy=policy, return_probs=return_probs, timing=timing,
                   t0=time.perf_counter(), frames=frames)
        dev = self.device
        dev.order_after_others(slot)
        with dev.stream(slot):
            if frames is None:
                job.xp = dev.prepare(x, self.preprocess, dtype=self.input_dtype, channels_last=self.channels_last,
                                     keep=job.keep)
            else:
                job.xp = self._frame_input(job, 0, None)
            like = job.xp if dev.ops.name == "torch" else None
            job.state = ScoreState(self.score, job.n, self.num_classes, ops=dev.ops, dtype=dev.state_dtype,
                                   like=like, combine=self.combine)
            job.score = dev.empty(job.n, dev.state_dtype)
            job.pred = dev.empty(job.n, dev.int64())
            job.exit_stage = dev.ones(job.n, dev.int64())
            self._stage(job, None, job.n)
        return job

    def finish(self, job: _Job) -> CascadeOutput:
        """Run the remaining stages of ``job`` and return its output (on the host)."""
        dev = self.device
        with dev.stream(job.slot):
            while job.stage < self.n_stages:
                assert job.count is not None
                k = job.count.wait()  # the one small device-to-host copy per stage
                job.stage += 1
                if k == 0:
                    break
                self._stage(job, job.next_rows[:k], k)
            # the stage-1 scores travel in the one copy to the host the outputs already take
            outs = [job.pred, job.score, job.exit_stage, job.first_score]
            if job.return_probs:
                assert job.state is not None
                outs.append(job.state.exit_probs(job.exit_stage))
            host = dev.to_host(outs, job.slot)
        total = time.perf_counter() - job.t0
        pred, score, exit_stage = host[0].astype(np.int64), host[1].astype(np.float64), host[2].astype(np.int64)
        first_score = host[3].astype(np.float64)
        probs = host[4].astype(np.float32) if job.return_probs else None
        accept = np.ones(job.n, dtype=bool) if self.tau is None else score >= self.tau
        return CascadeOutput(pred=pred, score=score, accept=accept, exit_stage=exit_stage, probs=probs,
                             timing=self._timing(job, total) if job.timing else None, n_stages=self.n_stages,
                             first_score=first_score)

    def prepare(self, x: Any, *, slot: int = 0) -> Array:
        """Preprocess ``x`` as the cascade does (numpy on the host, a tensor on the device)."""
        with self.device.stream(slot):
            return self.device.prepare(x, self.preprocess, dtype=self.input_dtype, channels_last=self.channels_last,
                                       keep=[])

    def prepare_frames(self, index: int, frames: list[np.ndarray], *, slot: int = 0) -> Array:
        """Member ``index``'s input prepared from raw ``frames`` (every row), as a run of frames
        prepares it (for members that resize or crop: each has its own resolution)."""
        runner = self.runners[index]
        x = frames_to_input(runner.member.input, frames, where="cascade input")
        with self.device.stream(slot):
            return self.device.prepare(x, self._frame_pre[index], dtype=self._frame_dtypes[index],
                                       channels_last=bool(runner.channels_last), keep=[])

    def run_member(self, index: int, xp: Array, *, slot: int = 0) -> tuple[Array, int]:
        """Run member ``index`` alone on a prepared batch; returns ``(logits, rows_run)``."""
        runner = self.runners[index]
        with self.device.stream(slot):
            logits = runner.infer({runner.member.input.name: xp})[LOGITS]
        return logits, runner.rows_for(int(xp.shape[0]))

    def synchronize(self, slot: int = 0) -> None:
        """Wait for the device work of ``slot`` (no-op on the host)."""
        self.device.synchronize(slot)

    # -- the loop ----------------------------------------------------------------------------
    def _stage(self, job: _Job, rows: Array | None, k: int) -> None:
        """Run stage ``job.stage`` on ``rows`` (None = all), update the state, decide who goes on."""
        dev, ops, m = self.device, self.device.ops, job.stage
        runner = self.runners[m - 1]
        xs = ops.take(job.xp, rows) if job.frames is None else self._frame_input(job, m - 1, rows)
        ev0 = dev.event() if job.timing else None
        logits = runner.infer({runner.member.input.name: xs})[LOGITS]
        ev1 = dev.event() if job.timing else None
        job.records.append((m, k, runner.rows_for(k), (ev0, ev1)))
        assert job.state is not None
        job.state.add(rows, logits)
        s, p = job.state.score(rows, m)
        ops.put(job.score, rows, s)
        ops.put(job.pred, rows, p)
        if rows is not None:
            ops.fill(job.exit_stage, rows, m)
        else:
            job.first_score = s  # a fresh array: later stages write into job.score, never into s
        if m < self.n_stages:
            job.next_rows, job.count = dev.select(rows, job.policy.continues(m, s), k)

    def _frame_input(self, job: _Job, index: int, rows: Array | None) -> Array:
        """Member ``index``'s input for ``rows`` (None: all) of a batch of frames: taken from a
        whole-batch preparation for its input section when there is one, else prepared from
        those rows' frames alone."""
        key = self._frame_keys[index]
        if key in job.prepared:
            return self.device.ops.take(job.prepared[key], rows)
        assert job.frames is not None
        if rows is None:
            frames = job.frames
        else:
            picked = self.device.to_host([rows], job.slot)[0]
            frames = [job.frames[int(i)] for i in picked]
        runner = self.runners[index]
        x = frames_to_input(runner.member.input, frames, where="cascade input")
        xp = self.device.prepare(x, self._frame_pre[index], dtype=self._frame_dtypes[index],
                                 channels_last=bool(runner.channels_last), keep=job.keep)
        if rows is None:
            job.prepared[key] = xp
        return xp

    def _timing(self, job: _Job, total: float) -> CallTiming:
        done = {r[0]: r for r in job.records}
        stages = []
        for m in range(1, self.n_stages + 1):
            if m not in done:
                stages.append(StageTiming(m, 0, 0, 0.0))
                continue
            _, k, padded, (ev0, ev1) = done[m]
            stages.append(StageTiming(m, k, padded, self.device.seconds(ev0, ev1)))
        return CallTiming(stages, total)


# ---------------------------------------------------------------------------------------------
# wcx 0.1 names of the policies (the executor called them exit rules)
# ---------------------------------------------------------------------------------------------
_RULES = {"ExitRule": "Policy", "WindowRule": "WindowPolicy", "AllRule": "AllPolicy", "NoneRule": "NonePolicy",
          "ForcedFractionRule": "ForcedFractionPolicy"}


def rule_from_policy(policy: dict[str, Any], n_stages: int) -> Policy:
    """Deprecated: :func:`wcx.core.policy.policy_from_dict` plus ``check_stages``."""
    from wcx.core.policy import policy_from_dict

    warnings.warn("rule_from_policy is deprecated: use wcx.core.policy.policy_from_dict", DeprecationWarning,
                  stacklevel=2)
    out = policy_from_dict(policy)
    out.check_stages(n_stages)
    return out


def __getattr__(name: str) -> Any:
    if name in _RULES:
        import wcx.core.policy as policies

        warnings.warn(f"wcx.runtime.executor.{name} is deprecated: use wcx.core.policy.{_RULES[name]}",
                      DeprecationWarning, stacklevel=2)
        return getattr(policies, _RULES[name])
    raise AttributeError(f"module 'wcx.runtime.executor' has no attribute {name!r}")
