"""The executor: exited rows never reach later stages, buckets and padding, skipped stages, timing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.core.test_core_scores import reference_scores
from tests.runtime.conftest import with_policy
from wcx.bundle import Bundle
from wcx.core.policy import AllPolicy
from wcx.core.preprocess import Preprocessor
from wcx.runtime.buckets import bucket_sizes, chunk_bounds, pick_bucket
from wcx.runtime.cascade import Cascade
from wcx.runtime.onnxruntime_runner import OnnxRuntimeRunner
from wcx.runtime.runner import LOGITS, Runner

POLICY3 = {"kind": "window", "task": "selective", "score": "msp", "windows": [[0.45, 0.9], [0.5, 0.95]], "tau": 0.7}


class Recorder(Runner):
    """Wraps a runner and keeps every (padded) chunk it runs: a backend written against the
    Runner contract, padding its chunks itself as the contract asks."""

    backend = "recorder"

    def __init__(self, inner: Runner, *, pads: bool = False, max_batch: int | None = None) -> None:
        super().__init__(inner.bundle, inner.member_index)
        self.inner = inner
        self.pads_to_buckets = pads  # type: ignore[misc]
        self.max_batch = max_batch
        self.batches: list[np.ndarray] = []

    def activate_impl(self) -> None:
        self.inner.activate()

    def infer_impl(self, x: Any, rows: int) -> Any:
        n = x.shape[0]
        if rows > n:
            x = np.concatenate([x, np.zeros((rows - n, *x.shape[1:]), x.dtype)])
        self.batches.append(np.array(x))
        return self.inner.infer({self.member.input.name: x})[LOGITS][:n]

    def deactivate_impl(self) -> None:
        self.inner.deactivate()


def _cascade(bundle: Bundle, policy: Any, *, pads: bool = False, max_batch: int | None = None) -> Cascade:
    runners = [Recorder(OnnxRuntimeRunner(bundle, i, threads=1), pads=pads, max_batch=max_batch)
               for i in range(len(bundle.members))]
    return Cascade(runners, policy=policy, input=bundle.input, num_classes=bundle.num_classes)


def _member_logits(bundle: Bundle, xp: np.ndarray) -> np.ndarray:
    out = []
    for i in range(len(bundle.members)):
        with OnnxRuntimeRunner(bundle, i) as r:
            out.append(r.infer({"input": xp})[LOGITS])
    return np.stack(out)


def test_later_stages_only_see_rows_inside_their_windows(mlp_bundle3: Bundle) -> None:
    x = np.random.default_rng(11).random((400, 1, 8, 8), dtype=np.float32)
    xp = Preprocessor(mlp_bundle3.input)(x)
    # independent expectation: every member on every row, scores from the definitions
    s, _ = reference_scores(_member_logits(mlp_bundle3, xp), "msp")
    reach2 = (s[0] >= 0.45) & (s[0] <= 0.9)
    reach3 = reach2 & (s[1] >= 0.5) & (s[1] <= 0.95)
    assert 0 < reach3.sum() < reach2.sum() < 400  # the data exercises every stage
    with _cascade(mlp_bundle3, POLICY3) as c:
        out = c(x, timing=True)
        r1, r2, r3 = c.runners
        # 400 rows run as blocks of c.block_rows (256) rows, in order
        assert c.block_rows == 256 and [b.shape[0] for b in r1.batches] == [256, 144]
        assert len(r2.batches) == 2 and len(r3.batches) == 2
        np.testing.assert_array_equal(np.concatenate(r2.batches), xp[reach2])
        np.testing.assert_array_equal(np.concatenate(r3.batches), xp[reach3])
        assert out.timing.stage_rows == [400, int(reach2.sum()), int(reach3.sum())]
        assert out.timing.padded_rows == out.timing.stage_rows  # exact sizes on ONNX Runtime
    np.testing.assert_array_equal(out.exit_stage, 1 + reach2.astype(int) + reach3.astype(int))
    assert out.pass_fraction == [1.0, reach2.mean(), reach3.mean()]


def test_torch_runner_counts_rows_and_buckets(torch_bundle: Bundle) -> None:
    pytest.importorskip("torch")
    x = np.random.default_rng(5).random((100, 1, 8, 8), dtype=np.float32)
    with Cascade.load(torch_bundle, "onnxruntime") as ref:
        expected = ref(x)
    k = int(np.count_nonzero(expected.exit_stage == 2))
    assert 0 < k < 100
    with pytest.warns(UserWarning, match="backend: calibrated on onnxruntime, running on torch"):
        c = Cascade.load(torch_bundle, "torch", device="cpu")
    with c:
        out = c(x, timing=True)
        r1, r2 = c.runners
        assert (r1.rows_received, r1.rows_run) == (100, 128)
        assert (r2.rows_received, r2.rows_run) == (k, pick_bucket(k, 256))
        assert out.timing.stage_rows == [100, k]
        assert out.timing.padded_rows == [128, pick_bucket(k, 256)]
    np.testing.assert_array_equal(out.exit_stage, expected.exit_stage)
    np.testing.assert_array_equal(out.pred, expected.pred)
    np.testing.assert_allclose(out.score, expected.score, rtol=1e-5)


def test_bucket_helpers() -> None:
    assert bucket_sizes(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert bucket_sizes(1) == [1]
    assert [pick_bucket(n, 100) for n in (1, 2, 3, 33, 64, 65, 100)] == [1, 2, 4, 64, 64, 100, 100]
    assert chunk_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    with pytest.raises(ValueError):
        pick_bucket(0, 8)


def test_padding_runners_get_zero_padded_buckets(policy_bundle: Bundle) -> None:
    x = np.random.default_rng(9).random((300, 1, 8, 8), dtype=np.float32)
    with _cascade(policy_bundle, "all") as plain:
        want = plain(x)
    with _cascade(policy_bundle, "all", pads=True, max_batch=128) as padded:
        got = padded(x, timing=True)
        sizes = [b.shape[0] for b in padded.runners[0].batches]
        assert sizes == [128, 128, 64]  # 300 rows in pieces of <= 128, the last padded from 44
        assert not padded.runners[0].batches[-1][44:].any()
        assert got.timing.padded_rows == [320, 320]
        assert got.timing.stage_rows == [300, 300]
    np.testing.assert_array_equal(got.pred, want.pred)
    np.testing.assert_allclose(got.score, want.score, rtol=1e-6)


def test_empty_stage_is_skipped(policy_bundle: Bundle) -> None:
    policy = {"kind": "window", "score": "msp", "windows": [[]], "tau": 0.5}  # the empty window
    with _cascade(policy_bundle, policy) as c:
        out = c(np.random.default_rng(1).random((20, 1, 8, 8), dtype=np.float32), timing=True)
        assert c.runners[1].batches == []
        assert out.timing.stage_rows == [20, 0] and out.timing.stage_seconds[1] == 0.0
    assert (out.exit_stage == 1).all()


def test_a_policy_given_per_call_overrides(policy_bundle: Bundle, xbatch: np.ndarray) -> None:
    with _cascade(policy_bundle, "none") as c:
        out = c(xbatch)
        assert (out.exit_stage == 1).all() and out.accept.all()
        assert c.runners[1].batches == []
        full = c(xbatch, policy=AllPolicy(), return_probs=True)
        assert (full.exit_stage == 2).all()
        np.testing.assert_allclose(full.probs.sum(1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(full.probs.argmax(1), full.pred)


def test_with_policy_copy_keeps_fixture(mlp_bundle: Bundle, tmp_path) -> None:
    b = with_policy(mlp_bundle, tmp_path / "b")
    assert b.policy is not None and b.policy.policy.kind == "window" and mlp_bundle.policy is None


def test_first_score_is_the_first_members_score_of_every_row(mlp_bundle3: Bundle) -> None:
    """``first_score`` is member 1's score on every row, whatever stage the row exits at, and
    the row's ``score`` where it exits at stage 1; blocks and chunks join it in row order."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    x = np.random.default_rng(13).random((300, 1, 8, 8), dtype=np.float32)
    xp = Preprocessor(mlp_bundle3.input)(x)
    s, _ = reference_scores(_member_logits(mlp_bundle3, xp), "msp")

    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    # lo + width <= 1: msp lies in [1/K, 1], and a window outside it is refused
    @given(lo=st.floats(0.3, 0.6), width=st.floats(0.0, 0.4), n=st.integers(1, 300),
           chunk=st.sampled_from([None, 7, 64]))
    def check(lo: float, width: float, n: int, chunk: int | None) -> None:
        policy = {"kind": "window", "task": "selective", "score": "msp", "tau": 0.7,
                  "windows": [[lo, lo + width], [0.5, 0.95]]}
        with _cascade(mlp_bundle3, policy, max_batch=chunk) as c:
            outs = list(c.stream(x[:n][i:i + 50] for i in range(0, n, 50)))
            whole = c(x[:n])  # more rows than one block (256): blocks joined
        first = np.concatenate([o.first_score for o in outs])
        score = np.concatenate([o.score for o in outs])
        stage = np.concatenate([o.exit_stage for o in outs])
        np.testing.assert_allclose(first, s[0, :n], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(first[stage == 1], score[stage == 1])
        np.testing.assert_array_equal(whole.first_score, first)

    check()


def test_first_score_on_torch_matches_the_host(torch_bundle: Bundle) -> None:
    pytest.importorskip("torch")
    x = np.random.default_rng(5).random((100, 1, 8, 8), dtype=np.float32)
    with Cascade.load(torch_bundle, "onnxruntime") as ref:
        expected = ref(x)
    with pytest.warns(UserWarning, match="backend: calibrated on onnxruntime"):
        c = Cascade.load(torch_bundle, "torch", device="cpu")
    with c:
        out = c(x)
    assert 0 < np.count_nonzero(out.exit_stage == 2) < 100  # some rows carry a later stage's score
    assert out.first_score is not None and out.first_score.dtype == np.float64
    np.testing.assert_allclose(out.first_score, expected.first_score, rtol=1e-5)
