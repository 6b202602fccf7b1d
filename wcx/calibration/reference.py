"""Reference rates: what a calibrated cascade does to its reference inputs, label-free.

A deployed cascade shows, for every input and without labels, the stage it exited at, its
score, its stage-1 score and whether it was accepted. Under exchangeability of the reference and
the deployment inputs, the share of inputs that reach each stage, the share accepted and the
share with a stage-1 score at or below a fixed value are binomial proportions whose rates the
calibration measures here; :mod:`wcx.runtime.monitor` compares a deployment's with them
(method.md section 8).

The reference inputs are those coverage and risk are reported on: the certifying part in
guaranteed mode, the whole held-out set in empirical mode. In guaranteed mode the stage-1 score
quantiles are taken on the window-fitting part, like the windows, so every count but the
acceptance count is an exact binomial count of inputs the thresholds were not chosen on.
"""

from __future__ import annotations

import math

import numpy as np

from wcx.calibration.simulator import CascadeOutcome
from wcx.core.manifest import ReferenceRates
from wcx.errors import UsageError

#: the stage-1 score quantile levels recorded (a few points of its distribution: more points
#: split the monitor's false-alarm budget further)
SCORE_LEVELS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)


def measure_reference(
    outcome: CascadeOutcome,
    tau: float,
    quantile_scores: np.ndarray,
    *,
    first_scores: np.ndarray,
    independent: bool,
    levels: tuple[float, ...] = SCORE_LEVELS,
    quantiles: tuple[float, ...] | None = None,
) -> ReferenceRates | None:
    """The reference rates of ``outcome`` (the cascade on the reference inputs) at ``tau``.

    ``quantile_scores``: the stage-1 scores the quantiles are taken from (the window-fitting
    part in guaranteed mode, the reference inputs themselves otherwise, then ``independent`` is
    False). ``first_scores``: the stage-1 score of every reference input (in ``outcome``'s
    order), counted at or below each quantile. ``quantiles``: the score values at ``levels``
    fixed beforehand instead (a re-certification keeps the previous ones). None when there is
    no finite ``tau`` or no input (nothing deployable to monitor).

    >>> from wcx.calibration.simulator import CascadeOutcome
    >>> out = CascadeOutcome(exit_stage=np.array([1, 2, 1, 1]), pred=np.zeros(4, dtype=int),
    ...                      score=np.array([0.9, 0.6, 0.4, 0.99]), pass_fraction=np.array([1.0, 0.25]))
    >>> r = measure_reference(out, 0.5, np.array([0.4, 0.7, 0.9, 0.99]), independent=False, levels=(0.5,),
    ...                       first_scores=np.array([0.9, 0.55, 0.4, 0.99]))
    >>> r.pass_count, r.accept_count, r.score_quantiles, r.score_exit_count, r.score_count
    ((4, 1), 3, (0.8,), (1,), (2,))
    """
    n = int(outcome.exit_stage.size)
    if n == 0 or not math.isfinite(tau):
        return None
    n_stages = int(outcome.pass_fraction.size)
    exit_stage = np.asarray(outcome.exit_stage)
    score = np.asarray(outcome.score, dtype=np.float64)
    if quantiles is None:
        scores = np.asarray(quantile_scores, dtype=np.float64)
        quantiles = tuple(np.quantile(scores, levels)) if scores.size else ()
    first = exit_stage == 1
    every = np.asarray(first_scores, dtype=np.float64)
    if every.shape != (n,):
        raise UsageError(f"first_scores: one per reference input needed ({n}), got shape {every.shape}")
    return ReferenceRates(
        n=n,
        pass_count=tuple(int(np.count_nonzero(exit_stage >= m)) for m in range(1, n_stages + 1)),
        accept_count=int(np.count_nonzero(score >= tau)),
        score_levels=tuple(float(v) for v in levels) if len(quantiles) else (),
        score_quantiles=tuple(float(q) for q in quantiles),
        score_exit_count=tuple(int(np.count_nonzero(first & (score <= q))) for q in quantiles),
        independent=bool(independent),
        score_count=tuple(int(np.count_nonzero(every <= q)) for q in quantiles),
    )
