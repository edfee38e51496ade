"""Cascade helpers: low-resolution whole-volume stage -> region of interest -> full-resolution stage.

The coarse network sees the whole image downsampled by ``coarse_factor``; its foreground, brought
back to the full grid, gives a bounding box (plus ``margin_vox``) in which the fine network runs.
The fine probabilities are pasted back into a full-size map that is background elsewhere.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch.nn import functional

logger = logging.getLogger(__name__)


def _pad_to_multiple(x: torch.Tensor, div: Sequence[int]) -> torch.Tensor:
    pads: list[int] = []
    for size, d in zip(reversed(x.shape[2:]), reversed(list(div)), strict=True):
        pads += [0, (-size) % d]
    return functional.pad(x, pads)


def downsample(
    image: torch.Tensor, label: torch.Tensor | None, factor: int, div: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Downsample ``(B, C, X, Y, Z)`` images (trilinear) and labels (nearest) by ``factor``, then zero-pad
    every spatial axis to a multiple of ``div`` (the network's total stride)."""
    size = [max(1, math.ceil(s / factor)) for s in image.shape[2:]]
    small = _pad_to_multiple(
        functional.interpolate(image.float(), size=size, mode="trilinear", align_corners=False), div
    )
    if label is None:
        return small, None
    lab = functional.interpolate(label.float(), size=size, mode="nearest")
    return small, _pad_to_multiple(lab, div).long()


@torch.no_grad()
def coarse_probabilities(net: torch.nn.Module, image: torch.Tensor, factor: int, div: Sequence[int]) -> torch.Tensor:
    """Softmax of the coarse stage on ``image`` ``(1, C, X, Y, Z)``, resampled to the full grid."""
    small, _ = downsample(image, None, factor, div)
    size = [max(1, math.ceil(s / factor)) for s in image.shape[2:]]
    probs = torch.softmax(net(small).float(), dim=1)[:, :, : size[0], : size[1], : size[2]]
    return functional.interpolate(probs, size=list(image.shape[2:]), mode="trilinear", align_corners=False)


def roi_from_probabilities(probs: torch.Tensor, margin: int) -> tuple[slice, slice, slice] | None:
    """Bounding box (with ``margin`` voxels) of the voxels whose argmax is foreground; ``None`` when empty."""
    fg = probs[0].argmax(dim=0) > 0
    if not bool(fg.any()):
        return None
    idx = torch.nonzero(fg)
    lo = [max(int(v) - margin, 0) for v in idx.min(dim=0).values]
    hi = [min(int(v) + margin + 1, int(n)) for v, n in zip(idx.max(dim=0).values, fg.shape, strict=True)]
    return slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2])


def paste(
    full_shape: Sequence[int], n_classes: int, roi: tuple[slice, slice, slice], crop_probs: torch.Tensor
) -> torch.Tensor:
    """Full-grid probabilities: ``crop_probs`` inside ``roi``, certain background outside."""
    out = torch.zeros((1, n_classes, *full_shape), dtype=crop_probs.dtype, device=crop_probs.device)
    out[:, 0] = 1.0
    out[:, :, roi[0], roi[1], roi[2]] = crop_probs
    return out
