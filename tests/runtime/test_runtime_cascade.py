"""The Cascade API: policies, bad batches, calibration mismatch, threads, streams, the simulator."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

from tests.runtime.conftest import calibration_for, with_policy
from wcx import Cascade
from wcx.bundle import Bundle
from wcx.calibration.simulator import simulate_cascade
from wcx.core.policy import policy_from_dict
from wcx.core.preprocess import Preprocessor
from wcx.core.scores import stage_probs, stage_scores
from wcx.errors import BadInputError, UsageError
from wcx.runtime.cascade import CalibrationMismatchWarning, prediction_metrics
from wcx.runtime.onnxruntime_runner import OnnxRuntimeRunner
from wcx.runtime.runner import LOGITS


def test_outputs(policy_bundle: Bundle, xbatch: np.ndarray) -> None:
    with Cascade.load(policy_bundle) as c:
        assert c.backend == "onnxruntime" and c.precision == "fp32" and c.tau == 0.7
        out = c(xbatch, return_probs=True)
    assert out.pred.dtype == np.int64 and out.exit_stage.dtype == np.int64
    assert out.score.dtype == np.float64 and out.accept.dtype == bool
    assert out.probs.shape == (300, 4) and out.probs.dtype == np.float32
    np.testing.assert_array_equal(out.accept, out.score >= 0.7)
    np.testing.assert_allclose(out.probs.max(1), out.score, rtol=1e-6)  # msp
    assert set(np.unique(out.exit_stage)) <= {1, 2}
    assert out.timing is None and len(out) == 300


def test_uint8_equals_scaled_float(policy_bundle: Bundle) -> None:
    u = np.random.default_rng(2).integers(0, 256, (50, 1, 8, 8)).astype(np.uint8)
    with Cascade.load(policy_bundle) as c:
        a = c(u)
        b = c(u.astype(np.float32) / np.float32(255.0))
    np.testing.assert_array_equal(a.score, b.score)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((0, 1, 8, 8), np.float32), "empty"),
        (np.zeros((2, 1, 8, 8), np.float64), "dtype"),
        (np.zeros((2, 8, 8), np.float32), "shape"),
        (np.zeros((2, 1, 8, 9), np.float32), "sample shape"),
        (np.full((2, 1, 8, 8), np.nan, np.float32), "NaN"),
        ([[0.0]], "numpy array"),
    ],
)
def test_bad_batches(policy_bundle: Bundle, bad: object, match: str) -> None:
    with Cascade.load(policy_bundle) as c, pytest.raises(BadInputError, match=match):
        c(bad)  # type: ignore[arg-type]


def test_no_policy_is_refused_unless_explicit(mlp_bundle: Bundle, xbatch: np.ndarray) -> None:
    with pytest.raises(BadInputError, match="no policy"):
        Cascade.load(mlp_bundle)
    with Cascade.load(mlp_bundle, policy="all") as c:
        out = c(xbatch)
        assert (out.exit_stage == 2).all() and out.accept.all() and c.tau is None
    with Cascade.load(mlp_bundle, policy="none") as c:
        assert (c(xbatch).exit_stage == 1).all()
    with Cascade.load(mlp_bundle, policy={"kind": "threshold", "thresholds": [-0.6], "tau": -0.5,
                                          "score": "neg_entropy"}) as c:
        assert c.score_name == "neg_entropy"
    with pytest.raises(BadInputError):
        Cascade.load(mlp_bundle, policy="most")
    with pytest.raises(BadInputError, match="tau"):
        Cascade.load(mlp_bundle, policy={"kind": "all", "tau": "high"})
    with pytest.raises(BadInputError, match="valid backends"):
        Cascade.load(mlp_bundle, "cuda", policy="all")
    with pytest.raises(BadInputError, match="inverted"):
        Cascade.load(mlp_bundle, policy={"kind": "window", "windows": [[0.9, 0.1]], "tau": 0.5})
    with pytest.raises(BadInputError, match="range"):
        Cascade.load(mlp_bundle, policy={"kind": "all", "score": "msp", "tau": 3.0})
    with pytest.raises(BadInputError, match="valid tasks"):
        Cascade.load(mlp_bundle, policy={"kind": "all", "task": "detect", "tau": 0.5})


def test_calibration_mismatch_warns_once_or_refuses(mlp_bundle: Bundle, tmp_path) -> None:
    b = with_policy(mlp_bundle, tmp_path / "b", calibration=calibration_for(mlp_bundle, precision="int8"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Cascade.load(b, "onnxruntime").close()
    mismatches = [w for w in caught if issubclass(w.category, CalibrationMismatchWarning)]
    assert len(mismatches) == 1
    assert "member m0: precision int8 -> fp32" in str(mismatches[0].message)
    assert "member m1: precision int8 -> fp32" in str(mismatches[0].message)
    with pytest.raises(BadInputError, match="strict"):
        Cascade.load(b, "onnxruntime", strict=True)
    # matching calibration: silent
    ok = with_policy(mlp_bundle, tmp_path / "ok")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Cascade.load(ok, strict=True).close()


def test_auto_respects_the_calibrated_backend(mlp_bundle: Bundle, tmp_path) -> None:
    b = with_policy(mlp_bundle, tmp_path / "b", calibration=calibration_for(mlp_bundle, record_backend="tensorrt"))
    with pytest.raises(BadInputError, match="tensorrt"):
        Cascade.load(b, "auto", strict=True)
    with pytest.warns(CalibrationMismatchWarning):
        c = Cascade.load(b, "auto")
    assert c.backend in ("onnxruntime", "torch", "tensorrt")
    c.close()


def test_tensorrt_backend_missing_is_clear(policy_bundle: Bundle) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationMismatchWarning)
        with pytest.raises(BadInputError, match="(?i)tensorrt"):
            Cascade.load(policy_bundle, "tensorrt")


def test_close_and_context(policy_bundle: Bundle, xbatch: np.ndarray) -> None:
    c = Cascade.load(policy_bundle)
    c.close()
    c.close()
    assert not any(r.is_active for r in c.runners)
    with pytest.raises(UsageError, match="closed"):
        c(xbatch)


def test_concurrent_calls_match_serial(policy_bundle: Bundle) -> None:
    rng = np.random.default_rng(3)
    batches = [rng.random((int(rng.integers(1, 60)), 1, 8, 8), dtype=np.float32) for _ in range(24)]
    with Cascade.load(policy_bundle, threads=1) as c:
        serial = [c(b) for b in batches]
        results: dict[int, object] = {}
        errors: list[BaseException] = []

        def work(offset: int) -> None:
            try:
                for i in range(offset, len(batches), 4):
                    results[i] = c(batches[i])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    for i, want in enumerate(serial):
        got = results[i]
        np.testing.assert_array_equal(got.pred, want.pred)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(got.exit_stage, want.exit_stage)  # type: ignore[attr-defined]


def test_stream_and_predict(policy_bundle: Bundle, xbatch: np.ndarray) -> None:
    with Cascade.load(policy_bundle) as c:
        whole = c(xbatch)
        parts = list(c.stream([xbatch[:100], xbatch[100:250], xbatch[250:]]))
        np.testing.assert_array_equal(np.concatenate([p.exit_stage for p in parts]), whole.exit_stage)
        pred = c.predict(xbatch, batch_size=64)
        np.testing.assert_array_equal(pred.pred, whole.pred)
        assert pred.pass_fraction == whole.pass_fraction
        gen = c.stream(iter([xbatch]))
        next(gen)
        with pytest.raises(UsageError, match="already streaming"):
            next(c.stream([xbatch]))
        gen.close()
        assert len(list(c.stream([xbatch]))) == 1  # released after close


def test_prediction_metrics() -> None:
    from wcx.runtime.executor import CascadeOutput

    out = CascadeOutput(pred=np.array([0, 1, 1, 0]), score=np.array([0.9, 0.8, 0.2, 0.1]),
                        accept=np.array([True, True, False, False]), exit_stage=np.array([1, 2, 2, 1]),
                        n_stages=2)
    m = prediction_metrics(out, np.array([0, 0, 1, 1]))
    assert m["accuracy"] == 0.5 and m["coverage"] == 0.5 and m["risk"] == 0.5
    assert m["pass_fraction"] == [1.0, 0.5]
    out.accept[:] = False
    assert prediction_metrics(out, np.array([0, 0, 1, 1]))["risk"] is None


def member_logits(bundle: Bundle, x: np.ndarray) -> np.ndarray:
    """Every member's logits (M, N, K) on ``x``, each member run alone on ONNX Runtime."""
    xp = Preprocessor(bundle.input)(x)
    logits = []
    for i in range(len(bundle.members)):
        with OnnxRuntimeRunner(bundle, i) as r:
            logits.append(r.infer({"input": xp})[LOGITS])
    return np.stack(logits)


