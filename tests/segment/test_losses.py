"""Losses: signed distance maps, boundary schedule, class weights, deep supervision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medpipe.core.errors import ConfigError
from medpipe.segment.losses import SegmentationLoss, signed_distance_map


def test_signed_distance_map_signs() -> None:
    label = np.zeros((9, 9, 9), dtype=np.uint8)
    label[3:6, 3:6, 3:6] = 1
    sdm = signed_distance_map(label, 2)[0]
    assert sdm[4, 4, 4] == -1.0  # one voxel inside the boundary
    assert sdm[3, 3, 3] == 0.0  # on the boundary
    assert sdm[0, 4, 4] == 3.0  # three voxels outside
    assert not signed_distance_map(np.zeros((4, 4, 4)), 2).any()


def test_boundary_schedule_and_value() -> None:
    loss = SegmentationLoss({"name": "boundary", "boundary_weight": [0.0, 0.5]}, 2, epochs=11)
    assert loss.alpha(0) == 0.0 and loss.alpha(10) == pytest.approx(0.5) and loss.alpha(5) == pytest.approx(0.25)
    label = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    label[..., 2:6, 2:6, 2:6] = 1
    sdm = torch.from_numpy(signed_distance_map(label[0, 0].numpy(), 2))[None]
    good = torch.cat([(label == 0).float(), (label == 1).float()], dim=1) * 20 - 10
    bad = -good
    assert loss(good, label, sdm, 10) < loss(bad, label, sdm, 10)
    with pytest.raises(ConfigError):
        loss(good, label, None, 0)


def test_class_weights_and_deep_supervision() -> None:
    with pytest.raises(ConfigError, match="class_weights"):
        SegmentationLoss({"name": "dice_ce", "class_weights": [1.0]}, 2, 5)
    loss = SegmentationLoss({"name": "dice_focal", "class_weights": [0.2, 1.0]}, 2, 5, deep_supervision=True)
    out = torch.randn(2, 2, 2, 8, 8, 8)
    label = (torch.rand(2, 1, 8, 8, 8) > 0.5).long()
    value = loss(out, label)
    assert torch.isfinite(value) and value > 0
