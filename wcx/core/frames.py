"""Raw frames (H x W x C uint8 images of any size) turned into a member's (N, C, H, W) uint8 input.

A *frame* is one image as a camera or an image file gives it: a numpy array (or anything with
``__array__``, e.g. a Pillow image) of uint8, shaped (H, W) or (H, W, C) with C = 1 (grey),
3 (RGB) or 4 (RGBA). A member whose input section resizes or crops
(:class:`~wcx.core.manifest.Resize`, :class:`~wcx.core.manifest.CenterCrop`) takes frames of any
size; each frame is, in this order,

1. brought to the member's channel count C: grey to RGB by repeating it, RGB to grey by
   ITU-R 601-2 luma (Pillow's ``convert("L")``, what torchvision's ``Grayscale`` does on images),
   an alpha channel dropped, or added as 255;
2. resized with the section's interpolation by the section's implementation (Pillow: what
   torchvision's ``Resize`` does on Pillow images);
3. center-cropped to the member's (H, W), padded with zeros first where it is smaller (as
   torchvision's ``CenterCrop``);

and laid out as (C, H, W). The scaling to the value range and the mean/std come after, in
:class:`wcx.core.preprocess.Preprocessor`, as for any uint8 batch. A member without resize or
crop takes frames of exactly its (H, W): only step 1 and the layout apply.

>>> from wcx.core.manifest import CenterCrop, InputSection, Resize
>>> section = InputSection(name="x", shape=(3, 4, 4), mean=(0.0,), std=(1.0,),
...                        resize=Resize(shorter_side=4), crop=CenterCrop((4, 4)))
>>> frames_to_input(section, [np.zeros((6, 9, 3), np.uint8)]).shape
(1, 3, 4, 4)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from wcx.core.manifest import CenterCrop, InputSection, Resize
from wcx.errors import BadInputError

#: channel counts a frame may have (grey, RGB, RGBA)
FRAME_CHANNELS: tuple[int, ...] = (1, 3, 4)
#: channel orders a caller's frames may be in (OpenCV's frames are BGR)
CHANNEL_ORDERS: tuple[str, ...] = ("RGB", "BGR")
_PILLOW_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def check_frame(frame: Any, *, where: str = "frame", channel_order: str = "RGB") -> np.ndarray:
    """One frame as a C-ordered (H, W, C) uint8 array (a 2-D frame gets C = 1; a BGR one is
    turned into RGB); ``BadInputError`` naming ``where`` for anything else."""
    if channel_order not in CHANNEL_ORDERS:
        raise BadInputError(f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}, got {channel_order!r}")
    try:
        array = np.asarray(frame)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"{where}: not an image array ({exc})") from None
    if array.dtype != np.uint8:
        raise BadInputError(f"{where}: frames must be uint8 images (H, W, C), got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in FRAME_CHANNELS or min(array.shape[:2]) < 1:
        raise BadInputError(f"{where}: a frame must be (H, W) or (H, W, C) with C in "
                            f"{', '.join(map(str, FRAME_CHANNELS))}, got shape {tuple(array.shape)}")
    if channel_order == "BGR" and array.shape[2] >= 3:
        array = np.concatenate([array[:, :, 2::-1], array[:, :, 3:]], axis=2)
    out: np.ndarray = np.ascontiguousarray(array)
    return out


def frames_of(x: np.ndarray) -> np.ndarray:
    """A batch (N, C, H, W) seen as N frames (N, H, W, C) (a view, no copy)."""
    frames: np.ndarray = x.transpose(0, 2, 3, 1)
    return frames


def frames_to_input(
    section: InputSection,
    frames: Iterable[Any],
    *,
    where: str = "input",
    names: Sequence[str] | None = None,
    channel_order: str = "RGB",
) -> np.ndarray:
    """``frames`` prepared for a member of ``section``: (N, C, H, W) uint8 (module docstring).

    ``names`` (one per frame, e.g. file paths) name a bad frame in the error; otherwise it is
    ``where`` and the frame's index. A member without resize/crop refuses frames of another
    (H, W) than its own."""
    channels, height, width = (int(d) for d in section.shape)
    rows = []
    for i, frame in enumerate(frames):
        label = names[i] if names is not None else f"{where} frame {i}"
        image = check_frame(frame, where=label, channel_order=channel_order)
        if not section.prepares_frames and image.shape[:2] != (height, width):
            raise BadInputError(f"{label}: a frame of {image.shape[0]}x{image.shape[1]} pixels, but the member takes "
                                f"{height}x{width} and its input section has no resize or crop (export with a resize "
                                "to take frames of any size)")
        image = _to_channels(image, channels, where=label)
        if section.resize is not None:
            image = _resize(image, section.resize)
        if section.crop is not None:
            image = center_crop(image, section.crop)
        rows.append(image.transpose(2, 0, 1))
    if not rows:
        raise BadInputError(f"{where}: no frames")
    return np.ascontiguousarray(np.stack(rows))


def _to_channels(image: np.ndarray, channels: int, *, where: str) -> np.ndarray:
    have = int(image.shape[2])
    if have == channels:
        return image
    if channels == 1:
        from PIL import Image

        rgb = np.ascontiguousarray(image[:, :, :3])
        grey = np.asarray(Image.fromarray(rgb, "RGB").convert("L"))
        return grey[:, :, None]
    if channels == 3:
        return np.ascontiguousarray(np.repeat(image, 3, axis=2) if have == 1 else image[:, :, :3])
    if channels == 4:
        rgb = np.repeat(image, 3, axis=2) if have == 1 else image
        return np.concatenate([rgb, np.full((*image.shape[:2], 1), 255, np.uint8)], axis=2)
    raise BadInputError(f"{where}: a frame with {have} channels cannot feed a member that takes {channels}")


def _resize(image: np.ndarray, resize: Resize) -> np.ndarray:
    height, width = resize.output_size(int(image.shape[0]), int(image.shape[1]))
    if resize.implementation != "pillow":  # the manifest admits no other; a new one is added here
        raise BadInputError(f"resize implementation {resize.implementation!r} is not available")
    from PIL import Image

    filters = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
               "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
               "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
    channels = int(image.shape[2])
    mode = _PILLOW_MODES.get(channels)
    if mode is None:  # no Pillow mode holds these channels: resample each alone
        return np.stack([_resize(image[:, :, c : c + 1], resize)[:, :, 0] for c in range(channels)], axis=2)
    pil = Image.fromarray(image[:, :, 0] if channels == 1 else image, mode)
    out = np.asarray(pil.resize((width, height), filters[resize.interpolation]))
    return out[:, :, None] if out.ndim == 2 else out


def center_crop(image: np.ndarray, crop: CenterCrop) -> np.ndarray:
    """The centre ``crop.size`` of an (H, W, C) image, zero-padded first where it is smaller,
    with torchvision's ``CenterCrop`` offsets (``round`` halves to even)."""
    crop_h, crop_w = crop.size
    h, w = int(image.shape[0]), int(image.shape[1])
    if crop_h > h or crop_w > w:
        top = (crop_h - h) // 2 if crop_h > h else 0
        left = (crop_w - w) // 2 if crop_w > w else 0
        bottom = (crop_h - h + 1) // 2 if crop_h > h else 0
        right = (crop_w - w + 1) // 2 if crop_w > w else 0
        image = np.pad(image, ((top, bottom), (left, right), (0, 0)))
        h, w = int(image.shape[0]), int(image.shape[1])
    top = int(round((h - crop_h) / 2.0))
    left = int(round((w - crop_w) / 2.0))
    return image[top : top + crop_h, left : left + crop_w]
