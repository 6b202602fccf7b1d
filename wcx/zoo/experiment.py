"""The evaluation shared by ``wcx demo`` and ``tools/paper_benchmark.py`` (numpy/scipy, no torch).

Both report the zoo through these functions, so a configuration shows the same numbers in both.

**Logits.** :func:`member_logits` runs zoo members on a split with
:func:`wcx.calibration.held_out.collect_logits` (ONNX Runtime, the shipped bundle's graphs), one
member at a time, optionally cached on disk per member and split (never inside the package).

**Configurations** (:data:`CONFIGS`) of the members of one size, stage 1 first:

* ``single``: the first member alone (policy ``none``);
* ``ensemble``: every member on every input (policy ``all``);
* ``window_fixed``: window cascade with the reference method's fixed band (+-10% quantiles);
* ``window``: window cascade with the searched widths (cheapest within ``eps`` of the ensemble);
* ``threshold``: single-threshold cascade at the searched window's budget (pass fractions);
* ``threshold_fixed``: single-threshold cascade at the fixed band's budget.

**Protocols** (:data:`PROTOCOLS`), each a split that fits and a split that measures:

* ``paper``: fitted on ``test`` and measured on ``test`` (the reference code re-picks the
  operating point on its test set: optimistic);
* ``honest``: windows and tau fitted on ``calib`` (empirical mode), measured on ``test``: the
  coverage is what the calib-fitted tau accepts on test, beside the risk it realises there;
* ``shift``: fitted on ``heldout_train`` (the last 5,000 training images, slightly easier than
  the test images), measured on ``test``: what a mild shift does;
* ``guaranteed``: fitted on ``calib`` with Learn-then-Test at ``delta`` (30% fits the windows,
  70% certifies tau), measured on ``test``: the certified bound, coverage and realised risk.

Selective metrics (per risk target r in :data:`RISKS`, each with its own fit, since the windows
centre on the target's operating point): ``coverage`` and ``risk`` at the fitted tau on the
measuring split, ``coverage_at_risk`` (threshold-free, the best tau on the measuring split, with
the fitted windows), ``risk_at_80`` (risk at 80% coverage) and ``aurc`` (both threshold-free, on
the measuring split, with the fitted windows), ``expected_macs`` (pass fractions measured there).
Under ``paper`` ``coverage`` equals ``coverage_at_risk``.

OOD (:func:`evaluate_ood`): Fashion-MNIST ``test`` in-distribution vs ``ood_mnist`` digits,
score ``neg_energy``, target TPR 95%: ``fpr`` at the fitted threshold (honest: fitted on calib's
in-distribution inputs only), ``fpr_at_95`` (threshold re-chosen on test), ``auroc``.

Latency (:func:`bench_cascade`, :func:`bench_single`) uses the runtime's
:func:`wcx.runtime.bench.benchmark` on ONNX Runtime (many different batches per batch size, the
median with its 95% confidence interval): a cascade bundle with its policy gives the
``cascade``, ``ensemble`` and ``member:<name>`` rows; a single model is measured as a one-member
bundle run through the same public cascade call (policy ``none``), so preprocessing and scoring
are counted alike. Configurations that are compared with each other are timed in one run
(``bench_cascade(..., policies=..., singles=...)``): the same rounds on the same batches.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wcx.bundle import Bundle, select_members
from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.metrics import aurc, coverage_at_risk, fpr_at_tpr, risk_at_coverage
from wcx.calibration.simulator import simulate_from_stages
from wcx.core.manifest import Manifest
from wcx.core.scores import stage_outputs
from wcx.data import Dataset, load_npz
from wcx.errors import BadInputError
from wcx.zoo import ZOO_DIR, split_path

BUNDLES_DIR = ZOO_DIR / "bundles"
RISKS: tuple[float, ...] = (0.05, 0.02)
DELTA = 0.1
OOD_TPR = 0.95
COVERAGE_FOR_RISK = 0.80
FIXED_WIDTHS: tuple[float, float] = (0.10, 0.10)
CONFIGS: tuple[str, ...] = ("single", "ensemble", "window_fixed", "window", "threshold", "threshold_fixed")
CASCADE_CONFIGS: tuple[str, ...] = ("window_fixed", "window", "threshold", "threshold_fixed")
#: protocol -> (split that fits, split that measures, delta)
PROTOCOLS: dict[str, tuple[str, str, float | None]] = {
    "paper": ("test", "test", None),
    "honest": ("calib", "test", None),
    "shift": ("heldout_train", "test", None),
    "guaranteed": ("calib", "test", DELTA),
}


# ---------------------------------------------------------------------------------------------
# the shipped bundles and splits
# ---------------------------------------------------------------------------------------------
def zoo_bundle_path(precision: str = "fp32") -> Path:
    """Directory of a shipped zoo bundle (``fp32`` or ``int8``)."""
    return BUNDLES_DIR / precision


def load_zoo_bundle(precision: str = "fp32", *, verify: bool = True) -> Bundle:
    """The shipped zoo bundle (all 15 members), hashes verified; ``BadInputError`` if absent."""
    path = zoo_bundle_path(precision)
    if not (path / "wcx.json").is_file():
        raise BadInputError(
            f"{path}: the zoo's {precision} bundle is not there (regenerate it with tools/export_zoo.py)"
        )
    return Bundle.load(path, verify=verify)


def zoo_sizes(bundle: Bundle) -> list[str]:
    """The sizes present in a zoo bundle, smallest first (``["b0", ..., "b4"]``)."""
    seen: list[str] = []
    for m in bundle.members:
        size = m.name.split("_", 1)[0]
        if size not in seen:
            seen.append(size)
    return sorted(seen, key=lambda s: member_macs(bundle, [f"{s}_s0"])[0])


def size_members(bundle: Bundle, size: str, n: int = 2) -> list[str]:
    """The first ``n`` members (seeds) of one size, stage order: ``["b1_s0", "b1_s1"]``."""
    names = [m.name for m in bundle.members if m.name.split("_", 1)[0] == size]
    if len(names) < n:
        raise BadInputError(f"the zoo has {len(names)} members of size {size!r}, {n} asked")
    return names[:n]


def member_macs(bundle: Bundle, names: Sequence[str]) -> list[float]:
    """MACs per input of the named members."""
    by_name = {m.name: m for m in bundle.members}
    return [float(by_name[n].macs) for n in names]


def load_split(split: str) -> Dataset:
    """A shipped data split (``calib``, ``test``, ``heldout_train``, ``ood_mnist``)."""
    return load_npz(split_path(split), sample_shape=(1, 28, 28))


def _data_key(x: np.ndarray) -> str:
    digest = hashlib.sha256(str((x.shape, str(x.dtype))).encode())
    digest.update(np.ascontiguousarray(x).data)
    return digest.hexdigest()[:16]


def member_logits(
    bundle: Bundle,
    names: Sequence[str],
    x: np.ndarray,
    *,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """Logits ``(M, N, K)`` float32 of the named members on ``x`` (ONNX Runtime).

    Each member runs through :func:`~wcx.calibration.held_out.collect_logits` (the bundle's
    preprocessing, batches of 512), so these are the numbers ``wcx calibrate`` fits on. With
    ``cache_dir`` each member's logits are stored there (keyed by the member's sha256 and the
    data) and reused.
    """
    from wcx.atomic import atomic_write
    from wcx.calibration.held_out import collect_logits

    by_name = {m.name: m for m in bundle.members}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise BadInputError(f"{bundle.path}: no member named {', '.join(unknown)}")
    key = _data_key(x) if cache_dir is not None else ""
    out = []
    for name in names:
        spec = by_name[name]
        file = None if cache_dir is None else Path(cache_dir) / f"{name}-{spec.sha256[:16]}-{key}.npy"
        if file is not None and file.is_file():
            cached = np.load(file, allow_pickle=False)
            if cached.shape == (x.shape[0], spec.num_classes):
                out.append(cached)
                continue
        # a one-member view of the bundle (same directory, same verified files)
        view = Bundle(bundle.path, Manifest(members=(spec,), export=bundle.manifest.export))
        logits = collect_logits(view, x, backend="onnxruntime", threads=threads, cache=False)[0]
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(file) as tmp, open(tmp, "wb") as fh:
                np.save(fh, logits)
        out.append(logits)
    return np.stack(out)


@dataclass
class ZooLogits:
    """Logits of zoo members on the shipped splits, plus labels and MACs.

    ``logits[split]`` is ``(M, N, K)`` over ``names`` (bundle order); ``labels[split]`` is
    ``(N,)`` or None (``ood_mnist`` labels are digits, not Fashion-MNIST classes, so None).
    """

    names: list[str]
    macs: dict[str, float]
    logits: dict[str, np.ndarray]
    labels: dict[str, np.ndarray | None]

    def take(self, split: str, names: Sequence[str]) -> np.ndarray:
        idx = [self.names.index(n) for n in names]
        return self.logits[split][idx]

    def costs(self, names: Sequence[str]) -> list[float]:
        return [self.macs[n] for n in names]


def load_zoo_logits(
    bundle: Bundle,
    names: Sequence[str] | None = None,
    splits: Sequence[str] = ("calib", "test", "heldout_train", "ood_mnist"),
    *,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> ZooLogits:
    """Run (or read cached) logits of ``names`` (default: every member) on ``splits``."""
    names = [m.name for m in bundle.members] if names is None else list(names)
    logits: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray | None] = {}
    for split in splits:
        ds = load_split(split)
        logits[split] = member_logits(bundle, names, ds.x, threads=threads, cache_dir=cache_dir)
        labels[split] = None if split == "ood_mnist" else ds.y
    macs = dict(zip(names, member_macs(bundle, names), strict=True))
    return ZooLogits(names=names, macs=macs, logits=logits, labels=labels)


# ---------------------------------------------------------------------------------------------
# configurations
# ---------------------------------------------------------------------------------------------
def config_members(config: str, members: Sequence[str]) -> list[str]:
    """The members a configuration runs: the first alone for ``single``, all of them otherwise."""
    if config not in CONFIGS:
        raise BadInputError(f"unknown configuration {config!r}; valid: {', '.join(CONFIGS)}")
    return list(members[:1]) if config == "single" else list(members)


def make_calibrator(
    config: str, *, task: str = "selective", risk: float = 0.05, tpr: float = OOD_TPR,
    delta: float | None = None,
) -> CascadeCalibrator:
    """The :class:`CascadeCalibrator` that fits ``config`` (defaults otherwise: eps 0.5 points,
    seed 0, 30% of the held-out set fits the windows in guaranteed mode)."""
    kw: dict[str, Any] = {"task": task, "risk": risk, "tpr": tpr, "delta": delta}
    if config == "single":
        return CascadeCalibrator(policy="none", **kw)
    if config == "ensemble":
        return CascadeCalibrator(policy="all", **kw)
    if config == "window_fixed":
        return CascadeCalibrator(policy="window", widths=FIXED_WIDTHS, **kw)
    if config == "window":
        return CascadeCalibrator(policy="window", **kw)
    if config == "threshold":  # budget = the searched window's pass fractions on the fitting part
        return CascadeCalibrator(policy="threshold", **kw)
    if config == "threshold_fixed":  # budget = the fixed band's pass fractions
        return CascadeCalibrator(policy="threshold", widths=FIXED_WIDTHS, **kw)
    raise BadInputError(f"unknown configuration {config!r}; valid: {', '.join(CONFIGS)}")


def evaluate_selective(
    config: str,
    fit_logits: np.ndarray,
    fit_y: np.ndarray,
    test_logits: np.ndarray,
    test_y: np.ndarray,
    macs: Sequence[float],
    *,
    risk: float = 0.05,
    delta: float | None = None,
) -> dict[str, Any]:
    """Fit ``config`` on (``fit_logits``, ``fit_y``) and measure it on the test logits.

    Logits are over exactly the configuration's members (``(1, N, K)`` for ``single``). Returns
    ``coverage``/``risk`` at the fitted tau on test, the threshold-free ``coverage_at_risk``,
    ``risk_at_80`` and ``aurc`` on test with the fitted policy, ``expected_macs`` and
    ``pass_fraction`` on test, and the fit's ``tau``, windows, ``certified`` and
    ``risk_upper_bound`` (guaranteed mode).
    """
    cal = make_calibrator(config, risk=risk, delta=delta)
    cal.fit(fit_logits, fit_y, member_costs=list(macs), member_macs=list(macs))
    ev = cal.evaluate(test_logits, test_y)
    scores, preds = stage_outputs(test_logits, cal.score, cal.combine)
    out = simulate_from_stages(scores, preds, cal.policy_)
    errors = out.pred != np.asarray(test_y)
    return {
        "config": config,
        "risk_target": risk,
        "delta": delta,
        "coverage": ev["coverage"],
        "risk": ev["risk"],
        "accuracy": ev["accuracy"],
        "coverage_at_risk": coverage_at_risk(out.score, errors, risk),
        "risk_at_80": risk_at_coverage(out.score, errors, COVERAGE_FOR_RISK),
        "aurc": aurc(out.score, errors),
        "expected_macs": ev["expected_macs"],
        "pass_fraction": ev["pass_fraction"],
        "fit_pass_fraction": cal.pass_fraction_,
        "tau": cal.tau_ if np.isfinite(cal.tau_) else None,
        "windows": cal.windows_,
        "thresholds": cal.thresholds_,
        "certified": cal.certified_ if delta is not None else None,
        "risk_upper_bound": cal.risk_upper_bound_,
        "fit_coverage": cal.coverage_,
        "policy": _deployable_policy(cal),
    }


def _deployable_policy(cal: CascadeCalibrator) -> dict[str, Any] | None:
    """The manifest policy of a fitted calibrator, or None when it has no usable threshold."""
    from wcx.errors import WorkFailedError

    try:
        return cal.to_policy_dict()
    except WorkFailedError:
        return None


def evaluate_ood(
    config: str,
    fit_logits: np.ndarray,
    test_logits: np.ndarray,
    ood_logits: np.ndarray,
    macs: Sequence[float],
    *,
    tpr: float = OOD_TPR,
) -> dict[str, Any]:
    """Fit ``config`` for OOD detection (score ``neg_energy``, target TPR) on in-distribution
    ``fit_logits`` only, then measure on in-distribution ``test_logits`` and ``ood_logits``.

    Returns ``tpr`` and ``fpr`` at the fitted threshold, ``fpr_at_95`` (threshold re-chosen on
    the test in-distribution scores), ``auroc``, ``expected_macs`` and pass fractions on the
    in-distribution test set and on the OOD set.
    """
    cal = make_calibrator(config, task="ood", tpr=tpr)
    cal.fit(fit_logits, None, member_costs=list(macs), member_macs=list(macs))
    ev = cal.evaluate(test_logits, ood_logits=ood_logits)
    s_in, p_in = stage_outputs(test_logits, cal.score, cal.combine)
    s_out, p_out = stage_outputs(ood_logits, cal.score, cal.combine)
    o_in = simulate_from_stages(s_in, p_in, cal.policy_)
    o_out = simulate_from_stages(s_out, p_out, cal.policy_)
    return {
        "config": config,
        "tpr_target": tpr,
        "tpr": ev["tpr"],
        "fpr": ev["fpr"],
        "fpr_at_95": fpr_at_tpr(o_in.score, o_out.score, tpr),
        "auroc": ev["auroc"],
        "expected_macs": ev["expected_macs"],
        "pass_fraction": ev["pass_fraction"],
        "ood_pass_fraction": [float(p) for p in o_out.pass_fraction],
        "ood_expected_macs": float(np.dot(o_out.pass_fraction, macs)),
    }


def evaluate_size(
    zoo: ZooLogits,
    members: Sequence[str],
    *,
    configs: Sequence[str] = CONFIGS,
    risks: Sequence[float] = RISKS,
    protocols: Sequence[str] = tuple(PROTOCOLS),
    ood: bool = True,
) -> dict[str, Any]:
    """Every configuration of ``members`` under every protocol and risk target, plus OOD.

    Returns ``{"selective": {config: {protocol: {str(risk): result}}}, "ood": {config: {...}}}``
    with the dicts of :func:`evaluate_selective` / :func:`evaluate_ood` (OOD under ``honest``:
    fitted on calib, and ``paper``: fitted on test).
    """
    result: dict[str, Any] = {"members": list(members), "selective": {}, "ood": {}}
    for config in configs:
        names = config_members(config, members)
        macs = zoo.costs(names)
        per: dict[str, Any] = {}
        for protocol in protocols:
            fit_split, test_split, delta = PROTOCOLS[protocol]
            per[protocol] = {
                f"{r:g}": evaluate_selective(
                    config, zoo.take(fit_split, names), zoo.labels[fit_split],  # type: ignore[arg-type]
                    zoo.take(test_split, names), zoo.labels[test_split], macs,  # type: ignore[arg-type]
                    risk=r, delta=delta,
                )
                for r in risks
            }
        result["selective"][config] = per
        if ood and "ood_mnist" in zoo.logits:
            result["ood"][config] = {
                protocol: evaluate_ood(config, zoo.take(fit_split, names), zoo.take("test", names),
                                       zoo.take("ood_mnist", names), macs)
                for protocol, fit_split in (("honest", "calib"), ("paper", "test"))
            }
    return result


# ---------------------------------------------------------------------------------------------
# latency (ONNX Runtime, the runtime's benchmark)
# ---------------------------------------------------------------------------------------------
def bench_cascade(
    bundle: Bundle | str | Path,
    x: np.ndarray,
    batch_sizes: Sequence[int] = (1, 256),
    *,
    repeats: int = 30,
    warmup: int = 5,
    rows: int = 1000,
    seed: int = 0,
    threads: int | None = None,
    policy: str | dict[str, Any] | None = None,
    policies: dict[str, dict[str, Any]] | None = None,
    singles: tuple[Bundle, Sequence[str]] | None = None,
) -> list[dict[str, Any]]:
    """Rows of ``wcx bench --json`` for a bundle (its manifest's policy unless ``policy``).

    Timed in the same rounds on the same batches (so they compare pairwise): ``policies``, the
    same bundle under other policies (name -> manifest-form policy), as ``cascade:<name>`` rows;
    and ``singles``, ``(zoo bundle, member names)``: each member deployed alone (a one-member
    bundle, a temporary copy, policy ``none``) as a ``single:<name>`` row.
    """
    import contextlib

    from wcx.runtime.bench import benchmark
    from wcx.runtime.cascade import Cascade

    with contextlib.ExitStack() as stack:
        alongside: dict[str, Cascade] = {}
        for name, other in (policies or {}).items():
            alongside[f"cascade:{name}"] = stack.enter_context(
                Cascade.load(bundle, "onnxruntime", threads=threads, policy=other))
        if singles is not None:
            zoo, names = singles
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wcx-single-")))
            for name in names:
                alone = select_members(zoo, [name], tmp / name)
                alongside[f"single:{name}"] = stack.enter_context(
                    Cascade.load(alone, "onnxruntime", threads=threads, policy="none"))
        got = benchmark(bundle, x, list(batch_sizes), backend="onnxruntime", warmup=warmup, repeats=repeats,
                        rows=rows, seed=seed, threads=threads, policy=policy, alongside=alongside)
    return [r.to_dict() for r in got]


def bench_single(
    bundle: Bundle,
    name: str,
    x: np.ndarray,
    batch_sizes: Sequence[int] = (1, 256),
    *,
    repeats: int = 30,
    warmup: int = 5,
    rows: int = 1000,
    seed: int = 0,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Latency rows of one member deployed alone: a one-member bundle (a temporary copy) run
    through the cascade call with policy ``none``. Returns its ``cascade`` rows renamed
    ``single:<name>`` (one per batch size). To compare it with a cascade, time both in one run
    instead (:func:`bench_cascade` with ``singles``)."""
    with tempfile.TemporaryDirectory(prefix="wcx-single-") as tmp:
        single = select_members(bundle, [name], Path(tmp) / name)
        got = bench_cascade(single, x, batch_sizes, repeats=repeats, warmup=warmup, rows=rows, seed=seed,
                            threads=threads, policy="none")
    return [dict(r, config=f"single:{name}") for r in got if r["config"] == "cascade"]


def latency(rows: Sequence[dict[str, Any]], config: str, batch_size: int) -> float | None:
    """Median latency (ms) of ``config`` at ``batch_size`` in bench rows, or None."""
    for r in rows:
        if r["config"] == config and int(r["batch_size"]) == int(batch_size):
            return float(r["p50_ms"])
    return None


def latency_interval(rows: Sequence[dict[str, Any]], config: str, batch_size: int) -> list[float] | None:
    """The 95% confidence interval ``[low, high]`` (ms) of that median, or None."""
    for r in rows:
        if r["config"] == config and int(r["batch_size"]) == int(batch_size) and r.get("p50_ci_ms"):
            return [float(v) for v in r["p50_ci_ms"]]
    return None
