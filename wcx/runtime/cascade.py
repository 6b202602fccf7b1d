"""``Cascade``: a calibrated bundle, loaded on one backend, ready to run batches.

>>> from wcx import Cascade                                          # doctest: +SKIP
>>> with Cascade.load("bundle/", backend="onnxruntime") as c:      # doctest: +SKIP
...     out = c(x)                   # x: numpy (N, C, H, W), uint8 or float32 in [0, 1]
...     out.pred, out.score, out.accept, out.exit_stage
...     out = c.predict_images(frames)   # camera frames: (H, W, C) uint8 of any size

Decisions, documented here because users depend on them:

* **Policy.** The cascade runs the manifest's policy section (written by ``wcx calibrate``):
  windows or thresholds on the stage scores, the score and ``tau``. A bundle without a policy is
  refused (``BadInputError``) unless ``policy=`` is given explicitly: ``"all"`` (the full
  ensemble), ``"none"`` (the first member alone), a dict in the manifest's format, a
  :class:`~wcx.core.policy.Policy` or a :class:`~wcx.core.manifest.PolicySection`. A policy
  without ``tau`` accepts every row. An explicit policy is not covered by the manifest's
  calibration, so no provenance check is made for it.
* **Provenance.** The calibration records what produced the logits tau was fitted on
  (:mod:`wcx.core.provenance`: backend, each member's precision as run, its files' hashes, the
  engine's TensorRT and GPU, the preprocessing). Loading computes the same record from the
  active runners; any difference is one :class:`CalibrationMismatchWarning` naming each of them,
  or a ``BadInputError`` with ``strict=True``: the tau would not be the certified one.
* **Backend "auto"**: the calibrated backend if it can run here; otherwise the available
  backend that the registry ranks first (:mod:`wcx.runtime.backends`: TensorRT with engines in
  the bundle, then torch on CUDA, then ONNX Runtime), with the mismatch warning (or error when
  strict).
* **Threads.** A cascade may be called from several threads: calls are serialised by one lock
  per cascade (ONNX Runtime already uses every core for one batch; the torch backend's CUDA
  graphs have static buffers). For parallel work, load one cascade per thread. ``stream()`` may
  run beside ``__call__`` (it uses its own CUDA streams and graph buffers), but only one
  ``stream()`` per cascade at a time (a second raises ``UsageError``).
* **Inputs.** ``x`` is a numpy array (N, C, H, W) of uint8 or float32, N >= 1, finite, with the
  bundle's sample shape, and float values inside the bundle's input range ([0, 1] unless the
  input section declares another): anything else is a ``BadInputError`` before any member runs.
  Floats in 0..255 (``x.astype(np.float32)``) or already-normalised data are refused with their
  observed min/max and the likely cause (:mod:`wcx.core.preprocess`), since the cascade would
  otherwise return confident, wrong answers with no risk guarantee.
* **Frames.** :meth:`Cascade.predict_images` takes raw frames (uint8 (H, W) or (H, W, C)
  images, C 1, 3 or 4, of any size; RGB, or BGR with ``channel_order="BGR"``) and returns the
  same :class:`CascadeOutput`. Members whose input sections resize or crop (recorded at export)
  each prepare their input from the same frame, at their own resolution, only for the rows that
  reach them (:mod:`wcx.core.frames`); members without them take frames of exactly their
  (H, W), with the channels converted. For such a bundle a call ``c(x)`` takes ``x`` (N, C, H, W)
  uint8 as N frames of one size (floats are refused: resizing starts from the pixels).
* **Memory.** A call of more than :attr:`Cascade.block_rows` rows runs as consecutive blocks of
  that many (the same rows in the same order; one output), so the memory a call needs beyond its
  input and output arrays is that of one block whatever N is; runners run at most their
  ``max_batch`` rows at once (the ONNX Runtime runner's default is bounded too). The pipelined
  ``stream()`` on CUDA runs each batch as given.
* **Observers.** :meth:`Cascade.attach` registers an object whose ``observe(out)`` is called
  with every output a call, ``predict``, ``predict_images`` or ``stream`` returns (a drift
  :class:`~wcx.runtime.monitor.Monitor`), after the call and outside the cascade's lock, except
  calls that override the policy (``policy=``: not the calibrated cascade's outputs); with none
  attached a call does nothing more.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wcx.bundle import Bundle
from wcx.core.frames import check_frame, frames_of, frames_to_input
from wcx.core.manifest import InputSection, PolicySection
from wcx.core.policy import AllPolicy, NonePolicy, Policy
from wcx.core.preprocess import Preprocessor
from wcx.core.provenance import Provenance
from wcx.data import validate_inputs
from wcx.errors import BadInputError, UsageError
from wcx.runtime.backends import create_runners, pick_backend, provenance_of
from wcx.runtime.buckets import chunk_bounds
from wcx.runtime.executor import CallTiming, CascadeOutput, Executor, StageTiming
from wcx.runtime.runner import Runner

__all__ = ["Cascade", "CascadeOutput", "CalibrationMismatchWarning", "prediction_metrics"]

#: the most rows one executor run takes: a larger call runs in blocks of this many (or of the
#: smallest runner ``max_batch``), which bounds its memory; 256 rows is where per-row cost has
#: levelled off on the CPU and the usual largest shape bucket on a GPU
BLOCK_ROWS = 256


class CalibrationMismatchWarning(UserWarning):
    """The cascade does not run what its tau was fitted on (another backend, precision, file,
    engine or preprocessing)."""


def policy_section(policy: str | Mapping[str, Any] | Policy | PolicySection) -> PolicySection:
    """An explicit policy as a section: ``"all"``, ``"none"``, a manifest-form dict, a
    :class:`Policy` (no tau) or a section."""
    if isinstance(policy, PolicySection):
        return policy
    if isinstance(policy, Policy):
        return PolicySection(policy)
    if isinstance(policy, str):
        if policy == "all":
            return PolicySection(AllPolicy())
        if policy == "none":
            return PolicySection(NonePolicy())
        raise BadInputError(f"policy {policy!r}: use 'all', 'none' or a policy dict")
    if isinstance(policy, Mapping):
        return PolicySection.from_dict(policy)
    raise BadInputError(f"policy must be 'all', 'none', a dict or a Policy, got {type(policy).__name__}")


def _mismatch(strict: bool, message: str) -> None:
    if strict:
        raise BadInputError(message + " (strict mode refuses this)")
    warnings.warn(message, CalibrationMismatchWarning, stacklevel=3)


class Cascade:
    """A window-based early-exit cascade over active runners. Build it with :meth:`load`."""

    def __init__(
        self,
        runners: Sequence[Runner],
        *,
        policy: str | Mapping[str, Any] | Policy | PolicySection,
        input: InputSection | None = None,
        num_classes: int | None = None,
        backend: str = "custom",
        bundle: Bundle | None = None,
        provenance: Provenance | None = None,
    ) -> None:
        """Wrap runners that the caller built (tests, benchmarks); they are activated here and
        deactivated by :meth:`close`. ``input`` and ``num_classes`` default to the first
        runner's member. Most users call :meth:`load` instead."""
        if not runners:
            raise BadInputError("a cascade needs at least one member")
        first = runners[0].member
        self.input = input or first.input
        self.num_classes = int(num_classes or first.num_classes)
        self.section = policy_section(policy).check(n_stages=len(runners), num_classes=self.num_classes)
        self.bundle = bundle
        self.backend = backend
        self._lock = threading.Lock()
        self._streaming = False
        self._closed = False
        self._observers: tuple[Any, ...] = ()  # replaced, never mutated: calls read it without the lock
        activated: list[Runner] = []
        try:
            for r in runners:
                if not r.is_active:
                    r.activate()
                activated.append(r)
            self.runners = list(runners)
            limits = [int(r.max_batch) for r in self.runners if r.max_batch]
            #: rows per executor run (see the module docstring, "Memory")
            self.block_rows = min([BLOCK_ROWS, *limits])
            self.executor = Executor(self.runners, policy=self.section.policy, preprocess=Preprocessor(self.input),
                                     num_classes=self.num_classes, score=self.section.score, tau=self.section.tau,
                                     combine=self.section.combine)
            self.provenance = provenance or provenance_of(self.runners, backend)
            #: whether the members take raw frames (they resize or crop): see "Frames"
            self.takes_frames = any(r.member.input.prepares_frames for r in self.runners)
        except BaseException:
            for r in activated:
                r.deactivate()
            raise

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        bundle: Bundle | str | Path,
        backend: str = "auto",
        *,
        strict: bool = False,
        threads: int | None = None,
        policy: str | Mapping[str, Any] | Policy | PolicySection | None = None,
        device: str | None = None,
        max_batch: int | None = None,
        cuda_graphs: bool | None = None,
        **backend_options: Any,
    ) -> Cascade:
        """Load ``bundle`` (a :class:`Bundle` or its directory) on ``backend`` (a registered
        backend name, or ``"auto"``).

        ``threads``: ONNX Runtime's intra-op threads. ``device``/``cuda_graphs``: torch backend
        options (``device="cpu"`` runs it in FP32 without graphs, for tests). ``max_batch``: the
        most rows a runner runs at once (its largest shape bucket on padding backends). Other
        keyword options go to the backends that take them. See the module docstring for
        ``policy``, ``strict`` and ``"auto"``.
        """
        if not isinstance(bundle, Bundle):
            bundle = Bundle.load(bundle)
        if policy is None:
            if bundle.policy is None:
                raise BadInputError(
                    f"{bundle.path}: the bundle has no policy (run wcx calibrate first), or pass policy='all' "
                    "(full ensemble) or policy='none' (first member) explicitly"
                )
            section, calibration = bundle.policy, bundle.calibration
        else:
            section, calibration = policy_section(policy), None
        options = {"threads": threads, "device": device, "max_batch": max_batch, "cuda_graphs": cuda_graphs,
                   **backend_options}
        backend = pick_backend(bundle, backend, calibrated=None if calibration is None else calibration.backend,
                               strict=strict, options=options)
        runners = create_runners(bundle, backend, **options)
        activated: list[Runner] = []
        try:
            for r in runners:
                activated.append(r.activate())
            running = provenance_of(runners, backend)
            if calibration is not None:
                differences = running.differences(calibration.provenance)
                if differences:
                    _mismatch(strict, f"{bundle.path}: the cascade does not run what tau was fitted on: "
                                      f"{'; '.join(differences)}. The risk guarantee does not hold here; "
                                      "recalibrate on this backend")
            return cls(runners, policy=section, input=bundle.input, num_classes=bundle.num_classes,
                       backend=backend, bundle=bundle, provenance=running)
        except BaseException:
            for r in activated:
                r.deactivate()
            raise

    # -- facts -------------------------------------------------------------------------------
    @property
    def precision(self) -> str:
        """The members' precisions as run (one, or one per member when they differ)."""
        return self.provenance.precision

    @property
    def score_name(self) -> str:
        return self.section.score

    @property
    def task(self) -> str | None:
        return self.section.task

    @property
    def tau(self) -> float | None:
        return self.section.tau

    @property
    def policy(self) -> Policy:
        return self.section.policy

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input.shape)

    @property
    def n_stages(self) -> int:
        return len(self.runners)

    @property
    def member_names(self) -> list[str]:
        return [r.member.name for r in self.runners]

    # -- running -----------------------------------------------------------------------------
    def _check(self, x: Any) -> Any:
        if self._closed:
            raise UsageError("this cascade is closed")
        if not self.takes_frames:
            return validate_inputs(x, where="cascade input", sample_shape=self.sample_shape)
        validate_inputs(x, where="cascade input")
        if x.dtype != np.uint8:
            raise BadInputError("cascade input: this bundle's members resize raw frames, which are uint8 images: pass "
                                f"(N, C, H, W) uint8, or frames to predict_images (got {x.dtype})")
        return x

    def __call__(
        self, x: np.ndarray, return_probs: bool = False, *, timing: bool = False, policy: Policy | None = None,
        rule: Policy | None = None,
    ) -> CascadeOutput:
        """Run one batch; returns :class:`~wcx.runtime.executor.CascadeOutput`.

        ``timing=True`` adds a per-stage timing record (``out.timing``). ``policy`` overrides
        the exit policy for this call (benchmarks: ``AllPolicy()`` runs the full ensemble;
        ``rule`` is its wcx 0.1 name).
        """
        x = self._check(x)
        if self.takes_frames:
            return self._run_frames(list(frames_of(x)), return_probs=return_probs, timing=timing,
                                    policy=policy or rule)
        with self._lock:
            if self._closed:
                raise UsageError("this cascade is closed")
            n = int(x.shape[0])
            if n <= self.block_rows:
                out = self.executor.run(x, return_probs=return_probs, timing=timing, policy=policy or rule, slot=0)
            else:
                out = _concat([self.executor.run(x[a:b], return_probs=return_probs, timing=timing,
                                                 policy=policy or rule, slot=0)
                               for a, b in chunk_bounds(n, self.block_rows)], self.n_stages, return_probs=return_probs)
        if self._observers and policy is None and rule is None:
            self._notify(out)
        return out

    def _run_frames(self, frames: list[np.ndarray], *, return_probs: bool, timing: bool = False,
                    policy: Policy | None = None) -> CascadeOutput:
        """Checked frames through the executor, in blocks of :attr:`block_rows`."""
        with self._lock:
            if self._closed:
                raise UsageError("this cascade is closed")
            outs = [self.executor.run_frames(frames[a:b], return_probs=return_probs, timing=timing, policy=policy)
                    for a, b in chunk_bounds(len(frames), self.block_rows)]
        out = outs[0] if len(outs) == 1 else _concat(outs, self.n_stages, return_probs=return_probs)
        if self._observers and policy is None:
            self._notify(out)
        return out

    def predict_images(
        self, frames: Iterable[Any], *, batch_size: int = 256, return_probs: bool = False, channel_order: str = "RGB",
    ) -> CascadeOutput:
        """Run raw frames (camera frames, decoded images): uint8 (H, W) or (H, W, C) arrays, C 1, 3
        or 4, of any size, in ``channel_order`` (``"RGB"``, or OpenCV's ``"BGR"``); one
        :class:`CascadeOutput` row per frame, in order.

        ``frames`` may be any iterable (a generator of camera frames): it is read
        ``batch_size`` frames at a time. Each member prepares its input from the frames as its
        input section says (resize, center crop, channels; module docstring, "Frames"); a member
        without a resize takes frames of exactly its (H, W) and refuses others.
        """
        if batch_size < 1:
            raise BadInputError(f"batch_size must be >= 1, got {batch_size}")
        if self._closed:
            raise UsageError("this cascade is closed")
        outs: list[CascadeOutput] = []
        block: list[np.ndarray] = []
        done = 0

        def flush() -> None:
            if self.takes_frames:
                outs.append(self._run_frames(block, return_probs=return_probs))
            else:  # one input section for all members: the frames become one (N, C, H, W) batch
                start = done - len(block)
                names = [f"frame {start + i}" for i in range(len(block))]
                outs.append(self(frames_to_input(self.input, block, names=names), return_probs))

        for frame in frames:
            block.append(check_frame(frame, where=f"frame {done}", channel_order=channel_order))
            done += 1
            if len(block) == batch_size:
                flush()
                block = []
        if block:
            flush()
        if not outs:
            raise BadInputError("predict_images: no frames")
        return outs[0] if len(outs) == 1 else _concat(outs, self.n_stages, return_probs=return_probs)

    def predict(self, x: np.ndarray, *, batch_size: int = 256, return_probs: bool = False) -> CascadeOutput:
        """Run a whole data set in batches of ``batch_size``; one concatenated output."""
        x = self._check(x)
        if batch_size < 1:
            raise BadInputError(f"batch_size must be >= 1, got {batch_size}")
        outs = list(self.stream((x[i : i + batch_size] for i in range(0, len(x), batch_size)),
                                return_probs=return_probs))
        return _concat(outs, self.n_stages, return_probs=return_probs)

    def stream(
        self, batches: Iterable[np.ndarray], *, return_probs: bool = False, timing: bool = False
    ) -> Iterator[CascadeOutput]:
        """Pipelined mode: yields one output per batch, in order.

        On CUDA, stage 1 of batch i+1 is issued on its own stream before the host waits for
        batch i's subset size, so the two overlap on the GPU (two in-flight batches, slots 1 and
        2). Elsewhere it is the same as calling the cascade on each batch.
        """
        with self._lock:
            if self._streaming:
                raise UsageError("this cascade is already streaming: one stream() at a time per cascade")
            self._streaming = True
        try:
            if not self.executor.on_cuda or self.takes_frames:  # frames are prepared on the host, stage by stage
                for x in batches:
                    yield self(x, return_probs, timing=timing)
                return
            pending = None
            for i, batch in enumerate(batches):
                x = self._check(batch)
                with self._lock:
                    job = self.executor.start(x, return_probs=return_probs, timing=timing, slot=1 + i % 2)
                if pending is not None:
                    with self._lock:
                        done = self.executor.finish(pending)
                    pending = job
                    if self._observers:
                        self._notify(done)
                    yield done
                else:
                    pending = job
            if pending is not None:
                with self._lock:
                    done = self.executor.finish(pending)
                if self._observers:
                    self._notify(done)
                yield done
        finally:
            self._streaming = False

    # -- observers ---------------------------------------------------------------------------
    def attach(self, observer: Any) -> Any:
        """Call ``observer.observe(out)`` with every output from now on (module docstring,
        "Observers"); returns ``observer``, so ``monitor = cascade.attach(Monitor(...))``."""
        if not callable(getattr(observer, "observe", None)):
            raise BadInputError(f"an observer needs an observe(out) method, got {type(observer).__name__}")
        with self._lock:
            self._observers = (*self._observers, observer)
        return observer

    def detach(self, observer: Any) -> None:
        """Stop calling ``observer`` (no error when it is not attached)."""
        with self._lock:
            self._observers = tuple(o for o in self._observers if o is not observer)

    def _notify(self, out: CascadeOutput) -> None:
        for observer in self._observers:
            observer.observe(out)

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Release every runner (sessions, modules, graphs). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for r in self.runners:
                r.deactivate()

    def __enter__(self) -> Cascade:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Cascade({self.n_stages} stages {self.member_names}, backend={self.backend}, "
                f"precision={self.precision}, score={self.score_name}, tau={self.tau})")


