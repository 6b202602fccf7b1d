"""The whole workflow as four Python calls, with the command line's options and defaults.

``wcx export``, ``wcx calibrate``, ``wcx run`` and ``wcx inspect`` are thin layers over these
(each CLI option is the parameter of the same name, ``--fit-fraction`` is ``fit_fraction``):

1. :func:`wcx.export_bundle` (:func:`wcx.export.exporter.export_bundle`): PyTorch, TorchScript
   or ONNX members -> a bundle of checked ONNX graphs at FP32, FP16 or INT8;
2. :func:`calibrate`: the acceptance threshold and the windows for a risk target on held-out
   data, with a finite-sample certificate when ``delta`` is given, written into the bundle;
3. :meth:`wcx.Cascade.load`: the calibrated cascade, called on arrays (``cascade(x)``), on data
   sets (``cascade.predict(x)``) or on camera frames (``cascade.predict_images(frames)``);
4. :func:`inspect_bundle`: verify a bundle and read what it holds, with one digest to pin.

An example on the shipped Fashion-MNIST zoo (two of its exported members; a model of your own
starts with :func:`wcx.export_bundle`):

>>> import tempfile, numpy as np
>>> import wcx
>>> from wcx.bundle import Bundle, select_members
>>> from wcx.zoo import ZOO_DIR, split_path
>>> work = tempfile.mkdtemp()
>>> bundle = select_members(Bundle.load(ZOO_DIR / "bundles" / "fp32"), ["b0_s0", "b1_s0"], f"{work}/pair")
>>> cal = wcx.calibrate(bundle, split_path("calib"), risk=0.05, delta=0.1)
>>> cal.certified, cal.report["risk_upper_bound"] <= 0.05, 0 < cal.result.tau < 1
(True, True, True)
>>> test = np.load(split_path("test"))
>>> with wcx.Cascade.load(bundle.path) as cascade:
...     out = cascade(test["x"][:256])
>>> out.pred.shape, out.accept.dtype, int(out.exit_stage.max()) <= 2
((256,), dtype('bool'), True)
>>> info = wcx.inspect_bundle(bundle.path)
>>> info.certified, info.digest.startswith("sha256:")
(True, True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wcx.bundle import Bundle
from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.held_out import BundleCalibration, HeldOutData, ProgressFn, calibrate_bundle, latency_costs
from wcx.calibration.recertify import KEEP_DELTA, Recertification, recertify_bundle
from wcx.core.manifest import Manifest

__all__ = ["BundleInfo", "calibrate", "inspect_bundle", "recertify"]


def calibrate(
    bundle: Bundle | str | Path,
    data: HeldOutData,
    *,
    risk: float = 0.05,
    delta: float | None = None,
    task: str = "selective",
    tpr: float = 0.95,
    policy: str = "window",
    score: str | None = None,
    eps: float = 0.005,
    widths: tuple[float, float] | None = None,
    budget: float | Sequence[float] | None = None,
    fit_fraction: float = 0.3,
    seed: int = 0,
    cost: str = "macs",
    bench: Sequence[Mapping[str, Any]] | None = None,
    n_boot: int = 100,
    combine: str = "mean",
    backend: str = "onnxruntime",
    threads: int | None = None,
    test: HeldOutData | None = None,
    ood_data: HeldOutData | None = None,
    replace_certified: bool = False,
    data_key: str | None = None,
    progress: ProgressFn | None = None,
) -> BundleCalibration:
    """Calibrate ``bundle`` on held-out ``data`` for a risk target and write the policy and the
    calibration into its manifest (``wcx calibrate``; the parameters are its options).

    ``data``, ``test``, ``ood_data``: an ``.npz`` file, IDX images file, image folder, arrays
    ``(x, y)``, or any iterable of ``(x, y)`` batches (a torch ``DataLoader`` works); labels are
    needed for the selective task. ``delta`` turns on the finite-sample guarantee
    ``P(risk <= target) >= 1 - delta``; without it the fit is empirical. ``cost="latency"``
    needs ``bench``: the rows of ``wcx bench --json`` (a list of dicts). The rest: see
    :class:`~wcx.calibration.calibrator.CascadeCalibrator` and
    :func:`~wcx.calibration.held_out.calibrate_bundle`.

    Returns a :class:`~wcx.calibration.held_out.BundleCalibration`: ``.certified``, ``.result``
    (the frozen :class:`~wcx.calibration.result.CalibrationResult`: tau, windows, pass fractions,
    coverage, risk and its bound) and ``.report`` (the JSON of ``wcx calibrate --json``). A fit
    that found nothing deployable is returned too; ``.raise_if_failed()`` raises then.
    """
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    calibrator = CascadeCalibrator(
        task=task, score=score, risk=risk, tpr=tpr, delta=delta, eps=eps, policy=policy, widths=widths,
        budget=budget, fit_fraction=fit_fraction, seed=seed, cost=cost, n_boot=n_boot, combine=combine,
    )
    member_costs = None
    if cost == "latency":
        if bench is None:
            from wcx.errors import BadInputError

            raise BadInputError("cost='latency' needs bench (the rows of 'wcx bench --json')")
        member_costs = latency_costs(bench, [m.name for m in b.members])
    return calibrate_bundle(
        b, data, calibrator, backend=backend, threads=threads, member_costs=member_costs, test=test,
        ood=ood_data, replace_certified=replace_certified, data_key=data_key, progress=progress,
    )


def recertify(
    bundle: Bundle | str | Path,
    data: HeldOutData,
    *,
    delta: float | None | str = KEEP_DELTA,
    backend: str = "onnxruntime",
    threads: int | None = None,
    data_key: str | None = None,
    progress: ProgressFn | None = None,
) -> Recertification:
    """Re-certify tau of a calibrated ``bundle`` on new labelled ``data``, keeping its windows
    (``wcx calibrate BUNDLE --recertify --data NEW``): the same task and target, Learn-then-Test
    with the calibration's ``delta`` unless another is given, on every new input. The previous
    policy and calibration are kept in the calibration's ``history``. Returns a
    :class:`~wcx.calibration.recertify.Recertification` (``.report``, ``.deployable``); when
    nothing could be certified the bundle is unchanged and ``.raise_if_failed()`` raises
    ``WorkFailedError`` (exit 1)."""
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    return recertify_bundle(b, data, delta=delta, backend=backend, threads=threads, data_key=data_key,
                            progress=progress)


@dataclass(frozen=True)
class BundleInfo:
    """What :func:`inspect_bundle` found: the verified manifest and one digest of the bundle."""

    path: Path
    manifest: Manifest
    digest: str

    @property
    def members(self) -> list[str]:
        return [m.name for m in self.manifest.members]

    @property
    def calibrated(self) -> bool:
        return self.manifest.calibration is not None

    @property
    def certified(self) -> bool:
        """A calibration with a finite-sample certificate is recorded."""
        calib = self.manifest.calibration
        return bool(calib is not None and calib.to_dict().get("certified"))


def inspect_bundle(bundle: Bundle | str | Path) -> BundleInfo:
    """Verify ``bundle`` (every section, every file's sha256, no links) and return what it holds
    with its digest (``wcx inspect``). A bad bundle is a ``BadInputError`` naming the problem."""
    b = Bundle.load(bundle.path if isinstance(bundle, Bundle) else bundle)
    return BundleInfo(path=b.path, manifest=b.manifest, digest=b.digest())
