"""Skull stripping: a brain mask for the reference sequence.

Methods (``settings["method"]``):

* ``deepbet``: the deepbet CNN (Fisch et al. 2024), weights shipped in its wheel, run on the CPU
  (or the GPU when ``device: cuda``). deepbet reorients to RAS+ internally and returns the mask on
  the input grid. Its mask follows the outer brain surface including a thin rim of extra-cerebral
  CSF; ``erode_mm`` removes voxels whose centre lies within that distance (mm, voxel spacing
  respected) of the nearest non-brain voxel, which matches BET-style masks (see the benchmark).
* ``none``: every voxel is "brain" (non-brain data, e.g. body MRI or CT).

Defaults and allowed values of the settings are those of the ``preprocess.skullstrip`` section of
``config/schemas/config.schema.yaml``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from medpipe.core.config import with_defaults
from medpipe.core.errors import DataError
from medpipe.core.geometry import check_finite, geometry_of
from medpipe.core.io import load_nifti, save_checked
from medpipe.core.qc import save_overlay
from medpipe.core.sidecar import write_sidecar

logger = logging.getLogger(__name__)


def deepbet_mask(
    img: nib.Nifti1Image, *, threshold: float = 0.5, erode_mm: float = 0.0, device: str = "cpu"
) -> npt.NDArray[np.uint8]:
    """Brain mask of a 3D head image with deepbet, on the image's own grid.

    Parameters
    ----------
    img
        T1-weighted (or similar) head image.
    threshold
        Probability threshold of deepbet's output.
    erode_mm
        Remove mask voxels whose centre is within this distance (mm) of the nearest non-brain
        voxel centre; 0 keeps deepbet's mask.
    device
        ``cpu`` or ``cuda``.

    Returns
    -------
    numpy.ndarray
        uint8 mask with the image's shape.
    """
    from deepbet.bet import BrainExtraction
    from scipy import ndimage

    bet = BrainExtraction(no_gpu=device != "cuda")
    try:
        _, mask_img, _ = bet.run(img, threshold=float(threshold), n_dilate=0)
    except (AssertionError, ValueError) as exc:  # deepbet asserts when it finds no head
        raise DataError(f"deepbet found no brain: {exc or type(exc).__name__}") from exc
    mask = np.asarray(mask_img.dataobj) > 0
    if erode_mm > 0 and mask.any():
        spacing = [float(v) for v in img.header.get_zooms()[:3]]
        inside = ndimage.distance_transform_edt(mask, sampling=spacing)
        mask = inside > float(erode_mm)
    return mask.astype(np.uint8)


def _deepbet(img: nib.Nifti1Image, s: Mapping[str, Any]) -> npt.NDArray[np.uint8]:
    """Mask of ``method: deepbet`` with the ``threshold``, ``erode_mm`` and ``device`` of ``s``."""
    return deepbet_mask(img, threshold=s["threshold"], erode_mm=s["erode_mm"], device=s["device"])


def _whole_image(img: nib.Nifti1Image, s: Mapping[str, Any]) -> npt.NDArray[np.uint8]:
    """Mask of ``method: none``: every voxel."""
    return np.ones(geometry_of(img).shape, dtype=np.uint8)


#: Brain mask per value of ``preprocess.skullstrip.method`` (keys: the schema's enum, checked by the tests).
METHODS: dict[str, Callable[[nib.Nifti1Image, Mapping[str, Any]], npt.NDArray[np.uint8]]] = {
    "deepbet": _deepbet,
    "none": _whole_image,
}


def skull_strip(
    image: str | Path, out_mask: str | Path, out_qc: str | Path, *, subject: str, settings: Mapping[str, Any]
) -> Path:
    """Write the brain mask of ``image`` (the N4-corrected reference sequence).

    Parameters
    ----------
    image
        3D head image.
    out_mask
        uint8 brain mask on the image grid (with sidecar).
    out_qc
        PNG of the mask contour over the image.
    subject
        Subject ID (errors, sidecar).
    settings
        ``config["preprocess"]["skullstrip"]``: ``method`` (``deepbet`` | ``none``),
        ``threshold``, ``erode_mm``, ``device``; missing keys take the schema's defaults.

    Returns
    -------
    pathlib.Path
        ``out_mask``.

    Raises
    ------
    ConfigError
        Naming an invalid settings key.
    DataError
        NaN voxels in the image, or an empty mask.
    """
    s = with_defaults(settings, "preprocess", "skullstrip")
    img = load_nifti(image, subject=subject)
    if len(img.shape) != 3:
        raise DataError(f"skull stripping needs a 3D image, got shape {img.shape}", subject=subject, path=image)
    data = np.asarray(img.dataobj, dtype=np.float32)
    check_finite(data, subject=subject, path=image)
    grid = geometry_of(img)
    try:
        mask = METHODS[s["method"]](img, s)
    except DataError as exc:
        raise DataError(str(exc), subject=subject, path=image) from exc
    if not mask.any():
        raise DataError(
            f"brain mask is empty (method {s['method']}); is this a head image?", subject=subject, path=image
        )
    save_checked(mask, grid, out_mask, dtype=np.uint8, what="brain mask vs image", subject=subject)
    volume_ml = float(mask.sum()) * float(np.prod(grid.spacing)) / 1000.0
    save_overlay(
        data,
        {"brain mask": mask},
        out_qc,
        spacing=grid.spacing,
        title=f"sub-{subject}: brain mask ({s['method']}, {volume_ml:.0f} ml)",
    )
    packages = ["deepbet", "torch"] if s["method"] == "deepbet" else []
    write_sidecar(
        out_mask,
        stage="skullstrip",
        subject=subject,
        inputs=[image],
        parameters=s,
        geometry=grid,
        packages=packages,
        extra={"volume_ml": round(volume_ml, 3)},
    )
    logger.info("brain mask: %.1f ml (%s)", volume_ml, s["method"])
    return Path(out_mask)
