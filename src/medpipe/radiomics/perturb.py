"""Perturbed copies of a human mask (or of the image) for the radiomics robustness analysis.

Three mask perturbations, each one voxel on the mask's own grid (config ``radiomics.perturbations``):

* ``erode``: binary erosion with the 6-connected structuring element (a voxel stays when its six
  face neighbours are in the structure);
* ``dilate``: binary dilation with the same element, into background only (labels never overwrite
  each other);
* ``shift``: the mask moved by one voxel along each voxel axis (i, j, k) at once; voxels pushed
  past the image border are lost.

Every label value > 0 is perturbed on its own. A perturbation that leaves a label empty (an
erosion of a structure one voxel thick) is an error naming the subject and the label, because
features of an empty mask do not exist and dropping the subject silently would bias the analysis.

One image perturbation, ``noise`` (:func:`perturb_image`): zero-mean Gaussian noise added to the
image, with a standard deviation of ``radiomics.noise_fraction`` times the robust spread (1.4826 x
median absolute deviation) of the intensities inside the human mask, so that the noise level is
relative to the tissue being measured. The generator is seeded from the run seed and the subject
ID, so a re-run adds the same noise.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from medpipe.core.errors import DataError
from medpipe.core.geometry import Geometry, check_same_grid, geometry_of
from medpipe.core.io import load_nifti, save_nifti
from medpipe.core.sidecar import write_sidecar

logger = logging.getLogger(__name__)

#: The perturbations this module implements: of the mask (:func:`perturb_array`; the image is used as is) and
#: of the image (:func:`perturb_image`; the human mask is used as is). Together they are exactly the schema's
#: ``radiomics.perturbations`` enum, the one list of allowed names (tests/radiomics/test_perturb.py checks it).
MASK_PERTURBATIONS: tuple[str, ...] = ("erode", "dilate", "shift")
IMAGE_PERTURBATIONS: tuple[str, ...] = ("noise",)

_FACES = ndimage.generate_binary_structure(3, 1)


def _shift_one(region: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    out = np.zeros_like(region)
    out[1:, 1:, 1:] = region[:-1, :-1, :-1]
    return out


def perturb_array(labels: npt.NDArray[Any], kind: str) -> npt.NDArray[Any]:
    """``labels`` (3D integer array, 0 = background) with every label perturbed by ``kind``."""
    if kind not in MASK_PERTURBATIONS:
        raise ValueError(f"unknown mask perturbation {kind!r}; known: {list(MASK_PERTURBATIONS)}")
    if labels.ndim != 3:
        raise ValueError(f"need a 3D label array, got shape {labels.shape}")
    out = np.zeros_like(labels)
    for value in (v for v in np.unique(labels) if v > 0):
        region = labels == value
        if kind == "erode":
            moved = ndimage.binary_erosion(region, structure=_FACES)
        elif kind == "dilate":
            moved = ndimage.binary_dilation(region, structure=_FACES) & ((labels == 0) | region)
        else:
            moved = _shift_one(region)
        out[moved & (out == 0)] = value
    return out


def perturb_mask(mask: str | Path, out_mask: str | Path, *, subject: str, kind: str) -> Path:
    """Write the ``kind`` perturbation of a mask on the mask's own grid, with a sidecar.

    Parameters
    ----------
    mask
        The human mask (NIfTI, integer labels, 0 = background).
    out_mask
        Perturbed mask (same shape, affine and dtype); its sidecar ``.json`` is written beside it.
    subject
        Subject ID (error messages, sidecar).
    kind
        ``erode``, ``dilate`` or ``shift`` (see the module docstring).

    Returns
    -------
    Path
        ``out_mask``.

    Raises
    ------
    DataError
        The mask is not 3D, holds no label, or a label is empty after the perturbation.
    """
    img = load_nifti(mask, subject=subject)
    labels = np.asarray(img.dataobj)
    if labels.ndim != 3:
        raise DataError(f"mask is not 3D (shape {labels.shape})", subject=subject, path=mask)
    values = [int(v) for v in np.unique(labels) if v > 0]
    if not values:
        raise DataError("mask is empty; nothing to perturb", subject=subject, path=mask)
    out = perturb_array(labels, kind)
    counts = {}
    for value in values:
        before, after = int((labels == value).sum()), int((out == value).sum())
        if after == 0:
            raise DataError(
                f"label {value} ({before} voxels) is empty after the {kind} perturbation; "
                f"the structure is too thin for a one-voxel {kind}",
                subject=subject,
                path=mask,
            )
        counts[str(value)] = {"voxels_before": before, "voxels_after": after}
        logger.info("label %d: %d -> %d voxels (%s)", value, before, after, kind)
    affine = np.asarray(img.affine, dtype=np.float64)
    save_nifti(out, affine, out_mask, dtype=labels.dtype)
    write_sidecar(
        out_mask,
        stage="radiomics",
        subject=subject,
        inputs=[mask],
        parameters={
            "perturbation": kind,
            "voxels": 1,
            "structuring_element": "6-connected",
            "shift_voxels": [1, 1, 1] if kind == "shift" else None,
        },
        geometry=Geometry(tuple(int(v) for v in labels.shape), affine),
        packages=["scipy"],
        extra={"labels": counts},
    )
    return Path(out_mask)


def _subject_seed(seed: int, subject: str) -> int:
    digest = hashlib.sha256(f"{seed}:{subject}:noise".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def perturb_image(
    image: str | Path,
    mask: str | Path,
    out_image: str | Path,
    *,
    subject: str,
    fraction: float,
    seed: int,
) -> Path:
    """Write ``image`` plus seeded Gaussian noise scaled to the intensity spread inside ``mask``.

    Parameters
    ----------
    image
        The radiomics image (N4-corrected reference sequence, native grid).
    mask
        The human mask on the same grid (checked); it sets the noise level only.
    out_image
        Noisy image (float32, same grid); its sidecar ``.json`` is written beside it.
    subject
        Subject ID (error messages, sidecar, and part of the noise seed).
    fraction
        Noise standard deviation as a fraction of 1.4826 x MAD of the intensities inside the mask.
    seed
        Run seed; combined with ``subject`` so subjects get independent, reproducible noise.

    Returns
    -------
    Path
        ``out_image``.

    Raises
    ------
    DataError
        The grids differ, the mask is empty, or the intensities inside it are constant.
    """
    img, msk = load_nifti(image, subject=subject), load_nifti(mask, subject=subject)
    grid = geometry_of(img)
    check_same_grid(
        grid, geometry_of(msk), what=f"mask {Path(mask).name} vs image {Path(image).name}", subject=subject, path=mask
    )
    data = np.asarray(img.dataobj, dtype=np.float64)
    inside = data[np.asarray(msk.dataobj) > 0]
    if inside.size == 0:
        raise DataError("mask is empty; the noise level cannot be set", subject=subject, path=mask)
    spread = 1.4826 * float(np.median(np.abs(inside - np.median(inside))))
    if not spread > 0:
        spread = float(inside.std())
    if not spread > 0:
        raise DataError(
            "intensities inside the mask are constant; the noise level cannot be set", subject=subject, path=image
        )
    sigma = fraction * spread
    rng = np.random.default_rng(_subject_seed(seed, subject))
    noisy = (data + rng.normal(0.0, sigma, size=data.shape)).astype(np.float32)
    save_nifti(noisy, grid.affine, out_image, dtype=np.float32)
    write_sidecar(
        out_image,
        stage="radiomics",
        subject=subject,
        inputs=[image, mask],
        parameters={
            "perturbation": "noise",
            "noise_fraction": fraction,
            "seed": seed,
            "spread": "1.4826 x MAD inside the mask",
        },
        geometry=grid,
        packages=["numpy"],
        extra={"noise_sd": sigma, "spread_inside_mask": spread},
    )
    logger.info("noise SD %.4g (%.3g x spread %.4g inside the mask)", sigma, fraction, spread)
    return Path(out_image)
