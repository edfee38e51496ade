"""Inference helpers: mirror sets, cascade region of interest, uncertainty score and flag."""

from __future__ import annotations

import numpy as np
import torch

from medpipe.core.records import UncertaintyRecord
from medpipe.segment import cascade
from medpipe.segment.infer import uncertainty_summary
from medpipe.segment.sliding import mirror_axes

INFER = {"uncertainty_threshold": 0.35, "min_agreement": 0.8}


def test_mirror_axes() -> None:
    assert mirror_axes("unet3d", True) == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert mirror_axes("unet2d", True) == [(), (0,), (1,), (0, 1)]
    assert mirror_axes("cascade", False) == [()]


def test_mirror_axes_of_a_2d_net_are_its_in_plane_axes() -> None:
    assert mirror_axes("unet2d", True, 0) == [(), (1,), (2,), (1, 2)]
    assert mirror_axes("unet2d", True, 1) == [(), (0,), (2,), (0, 2)]
    assert mirror_axes("unet2d", True, 2) == mirror_axes("unet2d", True) == [(), (0,), (1,), (0, 1)]
    assert mirror_axes("unet3d", True, 0) == mirror_axes("unet3d", True)  # 3D nets flip every axis
    assert mirror_axes("unet2d", False, 0) == [()]


def test_cascade_roi_and_paste() -> None:
    probs = torch.zeros(1, 2, 20, 20, 20)
    probs[:, 0] = 1.0
    probs[:, :, 5:8, 10:12, 0:3] = torch.tensor([0.1, 0.9]).view(1, 2, 1, 1, 1)
    roi = cascade.roi_from_probabilities(probs, margin=2)
    assert roi == (slice(3, 10), slice(8, 14), slice(0, 5))
    pasted = cascade.paste((20, 20, 20), 2, roi, torch.full((1, 2, 7, 6, 5), 0.5))
    assert pasted[0, 1, 4, 9, 1] == 0.5 and pasted[0, 0, 0, 0, 19] == 1.0 and pasted[0, 1, 0, 0, 19] == 0.0
    background = torch.zeros(1, 2, 4, 4, 4)
    background[:, 0] = 1
    assert cascade.roi_from_probabilities(background, 2) is None
    small, lab = cascade.downsample(torch.ones(1, 1, 21, 20, 9), torch.ones(1, 1, 21, 20, 9), 2, [4, 4, 4])
    assert small.shape == (1, 1, 12, 12, 8) and lab is not None and lab.shape == small.shape


def test_uncertainty_certain_and_uncertain_cases() -> None:
    fg = np.zeros((6, 6, 6), bool)
    fg[2:4, 2:4, 2:4] = True
    certain = np.stack([~fg, fg]).astype(np.float32)
    entropy, record = uncertainty_summary(certain, [fg, fg], INFER, (2.0, 2.0, 2.0), subject="01")
    assert isinstance(record, UncertaintyRecord) and record.subject == "01"
    assert entropy.max() < 1e-5 and not record.flag and record.reasons == ()
    assert record.predicted_volume_mm3 == 64.0 and record.agreement == 1.0
    assert record.threshold == 0.35 and record.min_agreement == 0.8 and record.n_members == 2
    vague = np.full((2, 6, 6, 6), 0.5, np.float32)
    vague[1][fg] = 0.55
    vague[0][fg] = 0.45
    _, record = uncertainty_summary(vague, [fg, np.zeros_like(fg)], INFER, (1.0, 1.0, 1.0), subject="01")
    assert record.flag and record.score > 0.9
    assert record.agreement == 0.5 and len(record.reasons) == 2
    _, record = uncertainty_summary(
        certain[::-1] * 0 + np.stack([np.ones_like(fg), ~np.ones_like(fg)]), [], INFER, (1.0, 1.0, 1.0), subject="01"
    )
    assert record.reasons == ("no foreground predicted",) and record.flag
