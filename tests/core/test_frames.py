"""Raw frames into a member's input (wcx.core.frames) and the input sections that resize or crop:
every step matches a direct Pillow computation with torchvision's conventions; sections without
a resize are written and compared exactly as before."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from wcx.core.frames import center_crop, check_frame, frames_to_input
from wcx.core.manifest import CenterCrop, InputSection, Manifest, Resize
from wcx.core.preprocess import MemberInputs, Preprocessor
from wcx.errors import BadInputError

FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
           "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def section(channels: int = 3, size: int = 8, **kw) -> InputSection:
    return InputSection(name="x", shape=(channels, size, size), mean=(0.5,) * channels, std=(0.25,) * channels, **kw)


def pillow_reference(frame: np.ndarray, shorter: int, crop: int, interpolation: str) -> np.ndarray:
    """torchvision's Resize(shorter) + CenterCrop(crop) on a Pillow image, written out."""
    image = Image.fromarray(frame)
    w, h = image.size
    size = (shorter, int(shorter * h / w)) if w <= h else (int(shorter * w / h), shorter)
    image = image.resize(size, FILTERS[interpolation])
    w, h = image.size
    left, top = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
    out = np.asarray(image.crop((left, top, left + crop, top + crop)))
    return out if out.ndim == 3 else out[:, :, None]


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 70), st.integers(3, 70), st.sampled_from(sorted(FILTERS)), st.sampled_from([1, 3]))
def test_resize_and_crop_match_pillow(h: int, w: int, interpolation: str, channels: int) -> None:
    rng = np.random.default_rng(h * 100 + w)
    frame = rng.integers(0, 256, (h, w, channels) if channels == 3 else (h, w), dtype=np.uint8)
    s = section(channels, 8, resize=Resize(shorter_side=9, interpolation=interpolation), crop=CenterCrop((8, 8)))
    got = frames_to_input(s, [frame])[0]
    expected = pillow_reference(frame, 9, 8, interpolation).transpose(2, 0, 1)
    np.testing.assert_array_equal(got, expected)


def test_exact_resize_and_padding_crop() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (5, 11, 3), dtype=np.uint8)
    exact = frames_to_input(section(size=6, resize=Resize(size=(6, 6), interpolation="bicubic")), [frame])[0]
    np.testing.assert_array_equal(exact, np.asarray(Image.fromarray(frame).resize((6, 6), Image.BICUBIC))
                                  .transpose(2, 0, 1))
    # a frame smaller than the crop is padded with zeros, evenly (torchvision's CenterCrop)
    padded = center_crop(np.ones((3, 4, 1), np.uint8), CenterCrop((6, 7)))
    assert padded.shape == (6, 7, 1)
    rows, cols = np.nonzero(padded[:, :, 0])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (1, 3, 1, 4)
    # odd offsets round half to even, as torchvision's int(round(...))
    assert center_crop(np.arange(5)[None, :, None], CenterCrop((1, 2)))[0, :, 0].tolist() == [2, 3]


