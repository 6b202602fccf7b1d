"""Plots of a fitted calibration (``wcx calibrate --report DIR``).

matplotlib is imported inside :func:`write_report` with the non-interactive Agg backend, so
``import wcx.calibration.report`` costs nothing and works without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wcx.calibration.metrics import risk_coverage_curve
from wcx.calibration.simulator import simulate_from_stages
from wcx.calibration.window import SearchPoint, pareto_front
from wcx.core.policy import AllPolicy, NonePolicy
from wcx.core.scores import stage_outputs

if TYPE_CHECKING:
    from wcx.calibration.calibrator import CascadeCalibrator


def write_report(
    calibrator: CascadeCalibrator,
    logits: np.ndarray,
    y: np.ndarray | None,
    out_dir: str | Path,
) -> list[Path]:
    """Write PNG plots for a fitted calibrator and return their paths.

    * ``risk_coverage.png`` (needs labels ``y``): risk-coverage curves of the first member, the
      cascade and the full ensemble on ``logits``/``y`` (the held-out or a test set), with the
      target risk and the cascade's operating point at the fitted tau.
    * ``cost_quality.png`` (needs a window search): every searched cascade's expected cost
      against its quality on the fitting data (coverage at the target risk, or flag agreement
      with the full ensemble for OOD), the Pareto front, the chosen and the reference (+-10%)
      windows, the single member and the full ensemble.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = calibrator.result_  # NotFittedError before fit
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    if y is not None:
        scores, preds = stage_outputs(logits, calibrator.score, calibrator.combine)
        labels = np.asarray(y)
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for name, pol in (
            ("first member", NonePolicy()),
            ("cascade", result.policy),
            ("full ensemble", AllPolicy()),
        ):
            o = simulate_from_stages(scores, preds, pol)
            cov, risk, _ = risk_coverage_curve(o.score, o.pred != labels)
            ax.plot(cov, 100 * risk, label=f"{name} ({pol.kind})")
        if calibrator.target.risk_coverage_target is not None:
            ax.axhline(100 * calibrator.target.risk_coverage_target, color="grey", ls="--", lw=1,
                       label="target risk")
        o = simulate_from_stages(scores, preds, result.policy)
        accept = o.score >= result.tau
        if accept.any():
            ax.plot([accept.mean()], [100 * np.mean(o.pred[accept] != labels[accept])], "ko", label="fitted tau")
        ax.set_xlabel("coverage")
        ax.set_ylabel("selective risk (%)")
        ax.set_title("Risk-coverage")
        written.append(_save(fig, ax, out / "risk_coverage.png"))

    search = result.search
    if search is not None:
        unit = "expected MACs per input" if calibrator.cost == "macs" else "expected latency per input (s)"
        what = calibrator.target.quality_label
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.scatter(
            [p.expected_cost for p in search.curve],
            [p.quality for p in search.curve],
            s=8,
            c="lightgrey",
            label="searched windows",
        )
        front = pareto_front(search.curve)
        ax.plot(
            [p.expected_cost for p in front],
            [p.quality for p in front],
            "-",
            color="tab:blue",
            label="Pareto front",
        )

        def mark(p: SearchPoint, style: str, label: str) -> None:
            ax.plot([p.expected_cost], [p.quality], style, ms=8, label=label)

        mark(search.reference, "s", "reference band (+-10%)")
        mark(search.best, "*", f"chosen (eps {search.eps:g})")
        ax.plot([search.single_cost], [search.single_quality], "v", ms=8, label="first member")
        ax.plot([search.ensemble_cost], [search.ensemble_quality], "^", ms=8, label="full ensemble")
        ax.axhline(search.ensemble_quality - search.eps, color="grey", ls="--", lw=1, label="ensemble - eps")
        ax.set_xlabel(unit)
        ax.set_ylabel(what)
        ax.set_title("Cost vs quality (window-fitting data)")
        written.append(_save(fig, ax, out / "cost_quality.png"))
    return written


def _save(fig: Any, ax: Any, path: Path) -> Path:
    """Add the legend, write ``fig`` to ``path`` (PNG, 120 dpi) and close it."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
