"""Whole-image probabilities of a model: Gaussian sliding windows, mirror TTA and the cascade.

Each *member* is one mirror of one model; its softmax map comes from MONAI
:func:`~monai.inferers.sliding_window_inference` (``mode="gaussian"``, configurable ``overlap``).
Shared by the validation of :mod:`.train` (no TTA) and the prediction of :mod:`.infer` (ensembles,
uncertainty); it imports neither of them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import Any

import torch
from monai.inferers import sliding_window_inference

from medpipe.segment import cascade
from medpipe.segment.model import SegModel, autocast, divisor, slice_axis

logger = logging.getLogger(__name__)


def mirror_axes(architecture: str, tta: bool, slice_axis: int = 2) -> list[tuple[int, ...]]:
    """Spatial axes flipped by each TTA member (``()`` = identity).

    A slice-wise net (``unet2d``) flips only the two in-plane axes, those other than ``slice_axis``.
    """
    if not tta:
        return [()]
    axes = tuple(a for a in range(3) if a != slice_axis) if architecture == "unet2d" else (0, 1, 2)
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


@torch.no_grad()
def sliding_probabilities(
    net: torch.nn.Module,
    image: torch.Tensor,
    settings: Mapping[str, Any],
    flip: tuple[int, ...] = (),
    amp: bool = False,
) -> torch.Tensor:
    """Softmax ``(1, K, X, Y, Z)`` of ``net`` on ``image`` ``(1, C, X, Y, Z)`` by Gaussian sliding windows."""
    infer = settings["infer"]
    dims = [a + 2 for a in flip]
    x = torch.flip(image, dims) if dims else image
    with autocast(image.device, amp):
        logits = sliding_window_inference(
            x,
            roi_size=[int(p) for p in settings["train"]["patch_size"]],
            sw_batch_size=int(infer["sw_batch_size"]),
            predictor=net,
            overlap=float(infer["overlap"]),
            mode=str(infer["mode"]),
        )
    probs = torch.softmax(torch.as_tensor(logits).float(), dim=1)
    return torch.flip(probs, dims) if dims else probs


@torch.no_grad()
def model_members(
    model: SegModel, image: torch.Tensor, infer: Mapping[str, Any], amp: bool = False
) -> list[torch.Tensor]:
    """Probability maps ``(1, K, X, Y, Z)`` of every mirror of one model (cascade handled).

    Parameters
    ----------
    model
        The networks and the settings they were trained with.
    image
        The case ``(1, C, X, Y, Z)`` on the model's device.
    infer
        Overrides of the model's ``infer`` settings (e.g. ``{"tta": False}`` for validation).
    amp
        Autocast on CUDA.

    Returns
    -------
    list of torch.Tensor
        One softmax map per mirror of :func:`mirror_axes`, on the whole image grid.
    """
    settings = {**model.settings, "infer": {**model.settings["infer"], **dict(infer)}}
    arch = settings["model"]["architecture"]
    flips = mirror_axes(arch, bool(settings["infer"]["tta"]), slice_axis(settings["model"]))
    fine = model.nets["fine"]
    if arch != "cascade":
        return [sliding_probabilities(fine, image, settings, f, amp) for f in flips]
    casc = settings["model"]["cascade"]
    coarse = cascade.coarse_probabilities(
        model.nets["coarse"], image, int(casc["coarse_factor"]), divisor(settings["model"])
    )
    roi = cascade.roi_from_probabilities(coarse, int(casc["margin_vox"]))
    if roi is None:
        logger.warning("cascade: the coarse stage found no foreground; the fine stage runs on the whole image")
        roi = (slice(None), slice(None), slice(None))
    logger.info("cascade region of interest: %s", [(s.start, s.stop) for s in roi])
    crop = image[:, :, roi[0], roi[1], roi[2]]
    n_classes = int(settings["num_classes"])
    return [
        cascade.paste(image.shape[2:], n_classes, roi, sliding_probabilities(fine, crop, settings, f, amp))
        for f in flips
    ]
