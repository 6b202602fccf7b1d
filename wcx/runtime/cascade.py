"""``Cascade``: a calibrated bundle, loaded on one backend, ready to run batches.

>>> from wcx import Cascade                                          # doctest: +SKIP
>>> with Cascade.load("bundle/", backend="onnxruntime") as c:      # doctest: +SKIP
...     out = c(x)                   # x: numpy (N, C, H, W), uint8 or float32 in [0, 1]
...     out.pred, out.score, out.accept, out.exit_stage

Decisions, documented here because users depend on them:

* **Policy.** The cascade runs the manifest's ``policy`` section (written by ``wcx calibrate``):
  windows or thresholds on the stage scores, the score name and ``tau``. A bundle without a
  policy is refused (``BadInputError``) unless ``policy=`` is given explicitly: ``"all"`` (the full
  ensemble), ``"none"`` (the first member alone), or a dict in the manifest's format. A policy
  given as ``"all"``/``"none"`` has no ``tau``, so every row is accepted. An explicit policy is
  not covered by the manifest's calibration, so no backend/precision check is made for it.
* **Calibration match.** The calibration records which backend and precision produced the
  logits tau was fitted on. Loading on another backend or precision warns loudly
  (:class:`CalibrationMismatchWarning` through ``warnings`` and the ``wcx.runtime`` logger), or
  raises ``BadInputError`` with ``strict=True``: the tau would not be the certified one.
  The precision of a run is the members' (ONNX Runtime, TensorRT: the graph carries it) or the
  torch runner's (fp16 on CUDA, fp32 on the CPU).
* **Backend "auto"**: the calibrated backend if it can run here; otherwise the first that can
  of TensorRT (engines in the bundle, tensorrt and a GPU present), torch (CUDA GPU, every member
  has a ``torch_source``), ONNX Runtime (always), with the mismatch warning (or error when strict).
* **Threads.** A cascade may be called from several threads: calls are serialised by one lock
  per cascade (ONNX Runtime already uses every core for one batch; the torch backend's CUDA
  graphs have static buffers). For parallel work, load one cascade per thread. ``stream()`` may
  run beside ``__call__`` (it uses its own CUDA streams and graph buffers), but only one
  ``stream()`` per cascade at a time (a second raises ``WcxError``).
* **Inputs.** ``x`` is a numpy array (N, C, H, W) of uint8 or float32 (values in [0, 1]), N >= 1,
  finite, with the bundle's sample shape; anything else is a ``BadInputError`` before any engine
  runs. Batches larger than the backend's ``max_batch`` are run in pieces by padding runners.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wcx.bundle import Bundle
from wcx.data import validate_inputs
from wcx.errors import BadInputError, MissingDependencyError, WcxError
from wcx.runtime.executor import (
    AllRule,
    CascadeOutput,
    Executor,
    ExitRule,
    NoneRule,
    rule_from_policy,
)
from wcx.runtime.preprocess import Preprocessor
from wcx.runtime.runner import Runner
from wcx.runtime.scoring import check_score

log = logging.getLogger("wcx.runtime")

BACKENDS: tuple[str, ...] = ("auto", "onnxruntime", "torch", "tensorrt")
#: the order "auto" tries when the calibrated backend cannot run here
AUTO_ORDER: tuple[str, ...] = ("tensorrt", "torch", "onnxruntime")

__all__ = ["BACKENDS", "Cascade", "CascadeOutput", "CalibrationMismatchWarning", "backend_available"]


class CalibrationMismatchWarning(UserWarning):
    """The cascade runs on a backend or precision other than the one its tau was fitted on."""


def _torch_cuda_ok() -> tuple[bool, str]:
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed (pip install 'wcx[torch]')"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible to torch"
    return True, ""


def backend_available(bundle: Bundle, backend: str) -> tuple[bool, str]:
    """Whether ``backend`` can run ``bundle`` on this machine, and why not.

    Cheap checks (manifest, installed packages) come first, so that "auto" on a CPU-only machine
    does not import torch for nothing.
    """
    if backend == "onnxruntime":
        if importlib.util.find_spec("onnxruntime") is None:
            return False, "onnxruntime is not installed"
        return True, ""
    if backend == "torch":
        missing = [m.name for m in bundle.members if not m.torch_source]
        if missing:
            return False, f"members {', '.join(missing)} have no torch_source"
        return _torch_cuda_ok()
    if backend == "tensorrt":
        if not bundle.manifest.get("engines"):
            return False, "the bundle has no TensorRT engines (wcx build-engines)"
        if importlib.util.find_spec("tensorrt") is None:
            return False, "tensorrt is not installed"
        return _torch_cuda_ok()
    raise BadInputError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")


def _make_runners(
    bundle: Bundle, backend: str, *, threads: int | None, device: str | None, max_batch: int,
    cuda_graphs: bool | None,
) -> list[Runner]:
    from wcx.runtime.backends import create_runner

    options: dict[str, Any] = {}
    if backend == "torch":
        options = {"device": device, "max_batch": max_batch, "cuda_graphs": cuda_graphs}
    try:
        return [create_runner(bundle, i, backend, threads=threads, **options) for i in range(len(bundle.members))]
    except ImportError as exc:
        raise MissingDependencyError(
            f"the {backend} backend cannot be loaded here ({exc}); use backend='onnxruntime'"
        ) from None


def _runtime_precision(runners: Sequence[Runner]) -> str:
    precisions = sorted({str(getattr(r, "precision", r.member.precision)) for r in runners})
    return precisions[0] if len(precisions) == 1 else "mixed(" + ",".join(precisions) + ")"


def _mismatch(strict: bool, message: str) -> None:
    if strict:
        raise BadInputError(message + " (strict mode refuses this)")
    log.warning(message)
    warnings.warn(message, CalibrationMismatchWarning, stacklevel=3)


def _parse_policy(
    policy: str | dict[str, Any] | ExitRule | None, bundle_policy: dict[str, Any] | None, n_stages: int
) -> tuple[ExitRule, str, str | None, float | None, bool]:
    """Returns (rule, score, task, tau, from_manifest)."""
    if isinstance(policy, ExitRule):  # benchmarks: a rule object, no tau
        policy.check_stages(n_stages)
        return policy, "msp", None, None, False
    if policy is None:
        if not bundle_policy:
            raise BadInputError(
                "the bundle has no policy (run wcx calibrate first), or pass policy='all' "
                "(full ensemble) or policy='none' (first member) explicitly"
            )
        d, from_manifest = bundle_policy, True
    elif isinstance(policy, str):
        if policy == "all":
            return AllRule(), "msp", None, None, False
        if policy == "none":
            return NoneRule(), "msp", None, None, False
        raise BadInputError(f"policy {policy!r}: use 'all', 'none' or a policy dict")
    elif isinstance(policy, dict):
        d, from_manifest = policy, False
    else:
        raise BadInputError(f"policy must be 'all', 'none' or a dict, got {type(policy).__name__}")
    if not isinstance(d, dict):
        raise BadInputError("the manifest's policy must be a JSON object")
    rule = rule_from_policy(d, n_stages)
    score = check_score(str(d.get("score", "msp")))
    tau = d.get("tau")
    if tau is not None:
        try:
            tau = float(tau)
        except (TypeError, ValueError):
            raise BadInputError(f"policy tau must be a number, got {tau!r}") from None
        if not np.isfinite(tau):
            raise BadInputError(f"policy tau must be finite, got {tau}")
    return rule, score, d.get("task"), tau, from_manifest


class Cascade:
    """A window-based early-exit cascade over active runners. Build it with :meth:`load`."""

    def __init__(
        self,
        runners: Sequence[Runner],
        *,
        policy: str | dict[str, Any] | ExitRule,
        preprocess: Preprocessor,
        num_classes: int,
        sample_shape: tuple[int, ...],
        backend: str = "custom",
        max_batch: int = 256,
        bundle: Bundle | None = None,
    ) -> None:
        """Wrap runners that the caller built (tests, benchmarks); they are activated here and
        deactivated by :meth:`close`. ``policy`` may also be an
        :class:`~wcx.runtime.executor.ExitRule` (e.g. ``ForcedFractionRule`` for benchmarks).
        Most users call :meth:`load` instead."""
        rule, score, task, tau, _ = _parse_policy(policy, None, len(runners))
        self._setup(runners, rule, score, task, tau, preprocess, num_classes, sample_shape, backend,
                    max_batch, bundle)

    def _setup(
        self, runners: Sequence[Runner], rule: ExitRule, score: str, task: str | None,
        tau: float | None, preprocess: Preprocessor, num_classes: int, sample_shape: tuple[int, ...],
        backend: str, max_batch: int, bundle: Bundle | None,
    ) -> None:
        self.bundle = bundle
        self.backend = backend
        self.score_name = score
        self.task = task
        self.tau = tau
        self.sample_shape = tuple(sample_shape)
        self.num_classes = int(num_classes)
        self._lock = threading.Lock()
        self._streaming = False
        self._closed = False
        activated: list[Runner] = []
        try:
            for r in runners:
                if not r.is_active:
                    r.activate()
                activated.append(r)
            self.runners = list(runners)
            self.executor = Executor(
                self.runners, rule=rule, preprocess=preprocess, num_classes=num_classes,
                score=score, tau=tau, max_batch=max_batch,
            )
        except BaseException:
            for r in activated:
                r.deactivate()
            raise
        self.precision = _runtime_precision(self.runners)

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        bundle: Bundle | str | Path,
        backend: str = "auto",
        *,
        strict: bool = False,
        threads: int | None = None,
        policy: str | dict[str, Any] | None = None,
        device: str | None = None,
        max_batch: int = 256,
        cuda_graphs: bool | None = None,
    ) -> Cascade:
        """Load ``bundle`` (a :class:`Bundle` or its directory) on ``backend``.

        ``threads``: ONNX Runtime's intra-op threads. ``device``/``cuda_graphs``: torch backend
        options (``device="cpu"`` runs it in FP32 without graphs, for tests). ``max_batch``: the
        largest shape bucket of padding backends. See the module docstring for ``policy``,
        ``strict`` and ``"auto"``.
        """
        if backend not in BACKENDS:
            raise BadInputError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
        if not isinstance(bundle, Bundle):
            bundle = Bundle.load(bundle)
        m = len(bundle.members)
        rule, score, task, tau, from_manifest = _parse_policy(policy, bundle.policy, m)
        calib = bundle.calibration if from_manifest else None
        if from_manifest and not calib:
            log.info("%s: the policy has no calibration record; backend/precision not checked", bundle.path)
        calibrated = calib.get("backend") if calib else None

        if backend == "auto":
            backend = cls._pick_auto(bundle, calibrated, strict, device)
        runners = _make_runners(bundle, backend, threads=threads, device=device, max_batch=max_batch,
                                cuda_graphs=cuda_graphs)
        precision = _runtime_precision(runners)
        if calib:
            want_b, want_p = calib.get("backend"), calib.get("precision")
            if (want_b and want_b != backend) or (want_p and want_p != precision):
                _mismatch(
                    strict,
                    f"{bundle.path}: calibrated on {want_b}/{want_p} but running on "
                    f"{backend}/{precision}: tau and the windows were fitted on other numbers, so the "
                    "risk guarantee does not hold here; recalibrate on this backend",
                )
        self = cls.__new__(cls)
        self._setup(runners, rule, score, task, tau, Preprocessor.from_manifest(bundle.preprocess),
                    bundle.num_classes, bundle.sample_shape, backend, max_batch, bundle)
        return self

    @staticmethod
    def _pick_auto(bundle: Bundle, calibrated: str | None, strict: bool, device: str | None) -> str:
        if device == "cpu":
            return calibrated if calibrated in ("onnxruntime", "torch") else "onnxruntime"
        if calibrated in AUTO_ORDER:
            ok, why = backend_available(bundle, calibrated)
            if ok:
                return calibrated
            if strict:
                raise BadInputError(
                    f"{bundle.path}: calibrated on the {calibrated} backend, which cannot run here "
                    f"({why}) (strict mode refuses another backend)"
                )
        for b in AUTO_ORDER:
            if backend_available(bundle, b)[0]:
                return b
        raise BadInputError("no backend can run this bundle here")  # pragma: no cover

    # -- running -----------------------------------------------------------------------------
    def _check(self, x: Any) -> Any:
        if self._closed:
            raise WcxError("this cascade is closed")
        return validate_inputs(x, where="cascade input", sample_shape=self.sample_shape)

    def __call__(
        self, x: np.ndarray, return_probs: bool = False, *, timing: bool = False, rule: ExitRule | None = None
    ) -> CascadeOutput:
        """Run one batch; returns :class:`~wcx.runtime.executor.CascadeOutput`.

        ``timing=True`` adds a per-stage timing record (``out.timing``). ``rule`` overrides the
        policy's exit rule for this call (benchmarks: ``AllRule()`` runs the full ensemble).
        """
        x = self._check(x)
        with self._lock:
            if self._closed:
                raise WcxError("this cascade is closed")
            return self.executor.run(x, return_probs=return_probs, timing=timing, rule=rule, slot=0)

    def predict(self, x: np.ndarray, *, batch_size: int = 256, return_probs: bool = False) -> CascadeOutput:
        """Run a whole data set in batches of ``batch_size``; one concatenated output."""
        x = self._check(x)
        if batch_size < 1:
            raise BadInputError(f"batch_size must be >= 1, got {batch_size}")
        outs = list(self.stream((x[i : i + batch_size] for i in range(0, len(x), batch_size)),
                                return_probs=return_probs))
        return CascadeOutput(
            pred=np.concatenate([o.pred for o in outs]),
            score=np.concatenate([o.score for o in outs]),
            accept=np.concatenate([o.accept for o in outs]),
            exit_stage=np.concatenate([o.exit_stage for o in outs]),
            probs=np.concatenate([o.probs for o in outs]) if return_probs else None,
            n_stages=self.n_stages,
        )

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
                raise WcxError("this cascade is already streaming: one stream() at a time per cascade")
            self._streaming = True
        try:
            if not self.executor.on_cuda:
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
                    yield done
                else:
                    pending = job
            if pending is not None:
                with self._lock:
                    done = self.executor.finish(pending)
                yield done
        finally:
            self._streaming = False

    # -- facts and lifecycle -----------------------------------------------------------------
    @property
    def n_stages(self) -> int:
        return len(self.runners)

    @property
    def member_names(self) -> list[str]:
        return [r.member.name for r in self.runners]

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
