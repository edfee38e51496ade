"""Segmentation losses: Dice + cross-entropy, Dice + focal, and a scheduled boundary loss.

* ``dice_ce`` / ``dice_focal``: MONAI :class:`~monai.losses.DiceCELoss` / :class:`~monai.losses.DiceFocalLoss`
  on softmax outputs, optional class weights for the CE/focal term.
* ``boundary``: region loss (Dice + CE) plus ``alpha(epoch)`` times the boundary loss of
  Kervadec et al. (MIDL 2019): the mean of the foreground softmax probabilities multiplied by the
  signed distance map of each foreground class (negative inside, positive outside, in voxels).
  ``alpha`` rises linearly from ``boundary_weight[0]`` at the first epoch to ``boundary_weight[1]``
  at the last, so the region term dominates early training.
* Deep supervision: MONAI :class:`~monai.losses.DeepSupervisionLoss` (exponentially decaying
  weights) wraps the region term; the boundary term uses the full-resolution head only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceFocalLoss
from scipy import ndimage
from torch import nn

from medpipe.core.errors import ConfigError

logger = logging.getLogger(__name__)

LOSSES = ("dice_ce", "dice_focal", "boundary")


def signed_distance_map(label: npt.NDArray[Any], n_classes: int) -> npt.NDArray[np.float32]:
    """Signed distance (voxels) to the boundary of each foreground class: ``(n_classes - 1, X, Y, Z)``.

    Negative inside the class, positive outside, zero on the boundary; a class absent from the
    image gets all zeros (no boundary to pull towards).
    """
    out = np.zeros((n_classes - 1, *label.shape), dtype=np.float32)
    for c in range(1, n_classes):
        fg = label == c
        if fg.any() and not fg.all():
            out[c - 1] = (
                ndimage.distance_transform_edt(~fg) - ndimage.distance_transform_edt(fg) + fg.astype(np.float32)
            )  # +1 inside: boundary voxels of the class map to 0
    return out


def boundary_loss(probs: torch.Tensor, sdm: torch.Tensor) -> torch.Tensor:
    """Kervadec boundary loss: ``mean(softmax_foreground * signed_distance)``."""
    return (probs[:, 1:] * sdm).mean()


class SegmentationLoss(nn.Module):
    """Configured training loss; call with ``(output, label, sdm, epoch)``.

    Parameters
    ----------
    settings
        ``config["segmentation"]["loss"]``: ``name`` (``dice_ce``/``dice_focal``/``boundary``),
        ``class_weights`` (list, one per class incl. background, or null), ``focal_gamma``,
        ``boundary_weight`` ([start, end]).
    n_classes
        Number of output channels (background included).
    epochs
        Length of training (for the boundary schedule).
    deep_supervision
        Whether the network output stacks several heads on dimension 1.
    """

    def __init__(
        self, settings: Mapping[str, Any] | str, n_classes: int, epochs: int, deep_supervision: bool = False
    ) -> None:
        super().__init__()
        cfg: dict[str, Any] = {"name": settings} if isinstance(settings, str) else dict(settings)
        self.name = str(cfg.get("name", "dice_ce"))
        if self.name not in LOSSES:
            raise ConfigError(f"segmentation.loss.name = {self.name!r}; expected one of {LOSSES}")
        cw = cfg.get("class_weights")
        weight = None
        if cw is not None:
            if len(cw) != n_classes:
                raise ConfigError(
                    f"segmentation.loss.class_weights has {len(cw)} entries; the model has "
                    f"{n_classes} classes (background included)"
                )
            weight = torch.as_tensor([float(w) for w in cw], dtype=torch.float32)
        region: nn.Module
        if self.name == "dice_focal":
            region = DiceFocalLoss(
                to_onehot_y=True, softmax=True, gamma=float(cfg.get("focal_gamma", 2.0)), weight=weight
            )
        else:
            region = DiceCELoss(to_onehot_y=True, softmax=True, weight=weight)
        self.deep_supervision = deep_supervision
        self.region = DeepSupervisionLoss(region, weight_mode="exp") if deep_supervision else region
        bw = cfg.get("boundary_weight", [0.01, 0.5])
        self.boundary_weight = (float(bw[0]), float(bw[1]))
        self.epochs = max(int(epochs), 1)

    @property
    def needs_sdm(self) -> bool:
        """True when the loss needs signed distance maps of the labels."""
        return self.name == "boundary"

    def alpha(self, epoch: int) -> float:
        """Boundary-loss weight at ``epoch`` (0-based): linear ramp over training."""
        if not self.needs_sdm:
            return 0.0
        start, end = self.boundary_weight
        frac = epoch / (self.epochs - 1) if self.epochs > 1 else 1.0
        return start + (end - start) * frac

    def forward(
        self, output: torch.Tensor, label: torch.Tensor, sdm: torch.Tensor | None = None, epoch: int = 0
    ) -> torch.Tensor:
        """Loss of ``output`` (logits) against integer ``label`` ``(B, 1, ...)``."""
        output = output.float()
        if self.deep_supervision:
            loss: torch.Tensor = self.region(list(torch.unbind(output, dim=1)), label)
            main = output[:, 0]
        else:
            loss = self.region(output, label)
            main = output
        if self.needs_sdm:
            if sdm is None:
                raise ConfigError("boundary loss needs signed distance maps; none were computed")
            a = self.alpha(epoch)
            loss = (1.0 - a) * loss + a * boundary_loss(torch.softmax(main, dim=1), sdm)
        return loss
