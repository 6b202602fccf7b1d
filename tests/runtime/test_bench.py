"""``wcx.runtime.bench``: which rows are timed, the statistics, and the tables ``wcx bench`` prints."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from scipy.stats import binom
from typer.testing import CliRunner

from wcx.bundle import Bundle
from wcx.cli import app, bench_tables
from wcx.runtime.bench import (
    FLOOR,
    RoundTimes,
    batch_rows,
    benchmark,
    expected_latency_ms,
    latency_stats,
    median_interval,
    summarize,
    timed_calls,
)
from wcx.runtime.cascade import Cascade
from wcx.zoo.experiment import zoo_bundle_path

ZOO_DATA = Path(__file__).resolve().parents[2] / "wcx" / "zoo" / "data"
needs_zoo = pytest.mark.skipif(not (zoo_bundle_path("fp32") / "wcx.json").is_file(),
                               reason="the zoo bundles are not built (run tools/export_zoo.py)")


# ---------------------------------------------------------------------------------------------
# the plan: which rows each call gets
# ---------------------------------------------------------------------------------------------
def test_timed_calls_hold_the_rows_asked_for() -> None:
    assert timed_calls(1, 30, 1000) == 1000
    assert timed_calls(8, 30, 1000) == 125
    assert timed_calls(256, 30, 1000) == 30  # at least `repeats`
    assert timed_calls(3, 1, 10) == 4  # 12 rows >= 10


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 300), b=st.integers(1, 40), calls=st.integers(1, 60), seed=st.integers(0, 2**31))
def test_batch_rows_walk_one_permutation(n: int, b: int, calls: int, seed: int) -> None:
    plan = batch_rows(n, b, calls, seed)
    assert plan.shape == (calls, b)
    flat = plan.ravel()
    # every row appears before any row repeats, and the walk wraps around one permutation
    first = flat[: min(n, flat.size)]
    assert np.unique(first).size == first.size
    if flat.size > n:  # then it starts over, in the same order
        assert np.array_equal(flat[n:], flat[: flat.size - n])
    assert np.array_equal(plan, batch_rows(n, b, calls, seed))  # reproducible


def test_batch_rows_depend_on_the_seed() -> None:
    assert not np.array_equal(batch_rows(1000, 1, 50, 0), batch_rows(1000, 1, 50, 1))


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1e-6, 10.0, allow_nan=False), min_size=1, max_size=400))
def test_median_interval_contains_the_median(times: list[float]) -> None:
    low, high, coverage = median_interval(times)
    p50 = float(np.percentile(times, 50))
    assert low <= p50 <= high
    assert low in times and high in times  # order statistics
    n = len(times)
    if n >= 6:
        assert coverage >= 0.95
    else:
        assert (low, high) == (min(times), max(times))
        assert coverage == pytest.approx(1 - 2 * 0.5**n)


def test_median_interval_covers_the_true_median_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    true_median = np.log(2.0)  # of Exponential(1): a skewed distribution, like latencies
    hits = 0
    trials = 2000
    for _ in range(trials):
        low, high, _ = median_interval(rng.exponential(size=40))
        hits += low <= true_median <= high
    # nominal 0.95 (exact 0.9615 at n=40); 2,000 trials: standard error 0.004
    assert 0.945 <= hits / trials <= 0.98


def test_latency_stats_ci_contains_p50() -> None:
    times = np.random.default_rng(1).lognormal(-7, 0.5, size=1000)
    stats = latency_stats(times, 1)
    low, high = stats["p50_ci_ms"]
    assert low <= stats["p50_ms"] <= high
    assert stats["mean_ms"] == pytest.approx(times.mean() * 1000)
    assert stats["throughput"] == pytest.approx(1 / times.mean())


def _record(b: int = 4) -> RoundTimes:
    """A hand-made record: 4 calls of batch ``b``; the cascade's second stage reached by 3/8 of the rows."""
    return RoundTimes(
        batch_size=b,
        seconds={
            "cascade": [0.010, 0.012, 0.011, 0.013],
            FLOOR: [0.008, 0.009, 0.008, 0.011],
            "ensemble": [0.020, 0.021, 0.019, 0.022],
            "member:a": [0.006, 0.007, 0.006, 0.005],
            "member:b": [0.009, 0.010, 0.011, 0.010],
            "single:c": [0.015, 0.016, 0.014, 0.015],
        },
        stage_rows={"cascade": [4 * b, 3 * b // 2], "ensemble": [4 * b, 4 * b], "single:c": [4 * b]},
        padded_rows={"cascade": [4 * b, 3 * b // 2], "ensemble": [4 * b, 4 * b], "single:c": [4 * b]},
        distinct_rows=4 * b,
    )


def test_expected_latency_is_pass_fraction_times_stage_latency() -> None:
    rows = summarize(_record(), ["a", "b"], backend="onnxruntime", seed=3)
    assert [r.config for r in rows] == ["cascade", "ensemble", "member:a", "member:b", "single:c"]
    cascade, ensemble = rows[0], rows[1]
    mean_a, mean_b = 1000 * np.mean([0.006, 0.007, 0.006, 0.005]), 1000 * np.mean([0.009, 0.010, 0.011, 0.010])
    assert cascade.pass_fraction == [1.0, 6 / 16]
    assert cascade.expected_ms == pytest.approx(1.0 * mean_a + 6 / 16 * mean_b)
    assert ensemble.expected_ms == pytest.approx(mean_a + mean_b)
    assert expected_latency_ms([1.0, 0.375], [mean_a, mean_b]) == pytest.approx(cascade.expected_ms)
    assert cascade.mean_ms == pytest.approx(11.5)
    assert cascade.floor_ms == pytest.approx(9.0)
    assert cascade.overhead == pytest.approx(11.5 / 9.0)
    assert cascade.p50_ms == pytest.approx(11.5)
    assert cascade.repeats == 4 and cascade.rows_timed == 16 and cascade.distinct_rows == 16 and cascade.seed == 3
    assert rows[2].expected_ms is None and rows[2].pass_fraction == [1.0]
    assert rows[4].pass_fraction == [1.0] and rows[4].expected_ms is None


# ---------------------------------------------------------------------------------------------
# the benchmark on real cascades
# ---------------------------------------------------------------------------------------------
def _numbered(n: int) -> np.ndarray:
    """``n`` inputs of the MLP bundle's shape whose first value names the row: row i is i / n."""
    x = np.zeros((n, 1, 8, 8), dtype=np.float32)
    x[:, 0, 0, 0] = np.arange(n) / n
    return x


def test_bench_times_many_different_rows(policy_bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """By default batch 1 times 1,000 calls on 1,000 different rows, larger batches as many rows."""
    n = 1500
    x = _numbered(n)
    seen: dict[int, list[np.ndarray]] = {}
    call = Cascade.__call__

    def spy(self: Cascade, batch: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("policy") is None:  # the cascade's own call, not the ensemble's
            seen.setdefault(len(batch), []).append(np.rint(batch[:, 0, 0, 0] * n).astype(int))
        return call(self, batch, *args, **kwargs)

    monkeypatch.setattr(Cascade, "__call__", spy)
    rows = benchmark(policy_bundle, x, [1, 8], "onnxruntime", warmup=0, repeats=1, threads=1)
    for b in (1, 8):
        timed = np.concatenate(seen[b])
        assert timed.size >= 1000 and np.unique(timed).size == timed.size  # all different rows
        cascade = next(r for r in rows if r.config == "cascade" and r.batch_size == b)
        assert cascade.rows_timed == timed.size and cascade.distinct_rows == timed.size
        assert cascade.repeats == len(seen[b])
        assert cascade.stage_rows is not None and cascade.stage_rows[0] == timed.size
    cascade1 = next(r for r in rows if r.config == "cascade" and r.batch_size == 1)
    assert cascade1.repeats == 1000
    assert cascade1.p50_ci_ms is not None and cascade1.p50_ci_ms[0] <= cascade1.p50_ms <= cascade1.p50_ci_ms[1]


def test_bench_rows_and_seed_options(policy_bundle: Bundle) -> None:
    x = _numbered(100)
    rows = benchmark(policy_bundle, x, [4], "onnxruntime", warmup=1, repeats=2, rows=20, seed=5, threads=1)
    cascade = rows[0]
    assert cascade.repeats == 5 and cascade.rows_timed == 20 and cascade.seed == 5
    assert all(r.repeats == 5 for r in rows)  # every configuration in the same rounds


def test_bench_alongside_is_timed_in_the_same_rounds(policy_bundle: Bundle) -> None:
    x = _numbered(200)
    with Cascade.load(policy_bundle, "onnxruntime", policy="none", threads=1) as first:
        rows = benchmark(policy_bundle, x, [2], "onnxruntime", warmup=0, repeats=3, rows=10, threads=1,
                         alongside={"single:m0": first})
    assert [r.config for r in rows] == ["cascade", "ensemble", "member:m0", "member:m1", "single:m0"]
    assert rows[-1].repeats == rows[0].repeats == 5 and rows[-1].pass_fraction == [1.0, 0.0]


def test_bench_refuses_taken_alongside_names(policy_bundle: Bundle) -> None:
    from wcx.errors import BadInputError

    with Cascade.load(policy_bundle, "onnxruntime", policy="none", threads=1) as first, \
            pytest.raises(BadInputError, match="taken"):
        benchmark(policy_bundle, _numbered(10), [1], "onnxruntime", alongside={"member:m0": first})


@pytest.fixture(scope="module")
def zoo_b3_pair(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The zoo's b3 pair calibrated as ``wcx calibrate --risk 0.05 --delta 0.1`` does."""
    from wcx.bundle import select_members
    from wcx.zoo.experiment import load_zoo_bundle

    path = tmp_path_factory.mktemp("b3") / "b3pair"
    select_members(load_zoo_bundle("fp32"), ["b3_s0", "b3_s1"], path)
    res = CliRunner().invoke(app, ["calibrate", str(path), "--data", str(ZOO_DATA / "calib.npz"), "--risk", "0.05",
                                   "--delta", "0.1"])
    assert res.exit_code == 0, res.output
    return Bundle.load(path)


@needs_zoo
def test_batch_1_pass_fraction_matches_the_calibrated_cascade(zoo_b3_pair: Bundle) -> None:
    """Over the rows it times, the bench's pass fraction at batch 1 is the cascade's: inside the
    99% binomial interval around the pass fraction over the whole test split."""
    with np.load(ZOO_DATA / "test.npz") as z:
        x = z["x"]
    with Cascade.load(zoo_b3_pair, "onnxruntime", threads=1) as cascade:
        reference = cascade.predict(x).pass_fraction[1]
        rows = benchmark(cascade, x, [1], warmup=0, repeats=1)
    row = rows[0]
    assert row.config == "cascade" and row.distinct_rows == row.rows_timed == 1000
    assert row.pass_fraction is not None
    low, high = binom.interval(0.99, row.rows_timed, reference)
    assert 0.0 < reference < 1.0
    assert low / row.rows_timed <= row.pass_fraction[1] <= high / row.rows_timed


# ---------------------------------------------------------------------------------------------
# the tables of `wcx bench`
# ---------------------------------------------------------------------------------------------
def _render(rows: list[dict[str, Any]], width: int, json_path: Path | None = None) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    for part in bench_tables(rows, title="wcx bench  /some/bundle  (onnxruntime)", width=width, json_path=json_path):
        console.print(part)
    return console.export_text()


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.2f}"


def _zoo_like_rows() -> list[dict[str, Any]]:
    rows = []
    for b in (4, 32):
        record = _record(b)
        names = {"member:a": "member:b3_s0", "member:b": "member:b3_s1"}
        record.seconds = {names.get(k, k): v for k, v in record.seconds.items()}
        rows += [r.to_dict() for r in summarize(record, ["b3_s0", "b3_s1"], backend="onnxruntime", seed=0)]
    return rows


def test_tables_fit_60_columns_without_cutting() -> None:
    rows = _zoo_like_rows()
    text = _render(rows, 60, Path("bench.json"))
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 60
    lines = text.splitlines()
    for r in rows:  # each row on one line, nothing folded
        cells = (r["config"], _ms(r["p50_ms"]), f"{_ms(r['p50_ci_ms'][0])}-{_ms(r['p50_ci_ms'][1])}",
                 _ms(r["mean_ms"]), "/".join(f"{p:.3g}" if p < 1 else "1" for p in r["pass_fraction"]))
        assert any(line.startswith(r["config"] + " ") and all(c in line for c in cells) for line in lines), r
    assert not any(line.startswith(" ") and line.strip() for line in lines)  # no continuation lines
    assert "bench.json has every field" in text and "p99 ms" in text  # where the hidden columns are


def test_tables_show_every_column_when_wide() -> None:
    text = _render(_zoo_like_rows(), 200)
    for header in ("p50 ms", "95% CI", "mean", "expected", "pass", "p90 ms", "p99 ms", "rows/s", "overhead"):
        assert header in text
    assert "Not shown" not in text


def test_tables_never_cut_a_long_name() -> None:
    rows = [dict(r, config=r["config"].replace("single:c", "single:a_rather_long_member_name")) for r in
            [x.to_dict() for x in summarize(_record(), ["a", "b"])]]
    text = _render(rows, 40)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 40
    # folded onto more lines, not cut: the config column's pieces, read down, give the name back
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("─"))
    end = next(i for i, line in enumerate(lines) if line.startswith("p50:"))
    width = len(lines[rule - 2].split()[0])  # the config column's: its header's first piece
    column = "".join(line[:width].strip() for line in lines[rule + 1 : end])
    assert "single:a_rather_long_member_name" in column


def test_cli_bench_json_is_complete(policy_bundle: Bundle, tmp_path: Path) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, x=_numbered(60))
    js = tmp_path / "b.json"
    res = CliRunner().invoke(app, ["bench", str(policy_bundle.path), "--data", str(data), "--batch-size", "1,4",
                                   "--repeats", "2", "--rows", "30", "--seed", "7", "--warmup", "0", "--threads", "1",
                                   "--json", str(js)], terminal_width=60)
    assert res.exit_code == 0, res.output
    got = json.loads(js.read_text())
    fields = {"config", "batch_size", "p50_ms", "p90_ms", "p99_ms", "throughput", "pass_fraction", "overhead",
              "floor_ms", "stage_rows", "padded_rows", "backend", "repeats", "mean_ms", "p50_ci_ms",
              "p50_ci_coverage", "expected_ms", "rows_timed", "distinct_rows", "seed"}
    assert all(set(r) == fields for r in got)
    assert {(r["batch_size"], r["repeats"], r["seed"]) for r in got} == {(1, 30, 7), (4, 8, 7)}
    assert "batch 1: 30 timed calls on 30 different rows" in res.output


def test_bench_counts_padded_rows_on_a_padding_backend(torch_bundle: Bundle) -> None:
    """On torch each stage runs a power-of-two bucket: ``padded_rows`` sums the buckets of each call."""
    from wcx.runtime.buckets import pick_bucket

    x = np.random.default_rng(5).random((100, 1, 8, 8), dtype=np.float32)
    with Cascade.load(torch_bundle, "onnxruntime") as ref:
        exit_stage = ref(x).exit_stage
    with pytest.warns(UserWarning, match="calibrated on onnxruntime"), \
            Cascade.load(torch_bundle, "torch", device="cpu") as cascade:
        rows = benchmark(cascade, x, [12], warmup=0, repeats=1, rows=60, seed=2)
    plan = batch_rows(100, 12, 5, seed=2)
    reached = [int(np.count_nonzero(exit_stage[idx] == 2)) for idx in plan]
    assert 0 < sum(reached) < 60
    row = rows[0]
    assert row.stage_rows == [60, sum(reached)]
    assert row.padded_rows == [5 * 16, sum(pick_bucket(k, 256) for k in reached if k)]
    assert row.floor_ms is not None and row.floor_ms > 0


def test_bench_data_from_a_folder_is_a_sample_across_its_classes(mlp_bundle: Bundle, tmp_path: Path) -> None:
    """An image folder lists its rows class by class; the bench must not time only its first
    rows (one class, with that class's pass fraction), but a seeded sample across the folder."""
    from wcx.data import save_image_folder
    from wcx.runtime.bundle_data import read_data_for

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)  # sorted by class, as a folder reads
    x = rng.integers(0, 256, (len(y), *mlp_bundle.sample_shape), dtype=np.uint8)
    save_image_folder(tmp_path / "folder", x, y, class_names=["a", "b", "c", "d"])
    got = read_data_for(mlp_bundle, tmp_path / "folder", 20, seed=3)
    chosen = np.sort(np.random.default_rng(3).choice(len(y), size=20, replace=False))
    np.testing.assert_array_equal(got, x[chosen])
    assert len(set(y[chosen].tolist())) == 4
