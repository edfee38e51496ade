"""Networks and model files: MONAI DynUNet (3D or slice-wise 2D) with optional squeeze-and-excitation blocks.

This module is shared by training and inference (:mod:`.train` writes a model with :func:`save_model`,
:mod:`.infer` reads it with :func:`load_model`); it imports neither of them.

Everything is built from MONAI blocks: :class:`monai.networks.nets.DynUNet` supplies the U-Net
(plain or residual units, deep supervision heads) and :class:`monai.networks.blocks.ChannelSELayer`
(or ``ResidualSELayer``) recalibrates the channels after every encoder and decoder stage.

Every network takes and returns 5D tensors ``(B, C, X, Y, Z)``: a 2D U-Net is wrapped in
:class:`SliceWise`, which folds the slice axis (``model.slice_axis``, ``Z`` by default) into the batch,
so patch sampling, sliding windows, losses and test-time flips are the same code for 2D and 3D.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.networks.blocks import ChannelSELayer, ResidualSELayer
from monai.networks.nets import DynUNet
from torch import nn

from medpipe.core.errors import ConfigError, MedpipeError
from medpipe.core.io import atomic_path
from medpipe.segment.settings import check_slice_axis

logger = logging.getLogger(__name__)

ARCHITECTURES = ("unet3d", "unet2d", "cascade")
#: ``format`` tag of a model file written by :func:`save_model`.
MODEL_FORMAT = "medpipe-seg-1"
#: Packages whose versions the sidecars of the train and predict outputs record.
SEG_PACKAGES = ("torch", "monai")


class _UpWithSE(nn.Module):
    """A DynUNet decoder block (``forward(inp, skip)``) followed by a MONAI SE layer."""

    def __init__(self, block: nn.Module, se: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.se = se

    def forward(self, inp: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.se(self.block(inp, skip))
        return out


class SEDynUNet(DynUNet):
    """MONAI DynUNet with a channel squeeze-and-excitation layer after each stage.

    Parameters
    ----------
    se
        ``None`` (plain DynUNet), ``"channel"`` (:class:`ChannelSELayer`) or ``"residual"``
        (:class:`ResidualSELayer`, SE output added to its input).
    se_reduction
        Channel reduction ratio ``r`` of the SE bottleneck.
    **kwargs
        Passed to :class:`monai.networks.nets.DynUNet`.
    """

    def __init__(self, *, se: str | None = "channel", se_reduction: int = 2, **kwargs: Any) -> None:
        self._se_kind = se
        self._se_r = se_reduction
        super().__init__(**kwargs)

    def _se(self, channels: int) -> nn.Module:
        layer = ResidualSELayer if self._se_kind == "residual" else ChannelSELayer
        return layer(self.spatial_dims, channels, r=min(self._se_r, channels))

    def get_input_block(self) -> nn.Module:
        block = super().get_input_block()
        return nn.Sequential(block, self._se(self.filters[0])) if self._se_kind else block

    def get_bottleneck(self) -> nn.Module:
        block = super().get_bottleneck()
        return nn.Sequential(block, self._se(self.filters[-1])) if self._se_kind else block

    def get_downsamples(self) -> nn.ModuleList:
        blocks = super().get_downsamples()
        if not self._se_kind:
            return blocks
        return nn.ModuleList(nn.Sequential(b, self._se(c)) for b, c in zip(blocks, self.filters[1:-1], strict=True))

    def get_upsamples(self) -> nn.ModuleList:
        blocks = super().get_upsamples()
        if not self._se_kind:
            return blocks
        outs = self.filters[:-1][::-1]
        return nn.ModuleList(_UpWithSE(b, self._se(c)) for b, c in zip(blocks, outs, strict=True))

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the contracting path (frozen by ``freeze_encoder`` when fine-tuning)."""
        mods = [self.input_block, *self.downsamples, self.bottleneck]
        return [p for m in mods for p in m.parameters()]


