"""Networks: shapes, SE blocks from MONAI, slice-wise 2D wrapper, config checks."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from monai.networks.blocks import ChannelSELayer, ResidualSELayer

from medpipe.core.errors import ConfigError
from medpipe.segment.data import augmentations
from medpipe.segment.model import build_network, check_patch_size, divisor
from medpipe.segment.settings import resolve_settings

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


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_unet2d_is_slice_wise_along_its_slice_axis(axis: int) -> None:
    """Each slice across ``slice_axis`` is the 2D network applied to that slice; slices do not mix."""
    torch.manual_seed(0)
    net = build_network({**BASE, "architecture": "unet2d", "slice_axis": axis}, 1, 2).eval()
    shape = [16, 12, 8]
    shape[axis] = 5
    x = torch.randn(1, 1, *shape)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (1, 2, *shape)
        for i in range(5):
            torch.testing.assert_close(out.select(2 + axis, i), net.net(x.select(2 + axis, i)))
        bumped = x.clone()
        bumped.select(2 + axis, 3).add_(torch.randn(bumped.select(2 + axis, 3).shape))
        diff = (net(bumped) - out).abs().amax(dim=[d for d in range(5) if d != 2 + axis])
    assert diff[3] > 1e-3 and torch.all(diff[[0, 1, 2, 4]] == 0)  # only the perturbed slice changes


def test_unet2d_slice_axis_with_deep_supervision_keeps_the_heads() -> None:
    net = build_network({**BASE, "architecture": "unet2d", "slice_axis": 0, "deep_supervision": 1}, 1, 2).train()
    assert net(torch.zeros(2, 1, 3, 16, 8)).shape == (2, 2, 2, 3, 16, 8)


def test_patch_divisor_is_one_on_the_slice_axis() -> None:
    assert divisor({**BASE, "architecture": "unet2d"}) == [4, 4, 1]
    assert divisor({**BASE, "architecture": "unet2d", "slice_axis": 0}) == [1, 4, 4]
    assert divisor({**BASE, "architecture": "unet2d", "slice_axis": 1}) == [4, 1, 4]
    assert divisor({**BASE, "slice_axis": 0}) == [4, 4, 4]  # unet3d ignores it
    check_patch_size({**BASE, "architecture": "unet2d", "slice_axis": 0}, [1, 16, 20])
    with pytest.raises(ConfigError, match="axis 2"):
        check_patch_size({**BASE, "architecture": "unet2d", "slice_axis": 0}, [1, 16, 3])


def test_slice_axis_must_be_0_1_or_2() -> None:
    assert resolve_settings(None)["model"]["slice_axis"] == 2
    with pytest.raises(ConfigError, match="slice_axis"):
        resolve_settings({"model": {"architecture": "unet2d", "slice_axis": 3}})
    with pytest.raises(ConfigError, match="slice_axis = 3"):
        build_network({**BASE, "architecture": "unet2d", "slice_axis": 3}, 1, 2)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_wise_augmentation_keeps_each_slice_in_its_plane(axis: int) -> None:
    """Rotation, scaling and blur of a 2D net's patches act within the slices: a volume that is constant on each
    slice (a different value per slice) stays so away from the in-plane border, where the blur pads with zeros;
    a rotation or blur across the slices would blend neighbouring values."""
    aug = {"affine": 1.0, "rotate_deg": 30.0, "scale": 0.2, "blur": 1.0, "elastic": 1.0}
    shape = [12, 12, 12]
    values = torch.rand(12, generator=torch.Generator().manual_seed(0)) * 10
    per_slice = values.reshape([12 if a == axis else 1 for a in range(3)]).expand(*shape)
    inner = tuple(slice(None) if a == axis else slice(4, 8) for a in range(3))
    data = {"image": per_slice[None].clone(), "label": (per_slice > 5).to(torch.uint8)[None]}
    for seed in range(3):
        out = data
        for t in augmentations(aug, ["image", "label"], slice_wise=True, patch_size=shape, slice_axis=axis):
            t.set_random_state(seed)
            out = t(out)
        got = torch.as_tensor(out["image"])[0]
        torch.testing.assert_close(got[inner], per_slice[inner], atol=1e-2, rtol=1e-3)
        assert not torch.allclose(got, per_slice, atol=1e-2)  # the blur did run (in-plane border)
    out = data
    for t in augmentations(aug, ["image", "label"], slice_wise=False, patch_size=shape):
        t.set_random_state(0)
        out = t(out)
    assert not torch.allclose(torch.as_tensor(out["image"])[0][inner], per_slice[inner], atol=1e-2)  # 3D mixes
