"""Networks: shapes, SE blocks from MONAI, slice-wise 2D wrapper, config checks."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from monai.networks.blocks import ChannelSELayer, ResidualSELayer

from medpipe.core.errors import ConfigError
from medpipe.segment.model import build_network, check_patch_size

BASE: dict[str, Any] = {
    "architecture": "unet3d",
    "channels": [4, 8, 16],
    "strides": [2, 2],
    "num_res_units": 1,
    "squeeze_excitation": True,
}


def test_unet3d_with_se_and_deep_supervision() -> None:
    net = build_network({**BASE, "deep_supervision": 1}, 2, 3)
    assert sum(isinstance(m, ChannelSELayer) for m in net.modules()) == 5  # input, down, bottleneck, 2 up
    net.train()
    assert net(torch.zeros(1, 2, 16, 16, 16)).shape == (1, 2, 3, 16, 16, 16)
    net.eval()
    assert net(torch.zeros(1, 2, 16, 16, 16)).shape == (1, 3, 16, 16, 16)


def test_residual_se_and_plain() -> None:
    net = build_network({**BASE, "squeeze_excitation": "residual"}, 1, 2)
    assert any(isinstance(m, ResidualSELayer) for m in net.modules())
    plain = build_network({**BASE, "squeeze_excitation": False}, 1, 2)
    assert not any(isinstance(m, ChannelSELayer) for m in plain.modules())


def test_unet2d_is_slice_wise() -> None:
    torch.manual_seed(0)
    net = build_network({**BASE, "architecture": "unet2d"}, 1, 2).eval()
    x = torch.randn(1, 1, 16, 16, 5)
    with torch.no_grad():
        out = net(x)
        single = net(x[..., 2:3])
    assert out.shape == (1, 2, 16, 16, 5)
    torch.testing.assert_close(out[..., 2:3], single)  # each slice is segmented on its own


@pytest.mark.parametrize(
    "bad",
    [{"architecture": "vnet"}, {"strides": [2]}, {"squeeze_excitation": "yes"}, {"deep_supervision": 3}],
)
def test_bad_model_settings(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        build_network({**BASE, **bad}, 1, 2)


def test_patch_size_must_fit_strides() -> None:
    check_patch_size(BASE, [16, 20, 8])
    check_patch_size({**BASE, "architecture": "unet2d"}, [16, 20, 3])
    with pytest.raises(ConfigError, match="multiples"):
        check_patch_size(BASE, [16, 18, 8])
