"""Tiny synthetic segmentation cases built in code (fixed seeds)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medpipe.core.io import save_nifti

SHAPE = (20, 24, 18)
AFFINE = np.array([[-3.0, 0, 0, 30], [0, 3.0, 0, -40], [0, 0, 3.0, -20], [0, 0, 0, 1]])

TINY: dict[str, Any] = {
    "folds": 2,
    "val_fraction": 0.0,
    "num_classes": 2,
    "model": {
        "architecture": "unet3d",
        "channels": [4, 8, 16],
        "strides": [2, 2],
        "num_res_units": 1,
        "squeeze_excitation": True,
        "deep_supervision": 0,
        "cascade": {"coarse_factor": 2, "margin_vox": 4},
    },
    "loss": {"name": "dice_ce"},
    "train": {
        "epochs": 1,
        "iterations_per_epoch": 2,
        "batch_size": 2,
        "patch_size": [16, 16, 16],
        "foreground_ratio": 0.67,
        "learning_rate": 0.01,
        "augment": True,
        "val_every": 1,
    },
    "augment": {"elastic": 0.2},
    "infer": {"overlap": 0.25, "tta": True, "sw_batch_size": 2},
}


def make_case(
    root: Path,
    subject: str,
    seed: int,
    shape: tuple[int, int, int] = SHAPE,
    channels: int = 2,
    empty: bool = False,
) -> tuple[list[str], str]:
    """Write a bright-ball case: ``channels`` noisy images and the ball's label; return the paths."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    dist = np.sqrt(sum((grid[a] - centre[a]) ** 2 for a in range(3)))
    label = (dist < rng.uniform(3.5, 5.0)) & (not empty)
    folder = root / f"sub-{subject}"
    images = []
    for c in range(channels):
        data = rng.normal(0.0, 0.3, shape) + (1.5 + c) * label
        images.append(str(save_nifti(data.astype(np.float32), AFFINE, folder / f"sub-{subject}_ch{c}.nii.gz")))
    lab = str(save_nifti(label.astype(np.uint8), AFFINE, folder / f"sub-{subject}_desc-human_mask.nii.gz"))
    return images, lab


@pytest.fixture
def tiny_settings() -> dict[str, Any]:
    """A fresh copy of the tiny training configuration."""
    return copy.deepcopy(TINY)


@pytest.fixture
def cases(tmp_path: Path) -> dict[str, Any]:
    """Four training subjects and one held-out subject."""
    subjects = ["A1", "A2", "A3", "A4"]
    made = [make_case(tmp_path / "data", s, i) for i, s in enumerate(subjects)]
    test_images, test_label = make_case(tmp_path / "data", "T1", 99)
    return {
        "subjects": subjects,
        "images": [m[0] for m in made],
        "labels": [m[1] for m in made],
        "test_images": test_images,
        "test_label": test_label,
        "root": tmp_path,
    }
