"""Planning a cascade from a pool of members: which members, in which order, with which windows.

A *pool* is a set of exported members (any sizes, architectures, seeds). A *plan* is a cascade
of at most ``max_stages`` distinct pool members in some order, a window per non-final stage and
a certified accept threshold tau. :func:`plan_cascade` finds one on held-out logits (method.md,
"Planning a cascade from a pool"):

1. The held-out rows are split once into a fit part and a certify part
   (:func:`wcx.calibration.pareto_testing.fit_certify_split`, the split of guaranteed
   calibration).
2. On the fit part, :func:`search_front` searches member orders and windows: a beam search that
   extends every kept cascade by one more member and one window for its last stage (quantile
   bands around the stage's operating threshold, :mod:`wcx.calibration.window`, from a grid of
   widths), measures each cascade's expected cost and its empirical coverage at the target risk,
   and keeps for the next stage only the first layers of the (cost, coverage) Pareto ordering
   (dominated prefixes are dropped) and only cascades within the cost bound.
3. A few cascades of the resulting front are chosen for the objective (``match``: up to
   ``n_candidates`` cheaper than the matched member whose fit coverage is at most
   :data:`MATCH_MARGIN` below its own, spread over cost; ``max_cost``: the ``n_candidates``
   best-covering ones within the cost), and their thresholds are certified together on the
   certify part so that every certified one holds at once with probability ``1 - delta``
   (:func:`wcx.calibration.pareto_testing.certify_candidates`: each candidate's own
   Learn-then-Test at ``delta / F`` by default, or Pareto Testing's one fixed sequence).
4. Among the certified candidates the objective picks one: the cheapest whose certified
   coverage reaches the matched member's own certificate (its Learn-then-Test alone at
   ``delta`` on the same certify part: what calibrating it alone gives), or the best certified
   coverage within ``max_cost``. Every certified candidate holds its risk bound simultaneously,
   so the one picked does.

Costs are expected cost per input (MACs, or latency) measured on the rows the figure is about;
coverage is the share of rows accepted. Only the selective task is planned (labels are needed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wcx.calibration.metrics import coverage_at_risk
from wcx.calibration.pareto_testing import ParetoTestResult, certify_candidates, fit_certify_split
from wcx.calibration.plan_baselines import baseline_figures, cascade_outputs, measure_cascade, size_groups
from wcx.calibration.risk_control import DEFAULT_GRID_SIZE, ThresholdResult, fit_guaranteed_threshold
from wcx.calibration.targets import SelectiveRisk
from wcx.calibration.window import EMPTY_WINDOW, quantile_band
from wcx.core.arrays import numpy_ops
from wcx.core.policy import NonePolicy, Policy, WindowPolicy, window_to_json
from wcx.core.scores import check_combine, check_combines, get_score, member_statistics
from wcx.errors import BadInputError
from wcx.json_values import json_safe

#: quantile widths a stage's window is searched over (each side); 1.0 covers every input
PLAN_WIDTH_GRID: tuple[float, ...] = (0.01, 0.03, 0.07, 0.15, 0.3, 1.0)
#: cascades kept per stage of the beam search
DEFAULT_BEAM = 24
#: front cascades whose thresholds are certified together
DEFAULT_CANDIDATES = 6
#: how far below the matched member's fit coverage a cascade may lie and still be certified
MATCH_MARGIN = 0.01

__all__ = ["PLAN_WIDTH_GRID", "Plan", "PlanCandidate", "PlannedCascade", "cascade_outputs", "plan_cascade",
           "search_front", "size_groups"]


@dataclass(frozen=True)
class PlannedCascade:
    """One cascade of pool members as the search measured it on the fit part.

    ``members`` are pool indices in stage order; ``windows`` the fitted window of each
    non-final stage (``widths`` the quantile widths that made it); ``cost`` the expected cost per
    input, ``coverage`` the empirical coverage at the target risk, ``pass_fraction`` the share of
    inputs reaching each stage; ``combine`` whether a stage outputs the mean of its members so far
    or its own member's output.
    """

    members: tuple[int, ...]
    widths: tuple[tuple[float, float], ...]
    windows: tuple[tuple[float, float], ...]
    cost: float
    coverage: float
    pass_fraction: tuple[float, ...]
    combine: str = "mean"  # what a stage outputs (wcx.core.scores.COMBINES); "mean" for one member

    @property
    def policy(self) -> Policy:
        """The exit policy: its windows, or ``none`` for a single member."""
        return WindowPolicy(self.windows) if self.windows else NonePolicy()

    def names(self, pool: Sequence[str]) -> list[str]:
        return [pool[i] for i in self.members]

    def to_dict(self, pool: Sequence[str]) -> dict[str, Any]:
        return {"members": self.names(pool), "widths": [list(w) for w in self.widths],
                "windows": [window_to_json(w) for w in self.windows], "combine": self.combine,
                "expected_cost": self.cost, "coverage_at_risk": self.coverage,
                "pass_fraction": list(self.pass_fraction)}


@dataclass
class _Prefix:
    """A cascade being extended: running sums over all rows, and what it does as it stands."""

    cascade: PlannedCascade
    sum_probs: np.ndarray  # (N, K) over its members, every row
    sum_stat: np.ndarray | None  # (N,) for scores with a member statistic
    last_score: np.ndarray  # (N,) its last stage's ensemble score, every row
    last_err: np.ndarray  # (N,) bool
    out_score: np.ndarray  # (N,) the exit score of every row when the cascade ends here
    out_err: np.ndarray  # (N,) bool
    reach: np.ndarray  # (N,) bool: rows that reach its last stage


#: a window of a prefix's last stage: (its widths, the window, the rows that continue)
_Band = tuple[tuple[float, float], tuple[float, float], np.ndarray]


class _Search:
    """The beam search of :func:`search_front` on one set of fit-part logits."""

    def __init__(self, logits: np.ndarray, labels: np.ndarray, costs: np.ndarray, target: SelectiveRisk,
                 score: str, combine: str = "mean") -> None:
        self.score = get_score(score)
        self.combine = check_combine(combine)
        self.ops = numpy_ops()
        self.labels = labels
        self.costs = costs
        self.target = target
        z = np.asarray(logits, dtype=np.float64)
        self.stats = [member_statistics(z[i], self.ops) for i in range(z.shape[0])]
        self.member_stat = [self.score.member_statistic(s) if self.score.uses_statistic else None
                            for s in self.stats]
        self.n = z.shape[1]
        self.evaluated = 0

    def _sums(self, prefix: _Prefix, j: int) -> tuple[np.ndarray, np.ndarray | None, int]:
        """The running sums after adding member ``j`` to ``prefix``, and how many members they
        hold (``last``: member j's own output replaces the prefix's)."""
        if self.combine == "last":
            return np.asarray(self.stats[j].probs), self.member_stat[j], 1
        sum_stat = None if prefix.sum_stat is None else prefix.sum_stat + self.member_stat[j]
        return prefix.sum_probs + self.stats[j].probs, sum_stat, len(prefix.cascade.members) + 1

    def _stage(self, sum_probs: np.ndarray, sum_stat: np.ndarray | None, m: int) -> tuple[np.ndarray, np.ndarray]:
        p = sum_probs / m
        s = self.score.final(p, None if sum_stat is None else sum_stat / m, self.ops)
        return np.asarray(s, dtype=np.float64), p.argmax(axis=-1) != self.labels

    def single(self, i: int) -> _Prefix:
        sum_probs = np.array(self.stats[i].probs, dtype=np.float64)
        sum_stat = None if self.member_stat[i] is None else np.array(self.member_stat[i], dtype=np.float64)
        s, e = self._stage(sum_probs, sum_stat, 1)
        self.evaluated += 1
        cascade = PlannedCascade((i,), (), (), float(self.costs[i]), coverage_at_risk(s, e, self.target.alpha),
                                 (1.0,))
        return _Prefix(cascade, sum_probs, sum_stat, s, e, s, e, np.ones(self.n, dtype=bool))

    def bands(self, prefix: _Prefix, width_pairs: Sequence[tuple[float, float]]) -> list[_Band]:
        """Distinct windows of the prefix's last stage: ``(widths, window, rows that continue)``."""
        if not prefix.reach.any():
            return []
        # centred on the operating threshold of the last stage's ensemble over every row, as
        # stage_operating_thresholds does for a fixed order
        tau = self.target.stage_threshold(prefix.last_score, prefix.last_err)
        reached = prefix.last_score[prefix.reach]
        out, seen = [], set()
        for pair in width_pairs:
            window = quantile_band(reached, tau, *pair)
            if window == EMPTY_WINDOW or window in seen:
                continue
            seen.add(window)
            cont = prefix.reach & (prefix.last_score >= window[0]) & (prefix.last_score <= window[1])
            if cont.any():
                out.append((pair, window, cont))
        return out

    def extensions(self, prefix: _Prefix, j: int, bands: list[_Band], max_cost: float | None) -> list[PlannedCascade]:
        """Every cascade ``prefix + member j`` over the prefix's windows (within ``max_cost``)."""
        c = prefix.cascade
        s_new, e_new = self._stage(*self._sums(prefix, j))
        out = []
        for pair, window, cont in bands:
            passed = float(cont.mean())
            cost = c.cost + passed * float(self.costs[j])
            if max_cost is not None and cost > max_cost:
                continue
            score = np.where(cont, s_new, prefix.out_score)
            err = np.where(cont, e_new, prefix.out_err)
            self.evaluated += 1
            out.append(PlannedCascade(c.members + (j,), c.widths + (pair,), c.windows + (window,), cost,
                                      coverage_at_risk(score, err, self.target.alpha),
                                      c.pass_fraction + (passed,), self.combine))
        return out

    def grow(self, prefix: _Prefix, cascade: PlannedCascade) -> _Prefix:
        """The state of ``cascade``, one member longer than ``prefix``."""
        j = cascade.members[-1]
        window = cascade.windows[-1]
        cont = prefix.reach & (prefix.last_score >= window[0]) & (prefix.last_score <= window[1])
        sum_probs, sum_stat, m = self._sums(prefix, j)
        s_new, e_new = self._stage(sum_probs, sum_stat, m)
        return _Prefix(cascade, sum_probs, sum_stat, s_new, e_new, np.where(cont, s_new, prefix.out_score),
                       np.where(cont, e_new, prefix.out_err), cont)


