"""Calibration from every kind of data: an image folder, IDX files, an .npz and an iterable of
batches (a DataLoader by duck typing, without torch) give the same logits and the same fit; the
data streams through in chunks; folders name their classes; the logits cache keys on content."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wcx.bundle import Bundle
from wcx.calibration import logits_cache
from wcx.calibration.calibrator import CascadeCalibrator
from wcx.calibration.held_out import cache_key, calibrate_bundle, open_data_for, run_members
from wcx.cli import app
from wcx.data import save_image_folder, write_idx

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["ankle_boot", "bag", "coat", "dress"]


class FakeTensor:
    """Only ``.numpy()`` (as a torch tensor on the CPU has)."""

    def __init__(self, values: np.ndarray) -> None:
        self._values = values

    def numpy(self) -> np.ndarray:
        return self._values


class FakeLoader:
    """Re-iterable, yields ``[x, y]`` lists of FakeTensors of ``batch`` rows (a DataLoader's shape)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch: int) -> None:
        self.x, self.y, self.batch = x, y, batch
        self.pulled = 0

    def __iter__(self):
        for a in range(0, len(self.x), self.batch):
            self.pulled += len(self.x[a : a + self.batch])
            yield [FakeTensor(self.x[a : a + self.batch]), FakeTensor(self.y[a : a + self.batch])]


def labelled_uint8(bundle: Bundle, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 inputs with labels the ensemble gets mostly right, sorted by label (a folder's order)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, *bundle.sample_shape), dtype=np.uint8)
    y = run_members(bundle, x, cache=False).logits.mean(0).argmax(1)
    flip = rng.random(n) < 0.15
    y[flip] = rng.integers(0, bundle.num_classes, int(flip.sum()))
    order = np.argsort(y, kind="stable")
    return x[order], y[order]


@pytest.fixture(scope="module")
def formats(mlp_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("formats")
    x, y = labelled_uint8(mlp_bundle, 1200, 0)
    np.savez_compressed(root / "d.npz", x=x, y=y)
    write_idx(root / "v-images-idx3-ubyte.gz", x[:, 0])
    write_idx(root / "v-labels-idx1-ubyte.gz", y.astype(np.uint8))
    save_image_folder(root / "folder", x, y, class_names=CLASSES)
    return {"x": x, "y": y, "npz": root / "d.npz", "idx": root / "v-images-idx3-ubyte.gz", "folder": root / "folder"}


def test_every_source_gives_the_same_logits_and_fit(mlp_bundle: Bundle, formats, tmp_path: Path) -> None:
    fits = {}
    for name in ("npz", "idx", "folder", "loader"):
        b = Bundle.load(shutil.copytree(mlp_bundle.path, tmp_path / name))
        data = (FakeLoader(formats["x"], formats["y"], 100) if name == "loader"
                else open_data_for(b, formats[name], require_labels=True))
        done = calibrate_bundle(b, data, CascadeCalibrator(risk=0.2, n_boot=10))
        fits[name] = done
    base = fits["npz"]
    for name, done in fits.items():
        np.testing.assert_array_equal(done.logits, base.logits, err_msg=name)
        np.testing.assert_array_equal(done.labels, formats["y"], err_msg=name)
        assert done.report["tau"] == base.report["tau"] and done.report["windows"] == base.report["windows"], name
    assert fits["folder"].report["class_names"] == CLASSES and "class_names" not in base.report
    recorded = Bundle.load(tmp_path / "folder").calibration
    assert recorded is not None and recorded.class_names == tuple(CLASSES)
    assert Bundle.load(tmp_path / "npz").calibration.class_names is None


def test_chunks_never_exceed_the_chunk_size_and_the_source_is_not_read_ahead(
        mlp_bundle: Bundle, formats, monkeypatch: pytest.MonkeyPatch) -> None:
    from wcx.runtime.onnxruntime_runner import OnnxRuntimeRunner

    loader = FakeLoader(formats["x"], formats["y"], 70)
    seen: list[tuple[int, int]] = []
    original = OnnxRuntimeRunner.infer

    def infer(self, feed):  # type: ignore[no-untyped-def]
        (x,) = feed.values()
        seen.append((len(x), loader.pulled))
        return original(self, feed)

    monkeypatch.setattr(OnnxRuntimeRunner, "infer", infer)
    held = run_members(mlp_bundle, loader, batch_size=256, cache=False)
    assert held.logits.shape == (2, 1200, 4)
    sizes = [rows for rows, _ in seen]
    assert max(sizes) <= 256 and sum(sizes) == 2 * 1200
    done = 0
    for i in range(0, len(seen), 2):  # each chunk runs on both members
        done += seen[i][0]
        assert seen[i][1] - done < 70  # at most one loader batch read beyond the rows that ran


def test_calibration_does_not_import_torch(mlp_bundle: Bundle) -> None:
    code = f"""
import sys
import numpy as np
sys.path.insert(0, {str(ROOT)!r})
from tests.calibration.test_calib_data_sources import FakeLoader
from wcx.bundle import Bundle
from wcx.calibration.held_out import run_members
b = Bundle.load({str(mlp_bundle.path)!r})
rng = np.random.default_rng(0)
held = run_members(b, FakeLoader(rng.integers(0, 256, (300, 1, 8, 8), dtype=np.uint8), rng.integers(0, 4, 300), 64),
                   cache=False)
assert held.labels.shape == (300,)
print("torch" in sys.modules)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_cache_keys_on_content_and_only_named_iterables(mlp_bundle: Bundle, formats) -> None:
    def entries() -> set[Path]:
        return set(logits_cache.cache_dir().glob("*.npz")) if logits_cache.cache_dir().is_dir() else set()

    folder = open_data_for(mlp_bundle, formats["folder"], require_labels=True)
    first = run_members(mlp_bundle, folder)
    assert logits_cache.entry_path(cache_key(first.provenance, folder.content_key())).is_file()
    before = entries()
    run_members(mlp_bundle, FakeLoader(formats["x"], formats["y"], 100))
    assert entries() == before  # no key: not cached
    named = run_members(mlp_bundle, FakeLoader(formats["x"], formats["y"], 100), data_key="my-val-set")
    assert entries() - before == {logits_cache.entry_path(cache_key(first.provenance, "my-val-set"))}

    class Exploding:
        def __iter__(self):
            raise AssertionError("a cached iterable is not read again")

    again = run_members(mlp_bundle, Exploding(), data_key="my-val-set")
    np.testing.assert_array_equal(again.logits, named.logits)
    np.testing.assert_array_equal(again.labels, formats["y"])
    np.testing.assert_array_equal(first.logits, named.logits)


def test_cli_calibrate_from_a_folder_and_run_on_it(mlp_bundle: Bundle, formats, tmp_path: Path) -> None:
    b = shutil.copytree(mlp_bundle.path, tmp_path / "b")
    report = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["calibrate", str(b), "--data", str(formats["folder"]), "--test",
                                   str(formats["idx"]), "--risk", "0.2", "--n-boot", "0", "--json", str(report)])
    assert res.exit_code == 0, res.output
    assert json.loads(report.read_text())["class_names"] == CLASSES
    out = tmp_path / "p.npz"
    res = CliRunner().invoke(app, ["run", str(b), "--data", str(formats["folder"]), "--out", str(out), "--probs",
                                   "--batch-size", "500"])
    assert res.exit_code == 0, res.output
    with np.load(out) as z:
        assert z["probs"].shape == (1200, 4) and z["class_names"].tolist() == CLASSES
        assert z["files"][0].startswith("ankle_boot/") and len(z["files"]) == 1200
        np.testing.assert_allclose(z["probs"].sum(1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(z["pred"], z["probs"].argmax(1))
    res = CliRunner().invoke(app, ["run", str(b), "--data", str(formats["idx"]), "--out", str(tmp_path / "q.npz")])
    assert res.exit_code == 0, res.output
    with np.load(out) as z, np.load(tmp_path / "q.npz") as q:
        np.testing.assert_array_equal(z["accept"], q["accept"])
        assert "probs" not in q.files
