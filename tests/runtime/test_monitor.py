"""The drift monitor (:mod:`wcx.runtime.monitor`): silent on exchangeable streams, alarms on the
statistic that moved with a useful change point, the labelled-risk alarm, save/resume, threads,
and the observer hook on ``Cascade``."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import wcx
from tests.bundle_factory import labelled_data
from wcx.bundle import Bundle
from wcx.calibration.reference import measure_reference
from wcx.calibration.simulator import CascadeOutcome
from wcx.core.manifest import ReferenceRates
from wcx.core.policy import AllPolicy
from wcx.errors import BadInputError
from wcx.runtime.cascade import Cascade
from wcx.runtime.executor import CascadeOutput
from wcx.runtime.monitor import MONITOR_VERSION, Monitor

TAU = 0.5
WINDOW = (0.4, 0.6)


def _draw(rng: np.random.Generator, n: int, *, shift: float = 0.0, error: float = 0.03) -> CascadeOutput:
    """A two-stage cascade's outputs: stage-1 score ~ U(shift, 1) (clipped to [0, 1]); scores
    inside WINDOW go on to stage 2, whose score is U(0.3, 0.9); accept iff score >= TAU. ``pred``
    is 0, the label (see :func:`_labels`) differs with probability ``error``."""
    s1 = np.clip(rng.uniform(shift, 1.0 + shift, n), 0.0, 1.0)
    second = (s1 >= WINDOW[0]) & (s1 <= WINDOW[1])
    score = np.where(second, rng.uniform(0.3, 0.9, n), s1)
    return CascadeOutput(pred=np.zeros(n, dtype=np.int64), score=score, accept=score >= TAU,
                         exit_stage=np.where(second, 2, 1).astype(np.int64), n_stages=2, first_score=s1)


def _labels(rng: np.random.Generator, n: int, error: float) -> np.ndarray:
    return (rng.random(n) < error).astype(np.int64)


def _reference(rng: np.random.Generator, n: int = 4000) -> ReferenceRates:
    out = _draw(rng, n)
    outcome = CascadeOutcome(exit_stage=out.exit_stage, pred=out.pred, score=out.score,
                             pass_fraction=np.array(out.pass_fraction))
    quantile_scores = _draw(rng, 2000).first_score  # another sample, as the window-fitting part would be
    ref = measure_reference(outcome, TAU, quantile_scores, first_scores=out.first_score, independent=True)
    assert ref is not None
    return ref


@pytest.fixture
def reference() -> ReferenceRates:
    return _reference(np.random.default_rng(1))


def _feed(monitor: Monitor, rng: np.random.Generator, n: int, batch: int = 64, **shift: float) -> None:
    for _ in range(n // batch):
        monitor.observe(_draw(rng, batch, **shift))


def test_an_exchangeable_stream_raises_no_alarm(reference: ReferenceRates) -> None:
    monitor = Monitor(reference, alpha=0.01)
    _feed(monitor, np.random.default_rng(2), 20_000)
    assert monitor.n_seen == 20_000 - 20_000 % 64
    assert not monitor.alarmed
    families = {s["family"] for s in monitor.status()["statistics"]}
    assert families == {"pass_fraction", "accept_rate", "stage1_score"}


def test_a_shift_raises_an_alarm_that_says_what_moved_and_since_when(reference: ReferenceRates) -> None:
    rng = np.random.default_rng(3)
    monitor = Monitor(reference, alpha=0.01)
    _feed(monitor, rng, 3200)
    assert not monitor.alarmed
    _feed(monitor, rng, 6400, shift=0.15)  # scores drift upwards from input 3200 on
    alarms = monitor.alarms
    assert alarms, monitor.status()
    first = alarms[0]
    assert first.kind == "drift" and first.at_input > 3200
    assert abs(first.since_input - 3200) <= 1000
    assert not first.reference_interval[0] <= first.observed <= first.reference_interval[1]
    assert "wcx calibrate" in first.message() and first.statistic in first.message()
    names = {a.statistic for a in alarms}
    assert any(n.startswith("stage1_score") for n in names)
    assert len(names) == len(alarms)  # each statistic alarms once


def test_labels_raise_a_harmful_shift_alarm_only_above_the_target(reference: ReferenceRates) -> None:
    rng = np.random.default_rng(4)
    for error, expected in ((0.02, False), (0.20, True)):
        monitor = Monitor(reference, alpha=0.01, risk_target=0.05)
        for i in range(40):
            out = _draw(rng, 64)
            ids = [f"row{i}-{j}" for j in range(64)]
            monitor.observe(out, ids=ids)
            monitor.label(ids, _labels(rng, 64, error))
        harmful = [a for a in monitor.alarms if a.kind == "harmful_shift"]
        assert bool(harmful) is expected
        assert 0 < monitor.risk_trials < 40 * 64  # the accepted rows only
    assert harmful[0].reference == 0.05 and harmful[0].observed > 0.05
    monitor.label(["never-seen"], [0])
    assert monitor.n_unmatched == 1


def test_labels_need_a_risk_target_and_one_label_per_id(reference: ReferenceRates) -> None:
    with pytest.raises(BadInputError, match="risk_target"):
        Monitor(reference).label([1], [0])
    monitor = Monitor(reference, risk_target=0.05)
    with pytest.raises(BadInputError, match="one label per id"):
        monitor.label([1, 2], [0])
    with pytest.raises(BadInputError, match="integers or strings"):
        monitor.observe(_draw(np.random.default_rng(0), 1), ids=[1.5])
    with pytest.raises(BadInputError, match="alpha"):
        Monitor(reference, alpha=1.5)


def test_saved_and_resumed_state_continues_exactly(reference: ReferenceRates, tmp_path: Path) -> None:
    whole = Monitor(reference, alpha=0.01, risk_target=0.05)
    part = Monitor(reference, alpha=0.01, risk_target=0.05)
    batches = [_draw(np.random.default_rng(5), 64, shift=0.1 if i > 20 else 0.0) for i in range(60)]
    for i, out in enumerate(batches[:30]):
        for m in (whole, part):
            m.observe(out, ids=list(range(64 * i, 64 * (i + 1))))
    part.save(tmp_path / "state.json")
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["format"] == "wcx-monitor" and state["version"] == MONITOR_VERSION
    resumed = Monitor.load(tmp_path / "state.json")
    for out in batches[30:]:
        whole.observe(out)
        resumed.observe(out)
    assert resumed.status() == whole.status()
    assert resumed.state_dict() == whole.state_dict()
    assert state["horizon"] == whole.horizon == 2048
    state["version"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(state))
    with pytest.raises(BadInputError, match="version 99"):
        Monitor.load(tmp_path / "bad.json")
    # a version-2 state spent its budget without a horizon: it resumes that way
    state["version"] = 2
    del state["horizon"]
    (tmp_path / "v2.json").write_text(json.dumps(state))
    assert Monitor.load(tmp_path / "v2.json").horizon is None


def test_the_horizon_is_checked(reference: ReferenceRates) -> None:
    for bad in (10, 2048.5, True):
        with pytest.raises(BadInputError, match="horizon"):
            Monitor(reference, horizon=bad)  # type: ignore[arg-type]
    assert Monitor(reference, horizon=None).horizon is None


def test_observing_from_several_threads_counts_every_row(reference: ReferenceRates) -> None:
    monitor = Monitor(reference)
    outs = [_draw(np.random.default_rng(i), 32) for i in range(4)]

    def work(out: CascadeOutput) -> None:
        for _ in range(50):
            monitor.observe(out)

    threads = [threading.Thread(target=work, args=(o,)) for o in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert monitor.n_seen == 4 * 50 * 32
    expected = sum(50 * int(np.count_nonzero(o.accept)) for o in outs)
    accept = next(s for s in monitor.status()["statistics"] if s["statistic"] == "accept_rate")
    assert accept["observed"] * monitor.n_seen == pytest.approx(expected)


def test_an_output_with_another_stage_count_is_refused(reference: ReferenceRates) -> None:
    out = _draw(np.random.default_rng(0), 8)
    out.n_stages = 3
    with pytest.raises(BadInputError, match="3 stages"):
        Monitor(reference).observe(out)


@pytest.fixture
def calibrated(mlp_bundle: Bundle, tmp_path: Path) -> tuple[Bundle, np.ndarray]:
    b = Bundle.load(shutil.copytree(mlp_bundle.path, tmp_path / "b"))
    ds = labelled_data(b, 2000, 0)
    np.savez(tmp_path / "val.npz", x=ds.x, y=ds.y)
    wcx.calibrate(b, tmp_path / "val.npz", risk=0.2, delta=0.2, n_boot=0)
    return Bundle.load(b.path), labelled_data(b, 512, 1).x


def test_an_attached_monitor_sees_every_call(calibrated: tuple[Bundle, np.ndarray]) -> None:
    bundle, x = calibrated
    assert bundle.calibration is not None and bundle.calibration.reference is not None
    with Cascade.load(bundle) as cascade:
        plain = cascade(x[:64])
        monitor = cascade.attach(Monitor.for_bundle(bundle))
        assert monitor.risk_target == pytest.approx(0.2)
        observed = cascade(x[:64])
        cascade.predict(x[64:], batch_size=100)
        assert monitor.n_seen == len(x)
        cascade(x[:64], policy=AllPolicy())  # not the calibrated cascade's outputs: not observed
        assert monitor.n_seen == len(x)
        cascade.detach(monitor)
        cascade(x[:64])
        assert monitor.n_seen == len(x)
    np.testing.assert_array_equal(plain.pred, observed.pred)
    with pytest.raises(BadInputError, match="observe"):
        cascade.attach(object())


def test_a_calibration_without_reference_rates_asks_for_a_recalibration(
        calibrated: tuple[Bundle, np.ndarray], tmp_path: Path) -> None:
    bundle, _ = calibrated
    manifest = json.loads((bundle.path / "wcx.json").read_text())
    del manifest["calibration"]["reference"]  # as an older wcx wrote it
    (bundle.path / "wcx.json").write_text(json.dumps(manifest))
    old = Bundle.load(bundle.path)
    assert old.calibration is not None and old.calibration.reference is None
    with pytest.raises(BadInputError, match="re-calibrate"):
        Monitor.for_bundle(old)


def _inside_window_collapse(rng: np.random.Generator, n: int) -> CascadeOutput:
    """Like :func:`_draw`, but every stage-1 score inside WINDOW is moved to its lower edge:
    the same rows go on, with the same stage-2 scores, so only ``first_score`` shows it."""
    out = _draw(rng, n)
    first = out.first_score.copy()
    first[out.exit_stage == 2] = WINDOW[0]
    return CascadeOutput(pred=out.pred, score=out.score, accept=out.accept, exit_stage=out.exit_stage,
                         n_stages=2, first_score=first)


def test_every_rows_stage1_score_shows_a_shift_the_exits_hide(reference: ReferenceRates) -> None:
    """A shift of the stage-1 scores of the rows that go on leaves the pass fraction, the
    acceptance and the stage-1 exits as they were: a version-2 reference (every row's stage-1
    score) sees it, a version-1 one (exits only) cannot."""
    assert reference.version == 2 and any(WINDOW[0] < q < WINDOW[1] for q in reference.score_quantiles)
    old = replace(reference, score_count=None)
    assert old.version == 1 and ReferenceRates.from_dict(old.to_dict()) == old
    every, exits = Monitor(reference, alpha=0.01), Monitor(old, alpha=0.01)
    assert {s.family for s in exits.statistics} == {"pass_fraction", "accept_rate", "stage1_exit_score"}
    rng = np.random.default_rng(8)
    for _ in range(4000 // 64):
        out = _inside_window_collapse(rng, 64)
        every.observe(out)
        exits.observe(out)
    assert [a.statistic.startswith("stage1_score<=") for a in every.alarms] == [True], every.status()
    assert not exits.alarmed, exits.status()


def test_an_output_without_first_score_is_refused_by_a_version2_reference(reference: ReferenceRates) -> None:
    out = _draw(np.random.default_rng(0), 10)
    monitor = Monitor(reference)
    with pytest.raises(BadInputError, match="first_score"):
        monitor.observe(replace(out, first_score=None))
    Monitor(replace(reference, score_count=None)).observe(replace(out, first_score=None))  # exits only: fine


def test_reference_versions_load_and_bad_ones_are_refused(reference: ReferenceRates) -> None:
    d = reference.to_dict()
    assert d["version"] == 2 and ReferenceRates.from_dict(d) == reference
    v1 = {k: v for k, v in d.items() if k not in ("version", "score_count")}  # what wcx wrote before
    assert ReferenceRates.from_dict(v1).score_count is None
    with pytest.raises(BadInputError, match="version 3"):
        ReferenceRates.from_dict({**d, "version": 3})
    with pytest.raises(BadInputError, match="score_count"):
        ReferenceRates.from_dict({k: v for k, v in d.items() if k != "score_count"})
    with pytest.raises(BadInputError, match="score_count"):
        ReferenceRates.from_dict({**d, "score_count": d["score_count"][:-1]})


def test_exactly_binomial_counts_get_the_exact_test_and_the_others_the_sequence(reference: ReferenceRates) -> None:
    tests = {s["statistic"]: s["test"] for s in Monitor(reference).status()["statistics"]}
    assert tests.pop("accept_rate") == "confidence_sequence"  # tau is chosen on the reference inputs
    assert set(tests.values()) == {"fisher_looks"}
    empirical = Monitor(replace(reference, independent=False)).status()["statistics"]
    assert {s["test"] for s in empirical} == {"confidence_sequence"}


def test_a_version1_state_resumes_with_the_next_look_due(reference: ReferenceRates) -> None:
    monitor = Monitor(reference)
    _feed(monitor, np.random.default_rng(4), 640)
    state = monitor.state_dict()
    assert state["version"] == MONITOR_VERSION == 3 and state["next_look"] == 10  # looks 0..9 due by 640
    del state["next_look"]
    old = Monitor.from_state({**state, "version": 1})
    assert old.n_seen == 640 and old.state_dict()["next_look"] == 10 and old.horizon is None
    with pytest.raises(BadInputError, match="version 4"):
        Monitor.from_state({**state, "version": 4})