def pareto_layers(cascades: Sequence[PlannedCascade], keep: int) -> list[PlannedCascade]:
    """The first non-dominated layers of ``cascades`` (lower cost, higher coverage) until
    ``keep`` are taken; a layer larger than what is left is thinned evenly along cost."""
    left = sorted(cascades, key=lambda c: (c.cost, -c.coverage))
    kept: list[PlannedCascade] = []
    while left and len(kept) < keep:
        front, rest = [], []
        best = -math.inf
        for c in left:
            if c.coverage > best:
                front.append(c)
                best = c.coverage
            else:
                rest.append(c)
        room = keep - len(kept)
        if len(front) > room:
            idx = np.unique(np.round(np.linspace(0, len(front) - 1, room)).astype(int))
            front = [front[i] for i in idx]
        kept.extend(front)
        left = rest
    return kept


def pareto_front(cascades: Sequence[PlannedCascade]) -> list[PlannedCascade]:
    """The cascades no other beats on both cost (lower) and coverage (higher), by cost."""
    front: list[PlannedCascade] = []
    for c in sorted(cascades, key=lambda c: (c.cost, -c.coverage, len(c.members))):
        if not front or c.coverage > front[-1].coverage:
            front.append(c)
    return front


@dataclass
class SearchOutcome:
    """The front the search found, how many cascades it measured and how long it took."""

    front: list[PlannedCascade]
    singles: list[PlannedCascade]
    evaluated: int
    seconds: float


