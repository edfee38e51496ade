"""N4 bias-field correction (ANTs) with the estimated field saved for QC.

One N4 run returns the multiplicative field ``B``; the corrected image is ``image / B`` (what N4
itself outputs). N4 fits the field inside a head/foreground mask (``settings["mask"]``: ``otsu``
or ``none``) and extrapolates it over the whole grid.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medpipe.core.determinism import ants_deterministic
from medpipe.core.errors import DataError, MedpipeError
from medpipe.core.geometry import check_finite, check_same_grid, geometry_of
from medpipe.core.io import load_nifti, nib_to_ants, save_like
from medpipe.core.qc import save_image_panel
from medpipe.core.sidecar import write_sidecar

logger = logging.getLogger(__name__)

#: Defaults of ``config["preprocess"]["n4"]``.
DEFAULTS: dict[str, Any] = {
    "shrink_factor": 4,
    "convergence_iters": [50, 50, 50, 50],
    "convergence_tol": 1e-7,
    "spline_distance_mm": 200.0,
    "mask": "otsu",
}


def foreground_mask(image: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Head/body mask: Otsu threshold, hole filling and the largest connected component (SimpleITK, cc3d)."""
    import cc3d
    import SimpleITK as sitk
    from scipy import ndimage

    data = np.asarray(image, dtype=np.float32)
    img = sitk.GetImageFromArray(data)
    otsu = sitk.GetArrayFromImage(sitk.OtsuThreshold(img, 0, 1, 128)).astype(bool)
    if not otsu.any():
        return np.ones(data.shape, dtype=np.uint8)
    labels = cc3d.connected_components(otsu.astype(np.uint8), connectivity=26)
    largest = np.bincount(labels.ravel())[1:].argmax() + 1
    filled = ndimage.binary_fill_holes(ndimage.binary_closing(labels == largest, iterations=2))
    return np.asarray(filled, dtype=np.uint8)


def n4_correct(
    image: str | Path,
    out_image: str | Path,
    out_field: str | Path,
    out_qc: str | Path,
    *,
    subject: str,
    settings: Mapping[str, Any],
    seed: int,
) -> Path:
    """Correct the intensity bias of ``image`` with ANTs N4 and save the estimated field.

    Parameters
    ----------
    image
        3D MR image (converted or co-registered sequence).
    out_image
        Corrected image (float32, same grid, with sidecar).
    out_field
        Estimated multiplicative bias field (float32, same grid, with sidecar).
    out_qc
        PNG of the bias field.
    subject
        Subject ID (errors, sidecar).
    settings
        ``config["preprocess"]["n4"]``: ``shrink_factor``, ``convergence_iters``,
        ``convergence_tol``, ``spline_distance_mm`` (B-spline mesh spacing) and ``mask``
        (``otsu`` | ``none``).
    seed
        Seed handed to :func:`medpipe.core.determinism.ants_deterministic`.

    Returns
    -------
    pathlib.Path
        ``out_image``.
    """
    import ants

    s = {**DEFAULTS, **dict(settings)}
    if s["mask"] not in ("otsu", "none"):
        raise MedpipeError(f"preprocess.n4.mask must be 'otsu' or 'none', got {s['mask']!r}", subject=subject)
    img = load_nifti(image, subject=subject)
    if len(img.shape) != 3:
        raise DataError(f"N4 needs a 3D image, got shape {img.shape}", subject=subject, path=image)
    data = np.asarray(img.dataobj, dtype=np.float32)
    check_finite(data, subject=subject, path=image)
    if float(data.min()) < 0:
        logger.warning(
            "image has negative values (min %.3g); N4 works on log intensities, shifting to >= 0",
            float(data.min()),
        )
        data = data - float(data.min())
    if not np.any(data > 0):
        raise DataError("image is empty (no positive voxels); N4 cannot run", subject=subject, path=image)
    grid = geometry_of(img)
    mask = foreground_mask(data) if s["mask"] == "otsu" else np.ones(data.shape, dtype=np.uint8)
    ants_img = nib_to_ants(img.__class__(data, img.affine))
    ants_mask = ants_img.new_image_like(mask.astype(np.float32))
    ants_deterministic(seed)
    field = ants.n4_bias_field_correction(
        ants_img,
        mask=ants_mask,
        shrink_factor=int(s["shrink_factor"]),
        convergence={"iters": [int(v) for v in s["convergence_iters"]], "tol": float(s["convergence_tol"])},
        spline_param=float(s["spline_distance_mm"]),
        return_bias_field=True,
    ).numpy()
    if not np.all(np.isfinite(field)) or float(field.min()) <= 0:
        raise DataError("N4 returned an invalid bias field (non-finite or non-positive)", subject=subject, path=image)
    corrected = (data / field).astype(np.float32)
    save_like(corrected, grid, out_image, dtype=np.float32)
    save_like(field.astype(np.float32), grid, out_field, dtype=np.float32)
    check_same_grid(
        geometry_of(load_nifti(out_image, subject=subject)),
        grid,
        what="N4 output vs input",
        subject=subject,
        path=out_image,
    )
    save_image_panel(
        field,
        out_qc,
        spacing=grid.spacing,
        cmap="magma",
        title=f"sub-{subject}: N4 bias field of {Path(image).name.split('.')[0]}",
    )
    params = {**s, "seed": int(seed)}
    write_sidecar(
        out_image,
        stage="n4",
        subject=subject,
        inputs=[image],
        parameters=params,
        geometry=grid,
        packages=["antspyx"],
        extra={"bias_field": Path(out_field).name},
    )
    write_sidecar(
        out_field,
        stage="n4",
        subject=subject,
        inputs=[image],
        parameters=params,
        geometry=grid,
        packages=["antspyx"],
    )
    logger.info("N4: field range %.3f-%.3f", float(field.min()), float(field.max()))
    return Path(out_image)
