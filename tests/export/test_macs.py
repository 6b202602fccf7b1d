"""MACs from the ONNX graph against torch's FlopCounterMode (FLOPs / 2) on the same model."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tests.bundle_factory import make_mlp_onnx
from tests.export import models as M
from wcx.export import macs as macs_module
from wcx.export.macs import count_macs
from wcx.export.onnx_export import export_onnx


class OddOps(nn.Module):
    """Grouped and strided convs, a ConvTranspose and a Linear on a 3-D tensor (MatMul)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3, stride=2, padding=1, groups=2)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.mix = nn.Linear(16, 5)  # over the last dimension of (N, 4, 16)
        self.head = nn.Linear(4 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(torch.relu(self.conv(x)))  # (N, 4, 8, 8)
        h = self.mix(h.mean(dim=2).reshape(x.shape[0], 4, 8).repeat(1, 1, 2))  # (N, 4, 5)
        return self.head(h.flatten(1))


def _torch_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *shape))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize(
    ("factory", "shape"),
    [(M.small_cnn, M.INPUT_SHAPE), (M.wide_cnn, M.INPUT_SHAPE), (lambda: OddOps().eval(), (2, 8, 8))],
)
def test_macs_match_flop_counter(tmp_path: Path, factory, shape) -> None:
    model = factory()
    path = tmp_path / "m.onnx"
    export_onnx(model, path, sample_shape=shape)
    count = count_macs(path)
    assert count.uncounted == []
    assert count.total == _torch_macs(model, shape)


def test_odd_ops_are_all_counted(tmp_path: Path) -> None:
    path = tmp_path / "odd.onnx"
    export_onnx(OddOps().eval(), path, sample_shape=(2, 8, 8))
    by_op = count_macs(path).by_op
    assert set(by_op) >= {"Conv", "ConvTranspose"} and ("MatMul" in by_op or "Gemm" in by_op)


def test_mlp_by_hand(tmp_path: Path) -> None:
    path = make_mlp_onnx(tmp_path / "mlp.onnx", sample_shape=(1, 8, 8), hidden=16, num_classes=4)
    assert count_macs(path).total == 64 * 16 + 16 * 4


def test_reduced_precision_graphs_count_the_same(fp16_bundle, int8_bundle, fp32_mixed) -> None:
    fp32 = fp32_mixed.bundle.members[0]
    assert fp32.macs == count_macs(fp32_mixed.bundle.member_path(0)).total
    assert count_macs(fp16_bundle.bundle.member_path(0)).total == fp32.macs
    assert count_macs(int8_bundle.bundle.member_path(0)).total == fp32.macs
    assert int8_bundle.bundle.members[0].macs == fp32.macs


def test_doctests() -> None:
    assert doctest.testmod(macs_module).failed == 0