def search_front(
    logits: np.ndarray,
    labels: np.ndarray,
    costs: Sequence[float] | np.ndarray,
    *,
    risk: float = 0.05,
    score: str = "msp",
    max_stages: int = 4,
    width_grid: Sequence[float] = PLAN_WIDTH_GRID,
    beam: int = DEFAULT_BEAM,
    max_cost: float | None = None,
    groups: Sequence[int] | None = None,
    combine: str = "mean",
) -> SearchOutcome:
    """Search member orders and windows on fit-part logits ``(M, N, K)`` (module docstring).

    Every cascade of 1 to ``max_stages`` distinct members reachable by the beam is measured;
    ``max_cost`` drops cascades whose expected cost exceeds it (cost only grows with stages).
    ``groups``: a model id per member (one model exported at several precisions,
    :func:`wcx.calibration.precision_flips.model_groups`): a cascade runs each model once.
    ``combine``: what the searched cascades' stages output (:data:`wcx.core.scores.COMBINES`).
    Returns the (cost, coverage) Pareto front of everything measured, and every single member.
    """
    start = time.perf_counter()
    z = np.asarray(logits)
    if z.ndim != 3 or z.shape[0] < 1:
        raise BadInputError(f"pool logits must have shape (M, N, K), got {z.shape}")
    c = np.asarray(costs, dtype=np.float64)
    if c.shape != (z.shape[0],) or not np.all(np.isfinite(c)) or np.any(c < 0):
        raise BadInputError(f"need one finite cost >= 0 per pool member ({z.shape[0]}), got {c.tolist()}")
    if max_stages < 1:
        raise BadInputError(f"max_stages must be >= 1, got {max_stages}")
    if beam < 1:
        raise BadInputError(f"beam must be >= 1, got {beam}")
    group = list(range(z.shape[0])) if groups is None else [int(g) for g in groups]
    if len(group) != z.shape[0]:
        raise BadInputError(f"need one group per pool member ({z.shape[0]}), got {len(group)}")
    target = SelectiveRisk(risk)
    search = _Search(z, np.asarray(labels), c, target, score, combine)
    widths = sorted({float(w) for w in width_grid})
    pairs = [(a, b) for a in widths for b in widths]
    singles = [search.single(i) for i in range(z.shape[0])]
    prefixes = [p for p in singles if max_cost is None or p.cascade.cost <= max_cost]
    measured = [p.cascade for p in prefixes]
    for _ in range(1, min(max_stages, z.shape[0])):
        grown: list[tuple[_Prefix, PlannedCascade]] = []
        for prefix in prefixes:
            bands = search.bands(prefix, pairs)
            taken = {group[i] for i in prefix.cascade.members}
            for j in range(z.shape[0]):
                if group[j] not in taken:
                    grown.extend((prefix, cas) for cas in search.extensions(prefix, j, bands, max_cost))
        if not grown:
            break
        measured.extend(cas for _, cas in grown)
        kept = {id(cas) for cas in pareto_layers([cas for _, cas in grown], beam)}
        prefixes = [search.grow(prefix, cas) for prefix, cas in grown if id(cas) in kept]
    return SearchOutcome(front=pareto_front(measured), singles=[p.cascade for p in singles],
                         evaluated=search.evaluated, seconds=time.perf_counter() - start)


