"""``Monitor``: a label-free alarm for when a deployed cascade's certificate goes stale.

A certified tau holds while the deployment's inputs are drawn like the calibration's. A window
cascade shows, for every input and without labels, the stage it exited at, its score, its
stage-1 score (``first_score``, also of the inputs that went on) and whether it was accepted;
under that exchangeability the share of inputs reaching each stage, the share accepted and the
share with a stage-1 score at or below each of a few reference quantiles are binomial rates the
calibration measured (:class:`~wcx.core.manifest.ReferenceRates`; a version-1 reference has only
the share *exiting* at stage 1 at or below them, which the monitor then tests instead).
The monitor tests every one of them against its reference at looks on a geometric grid of
inputs (every batch of 64 up to 256 inputs, then every ~26% more inputs) and raises an
:class:`Alarm` when a rate has moved; with labels it also watches the realised selective risk.

>>> from wcx import Cascade                                                # doctest: +SKIP
>>> from wcx.runtime.monitor import Monitor
>>> cascade = Cascade.load("bundle/")                                      # doctest: +SKIP
>>> monitor = cascade.attach(Monitor.for_bundle(cascade.bundle, alpha=0.01))   # doctest: +SKIP
>>> out = cascade(x)             # every output is observed; nothing else changes    # doctest: +SKIP
>>> for alarm in monitor.alarms:                                           # doctest: +SKIP
...     print(alarm.message())
>>> monitor.save("monitor.json"); monitor = Monitor.load("monitor.json")   # doctest: +SKIP

Decisions (method.md section 8 gives the statistics and why they hold):

* **False alarms.** ``alpha`` bounds the probability that a stream drawn like the reference
  inputs *ever* raises a drift alarm, however long it runs and however often it is looked at.
  It is split in equal parts across the families of statistics (pass fractions, acceptance
  rate, stage-1 scores) and equally within a family. A statistic whose reference count is
  exactly binomial (guaranteed mode, all but acceptance) spends its share over looks on a
  geometric grid of inputs, each an exact two-sample (Fisher) test against the reference count,
  half of it evenly over the looks up to ``horizon`` inputs (2,048 by default) and half after;
  any other's share is halved between the reference's own estimation error (a fixed-sample
  interval) and the stream (a confidence sequence). The labelled-risk alarm has its own
  ``alpha_risk`` (default ``alpha``).
* **What an alarm says.** Which statistic moved, its reference and observed values with their
  intervals, after how many inputs, since which input it has probably moved (the change point
  of largest likelihood among the batch boundaries kept) and what to do. Each statistic alarms
  once; :meth:`Monitor.reset` starts over (after a re-certification, with the new reference).
* **Labels.** Feed the monitor yourself (not attached, which would count every output twice):
  ``observe(out, ids=...)`` remembers the prediction and decision of each id (at most
  ``max_pending``, oldest dropped); ``label(ids, y)`` matches labels to them. On the accepted
  inputs labelled, a one-sided confidence sequence on the selective risk raises a
  ``harmful_shift`` alarm once the risk is above the calibration's target with confidence
  ``1 - alpha_risk``. The labelled inputs must be a sample of the accepted ones not chosen by
  their outcome (e.g. every k-th input, or all of them).
* **Threads.** ``observe``, ``label``, ``save`` and the reports take one lock; the state is a
  few counts per statistic, a bounded list of batch boundaries and the pending ids.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special

from wcx.atomic import write_json_atomic
from wcx.bundle import Bundle
from wcx.core.manifest import CalibrationSection, ReferenceRates
from wcx.errors import BadInputError
from wcx.runtime.drift_tests import (
    CONCENTRATIONS,
    LOOK_START,
    clopper_pearson,
    confidence_interval,
    dkw_interval,
    fisher_log_p,
    log_evidence,
    look_alpha,
    look_index,
    prior_parameters,
    separation,
)
from wcx.runtime.executor import CascadeOutput

__all__ = ["Alarm", "DEFAULT_HORIZON", "Monitor", "MONITOR_FORMAT", "MONITOR_VERSION"]

MONITOR_FORMAT = "wcx-monitor"
MONITOR_VERSION = 3

#: the default ``horizon`` (inputs): half the exact tests' budget is spread evenly over the looks
#: up to it (32 batches of 64), the other half over the rest of an unbounded stream
DEFAULT_HORIZON = 2048

#: batch boundaries kept for the change-point estimate; beyond it every other one is dropped
MAX_CHECKPOINTS = 512

DRIFT_ADVICE = ("the inputs no longer look like the calibration data, so the risk guarantee may not hold: collect "
                "labels for recent inputs and re-certify tau on them (wcx calibrate BUNDLE --recertify --data "
                "NEW.npz), or re-calibrate")
HARMFUL_ADVICE = ("the selective risk of the accepted inputs is above the target: stop relying on the accept "
                  "decisions and re-certify tau on recent labelled inputs (wcx calibrate BUNDLE --recertify "
                  "--data NEW.npz)")


@dataclass(frozen=True)
class Alarm:
    """One statistic that moved.

    ``kind``: ``"drift"`` (a label-free rate left its reference) or ``"harmful_shift"`` (the
    selective risk of labelled accepted inputs is above the target). ``statistic``: its name,
    ``description`` what it counts. ``reference``/``reference_interval``: the reference rate and
    the interval the reference's estimation error allows (for ``harmful_shift``: the target, twice).
    ``observed``/``observed_interval``: the stream's rate and its confidence-sequence interval at
    the alarm, over ``n_observed`` inputs (labelled accepted inputs for ``harmful_shift``).
    ``at_input``: inputs observed when it was raised; ``since_input``: the estimated input
    (0-based) from which the rate differs. ``advice``: what to do.
    """

    kind: str
    statistic: str
    description: str
    reference: float
    reference_interval: tuple[float, float]
    observed: float
    observed_interval: tuple[float, float]
    n_observed: int
    at_input: int
    since_input: int
    advice: str

    def message(self) -> str:
        """One line: what moved, by how much, since when, and what to do."""
        lo, hi = self.reference_interval
        olo, ohi = self.observed_interval
        observed = f"{100 * self.observed:.2f}% [{100 * olo:.2f}, {100 * ohi:.2f}]"
        if self.kind == "harmful_shift":
            return (f"{self.kind}: {self.statistic} ({self.description}) is {observed} over {self.n_observed} "
                    f"labelled accepted inputs, target {100 * self.reference:.2f}%; raised after input "
                    f"{self.at_input}; {self.advice}")
        return (f"{self.kind}: {self.statistic} ({self.description}) is {observed} over {self.n_observed} inputs, "
                f"reference {100 * self.reference:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}]; raised after input "
                f"{self.at_input}, probably since input {self.since_input}; {self.advice}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reference_interval"] = list(self.reference_interval)
        d["observed_interval"] = list(self.observed_interval)
        d["message"] = self.message()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Alarm:
        fields = {k: d[k] for k in cls.__dataclass_fields__}
        fields["reference_interval"] = tuple(fields["reference_interval"])
        fields["observed_interval"] = tuple(fields["observed_interval"])
        return cls(**fields)


@dataclass(frozen=True)
class _Statistic:
    """One label-free rate under test: its reference count, allowed interval and prior."""

    name: str
    family: str
    description: str
    reference_count: int
    lo: float
    hi: float
    alpha: float  # the stream's share of this statistic's budget (exact: spent over the looks)
    exact: bool = False  # reference count exactly binomial: tested by Fisher's test at the looks
    threshold: float | None = None  # stage-1 score cut (families "stage1_score", "stage1_exit_score")
    stage: int = 0  # stage reached (family "pass_fraction")


#: the families testing the stage-1 score distribution (every row's, or a version-1 reference's exits)
_SCORE_FAMILIES = ("stage1_score", "stage1_exit_score")


def _statistics(reference: ReferenceRates, alpha: float) -> list[_Statistic]:
    """The statistics a reference allows, with their share of ``alpha``."""
    n = reference.n
    families: dict[str, list[tuple[str, str, int, dict[str, Any], int]]] = {}
    # (name, description, count, extra fields, DKW sides when the quantity was chosen on these inputs)
    for m in range(2, len(reference.pass_count) + 1):
        families.setdefault("pass_fraction", []).append(
            (f"pass_fraction[{m}]", f"share of inputs reaching stage {m}", reference.pass_count[m - 1],
             {"stage": m}, 2))
    families["accept_rate"] = [("accept_rate", "share of inputs accepted (score >= tau)", reference.accept_count,
                                {}, 1 if reference.independent else 2)]
    seen: set[int] = set()
    if reference.score_count is not None:
        # every row's stage-1 score (an output's first_score): the cut is one threshold
        for q, count in zip(reference.score_quantiles, reference.score_count, strict=True):
            if count in seen:  # tied quantiles count the same inputs
                continue
            seen.add(count)
            families.setdefault("stage1_score", []).append(
                (f"stage1_score<={q:.6g}", f"share of inputs with a stage-1 score <= {q:.6g}", count,
                 {"threshold": float(q)}, 1))
    else:
        # a version-1 reference: only the rows that exit at stage 1 show their stage-1 score
        for q, count in zip(reference.score_quantiles, reference.score_exit_count, strict=True):
            if count in seen:  # a cut inside the stage-1 window counts the same inputs as the one below it
                continue
            seen.add(count)
            families.setdefault("stage1_exit_score", []).append(
                (f"stage1_exit_score<={q:.6g}", f"share of inputs exiting at stage 1 with score <= {q:.6g}", count,
                 {"threshold": float(q)}, 2))
    out = []
    for family, members in families.items():
        share = alpha / len(families) / len(members)
        for name, description, count, extra, sides in members:
            exact = reference.independent and family != "accept_rate"
            # exact: the whole share goes to the two-sample test (lo, hi only describe the
            # reference); otherwise half bounds the reference's error, half the stream's
            lo, hi = (clopper_pearson(count, n, share / 2) if exact
                      else dkw_interval(count, n, share / 2, sides=sides))
            out.append(_Statistic(name=name, family=family, description=description, reference_count=count,
                                  lo=lo, hi=hi, alpha=share if exact else share / 2, exact=exact, **extra))
    return out


def _kl(q: np.ndarray, p: float) -> np.ndarray:
    """Bernoulli KL divergence ``KL(q || p)``, elementwise."""
    return np.asarray(special.xlogy(q, q / p) + special.xlogy(1 - q, (1 - q) / (1 - p)))


class Monitor:
    """Sequential drift tests of a deployed cascade's outputs against its calibration's
    reference rates (module docstring). Build it with :meth:`for_bundle` (or
    :meth:`for_calibration`); feed it with ``cascade.attach(monitor)`` or :meth:`observe`."""

    def __init__(
        self,
        reference: ReferenceRates,
        *,
        alpha: float = 0.01,
        risk_target: float | None = None,
        alpha_risk: float | None = None,
        max_pending: int = 100_000,
        concentrations: Sequence[float] = CONCENTRATIONS,
        horizon: int | None = DEFAULT_HORIZON,
    ) -> None:
        """``reference``: the calibration's reference rates. ``alpha``: the drift alarms'
        false-alarm probability over an unbounded stream. ``risk_target``: the selective risk
        the labelled-risk alarm tests (None: no labels are matched). ``alpha_risk``: its
        false-alarm probability (default ``alpha``). ``max_pending``: ids remembered for labels.
        ``horizon``: the number of inputs within which an alarm is wanted; the exact tests spend
        half their budget evenly over the looks up to it and half after it
        (:func:`~wcx.runtime.drift_tests.look_alpha`); None: the budget halves from look to look
        from the first (the schedule of version-2 states)."""
        for name, value in (("alpha", alpha), ("alpha_risk", alpha if alpha_risk is None else alpha_risk)):
            if not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
                raise BadInputError(f"{name} must be in (0, 1), got {value!r}")
        if risk_target is not None and not 0.0 < risk_target < 1.0:
            raise BadInputError(f"risk_target must be in (0, 1), got {risk_target!r}")
        if int(max_pending) < 0:
            raise BadInputError(f"max_pending must be >= 0, got {max_pending!r}")
        if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer))
                                    or horizon < LOOK_START):
            raise BadInputError(f"horizon must be an integer >= {LOOK_START} (inputs) or None, got {horizon!r}")
        self.reference = reference
        self.alpha = float(alpha)
        self.alpha_risk = float(alpha if alpha_risk is None else alpha_risk)
        self.risk_target = None if risk_target is None else float(risk_target)
        self.max_pending = int(max_pending)
        self.concentrations = tuple(float(c) for c in concentrations)
        self.horizon = None if horizon is None else int(horizon)
        self.statistics = _statistics(reference, self.alpha)
        centers = [s.reference_count / reference.n for s in self.statistics]
        priors = [prior_parameters(c, self.concentrations) for c in centers]
        self._a = np.array([p[0] for p in priors])
        self._b = np.array([p[1] for p in priors])
        self._level = np.array([math.log(1.0 / s.alpha) for s in self.statistics])
        self._exact = np.array([s.exact for s in self.statistics], dtype=bool)
        self._sequence = np.flatnonzero(~self._exact)
        self._alphas = np.array([s.alpha for s in self.statistics])
        self._counts = np.array([s.reference_count for s in self.statistics], dtype=np.int64)
        # the confidence-sequence intervals of the reports, at half a statistic's share either way
        self._report_alpha = np.where(self._exact, self._alphas / 2, self._alphas)
        self._lo = np.array([s.lo for s in self.statistics])
        self._hi = np.array([s.hi for s in self.statistics])
        self._stages = np.array([s.stage for s in self.statistics if s.family == "pass_fraction"], dtype=np.int64)
        self._cuts = np.array([s.threshold for s in self.statistics if s.family in _SCORE_FAMILIES],
                              dtype=np.float64)
        self._every_row = reference.score_count is not None  # cuts apply to first_score, not to exits
        self._lock = threading.Lock()
        self.reset()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def for_calibration(cls, calibration: CalibrationSection | None, **options: Any) -> Monitor:
        """A monitor for a bundle's calibration section; ``BadInputError`` when it has no
        reference rates (calibrated by an older wcx: re-calibrate or re-certify first).
        ``risk_target`` defaults to the calibration's target for the selective task."""
        if calibration is None:
            raise BadInputError("the bundle is not calibrated: run wcx calibrate before monitoring it")
        if calibration.reference is None:
            raise BadInputError("the bundle's calibration has no reference rates (it was written by a wcx without "
                                "drift monitoring): re-calibrate (wcx calibrate) or re-certify (wcx calibrate "
                                "--recertify) to monitor it")
        if calibration.task == "selective":
            options.setdefault("risk_target", calibration.risk)
        return cls(calibration.reference, **options)

    @classmethod
    def for_bundle(cls, bundle: Bundle | str | Path, **options: Any) -> Monitor:
        """A monitor for ``bundle``'s calibration (see :meth:`for_calibration`)."""
        b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        return cls.for_calibration(b.calibration, **options)

    def reset(self) -> None:
        """Forget every observation, label and alarm (keeps the reference and the settings)."""
        with self._lock:
            self.n_seen = 0
            self._successes = np.zeros(len(self.statistics), dtype=np.int64)
            self._checkpoints: list[tuple[int, np.ndarray]] = [(0, self._successes.copy())]
            self._alarmed = np.zeros(len(self.statistics), dtype=bool)
            self._next_look = 0  # the first look of the exact tests not yet taken
            self._alarms: list[Alarm] = []
            self._pending: OrderedDict[Hashable, tuple[int, bool]] = OrderedDict()
            self.risk_trials = 0
            self.risk_errors = 0
            self._risk_alarmed = False
            self.n_unmatched = 0

    # -- observing ---------------------------------------------------------------------------
    def _indicators(self, out: CascadeOutput) -> np.ndarray:
        """Successes of every statistic in one output (J,)."""
        exit_stage = np.asarray(out.exit_stage)
        parts = [np.count_nonzero(exit_stage[:, None] >= self._stages[None, :], axis=0)]
        parts.append(np.array([np.count_nonzero(out.accept)]))
        if self._cuts.size:
            if self._every_row:
                first = np.sort(np.asarray(out.first_score))  # present: observe checked it
            else:
                first = np.sort(np.asarray(out.score)[exit_stage == 1])
            parts.append(np.searchsorted(first, self._cuts, side="right"))  # rows <= each cut
        return np.concatenate(parts).astype(np.int64)

    def observe(self, out: CascadeOutput, ids: Sequence[Hashable] | None = None) -> list[Alarm]:
        """Count one cascade output; returns the alarms it raised (also kept in :attr:`alarms`).

        ``ids``: one id per row (ints or strings) to match labels given later to :meth:`label`;
        without them nothing is remembered for labels.
        """
        n = len(out)
        if out.n_stages != len(self.reference.pass_count):
            raise BadInputError(f"the output has {out.n_stages} stages, the reference {len(self.reference.pass_count)}")
        if ids is not None and len(ids) != n:
            raise BadInputError(f"ids: one per row needed ({n}), got {len(ids)}")
        if self._every_row and self._cuts.size and (out.first_score is None or len(out.first_score) != n):
            raise BadInputError("the output carries no first_score (every row's stage-1 score), which this "
                                "reference's stage-1 score tests need: observe outputs of a Cascade")
        counts = self._indicators(out)
        with self._lock:
            self._successes += counts
            self.n_seen += n
            self._checkpoint()
            raised = self._test()
            if ids is not None and self.risk_target is not None and self.max_pending:
                for i, key in enumerate(ids):
                    self._pending[_key(key)] = (int(out.pred[i]), bool(out.accept[i]))
                    self._pending.move_to_end(_key(key))
                while len(self._pending) > self.max_pending:
                    self._pending.popitem(last=False)
        return raised

    def _checkpoint(self) -> None:
        self._checkpoints.append((self.n_seen, self._successes.copy()))
        if len(self._checkpoints) > MAX_CHECKPOINTS:  # thin evenly, keep the start and the latest
            self._checkpoints = self._checkpoints[:-1:2] + [self._checkpoints[-1]]

    def _test(self) -> list[Alarm]:
        """Test at the looks only (``look_index``): the exact tests spend their levels there, and
        a confidence sequence holds at every time, so checking it at fewer is still valid; in
        between, observing a batch only adds counts."""
        look = look_index(self.n_seen)
        if look < self._next_look:
            return []
        self._next_look = look + 1  # looks passed within one batch count once
        moved = np.zeros(len(self.statistics), dtype=bool)
        sequence = self._sequence[~self._alarmed[self._sequence]]
        if sequence.size:
            evidence = separation(self._successes[sequence], float(self.n_seen), self._lo[sequence],
                                  self._hi[sequence], self._a[sequence], self._b[sequence])
            moved[sequence] = evidence >= self._level[sequence]
        due = self._exact & ~self._alarmed
        if due.any():
            log_p = fisher_log_p(self._counts[due], self.reference.n, self._successes[due], self.n_seen)
            moved[due] = log_p <= np.log(look_alpha(look, self._alphas[due], self.horizon))
        fired = np.flatnonzero(moved & ~self._alarmed)
        raised = [self._drift_alarm(int(j)) for j in fired]
        self._alarmed[fired] = True
        self._alarms.extend(raised)
        return raised

    def _since(self, j: int) -> int:
        """The batch boundary after which statistic j's rate departs most from its reference
        (maximum likelihood of one change from the reference rate)."""
        p0 = min(max(self.statistics[j].reference_count / self.reference.n, 1e-9), 1 - 1e-9)
        t = np.array([c[0] for c in self._checkpoints[:-1]], dtype=np.float64)
        s = np.array([c[1][j] for c in self._checkpoints[:-1]], dtype=np.float64)
        length = self.n_seen - t
        rate = (self._successes[j] - s) / length
        return int(t[int(np.argmax(length * _kl(rate, p0)))])

    def _drift_alarm(self, j: int) -> Alarm:
        s = self.statistics[j]
        k = int(self._successes[j])
        return Alarm(
            kind="drift", statistic=s.name, description=s.description,
            reference=s.reference_count / self.reference.n, reference_interval=(s.lo, s.hi),
            observed=k / self.n_seen,
            observed_interval=confidence_interval(k, self.n_seen, float(self._report_alpha[j]), self._a[j],
                                                  self._b[j]),
            n_observed=self.n_seen, at_input=self.n_seen, since_input=self._since(j), advice=DRIFT_ADVICE,
        )

    # -- labels ------------------------------------------------------------------------------
    def label(self, ids: Iterable[Hashable], y: Sequence[int] | np.ndarray) -> list[Alarm]:
        """Labels ``y`` of earlier observed rows ``ids``; returns the alarms they raised. Ids
        never observed (or dropped: more than ``max_pending`` ago) are counted in
        :attr:`n_unmatched` and ignored."""
        if self.risk_target is None:
            raise BadInputError("this monitor has no risk_target (the selective task's target risk): labels cannot "
                                "be matched")
        ids = list(ids)
        y = np.asarray(y)
        if y.shape != (len(ids),):
            raise BadInputError(f"y: one label per id needed ({len(ids)}), got shape {y.shape}")
        with self._lock:
            for key, label in zip(ids, y.tolist(), strict=True):
                row = self._pending.pop(_key(key), None)
                if row is None:
                    self.n_unmatched += 1
                    continue
                pred, accepted = row
                if accepted:
                    self.risk_trials += 1
                    self.risk_errors += int(pred != int(label))
            return self._test_risk()

    def _test_risk(self) -> list[Alarm]:
        target = float(self.risk_target)  # type: ignore[arg-type]
        k, t = self.risk_errors, self.risk_trials
        if self._risk_alarmed or t == 0 or k / t <= target:
            return []
        a, b = prior_parameters(target, self.concentrations)
        if float(log_evidence(k, t, target, a, b)) < math.log(1.0 / self.alpha_risk):
            return []
        self._risk_alarmed = True
        alarm = Alarm(
            kind="harmful_shift", statistic="selective_risk", description="error rate of the accepted inputs labelled",
            reference=target, reference_interval=(target, target), observed=k / t,
            observed_interval=confidence_interval(k, t, self.alpha_risk, a, b), n_observed=t, at_input=self.n_seen,
            since_input=0, advice=HARMFUL_ADVICE,
        )
        self._alarms.append(alarm)
        return [alarm]

    # -- reports -----------------------------------------------------------------------------
    @property
    def alarms(self) -> list[Alarm]:
        """Every alarm raised since the start (or :meth:`reset`), in order."""
        with self._lock:
            return list(self._alarms)

    @property
    def alarmed(self) -> bool:
        with self._lock:
            return bool(self._alarms)

    def status(self) -> dict[str, Any]:
        """Where every statistic stands: reference, observed rate and interval, evidence and
        the level that raises an alarm: ``log M_t`` against the reference interval and
        ``log(1/alpha)``, or for an exact statistic ``-log`` of Fisher's p-value on the counts now
        and ``-log`` of the level of the last look due (``test``: ``"confidence_sequence"`` or
        ``"fisher_looks"``)."""
        with self._lock:
            evidence = separation(self._successes, float(self.n_seen), self._lo, self._hi, self._a, self._b)
            level = self._level.copy()
            look = look_index(self.n_seen)
            if self._exact.any() and look >= 0:
                evidence[self._exact] = -fisher_log_p(self._counts[self._exact], self.reference.n,
                                                      self._successes[self._exact], self.n_seen)
                level[self._exact] = -np.log(look_alpha(look, self._alphas[self._exact], self.horizon))
            elif self._exact.any():
                evidence[self._exact] = 0.0
            rows = []
            for j, s in enumerate(self.statistics):
                k = int(self._successes[j])
                rows.append({
                    "statistic": s.name, "family": s.family, "description": s.description,
                    "reference": s.reference_count / self.reference.n, "reference_interval": [s.lo, s.hi],
                    "observed": None if self.n_seen == 0 else k / self.n_seen,
                    "observed_interval": list(confidence_interval(k, self.n_seen, float(self._report_alpha[j]),
                                                                  self._a[j], self._b[j])),
                    "test": "fisher_looks" if s.exact else "confidence_sequence",
                    "evidence": float(evidence[j]), "alarm_level": float(level[j]),
                    "alarmed": bool(self._alarmed[j]),
                })
            risk = None
            if self.risk_target is not None:
                risk = {"target": self.risk_target, "labelled_accepted": self.risk_trials, "errors": self.risk_errors,
                        "observed": None if self.risk_trials == 0 else self.risk_errors / self.risk_trials,
                        "alarmed": self._risk_alarmed, "unmatched": self.n_unmatched,
                        "pending": len(self._pending)}
            return {"n_seen": self.n_seen, "alpha": self.alpha, "alpha_risk": self.alpha_risk,
                    "reference_n": self.reference.n, "alarmed": bool(self._alarms), "statistics": rows,
                    "selective_risk": risk, "alarms": [a.to_dict() for a in self._alarms]}

    # -- saving and resuming ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The whole state as JSON-ready data (versioned: ``format``, ``version``)."""
        with self._lock:
            return {
                "format": MONITOR_FORMAT, "version": MONITOR_VERSION,
                "reference": self.reference.to_dict(), "alpha": self.alpha, "alpha_risk": self.alpha_risk,
                "risk_target": self.risk_target, "max_pending": self.max_pending,
                "concentrations": list(self.concentrations), "horizon": self.horizon,
                "n_seen": self.n_seen, "successes": self._successes.tolist(),
                "checkpoints": [[t, s.tolist()] for t, s in self._checkpoints],
                "alarmed": self._alarmed.tolist(), "next_look": self._next_look,
                "alarms": [a.to_dict() for a in self._alarms],
                "risk_trials": self.risk_trials, "risk_errors": self.risk_errors,
                "risk_alarmed": self._risk_alarmed, "n_unmatched": self.n_unmatched,
                "pending": [[k, p, a] for k, (p, a) in self._pending.items()],
            }

    def save(self, path: str | Path) -> None:
        """Write the state to ``path`` as JSON, atomically; :meth:`load` resumes it."""
        write_json_atomic(path, self.state_dict())

    @classmethod
    def from_state(cls, state: Mapping[str, Any], *, where: str = "monitor state") -> Monitor:
        """A monitor resumed from :meth:`state_dict`'s data."""
        if not isinstance(state, Mapping) or state.get("format") != MONITOR_FORMAT:
            raise BadInputError(f"{where}: not a wcx monitor state")
        if state.get("version") not in (1, 2, MONITOR_VERSION):
            raise BadInputError(f"{where}: monitor state version {state.get('version')!r}; this wcx reads "
                                f"versions 1 to {MONITOR_VERSION}")
        try:
            monitor = cls(ReferenceRates.from_dict(state["reference"], where=f"{where} reference"),
                          alpha=state["alpha"], alpha_risk=state["alpha_risk"], risk_target=state["risk_target"],
                          max_pending=state["max_pending"], concentrations=state["concentrations"],
                          # states before version 3 spent their budget without a horizon: resume alike
                          horizon=state.get("horizon") if state.get("version") == MONITOR_VERSION else None)
            j = len(monitor.statistics)
            successes = np.asarray(state["successes"], dtype=np.int64)
            if successes.shape != (j,) or len(state["alarmed"]) != j:
                raise BadInputError(f"{where}: holds {successes.size} statistics, its reference {j}")
            monitor.n_seen = int(state["n_seen"])
            monitor._successes = successes
            monitor._checkpoints = [(int(t), np.asarray(s, dtype=np.int64)) for t, s in state["checkpoints"]]
            monitor._alarmed = np.asarray(state["alarmed"], dtype=bool)
            # version 1 had no looks: the next one due from here on
            monitor._next_look = int(state.get("next_look", look_index(monitor.n_seen) + 1))
            monitor._alarms = [Alarm.from_dict(a) for a in state["alarms"]]
            monitor.risk_trials = int(state["risk_trials"])
            monitor.risk_errors = int(state["risk_errors"])
            monitor._risk_alarmed = bool(state["risk_alarmed"])
            monitor.n_unmatched = int(state["n_unmatched"])
            monitor._pending = OrderedDict((_key(k), (int(p), bool(a))) for k, p, a in state["pending"])
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, BadInputError):
                raise
            raise BadInputError(f"{where}: malformed ({type(exc).__name__}: {exc})") from None
        return monitor

    @classmethod
    def load(cls, path: str | Path) -> Monitor:
        """Resume a monitor :meth:`save` wrote."""
        import json

        try:
            state = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BadInputError(f"{path}: no such file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadInputError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_state(state, where=str(path))

    def __repr__(self) -> str:
        return (f"Monitor({len(self.statistics)} statistics, alpha={self.alpha:g}, seen={self.n_seen}, "
                f"alarms={len(self._alarms)})")


def _key(key: Hashable) -> Hashable:
    """Ids as JSON can keep them: integers (numpy ones too) and strings."""
    if isinstance(key, (bool, np.bool_)):
        raise BadInputError(f"ids must be integers or strings, got {key!r}")
    if isinstance(key, (int, np.integer)):
        return int(key)
    if isinstance(key, str):
        return key
    raise BadInputError(f"ids must be integers or strings, got {type(key).__name__}")
