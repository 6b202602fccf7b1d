"""A folder of image files as a :class:`~wcx.data.source.DataSource` (torchvision's ImageFolder layout).

::

    root/
      bag/0001.png        class "bag"   -> label 0
      coat/0002.jpg       class "coat"  -> label 1
      ...

Classes are the sub-folders of ``root`` in sorted order, label i for the i-th, and the images
of each class are found by walking its folder (links followed) in sorted order, keeping the
files whose extension is one of :data:`IMAGE_EXTENSIONS` (case-insensitive): the rows and labels
torchvision's ``ImageFolder`` gives. A folder without sub-folders is a set of unlabelled images
(its own files, sorted). Images are decoded with Pillow as they are read, a chunk of rows at a
time, into frames ((H, W, C) uint8, :mod:`wcx.core.frames`): grey ("L", "1", "LA") becomes one
channel, RGB and RGBA stay, every other mode becomes RGB. They may differ in size; a bundle
whose members resize takes them as they are, others need every image at their (H, W).
:meth:`ImageFolder.content_key` hashes every file's bytes with its path and label.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from wcx.data.source import Batch, DataSource, check_rows
from wcx.errors import BadInputError

#: extensions read as images (torchvision's IMG_EXTENSIONS)
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_GREY_MODES = ("L", "1", "LA")
_KEPT_MODES = ("L", "RGB", "RGBA")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def find_classes(root: Path) -> list[str]:
    """The class names of an image folder: its sub-folders, sorted."""
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())


def _images_under(folder: Path) -> list[Path]:
    found: list[Path] = []
    for base, _, names in sorted(os.walk(folder, followlinks=True)):
        found.extend(Path(base) / name for name in sorted(names) if _is_image(name))
    return found


def read_image(path: Path) -> np.ndarray:
    """One image file as an (H, W, C) uint8 frame (module docstring for the modes)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode not in _KEPT_MODES:
                image = image.convert("L" if image.mode in _GREY_MODES else "RGB")
            array = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise BadInputError(f"{path}: not a readable image ({exc})") from None
    return array[:, :, None] if array.ndim == 2 else array


class ImageFolder(DataSource):
    """The images under ``root`` (module docstring): labelled by class sub-folder, or unlabelled.

    ``num_classes`` refuses a folder with more classes than a bundle's members know.
    """

    yields_frames = True

    def __init__(self, root: str | Path, *, require_labels: bool = False, num_classes: int | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise BadInputError(f"{root}: no such image folder")
        self.path = root
        self.name = str(root)
        classes = find_classes(root)
        files: list[Path] = []
        labels: list[int] = []
        if classes:
            empty = []
            for index, name in enumerate(classes):
                found = _images_under(root / name)
                if not found:
                    empty.append(name)
                files.extend(found)
                labels.extend([index] * len(found))
            if empty:
                raise BadInputError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in the class folders "
                                    f"{', '.join(empty)}")
            if num_classes is not None and len(classes) > num_classes:
                raise BadInputError(f"{root}: {len(classes)} class folders, but the members know {num_classes} "
                                    "classes")
            self.class_names: tuple[str, ...] | None = tuple(classes)
            self.y: np.ndarray | None = np.asarray(labels, dtype=np.int64)
        else:
            files = sorted(p for p in root.iterdir() if p.is_file() and _is_image(p.name))
            if not files:
                raise BadInputError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) and no class folders")
            if require_labels:
                raise BadInputError(f"{root}: labels are required here, but the folder has no class sub-folders "
                                    "(root/CLASS/IMAGE)")
            self.class_names = None
            self.y = None
        self.files: tuple[Path, ...] = tuple(files)

    @property
    def n(self) -> int:
        return len(self.files)

    def relative_names(self) -> list[str]:
        """Each row's file, relative to the folder (POSIX separators)."""
        assert self.path is not None
        return [f.relative_to(self.path).as_posix() for f in self.files]

    def batches(self, rows: int) -> Iterator[Batch]:
        rows = check_rows(rows)
        for a in range(0, self.n, rows):
            paths = self.files[a : a + rows]
            frames = [read_image(p) for p in paths]
            yield Batch(frames, None if self.y is None else self.y[a : a + len(paths)],
                        tuple(str(p) for p in paths), a)

    def content_key(self) -> str:
        """``folder:`` and a sha256 over the class names and, per image, its relative path,
        label and bytes (every file is read once)."""
        digest = hashlib.sha256(b"wcx image folder 1\0")
        digest.update("\0".join(self.class_names or ()).encode("utf-8") + b"\0\0")
        labels = self.y if self.y is not None else np.full(self.n, -1)
        for rel, path, label in zip(self.relative_names(), self.files, labels, strict=True):
            digest.update(f"{rel}\0{int(label)}\0{path.stat().st_size}\0".encode())
            with open(path, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):  # type: ignore[misc]
                    digest.update(block)
        return "folder:" + digest.hexdigest()


def save_image_folder(root: str | Path, x: np.ndarray, y: np.ndarray | None = None, *,
                      class_names: Sequence[str] | None = None, extension: str = ".png") -> Path:
    """Write ``x`` (N, C, H, W) uint8 as one image file per row under a new folder ``root``:
    in class folders (``class_names[y]``, which must be in sorted order; default ``class_0``...)
    when ``y`` is given, else directly. Files are named by row number, so the folder reads back in row order within each
    class (rows grouped by class, as :class:`ImageFolder` orders them; a class without rows has
    no folder). The folder appears complete or not at all (written beside it, then renamed)."""
    from PIL import Image

    root = Path(root)
    if root.exists():
        raise BadInputError(f"{root}: already exists")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3, 4):
        raise BadInputError(f"x: expected uint8 (N, C, H, W) with C in 1, 3, 4, got {x.dtype} {x.shape}")
    if y is not None and class_names is None:
        count = int(y.max()) + 1
        class_names = [f"class_{i:0{len(str(count - 1))}d}" for i in range(count)]
    if class_names is not None and list(class_names) != sorted(class_names):
        # a reader labels the sub-folders in sorted order: any other order would relabel the rows
        raise BadInputError(f"class_names must be in sorted order, as an image folder's labels are its sorted "
                            f"sub-folders (prefix each name with its label, e.g. '0_{class_names[0]}'): got "
                            f"{list(class_names)}")
    staging = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        width = len(str(max(len(x) - 1, 0)))
        for i, row in enumerate(x):
            folder = staging if y is None or class_names is None else staging / class_names[int(y[i])]
            folder.mkdir(exist_ok=True)
            image = row[0] if row.shape[0] == 1 else row.transpose(1, 2, 0)
            Image.fromarray(np.ascontiguousarray(image)).save(folder / f"{i:0{width}d}{extension}")
        os.rename(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root