@dataclass(frozen=True)
class PlanCandidate:
    """A front cascade whose thresholds were certified, with its figures on the certify part:
    its certified threshold (``threshold.certified``), expected cost and pass fractions."""

    cascade: PlannedCascade
    threshold: ThresholdResult
    cost: float
    pass_fraction: tuple[float, ...]

    def to_dict(self, pool: Sequence[str]) -> dict[str, Any]:
        t = self.threshold
        return {"members": self.cascade.names(pool), "windows":
                [window_to_json(w) for w in self.cascade.windows], "combine": self.cascade.combine,
                "fit_coverage": self.cascade.coverage,
                "fit_cost": self.cascade.cost, "expected_cost": self.cost, "pass_fraction": list(self.pass_fraction),
                "certified": t.certified, "tau": t.tau if t.certified else None,
                "coverage": t.coverage, "risk": t.risk, "risk_upper_bound": t.risk_upper_bound}


@dataclass
class Plan:
    """What :func:`plan_cascade` found.

    ``chosen`` is the index into ``candidates`` of the plan (None: nothing certified met the
    objective); ``reference`` the matched member's own certificate (``match`` only: its
    Learn-then-Test at ``delta`` alone on every held-out row, what ``wcx calibrate --policy none``
    gives on the same data) and ``reference_coverage`` the coverage its tau gives on the certify
    part, which the plan's certified coverage there must reach.
    ``baselines`` are the comparison configurations measured on the certify part (and on a test
    set, when given); ``front`` the search's front and ``figures`` the plan, measured there too.
    """

    pool: list[str]
    risk: float
    delta: float
    score: str
    objective: dict[str, Any]
    candidates: list[PlanCandidate]
    test: ParetoTestResult
    selection: str
    chosen: int | None
    reference: ThresholdResult | None
    n_fit: int
    n_certify: int
    fit_fraction: float
    seed: int
    search: SearchOutcome
    baselines: list[dict[str, Any]] = field(default_factory=list)
    front: list[dict[str, Any]] = field(default_factory=list)
    #: the chosen plan measured on the certify part (and the test set): cost, coverage at the
    #: target risk, and the coverage and risk its certified tau gives
    figures: dict[str, Any] = field(default_factory=dict)
    reference_coverage: float | None = None

    @property
    def plan(self) -> PlanCandidate | None:
        return None if self.chosen is None else self.candidates[self.chosen]

    @property
    def members(self) -> list[str]:
        """The chosen members in stage order (empty when nothing was chosen)."""
        return [] if self.plan is None else self.plan.cascade.names(self.pool)

    def to_dict(self) -> dict[str, Any]:
        """The plan JSON (``wcx plan --json``)."""
        chosen = self.plan
        return json_safe({  # type: ignore[no-any-return]
            "pool": self.pool, "risk": self.risk, "delta": self.delta, "score": self.score,
            "objective": self.objective, "certified": chosen is not None,
            "plan": None if chosen is None else chosen.to_dict(self.pool),
            "reference": None if self.reference is None else {
                "member": self.objective["match"], "tau": self.reference.tau if self.reference.certified else None,
                "certified": self.reference.certified, "coverage": self.reference.coverage,
                "risk": self.reference.risk, "risk_upper_bound": self.reference.risk_upper_bound,
                "coverage_on_certify": self.reference_coverage, "expected_cost": self.objective["match_cost"]},
            "candidates": [c.to_dict(self.pool) for c in self.candidates],
            "selection": {"method": self.selection, "n_candidates": len(self.candidates),
                          "n_hypotheses": self.test.n_hypotheses,
                          "n_tested": self.test.n_tested, "n_passed": self.test.n_passed},
            "n_fit": self.n_fit, "n_certify": self.n_certify, "fit_fraction": self.fit_fraction, "seed": self.seed,
            "search": {"evaluated": self.search.evaluated, "seconds": self.search.seconds,
                       "front_size": len(self.search.front)},
            "figures": self.figures, "front": self.front, "baselines": self.baselines,
        })


