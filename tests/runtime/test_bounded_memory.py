"""Bounded memory: no runner ever runs more than its max_batch rows at once, a large cascade call
runs in blocks, and data files are read in chunks (memory-mapped when stored uncompressed).

Behaviour only; the memory figures are measured by tools/reliability_bench.py."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wcx.bundle import Bundle
from wcx.calibration.held_out import open_data_for, run_members
from wcx.data import open_data
from wcx.runtime.backends import get_backend
from wcx.runtime.cascade import BLOCK_ROWS, Cascade
from wcx.runtime.cli_support import run_on_file
from wcx.runtime.onnxruntime_runner import DEFAULT_MAX_BATCH, OnnxRuntimeRunner
from wcx.runtime.runner import Runner


@pytest.fixture
def chunk_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int | None]]:
    """Every ``infer_impl`` call of every runner class: (runner, rows given, its max_batch)."""
    seen: list[tuple[str, int, int | None]] = []
    classes: list[type[Runner]] = [OnnxRuntimeRunner]
    with contextlib.suppress(Exception):  # torch missing: the ONNX Runtime runner is still checked
        classes.append(get_backend("torch").runner_class())
    for cls in classes:
        original = cls.infer_impl

        def spy(self: Runner, x: Any, rows: int, _original: Any = original) -> Any:
            seen.append((self.name, int(x.shape[0]), self.max_batch))
            return _original(self, x, rows)

        monkeypatch.setattr(cls, "infer_impl", spy)
    return seen


def _check(seen: list[tuple[str, int, int | None]]) -> None:
    assert seen
    for name, rows, max_batch in seen:
        assert max_batch is not None, f"{name} has no bound on the rows of one run"
        assert rows <= max_batch, f"{name} received {rows} rows, more than its max_batch {max_batch}"


def test_onnxruntime_runner_is_bounded_by_default(mlp_bundle: Bundle) -> None:
    assert OnnxRuntimeRunner(mlp_bundle, 0).max_batch == DEFAULT_MAX_BATCH == 512
    assert OnnxRuntimeRunner(mlp_bundle, 0, max_batch=64).max_batch == 64


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_no_runner_ever_receives_more_than_max_batch(backend: str, mlp_bundle: Bundle, tmp_path: Path,
                                                     chunk_sizes: list[tuple[str, int, int | None]]) -> None:
    options: dict[str, Any] = {}
    bundle = mlp_bundle
    if backend == "torch":
        pytest.importorskip("torch")
        pytest.importorskip("safetensors")
        import shutil

        from tests.runtime.torch_members import add_torch_sources

        bundle = add_torch_sources(Bundle.load(shutil.copytree(mlp_bundle.path, tmp_path / "t")))
        options = {"device": "cpu"}
    x = np.random.default_rng(0).random((1300, 1, 8, 8), dtype=np.float32)
    with Cascade.load(bundle, backend, policy="all", **options) as c:
        c(x)  # one call, far above every bound
        for max_batch in (7, 100):
            with Cascade.load(bundle, backend, policy="all", max_batch=max_batch, **options) as small:
                assert small.block_rows == min(BLOCK_ROWS, max_batch)
                small(x[:333])
    run_members(bundle, x, backend=backend, batch_size=2000, cache=False, **options)  # rows per call > bound
    _check(chunk_sizes)
    assert {rows for _, rows, _ in chunk_sizes} & {7, 100}


def test_a_large_call_equals_the_same_rows_in_small_calls(mlp_bundle3: Bundle) -> None:
    x = np.random.default_rng(1).random((1000, 1, 8, 8), dtype=np.float32)
    policy = {"kind": "window", "score": "msp", "windows": [[0.3, 0.95], [0.3, 0.95]], "tau": 0.6}
    with Cascade.load(mlp_bundle3, "onnxruntime", policy=policy) as c:
        whole = c(x, return_probs=True, timing=True)
        parts = [c(x[i : i + 100], return_probs=True) for i in range(0, 1000, 100)]
    for key in ("pred", "score", "accept", "exit_stage", "probs"):
        np.testing.assert_array_equal(getattr(whole, key), np.concatenate([getattr(p, key) for p in parts]))
    assert whole.timing is not None and whole.timing.stage_rows[0] == 1000
    assert whole.timing.stage_rows[1:] == [int(np.count_nonzero(whole.exit_stage >= m)) for m in (2, 3)]


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
def test_data_files_are_read_in_chunks(tmp_path: Path, save: Any) -> None:
    rng = np.random.default_rng(2)
    x = rng.random((1001, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 4, 1001)
    save(tmp_path / "d.npz", x=x, y=y)
    data = open_data(tmp_path / "d.npz", sample_shape=(1, 8, 8), num_classes=4)
    assert data.memory_mapped == (save is np.savez) and data.n == 1001
    chunks = list(data.chunks(256))
    assert [len(c) for c in chunks] == [256, 256, 256, 233]
    np.testing.assert_array_equal(np.concatenate(chunks), x)
    np.testing.assert_array_equal(data.read(), x)
    np.testing.assert_array_equal(data.y, y)
    if save is np.savez:
        assert isinstance(data.read(), np.memmap)


def test_a_bad_chunk_is_found_as_it_is_read(tmp_path: Path) -> None:
    from wcx.errors import BadInputError

    x = np.zeros((600, 1, 8, 8), np.float32)
    x[550, 0, 0, 0] = np.nan
    np.savez_compressed(tmp_path / "d.npz", x=x)
    data = open_data(tmp_path / "d.npz")
    with pytest.raises(BadInputError, match=r"rows 512\.\.600: 1 values are NaN"):
        list(data.chunks(256))


def test_wcx_run_and_calibration_read_files_in_chunks(mlp_bundle: Bundle, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.runtime.conftest import with_policy

    bundle = with_policy(mlp_bundle, tmp_path / "b")
    rng = np.random.default_rng(4)
    x = rng.random((700, 1, 8, 8), dtype=np.float32)
    np.savez_compressed(tmp_path / "d.npz", x=x, y=rng.integers(0, 4, 700))
    read: list[int] = []
    original = open_data(tmp_path / "d.npz").chunks.__func__  # type: ignore[attr-defined]

    def counting(self: Any, rows: int) -> Any:
        for chunk in original(self, rows):
            read.append(len(chunk))
            yield chunk

    monkeypatch.setattr("wcx.data.DataFile.chunks", counting)
    summary = run_on_file(bundle.path, tmp_path / "d.npz", tmp_path / "p.npz", batch_size=128)
    assert read == [128] * 5 + [60] and summary["n"] == 700
    with Cascade.load(bundle, "onnxruntime") as c:
        expected = c.predict(x, batch_size=128)
    with np.load(tmp_path / "p.npz") as out:
        np.testing.assert_array_equal(out["pred"], expected.pred)
        np.testing.assert_array_equal(out["accept"], expected.accept)
    read.clear()
    held = run_members(bundle, open_data_for(bundle, tmp_path / "d.npz", require_labels=False), cache=False)
    assert read == [512, 188]
    np.testing.assert_array_equal(held.logits, run_members(bundle, x, cache=False).logits)