def _concat(outs: Sequence[CascadeOutput], n_stages: int, *, return_probs: bool) -> CascadeOutput:
    """One output for consecutive blocks of rows (timings summed stage by stage)."""
    timing = None
    timings = [o.timing for o in outs if o.timing is not None]
    if timings:
        stages = [StageTiming(m + 1, sum(t.stages[m].rows for t in timings),
                              sum(t.stages[m].padded_rows for t in timings),
                              sum(t.stages[m].seconds for t in timings)) for m in range(n_stages)]
        timing = CallTiming(stages, sum(t.total_seconds for t in timings))
    return CascadeOutput(
        pred=np.concatenate([o.pred for o in outs]),
        score=np.concatenate([o.score for o in outs]),
        accept=np.concatenate([o.accept for o in outs]),
        exit_stage=np.concatenate([o.exit_stage for o in outs]),
        probs=np.concatenate([o.probs for o in outs if o.probs is not None]) if return_probs else None,
        timing=timing,
        n_stages=n_stages,
        first_score=_concat_optional([o.first_score for o in outs]),
    )


def _concat_optional(parts: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """The parts joined, or None when any block lacks them (outputs built by hand)."""
    if any(p is None for p in parts):
        return None
    return np.concatenate(parts)  # type: ignore[arg-type]


def prediction_metrics(out: CascadeOutput, y: np.ndarray) -> dict[str, Any]:
    """Accuracy (all rows), coverage (accepted fraction) and selective risk (errors among the
    accepted; None when nothing is accepted) of a cascade output against labels ``y``."""
    y = np.asarray(y)
    if y.shape != out.pred.shape:
        raise BadInputError(f"labels have shape {y.shape}, predictions {out.pred.shape}")
    correct = out.pred == y
    n_acc = int(np.count_nonzero(out.accept))
    return {
        "n": int(y.shape[0]),
        "accuracy": float(correct.mean()),
        "coverage": n_acc / max(int(y.shape[0]), 1),
        "risk": float(np.count_nonzero(~correct & out.accept) / n_acc) if n_acc else None,
        "accepted": n_acc,
        "pass_fraction": out.pass_fraction,
    }