def check_objective(names: Sequence[str], *, match: str | None, max_cost: float | None) -> None:
    """``BadInputError`` unless exactly one objective is given and it is valid for the pool."""
    if (match is None) == (max_cost is None):
        raise BadInputError("give exactly one objective: match (a member's name) or max_cost")
    if len(set(names)) != len(names):
        raise BadInputError(f"pool member names must be distinct, got {list(names)}")
    if match is not None and match not in names:
        raise BadInputError(f"match: no pool member named {match!r} (members: {', '.join(names)})")
    if max_cost is not None and not (math.isfinite(max_cost) and max_cost > 0):
        raise BadInputError(f"max_cost must be a positive number, got {max_cost}")


def _choose_candidates(front: Sequence[PlannedCascade], *, match_single: PlannedCascade | None,
                       max_cost: float | None, n_candidates: int) -> list[PlannedCascade]:
    if match_single is not None:
        eligible = [c for c in front if c.cost < match_single.cost
                    and c.coverage >= match_single.coverage - MATCH_MARGIN and c.members != match_single.members]
        if len(eligible) > n_candidates:  # spread over cost: the cheapest are the likeliest to fall short
            idx = np.unique(np.round(np.linspace(0, len(eligible) - 1, n_candidates)).astype(int))
            eligible = [eligible[int(i)] for i in idx]
        return eligible
    within = [c for c in front if max_cost is None or c.cost <= max_cost]
    return within[-n_candidates:]


