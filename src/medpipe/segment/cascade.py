"""Cascade helpers: low-resolution whole-volume stage -> region of interest -> full-resolution stage.

The coarse network sees the whole image downsampled by ``coarse_factor``; its foreground, brought
back to the full grid, gives a bounding box (plus ``margin_vox``) in which the fine network runs.
The fine probabilities are pasted back into a full-size map that is background elsewhere.
For training, :class:`CoarseBatches` holds the downsampled training volumes of the coarse stage.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional

from medpipe.segment.data import Case

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


def _pads(shape: Sequence[int], target: Sequence[int]) -> list[int]:
    """``functional.pad`` widths that pad ``shape`` at the high end of each axis to ``target``."""
    out: list[int] = []
    for s, t in zip(reversed(list(shape)), reversed(list(target)), strict=True):
        out += [0, t - s]
    return out


class CoarseBatches:
    """Whole downsampled volumes (cascade stage 1), padded to one shape, drawn with random mirrors.

    Parameters
    ----------
    cases
        Training cases (those without a label are skipped).
    factor
        Downsampling factor (``model.cascade.coarse_factor``).
    div
        Per-axis multiples the downsampled volumes are padded to (the network's total stride).
    """

    def __init__(self, cases: Sequence[Case], factor: int, div: Sequence[int]) -> None:
        pairs = [
            downsample(torch.from_numpy(c.image)[None], torch.from_numpy(c.label)[None], factor, div)
            for c in cases
            if c.label is not None
        ]
        shape = [max(p[0].shape[2 + a] for p in pairs) for a in range(3)]
        self.images = torch.cat([functional.pad(i, _pads(i.shape[2:], shape)) for i, _ in pairs])
        self.labels = torch.cat(
            [functional.pad(lab, _pads(lab.shape[2:], shape)) for _, lab in pairs if lab is not None]
        )

    def draw(self, idx: Sequence[int], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The volumes ``idx``, each axis flipped with probability 0.5 (three draws from ``rng``)."""
        x, y = self.images[list(idx)], self.labels[list(idx)]
        for axis in range(3):
            if rng.random() < 0.5:
                x, y = torch.flip(x, [axis + 2]), torch.flip(y, [axis + 2])
        return x, y
