"""N4 bias-field correction (ANTs) with the estimated field saved for QC.

One N4 run returns the multiplicative field ``B``; the corrected image is ``image / B`` (what N4
itself outputs). N4 fits the field inside a head/foreground mask (``settings["mask"]``: ``otsu``
or ``none``) and extrapolates it over the whole grid. Defaults and allowed values of the settings
are those of the ``preprocess.n4`` section of ``config/schemas/config.schema.yaml``.
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
from medpipe.core.determinism import ants_deterministic
from medpipe.core.errors import DataError
from medpipe.core.geometry import Geometry, check_finite, check_same_grid, geometry_of
from medpipe.core.io import load_nifti, nib_to_ants, save_like
from medpipe.core.qc import save_image_panel
from medpipe.core.sidecar import write_sidecar

logger = logging.getLogger(__name__)


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


def _whole_image(image: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Fitting mask of ``mask: none``: every voxel."""
    return np.ones(np.shape(image), dtype=np.uint8)


#: Fitting mask per value of ``preprocess.n4.mask`` (keys: the schema's enum, checked by the tests).
FIT_MASKS: dict[str, Callable[[npt.NDArray[Any]], npt.NDArray[np.uint8]]] = {
    "otsu": foreground_mask,
    "none": _whole_image,
}


def _load_for_n4(image: str | Path, subject: str) -> tuple[nib.Nifti1Image, npt.NDArray[np.float32]]:
    """Load a 3D image as float32, shifted to non-negative values (N4 works on log intensities).

    Returns
    -------
    img, data
        The loaded image and its (shifted) voxels.

    Raises
    ------
    DataError
        When the image is not 3D, has NaN or infinite voxels, or has no positive voxel.
    """
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
    return img, data


def _fit_bias_field(
    img: nib.Nifti1Image, data: npt.NDArray[np.float32], s: Mapping[str, Any], *, seed: int
) -> npt.NDArray[Any]:
    """Estimate N4's multiplicative bias field of ``data`` (on ``img``'s grid) with the settings ``s``."""
    import ants

    mask = FIT_MASKS[s["mask"]](data)
    ants_img = nib_to_ants(img.__class__(data, img.affine))
    ants_mask = ants_img.new_image_like(mask.astype(np.float32))
    ants_deterministic(seed)
    field: npt.NDArray[Any] = ants.n4_bias_field_correction(
        ants_img,
        mask=ants_mask,
        shrink_factor=int(s["shrink_factor"]),
        convergence={"iters": [int(v) for v in s["convergence_iters"]], "tol": float(s["convergence_tol"])},
        spline_param=float(s["spline_distance_mm"]),
        return_bias_field=True,
    ).numpy()
    return field


def _write_n4_sidecars(
    image: str | Path,
    out_image: str | Path,
    out_field: str | Path,
    *,
    subject: str,
    params: dict[str, Any],
    grid: Geometry,
) -> None:
    """Sidecars of the corrected image (naming the field file) and of the bias field."""
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
        (``otsu`` | ``none``); missing keys take the schema's defaults.
    seed
        Seed handed to :func:`medpipe.core.determinism.ants_deterministic`.

    Returns
    -------
    pathlib.Path
        ``out_image``.

    Raises
    ------
    ConfigError
        Naming an invalid settings key.
    DataError
        For an image that is not 3D, has NaN voxels or no positive voxel, or an invalid fitted field.
    """
    s = with_defaults(settings, "preprocess", "n4")
    img, data = _load_for_n4(image, subject)
    grid = geometry_of(img)
    field = _fit_bias_field(img, data, s, seed=seed)
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
    _write_n4_sidecars(image, out_image, out_field, subject=subject, params={**s, "seed": int(seed)}, grid=grid)
    logger.info("N4: field range %.3f-%.3f", float(field.min()), float(field.max()))
    return Path(out_image)