@pytest.mark.parametrize("combine", ["mean", "last"])
@pytest.mark.parametrize("score", ["msp", "neg_entropy", "neg_energy", "max_logit"])
@pytest.mark.parametrize("kind", ["window", "threshold"])
def test_decisions_equal_the_calibration_simulator(mlp_bundle3: Bundle, tmp_path, score: str, kind: str,
                                                   combine: str) -> None:
    """Same exit stages, predictions, accepts and probabilities as simulate_cascade on the same
    logits (rows within 1e-9 of a boundary are exact score ties and are left out)."""
    x = np.random.default_rng(21).random((500, 1, 8, 8), dtype=np.float32)
    z = member_logits(mlp_bundle3, x)
    stage_s = stage_scores(z, score, combine)
    # windows and tau from the stage-score quantiles, so every stage is exercised
    q = [np.quantile(stage_s[m], [0.3, 0.8]) for m in range(2)]
    tau = float(np.quantile(stage_s[2], 0.5))
    if kind == "window":
        policy = {"kind": "window", "score": score, "task": "selective",
                  "windows": [list(map(float, q[0])), list(map(float, q[1]))], "tau": tau}
        bounds = [*q[0], *q[1]]
    else:
        policy = {"kind": "threshold", "score": score, "task": "selective",
                  "thresholds": [float(q[0][1]), float(q[1][1])], "tau": tau}
        bounds = [q[0][1], q[1][1]]
    if combine != "mean":
        policy["combine"] = combine
    b = with_policy(mlp_bundle3, tmp_path / "b", policy=policy)
    sim = simulate_cascade(z, policy_from_dict(policy), score, tau=tau, combine=combine)
    with Cascade.load(b) as c:
        out = c(x, return_probs=True)
    probs = stage_probs(z, combine)[out.exit_stage - 1, np.arange(500)]
    np.testing.assert_allclose(out.probs, probs, rtol=1e-5, atol=1e-6)
    near = np.zeros(500, dtype=bool)
    for v in [*bounds, tau]:
        near |= (np.abs(stage_s - v) < 1e-9).any(axis=0)
    keep = ~near
    assert keep.sum() > 490
    assert len(set(sim.exit_stage.tolist())) == 3
    np.testing.assert_array_equal(out.exit_stage[keep], sim.exit_stage[keep])
    np.testing.assert_array_equal(out.pred[keep], sim.pred[keep])
    np.testing.assert_array_equal(out.accept[keep], sim.accept[keep])
    np.testing.assert_allclose(out.score, sim.score, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.pass_fraction, sim.pass_fraction)


