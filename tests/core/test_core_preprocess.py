"""Preprocessing (wcx.core.preprocess): what the input section says, on numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest

from wcx.core.manifest import InputSection
from wcx.core.preprocess import Preprocessor
from wcx.errors import BadInputError


def section(mean: tuple[float, ...], std: tuple[float, ...], channels: int = 1, **kw: object) -> InputSection:
    return InputSection(name="input", shape=(channels, 3, 3), mean=mean, std=std, **kw)  # type: ignore[arg-type]


def test_preprocess_uint8_and_float() -> None:
    p = Preprocessor(section((0.5, 0.25), (0.5, 0.25), channels=2))
    u = np.full((2, 2, 3, 3), 255, dtype=np.uint8)
    f = np.ones((2, 2, 3, 3), dtype=np.float32)
    np.testing.assert_array_equal(p(u), p(f))
    out = p(f)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out[:, 0], 1.0)
    np.testing.assert_allclose(out[:, 1], 3.0)
    assert f[0, 0, 0, 0] == 1.0  # the input is not modified


def test_one_value_serves_every_channel() -> None:
    p = Preprocessor(section((0.5,), (0.5,), channels=3))
    np.testing.assert_allclose(p(np.ones((1, 3, 3, 3), np.float32)), 1.0)


def test_value_range_scales_uint8() -> None:
    p = Preprocessor(section((0.0,), (1.0,), value_range=(-1.0, 1.0)))
    out = p(np.array([0, 255], dtype=np.uint8).repeat(9).reshape(2, 1, 3, 3))
    np.testing.assert_allclose(out[:, 0, 0, 0], [-1.0, 1.0])


def test_torch_matches_numpy() -> None:
    torch = pytest.importorskip("torch")
    p = Preprocessor(section((0.3,), (0.2,)))
    x = np.random.default_rng(0).integers(0, 256, (4, 1, 3, 3)).astype(np.uint8)
    np.testing.assert_array_equal(p(torch.from_numpy(x)).numpy(), p(x))
    half = p(torch.from_numpy(x), dtype=torch.float16)
    assert half.dtype == torch.float16


def test_refuses_bad_settings_and_inputs() -> None:
    with pytest.raises(BadInputError, match="std"):
        section((0.5,), (0.0,))
    with pytest.raises(BadInputError, match="one per channel"):
        section((0.5, 0.5, 0.5), (0.2, 0.2, 0.2), channels=2)
    with pytest.raises(BadInputError, match="expected"):
        Preprocessor(section((0.5,), (0.2,)))(np.zeros((1, 3, 2, 2), np.float32))
