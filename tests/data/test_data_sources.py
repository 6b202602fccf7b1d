"""wcx.data sources: an .npz, IDX files, an image folder and an iterable of batches give the same
rows and labels, read in chunks that never exceed the size asked for, without materialising the
source; class names come from the folder's sorted sub-folders."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wcx.data import (
    Batch,
    BatchIterable,
    DataFile,
    IdxFiles,
    ImageFolder,
    as_source,
    open_data,
    read_rows,
    rechunk,
    sample_dataset,
    save_image_folder,
    stack_rows,
    write_idx,
)
from wcx.errors import BadInputError, UsageError


class FakeTensor:
    """A stand-in for a torch tensor: only ``.numpy()`` gives its values (duck typing)."""

    def __init__(self, values: np.ndarray) -> None:
        self._values = values

    def numpy(self) -> np.ndarray:
        return self._values


def uint8_images(n: int = 23, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (1, 8, 8) uint8 images and labels sorted by class (the order a folder reads in)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8), np.sort(rng.integers(0, 3, n))


def write_all_formats(root: Path, x: np.ndarray, y: np.ndarray) -> dict[str, Path]:
    np.savez(root / "d.npz", x=x, y=y)
    write_idx(root / "t-images-idx3-ubyte.gz", x[:, 0])
    write_idx(root / "t-labels-idx1-ubyte.gz", y.astype(np.uint8))
    save_image_folder(root / "folder", x, y, class_names=["bag", "coat", "shirt"])
    return {"npz": root / "d.npz", "idx": root / "t-images-idx3-ubyte.gz", "folder": root / "folder"}


def read_all(source, rows: int) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    xs, ys, sizes = [], [], []
    for batch in source.batches(rows):
        sizes.append(len(batch))
        xs.append(stack_rows(batch.x, where="test"))
        ys.append(batch.y)
    y = None if any(v is None for v in ys) else np.concatenate(ys)
    return np.concatenate(xs), y, sizes


def test_every_format_gives_the_same_rows_and_labels(tmp_path: Path) -> None:
    x, y = uint8_images()
    paths = write_all_formats(tmp_path, x, y)
    kinds = {name: type(open_data(p)) for name, p in paths.items()}
    assert kinds == {"npz": DataFile, "idx": IdxFiles, "folder": ImageFolder}
    loader = [(FakeTensor(x[a : a + 5]), FakeTensor(y[a : a + 5])) for a in range(0, len(x), 5)]
    sources = [open_data(p, require_labels=True, num_classes=3) for p in paths.values()]
    sources.append(BatchIterable(loader))
    for source in sources:
        got_x, got_y, sizes = read_all(source, 7)
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_array_equal(got_y, y)
        assert sizes == [7, 7, 7, 2], type(source).__name__
    assert open_data(paths["folder"]).class_names == ("bag", "coat", "shirt")
    assert open_data(paths["idx"]).sample_shape == (1, 8, 8) and open_data(paths["idx"]).n == 23


def test_class_names_are_the_sorted_subfolders(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "imgs"
    for cls, names in {"zebra": ["b.png", "a.PNG"], "ant": ["x.jpg"], "mole": ["deep/n.bmp", "notes.txt"]}.items():
        for name in names:
            path = root / cls / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if name.endswith(".txt"):
                path.write_text("not an image")
            else:
                Image.fromarray(np.full((4, 6, 3), 9, np.uint8)).save(path)
    source = ImageFolder(root)
    assert source.class_names == ("ant", "mole", "zebra")
    assert source.relative_names() == ["ant/x.jpg", "mole/deep/n.bmp", "zebra/a.PNG", "zebra/b.png"]
    np.testing.assert_array_equal(source.y, [0, 1, 2, 2])
    frames = next(source.batches(10)).x
    assert [f.shape for f in frames] == [(4, 6, 3)] * 4 and all(f.dtype == np.uint8 for f in frames)


def test_folder_problems_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(BadInputError, match="no image files .* class folders a"):
        ImageFolder(tmp_path / "empty")
    x, y = uint8_images(6)
    save_image_folder(tmp_path / "three", x, y)
    with pytest.raises(BadInputError, match="3 class folders, but the members know 2"):
        open_data(tmp_path / "three", num_classes=2)
    save_image_folder(tmp_path / "flat", x)
    flat = open_data(tmp_path / "flat")
    assert flat.y is None and flat.class_names is None and flat.n == 6
    with pytest.raises(BadInputError, match="no class sub-folders"):
        open_data(tmp_path / "flat", require_labels=True)
    (tmp_path / "flat" / "9.png").write_bytes(b"broken")
    with pytest.raises(BadInputError, match="9.png: not a readable image"):
        list(open_data(tmp_path / "flat").batches(4))
    with pytest.raises(BadInputError, match="no such data file or image folder"):
        open_data(tmp_path / "missing")
    with pytest.raises(BadInputError, match="class_names must be in sorted order.*'0_shirt'"):
        save_image_folder(tmp_path / "unsorted", x, y, class_names=["shirt", "bag", "coat"])
    labels = np.arange(12)
    save_image_folder(tmp_path / "twelve", np.zeros((12, 1, 2, 2), np.uint8), labels)
    twelve = open_data(tmp_path / "twelve")
    assert twelve.class_names[:3] == ("class_00", "class_01", "class_02")
    np.testing.assert_array_equal(twelve.y, labels)  # default names read back with their labels


def test_idx_labels_are_found_beside_the_images(tmp_path: Path) -> None:
    x, y = uint8_images(9)
    write_idx(tmp_path / "a-images-idx3-ubyte", x[:, 0])  # uncompressed
    assert IdxFiles(tmp_path / "a-images-idx3-ubyte").y is None
    with pytest.raises(BadInputError, match="no labels file a-labels-idx1-ubyte"):
        IdxFiles(tmp_path / "a-images-idx3-ubyte", require_labels=True)
    write_idx(tmp_path / "a-labels-idx1-ubyte", y.astype(np.uint8))
    source = open_data(tmp_path / "a-images-idx3-ubyte", require_labels=True)
    np.testing.assert_array_equal(source.y, y)
    with pytest.raises(BadInputError, match="labels file"):
        IdxFiles(tmp_path / "a-labels-idx1-ubyte")
    with pytest.raises(BadInputError, match="does not match"):
        IdxFiles(tmp_path / "a-images-idx3-ubyte", sample_shape=(1, 9, 9))
    key = source.content_key()
    raw = bytearray((tmp_path / "a-images-idx3-ubyte").read_bytes())
    raw[-1] ^= 1
    (tmp_path / "a-images-idx3-ubyte").write_bytes(bytes(raw))
    assert IdxFiles(tmp_path / "a-images-idx3-ubyte").content_key() != key
    with gzip.open(tmp_path / "t-images-idx3-ubyte.gz", "wb") as fh:  # truncated body
        fh.write(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big") + (2).to_bytes(4, "big") * 2 + b"\0" * 7)
    with pytest.raises(BadInputError, match="truncated"):
        list(IdxFiles(tmp_path / "t-images-idx3-ubyte.gz").batches(4))


def test_content_keys_follow_the_bytes(tmp_path: Path) -> None:
    x, y = uint8_images(8)
    save_image_folder(tmp_path / "f", x, y)
    before = ImageFolder(tmp_path / "f").content_key()
    assert before.startswith("folder:") and ImageFolder(tmp_path / "f").content_key() == before
    first = ImageFolder(tmp_path / "f").files[0]
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(first)
    assert ImageFolder(tmp_path / "f").content_key() != before
    assert BatchIterable([x]).content_key() is None and BatchIterable([x], key="k").content_key() == "k"


def test_folders_decode_only_the_chunk_being_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wcx.data.image_folder as image_folder

    x, y = uint8_images(20)
    save_image_folder(tmp_path / "f", x, y)
    decoded: list[Path] = []
    original = image_folder.read_image
    monkeypatch.setattr(image_folder, "read_image", lambda p: decoded.append(p) or original(p))
    batches = ImageFolder(tmp_path / "f").batches(4)
    assert decoded == []  # opening reads no image
    next(batches)
    assert len(decoded) == 4
    np.testing.assert_array_equal(read_rows(ImageFolder(tmp_path / "f"), 6), x[:6])
    assert len(decoded) == 4 + 6  # read_rows stops after the rows it needs


def test_duck_typed_batches(tmp_path: Path) -> None:
    x, y = uint8_images(10)
    pairs = [[FakeTensor(x[:4]), FakeTensor(y[:4])], (x[4:], None)]
    with pytest.raises(BadInputError, match="some batches have labels and others not"):
        list(BatchIterable(pairs).batches(8))
    bare = BatchIterable([FakeTensor(x[:3]), x[3:]])
    got, labels, _ = read_all(bare, 4)
    np.testing.assert_array_equal(got, x)
    assert labels is None
    frames = BatchIterable([([np.zeros((5, 7, 3), np.uint8), np.zeros((2, 2), np.uint8)], np.array([0, 1]))])
    (batch,) = list(frames.batches(8))
    assert isinstance(batch.x, list) and [f.shape for f in batch.x] == [(5, 7, 3), (2, 2)]
    with pytest.raises(BadInputError, match="dtype float64"):
        list(BatchIterable([np.zeros((2, 1, 8, 8))]).batches(2))
    with pytest.raises(BadInputError, match="no rows"):
        list(BatchIterable([]).batches(2))
    once = BatchIterable(iter([x]))
    list(once.batches(4))
    with pytest.raises(UsageError, match="read only once"):
        once.batches(4)
    again = BatchIterable([x])  # a list can be read again
    assert len(list(again.batches(4))) == len(list(again.batches(4))) == 3
    assert as_source(x).n == 10 and as_source(x).sample_shape == (1, 8, 8)
    np.savez(tmp_path / "f.npz", x=x)
    assert isinstance(as_source(tmp_path / "f.npz"), DataFile)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=12), st.integers(1, 10))
def test_rechunk_keeps_rows_in_order_in_chunks_of_the_size_asked(sizes: list[int], rows: int) -> None:
    total = sum(sizes)
    x = np.arange(total, dtype=np.uint8).reshape(total, 1, 1, 1)
    bounds = np.cumsum([0, *sizes])
    batches = [Batch(x[a:b], np.arange(a, b), start=a) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    out = list(rechunk(batches, rows))
    assert all(len(b) == rows for b in out[:-1]) and 1 <= len(out[-1]) <= rows
    assert [b.start for b in out] == list(range(0, total, rows))
    np.testing.assert_array_equal(np.concatenate([b.x for b in out]), x)
    np.testing.assert_array_equal(np.concatenate([b.y for b in out]), np.arange(total))


def test_a_sample_spans_a_class_sorted_folder_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sample_dataset`` keeps a seeded uniform sample of rows in their order (not the first
    rows, which in a folder are one class), the same from every format, reading small chunks."""
    import wcx.data.source as source_module

    monkeypatch.setattr(source_module, "SAMPLE_CHUNK_ROWS", 4)  # several chunks for 23 rows
    x, y = uint8_images(23)
    paths = write_all_formats(tmp_path, x, y)
    samples = {kind: sample_dataset(open_data(path), 9, seed=5) for kind, path in paths.items()}
    chosen = np.sort(np.random.default_rng(5).choice(23, size=9, replace=False))
    for kind, ds in samples.items():
        np.testing.assert_array_equal(ds.x, x[chosen], err_msg=kind)
        np.testing.assert_array_equal(ds.y, y[chosen], err_msg=kind)
    assert len(set(samples["folder"].y.tolist())) == 3  # every class, though the folder is sorted by class
    whole = sample_dataset(open_data(paths["idx"]), 100)
    np.testing.assert_array_equal(whole.x, x)  # fewer rows than asked: all of them