def test_agreement_deferral_equals_the_calibration_simulator(mlp_bundle3: Bundle, tmp_path) -> None:
    """ABC's deferral as a window policy on the agreement score: stage 1 passes everything on
    (its agreement is always 1), stage 2 passes on where the two members disagree; agreement
    values are exact fractions, so every row must match, ties included."""
    x = np.random.default_rng(22).random((400, 1, 8, 8), dtype=np.float32)
    z = member_logits(mlp_bundle3, x)
    policy = {"kind": "window", "score": "agreement", "task": "selective", "windows": [[None, None], [0.0, 0.5]],
              "tau": 2 / 3}
    b = with_policy(mlp_bundle3, tmp_path / "b", policy=policy)
    sim = simulate_cascade(z, policy_from_dict(policy), "agreement", tau=2 / 3)
    with Cascade.load(b) as c:
        out = c(x)
    assert 0.0 < out.pass_fraction[2] < 1.0 and out.pass_fraction[1] == 1.0
    np.testing.assert_array_equal(out.exit_stage, sim.exit_stage)
    np.testing.assert_array_equal(out.pred, sim.pred)
    np.testing.assert_array_equal(out.accept, sim.accept)
    np.testing.assert_array_equal(out.score, sim.score)
    own = z.argmax(-1)
    np.testing.assert_array_equal(out.exit_stage == 3, own[0] != own[1])  # deferred exactly on disagreement


def test_import_does_not_load_torch_or_scipy() -> None:
    import subprocess
    import sys

    code = ("import sys, wcx.runtime.cascade, wcx.runtime.bench, wcx.runtime.executor; "
            "bad = [m for m in ('torch', 'scipy', 'matplotlib') if m in sys.modules]; print(bad)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