def test_channel_conversion_matches_pillow() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    plain_grey = section(1, 4)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(frames_to_input(plain_grey, [rgb])[0, 0], luma)
    rgba = np.concatenate([rgb, np.full((4, 4, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(frames_to_input(section(3, 4), [rgba])[0], rgb.transpose(2, 0, 1))
    grey = rgb[:, :, 0]
    np.testing.assert_array_equal(frames_to_input(section(3, 4), [grey])[0], np.stack([grey] * 3))
    bgr = rgb[:, :, ::-1]
    np.testing.assert_array_equal(check_frame(bgr, channel_order="BGR"), rgb)


def test_bad_frames_are_refused() -> None:
    s = section(1, 4)
    with pytest.raises(BadInputError, match="frame 0: frames must be uint8"):
        frames_to_input(s, [np.zeros((4, 4), np.float32)])
    with pytest.raises(BadInputError, match="C in 1, 3, 4"):
        frames_to_input(s, [np.zeros((4, 4, 2), np.uint8)])
    with pytest.raises(BadInputError, match="cam.png: a frame of 5x4 pixels, but the member takes 4x4 .* no resize"):
        frames_to_input(s, [np.zeros((5, 4), np.uint8)], names=["cam.png"])
    with pytest.raises(BadInputError, match="no frames"):
        frames_to_input(s, [])


def test_sections_that_resize_validate_and_round_trip() -> None:
    s = section(resize=Resize(shorter_side=10, interpolation="lanczos"), crop=CenterCrop((8, 8)))
    assert s.prepares_frames and InputSection.from_dict(s.to_dict(), where="t") == s
    assert s.preprocessing()["resize"] == {"size": None, "shorter_side": 10, "interpolation": "lanczos",
                                           "implementation": "pillow"}
    with pytest.raises(BadInputError, match="crop size \\[7, 7\\] is not the input's"):
        section(crop=CenterCrop((7, 7)))
    with pytest.raises(BadInputError, match="shorter-side resize needs a crop"):
        section(resize=Resize(shorter_side=8))
    with pytest.raises(BadInputError, match="already-normalised"):
        InputSection(name="x", shape=(1, 8, 8), mean=(0.0,), std=(1.0,), normalized=True, value_range=(-1, 1),
                     crop=CenterCrop((8, 8)))
    with pytest.raises(BadInputError, match="interpolation 'cubic'"):
        Resize(size=(8, 8), interpolation="cubic")
    with pytest.raises(BadInputError, match="implementation 'opencv'"):
        InputSection.from_dict({**s.to_dict(), "resize": {"size": [8, 8], "implementation": "opencv"}}, where="t")


def test_sections_without_resize_are_what_they_were() -> None:
    old = {"name": "input", "dtype": "float32", "layout": "NCHW", "shape": [1, 8, 8], "value_range": [0.0, 1.0],
           "normalized": False, "mean": [0.5], "std": [0.25], "resize": None, "crop": None}
    s = InputSection.from_dict(old, where="t")
    assert s.to_dict() == old and not s.prepares_frames
    assert s.preprocessing() == {k: v for k, v in old.items() if k not in ("name", "dtype")}
    x = np.random.default_rng(2).integers(0, 256, (3, 1, 8, 8), dtype=np.uint8)
    (shared, other) = MemberInputs([s, s])(x)
    assert shared is other  # one preprocessing for members that share a section
    np.testing.assert_array_equal(shared, Preprocessor(s)(x))


def test_member_inputs_prepare_each_resolution_from_the_same_frames() -> None:
    small = section(1, 8, resize=Resize(shorter_side=8), crop=CenterCrop((8, 8)))
    large = section(1, 12, resize=Resize(shorter_side=12), crop=CenterCrop((12, 12)))
    frames = np.random.default_rng(3).integers(0, 256, (2, 1, 20, 30), dtype=np.uint8)
    a, b, c = MemberInputs([small, large, small])(frames)
    assert a.shape == (2, 1, 8, 8) and b.shape == (2, 1, 12, 12) and a is c
    np.testing.assert_array_equal(b, Preprocessor(large).frames([f.transpose(1, 2, 0) for f in frames]))
    with pytest.raises(BadInputError, match="frames must be uint8"):
        MemberInputs([small, large])(frames.astype(np.float32) / 255)


def test_members_at_different_resolutions_need_frames(mlp_bundle) -> None:
    d = mlp_bundle.manifest.to_dict()
    d["members"][1]["input"]["shape"] = [1, 12, 12]
    with pytest.raises(BadInputError, match="different input shapes .* unless every member resizes"):
        Manifest.from_dict(d)
    for i, size in ((0, 8), (1, 12)):
        d["members"][i]["input"]["resize"] = {"shorter_side": size + 2}
        d["members"][i]["input"]["crop"] = {"size": [size, size]}
    m = Manifest.from_dict(d)
    assert m.takes_frames and m.members[1].sample_shape == (1, 12, 12)
    assert not mlp_bundle.manifest.takes_frames