class SliceWise(nn.Module):
    """Apply a 2D network to every slice of a 5D tensor ``(B, C, X, Y, Z)`` across ``slice_axis``.

    Parameters
    ----------
    net
        The 2D network.
    slice_axis
        Spatial axis (0 = ``X``, 1 = ``Y``, 2 = ``Z``) folded into the batch; the network sees the
        planes of the two other axes, in their array order.
    """

    def __init__(self, net: SEDynUNet, slice_axis: int = 2) -> None:
        super().__init__()
        self.net = net
        self.slice_axis = int(slice_axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = 2 + self.slice_axis
        b, c, n = x.shape[0], x.shape[1], x.shape[dim]
        moved = x.movedim(dim, 1)  # (B, S, C, P, Q): for slice axis 2 the permutation (0, 4, 1, 2, 3)
        flat = moved.reshape(b * n, c, *moved.shape[3:])
        out = self.net(flat)  # (B*S, C', P, Q) or (B*S, H, C', P, Q) with deep supervision
        out = out.reshape(b, n, *out.shape[1:])
        return out.movedim(1, out.dim() - 3 + self.slice_axis).contiguous()

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the contracting path."""
        return self.net.encoder_parameters()


def _check_model_settings(m: Mapping[str, Any]) -> None:
    arch = m.get("architecture", "unet3d")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"segmentation.model.architecture = {arch!r}; expected one of {ARCHITECTURES}")
    channels, strides = list(m.get("channels", [])), list(m.get("strides", []))
    if len(channels) < 2 or len(strides) != len(channels) - 1:
        raise ConfigError(
            f"segmentation.model: channels {channels} need exactly len(channels) - 1 strides, got {strides}"
        )
    check_slice_axis(m.get("slice_axis", 2))
    if m.get("squeeze_excitation") not in (None, False, True, "channel", "residual"):
        raise ConfigError(
            "segmentation.model.squeeze_excitation must be true, false, 'channel' or 'residual', "
            f"got {m.get('squeeze_excitation')!r}"
        )


def build_network(
    model: Mapping[str, Any], in_channels: int, out_channels: int, *, spatial_dims: int | None = None
) -> nn.Module:
    """Build the network described by ``config["segmentation"]["model"]``.

    Parameters
    ----------
    model
        Keys: ``architecture`` (``unet3d``/``unet2d``/``cascade``; a cascade stage is a 3D net),
        ``channels`` (filters per level), ``strides`` (per downsampling), ``num_res_units``
        (> 0: residual units), ``squeeze_excitation`` (true/``channel``/``residual``/false),
        ``se_reduction``, ``dropout``, ``deep_supervision`` (number of extra heads, 0 = off),
        ``slice_axis`` (``unet2d``: the array axis it slices along, default 2).
    in_channels, out_channels
        Input sequences and output classes (background included).
    spatial_dims
        Override 2 or 3 (default: 2 for ``unet2d``, else 3).

    Returns
    -------
    torch.nn.Module
        A module mapping ``(B, in, X, Y, Z)`` to ``(B, out, X, Y, Z)`` (in training mode with deep
        supervision: ``(B, heads + 1, out, X, Y, Z)``).
    """
    _check_model_settings(model)
    dims = spatial_dims or (2 if model.get("architecture") == "unet2d" else 3)
    strides = [1, *[int(s) for s in model["strides"]]]
    se = model.get("squeeze_excitation", False)
    se_kind = None if not se else ("residual" if se == "residual" else "channel")
    ds = int(model.get("deep_supervision", 0) or 0)
    if ds > len(strides) - 2:
        raise ConfigError(
            f"segmentation.model.deep_supervision = {ds} exceeds the decoder depth - 1 ({len(strides) - 2})"
        )
    net = SEDynUNet(
        se=se_kind,
        se_reduction=int(model.get("se_reduction", 2)),
        spatial_dims=dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=[3] * len(strides),
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=[int(c) for c in model["channels"]],
        dropout=float(model.get("dropout", 0.0)) or None,
        res_block=int(model.get("num_res_units", 0)) > 0,
        deep_supervision=ds > 0,
        deep_supr_num=max(ds, 1),
    )
    n_params = sum(p.numel() for p in net.parameters())
    logger.info(
        "built %dD DynUNet (SE=%s, residual=%s, deep supervision=%d): %d parameters",
        dims,
        se_kind,
        int(model.get("num_res_units", 0)) > 0,
        ds,
        n_params,
    )
    return SliceWise(net, slice_axis(model)) if dims == 2 else net


def slice_axis(model: Mapping[str, Any]) -> int:
    """The array axis a ``unet2d`` slices along (``model.slice_axis``; 2 for settings that predate it)."""
    return int(model.get("slice_axis", 2))


def divisor(model: Mapping[str, Any]) -> list[int]:
    """Patch sizes must be multiples of these per-axis factors (product of the strides; 1 on a 2D net's slice axis)."""
    f = 1
    for s in model["strides"]:
        f *= int(s)
    if model.get("architecture") != "unet2d":
        return [f, f, f]
    axis = slice_axis(model)
    return [1 if a == axis else f for a in range(3)]


def check_patch_size(model: Mapping[str, Any], patch: Sequence[int], what: str = "patch_size") -> None:
    """Raise :class:`ConfigError` unless every patch dimension is a multiple of :func:`divisor`."""
    div = divisor(model)
    bad = [f"{p} (axis {i}, multiple of {d})" for i, (p, d) in enumerate(zip(patch, div, strict=True)) if int(p) % d]
    if len(patch) != 3 or bad:
        raise ConfigError(
            f"segmentation.train.{what} {list(patch)} must have 3 entries that are multiples of "
            f"the total stride: {', '.join(bad)}"
        )


@dataclass
class SegModel:
    """A trained model: its networks (``fine``, plus ``coarse`` for a cascade) and metadata."""

    nets: dict[str, torch.nn.Module]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        """Segmentation settings the model was trained with."""
        return dict(self.meta["settings"])


def pick_device(prefer_cuda: bool = True) -> torch.device:
    """CUDA when available (and wanted), otherwise CPU."""
    return torch.device("cuda" if prefer_cuda and torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, enabled: bool) -> Any:
    """bf16 (or fp16) autocast on CUDA; a no-op context on CPU."""
    if device.type != "cuda" or not enabled:
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def build_nets(settings: Mapping[str, Any], in_channels: int) -> dict[str, torch.nn.Module]:
    """Networks of the configured architecture (``fine``; ``coarse`` too for a cascade)."""
    model = settings["model"]
    n_classes = int(settings["num_classes"])
    nets = {"fine": build_network(model, in_channels, n_classes)}
    if model["architecture"] == "cascade":
        nets["coarse"] = build_network(model, in_channels, n_classes)
    return nets


def save_model(path: str | Path, nets: Mapping[str, torch.nn.Module], meta: Mapping[str, Any]) -> Path:
    """Write networks + metadata atomically as one torch file (loadable with ``weights_only=True``)."""
    payload = {
        "format": MODEL_FORMAT,
        "meta": dict(meta),
        "state": {name: net.state_dict() for name, net in nets.items()},
    }
    # Through a file handle: torch.save(payload, tmp) would record the random temporary name inside
    # the zip archive and the file would differ on every run.
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)
    return Path(path)


def load_model(path: str | Path, device: torch.device | None = None, *, subject: str | None = None) -> SegModel:
    """Read a model written by :func:`save_model`, rebuilt on ``device`` in evaluation mode."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable files
        raise MedpipeError(f"cannot read model file: {exc}", subject=subject, path=path) from exc
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise MedpipeError(
            f"not a medpipe segmentation model (expected format {MODEL_FORMAT})", subject=subject, path=path
        )
    meta = payload["meta"]
    nets = build_nets(meta["settings"], int(meta["in_channels"]))
    for name, net in nets.items():
        net.load_state_dict(payload["state"][name])
        net.to(device or torch.device("cpu")).eval()
    return SegModel(nets, meta)
