"""Monitoring during training: Dice on the training patches and on the held-out validation cases.

Validation runs the networks as inference does (Gaussian sliding windows, :mod:`.sliding`) but
without test-time mirrors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from medpipe.segment.data import Case
from medpipe.segment.model import SegModel
from medpipe.segment.sliding import model_members


def mean_dice(pred: torch.Tensor, label: torch.Tensor, n_classes: int) -> float:
    """Mean Dice over foreground classes of integer maps (classes absent from both are skipped)."""
    scores = []
    for c in range(1, n_classes):
        p, t = pred == c, label == c
        denom = int(p.sum() + t.sum())
        if denom:
            scores.append(2.0 * float((p & t).sum()) / denom)
    return float(np.mean(scores)) if scores else math.nan


def validation_dice(
    nets: Mapping[str, torch.nn.Module],
    cfg: Mapping[str, Any],
    cases: Sequence[Case],
    device: torch.device,
    n_in: int,
) -> float:
    """Mean Dice of sliding-window predictions (no TTA) on the validation cases."""
    for net in nets.values():
        net.eval()
    model = SegModel(dict(nets), {"settings": cfg, "in_channels": n_in})
    scores = []
    for case in cases:
        image = torch.from_numpy(case.image)[None].to(device)
        probs = model_members(model, image, {"tta": False})[0]
        if case.label is not None:
            scores.append(
                mean_dice(
                    probs.argmax(dim=1, keepdim=True).cpu(),
                    torch.from_numpy(case.label)[None],
                    int(cfg["num_classes"]),
                )
            )
    for net in nets.values():
        net.train()
    return float(np.nanmean(scores)) if scores else math.nan
