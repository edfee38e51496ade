"""Defaults of ``config["segmentation"]`` and their merge with the user's settings."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

#: Every key the segmentation engine reads, with its default (mirrors config/config.yaml).
DEFAULTS: dict[str, Any] = {
    "folds": 2,
    "val_fraction": 0.0,
    "num_classes": 2,
    "model": {
        "architecture": "unet3d",
        "channels": [8, 16, 32, 64],
        "strides": [2, 2, 2],
        "num_res_units": 1,
        "squeeze_excitation": True,
        "se_reduction": 2,
        "dropout": 0.0,
        "deep_supervision": 0,
        "cascade": {"coarse_factor": 2, "margin_vox": 8},
    },
    "loss": {"name": "dice_ce", "class_weights": None, "focal_gamma": 2.0, "boundary_weight": [0.01, 0.5]},
    "train": {
        "epochs": 20,
        "iterations_per_epoch": 16,
        "batch_size": 2,
        "patch_size": [32, 32, 32],
        "foreground_ratio": 0.67,
        "learning_rate": 0.003,
        "weight_decay": 1e-5,
        "amp": True,
        "augment": True,
        "val_every": 5,
        "init_checkpoint": None,
        "freeze_encoder": False,
        "keep_checkpoint": False,
    },
    "augment": {
        "flip": 0.5,
        "affine": 0.3,
        "rotate_deg": 15.0,
        "scale": 0.1,
        "elastic": 0.0,
        "gamma": 0.2,
        "noise": 0.15,
        "blur": 0.1,
    },
    "infer": {
        "overlap": 0.5,
        "mode": "gaussian",
        "tta": True,
        "sw_batch_size": 2,
        "uncertainty_threshold": 0.35,
        "min_agreement": 0.8,
    },
}


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return ``settings`` completed with :data:`DEFAULTS` (``loss: "dice_ce"`` shorthand accepted)."""
    user = dict(settings or {})
    if isinstance(user.get("loss"), str):
        user["loss"] = {"name": user["loss"]}
    return _merge(DEFAULTS, user)