def plan_cascade(
    logits: np.ndarray,
    labels: np.ndarray,
    costs: Sequence[float] | np.ndarray,
    names: Sequence[str],
    *,
    risk: float = 0.05,
    delta: float = 0.1,
    match: str | None = None,
    max_cost: float | None = None,
    max_stages: int = 4,
    score: str = "msp",
    fit_fraction: float = 0.3,
    seed: int = 0,
    width_grid: Sequence[float] = PLAN_WIDTH_GRID,
    beam: int = DEFAULT_BEAM,
    n_candidates: int = DEFAULT_CANDIDATES,
    grid_size: int = DEFAULT_GRID_SIZE,
    selection: str = "bonferroni",
    test_logits: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    baselines: bool = True,
    groups: Sequence[int] | None = None,
    combines: Sequence[str] = ("mean",),
) -> Plan:
    """Plan the cheapest certified cascade of pool members (module docstring).

    ``logits`` ``(M, N, K)`` of every pool member on the held-out rows, ``labels`` ``(N,)``,
    ``costs`` per member (MACs or latency), ``names`` the members'. Exactly one of ``match`` (a
    member's name: the cheapest cascade whose certified coverage reaches that member's) and
    ``max_cost`` (the best certified coverage at or under this expected cost per input) is
    given. ``selection`` is how the candidates are certified together
    (:data:`wcx.calibration.pareto_testing.SELECTION_METHODS`). ``test_logits``/``test_labels``
    add test-set figures to the baselines and the front. ``groups``: see :func:`search_front`.
    ``combines``: the stage outputs searched (each a search of its own; the fronts are merged);
    ``mean`` alone by default (adding ``last`` helped and hurt about equally on the zoo:
    ``docs/results/plan_audit.md``).
    """
    z = np.asarray(logits)
    y = np.asarray(labels)
    names = list(names)
    if z.ndim != 3 or len(names) != z.shape[0]:
        raise BadInputError(f"need one name per pool member: logits {z.shape}, {len(names)} names")
    if y.shape != (z.shape[1],):
        raise BadInputError(f"labels must have shape ({z.shape[1]},), got {y.shape}")
    check_objective(names, match=match, max_cost=max_cost)
    match_index = None if match is None else names.index(match)
    if n_candidates < 1:
        raise BadInputError(f"n_candidates must be >= 1, got {n_candidates}")
    cost_arr = np.asarray(costs, dtype=np.float64)
    fit_idx, cert_idx = fit_certify_split(z.shape[1], fit_fraction, seed)
    bound = max_cost if match_index is None else float(cost_arr[match_index])
    searched = check_combines(combines)
    outcomes = [search_front(z[:, fit_idx], y[fit_idx], cost_arr, risk=risk, score=score, max_stages=max_stages,
                             width_grid=width_grid, beam=beam, max_cost=bound, groups=groups, combine=c)
                for c in searched]
    outcome = SearchOutcome(front=pareto_front([c for o in outcomes for c in o.front]), singles=outcomes[0].singles,
                            evaluated=sum(o.evaluated for o in outcomes), seconds=sum(o.seconds for o in outcomes))
    chosen_cascades = _choose_candidates(
        outcome.front, match_single=None if match_index is None else outcome.singles[match_index],
        max_cost=max_cost, n_candidates=n_candidates)
    reference = None
    reference_coverage = None
    if match_index is not None:
        # the member's own certificate at the full delta, as `wcx calibrate --policy none` makes it
        # (on every held-out row: a policy fixed in advance sets no rows aside), and the coverage
        # its tau gives on the certify part, where the candidates are measured
        ref_s, ref_e, _ = cascade_outputs(z, y, [match_index], NonePolicy(), score)
        reference = fit_guaranteed_threshold(ref_s, ref_e, risk, delta, grid_size)
        if reference.certified and reference.tau is not None:
            reference_coverage = float(np.mean(ref_s[cert_idx] >= reference.tau))
    fit_parts, cert_parts, cert_costs, cert_pass = [], [], [], []
    for cascade in chosen_cascades:
        fs, fe, _ = cascade_outputs(z[:, fit_idx], y[fit_idx], cascade.members, cascade.policy, score,
                                    cascade.combine)
        cs, ce, pf = cascade_outputs(z[:, cert_idx], y[cert_idx], cascade.members, cascade.policy, score,
                                     cascade.combine)
        fit_parts.append((fs, fe))
        cert_parts.append((cs, ce))
        cert_pass.append(tuple(float(p) for p in pf))
        cert_costs.append(float(np.dot(pf, cost_arr[list(cascade.members)])))
    tested = certify_candidates(fit_parts, cert_parts, risk, delta, grid_size, method=selection)
    candidates = [PlanCandidate(cas, thr, cost, pf) for cas, thr, cost, pf
                  in zip(chosen_cascades, tested.thresholds, cert_costs, cert_pass, strict=True)]
    chosen = _pick(candidates, reference=reference, reference_coverage=reference_coverage, max_cost=max_cost)
    match_cost = None if match_index is None else float(cost_arr[match_index])
    plan = Plan(pool=names, risk=risk, delta=delta, score=score,
                objective={"match": match, "match_cost": match_cost, "max_cost": max_cost, "max_stages": max_stages,
                           "combines": searched},
                candidates=candidates, test=tested, selection=selection, chosen=chosen, reference=reference,
                reference_coverage=reference_coverage,
                n_fit=int(fit_idx.size), n_certify=int(cert_idx.size), fit_fraction=fit_fraction, seed=seed,
                search=outcome)
    if baselines:
        parts = {"certify": (z[:, cert_idx], y[cert_idx])}
        if test_logits is not None and test_labels is not None:
            parts["test"] = (np.asarray(test_logits), np.asarray(test_labels))
        plan.baselines = baseline_figures(z[:, fit_idx], y[fit_idx], cost_arr, names, parts, risk=risk,
                                          score=score, max_stages=max_stages)
        plan.front = [{**cas.to_dict(names), **measure_cascade(cas.members, cas.policy, parts, cost_arr, risk, score,
                                                               combine=cas.combine)}
                      for cas in outcome.front]
        if chosen is not None:
            pick = candidates[chosen]
            plan.figures = measure_cascade(pick.cascade.members, pick.cascade.policy, parts, cost_arr, risk, score,
                                           tau=pick.threshold.tau, combine=pick.cascade.combine)
    return plan


def _pick(candidates: Sequence[PlanCandidate], *, reference: ThresholdResult | None,
          reference_coverage: float | None, max_cost: float | None) -> int | None:
    """The objective's choice among the certified candidates: for a match, the cheapest whose
    certified coverage reaches ``reference_coverage`` (the member's tau on the same rows)."""
    ok = [i for i, c in enumerate(candidates) if c.threshold.certified]
    if reference is not None:
        ref_cov = reference.coverage if reference_coverage is None else reference_coverage
        reaching = [i for i in ok if candidates[i].threshold.coverage >= ref_cov]
        if not reaching:
            return None
        return min(reaching, key=lambda i: (candidates[i].cost, -candidates[i].threshold.coverage))
    within = [i for i in ok if max_cost is None or candidates[i].cost <= max_cost]
    if not within:
        return None
    return max(within, key=lambda i: (candidates[i].threshold.coverage, -candidates[i].cost))
