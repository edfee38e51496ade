"""Grids and resampling: the one place that defines the network grid and moves images between grids.

* :func:`target_grid` derives the training grid from the reference sequence: canonical (RAS+)
  axis order, the requested spacing, and the same physical centre as the reference grid, so every
  sequence and the label of a subject land on exactly the same grid.
* :func:`resample_to_grid` moves an image or a mask onto any grid with SimpleITK and an explicit
  interpolator. Masks use ``"label"`` (label-aware): each class is resampled as a one-hot channel with
  linear interpolation and the voxel takes the class of highest weight (for a binary mask this is the
  linearly interpolated mask thresholded at 0.5). ``"nearest"`` is available too.
* :func:`to_canonical` / :func:`from_canonical` reorient an array losslessly (axis permutations and
  flips only) and back, for tools that expect RAS+ arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from medpipe.core.errors import DataError, GeometryError
from medpipe.core.geometry import LPS_RAS, Geometry, check_finite, geometry_of
from medpipe.core.io import load_nifti, save_checked
from medpipe.core.sidecar import write_sidecar

logger = logging.getLogger(__name__)

#: Interpolators accepted by :func:`resample_to_grid`.
INTERPOLATIONS = ("nearest", "linear", "bspline", "label")


def target_grid(reference: Geometry, spacing_mm: Sequence[float] | None) -> Geometry:
    """Training grid derived from the reference sequence's grid.

    Parameters
    ----------
    reference
        Native grid of the reference sequence.
    spacing_mm
        Target voxel size (mm) along the canonical R, A, S axes; ``None`` keeps ``reference``.

    Returns
    -------
    Geometry
        A grid whose axes are the reference axes permuted/flipped to the closest RAS+ order (an
        oblique acquisition stays oblique), with ``spacing_mm`` voxels, ``ceil(extent / spacing)``
        voxels per axis and the same physical centre as ``reference`` (the field of view of the
        reference, ``shape * spacing``, is covered and centred identically every time).
    """
    if spacing_mm is None:
        return reference
    spacing = np.asarray([float(s) for s in spacing_mm], dtype=np.float64)
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise GeometryError(f"target_spacing_mm must be three positive numbers, got {list(spacing_mm)}")
    ornt = nib.io_orientation(reference.affine)
    shape3 = tuple(int(v) for v in reference.shape[:3])
    canonical = reference.affine @ nib.orientations.inv_ornt_aff(ornt, shape3)
    canon_shape = np.asarray(shape3)[ornt[:, 0].astype(int).argsort()]
    # ornt[i, 0] is the output axis of input axis i: canonical axis j has input axis argsort()[j].
    canon_spacing = np.sqrt((canonical[:3, :3] ** 2).sum(axis=0))
    extent = canon_shape * canon_spacing
    new_shape = np.maximum(np.ceil(extent / spacing - 1e-6), 1).astype(int)
    direction = canonical[:3, :3] / canon_spacing
    centre = canonical[:3, :3] @ ((canon_shape - 1) / 2.0) + canonical[:3, 3]
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing
    affine[:3, 3] = centre - affine[:3, :3] @ ((new_shape - 1) / 2.0)
    return Geometry(tuple(int(v) for v in new_shape), affine)


def _to_sitk(data: npt.NDArray[Any], geometry: Geometry) -> Any:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0)))
    m = LPS_RAS @ geometry.affine
    spacing = np.sqrt((m[:3, :3] ** 2).sum(axis=0))
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (m[:3, :3] / spacing).ravel()])
    img.SetOrigin([float(v) for v in m[:3, 3]])
    return img


def _resample_channel(
    data: npt.NDArray[Any], source: Geometry, target: Geometry, interpolator: int, default_value: float
) -> npt.NDArray[np.float64]:
    import SimpleITK as sitk

    moving = _to_sitk(np.asarray(data, dtype=np.float64), source)
    ref = _to_sitk(np.zeros(target.shape[:3], dtype=np.uint8), target)
    out = sitk.Resample(moving, ref, sitk.Transform(), interpolator, float(default_value), sitk.sitkFloat64)
    result: npt.NDArray[np.float64] = sitk.GetArrayFromImage(out).transpose(2, 1, 0)
    return result


def resample_to_grid(
    data_or_image: nib.Nifti1Image | npt.NDArray[Any],
    target: Geometry,
    *,
    interpolation: str,
    source: Geometry | None = None,
    default_value: float = 0.0,
) -> npt.NDArray[Any]:
    """Resample an image or mask onto ``target`` (world coordinates are preserved).

    Parameters
    ----------
    data_or_image
        A nibabel image, or a 3D array together with ``source``.
    target
        Grid to resample onto.
    interpolation
        ``"linear"`` or ``"bspline"`` (3rd order) for intensities, ``"nearest"`` or ``"label"``
        (label-aware, see module docstring) for masks.
    source
        Grid of ``data_or_image`` when it is an array.
    default_value
        Value outside the source field of view.

    Returns
    -------
    numpy.ndarray
        Array on ``target``: float64 for intensities, the input's integer type for masks.
    """
    import SimpleITK as sitk

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if isinstance(data_or_image, nib.spatialimages.SpatialImage):
        source = geometry_of(data_or_image)
        data = np.asarray(data_or_image.dataobj)
    else:
        if source is None:
            raise GeometryError("resample_to_grid needs the source geometry of an array")
        data = np.asarray(data_or_image)
    if data.ndim != 3 or tuple(data.shape) != tuple(source.shape[:3]):
        raise GeometryError(f"expected a 3D array of shape {tuple(source.shape[:3])}, got {data.shape}")
    if interpolation in ("nearest", "label") and not np.all(np.isfinite(data)):
        raise DataError("mask has NaN or infinite voxels")
    if interpolation == "linear":
        return _resample_channel(data, source, target, sitk.sitkLinear, default_value)
    if interpolation == "bspline":
        return _resample_channel(data, source, target, sitk.sitkBSpline, default_value)
    if interpolation == "nearest":
        out = _resample_channel(data, source, target, sitk.sitkNearestNeighbor, default_value)
        return out.astype(data.dtype)
    # Label-aware: every class is resampled as a one-hot channel with linear interpolation and the
    # voxel takes the class of largest weight; background weighs 1 - sum(classes), so a binary mask
    # reduces to "interpolated mask > 0.5" (ties go to background).
    classes = [v for v in np.unique(data) if v != 0]
    result = np.zeros(target.shape[:3], dtype=data.dtype)
    if not classes:
        return result
    weights = [_resample_channel((data == v).astype(np.float64), source, target, sitk.sitkLinear, 0.0) for v in classes]
    stack = np.stack([1.0 - np.sum(weights, axis=0), *weights])
    winner = np.argmax(stack, axis=0)
    for idx, value in enumerate(classes, start=1):
        result[winner == idx] = value
    return result


def to_canonical(data: npt.NDArray[Any], geometry: Geometry) -> tuple[npt.NDArray[Any], Geometry]:
    """Reorient ``data`` to the closest RAS+ axis order (lossless); return it with its new grid."""
    img = nib.Nifti1Image(np.asarray(data), geometry.affine)
    canon = nib.as_closest_canonical(img)
    return np.asarray(canon.dataobj), geometry_of(canon)


def from_canonical(data: npt.NDArray[Any], native: Geometry) -> npt.NDArray[Any]:
    """Exact inverse of :func:`to_canonical`: put a canonical array back in ``native``'s axis order."""
    ornt = nib.io_orientation(native.affine)
    back = nib.orientations.ornt_transform(np.array([[0, 1], [1, 1], [2, 1]]), ornt)
    out = np.asarray(nib.orientations.apply_orientation(np.asarray(data), back))
    if tuple(out.shape[:3]) != tuple(native.shape[:3]):
        raise GeometryError(f"canonical array {np.shape(data)} does not fit native grid {native.shape}")
    return out


def resample_label_like(label: str | Path, reference: str | Path, out: str | Path, *, subject: str) -> Path:
    """Bring a label mask onto the grid of ``reference`` with label-aware interpolation.

    Parameters
    ----------
    label
        Label mask (integer classes, 0 = background) on its own grid.
    reference
        Image whose grid the label must take (the normalised reference sequence).
    out
        Output ``.nii.gz``; a sidecar is written beside it.
    subject
        Subject ID, named in errors and in the sidecar.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    lab_img = load_nifti(label, subject=subject)
    ref_img = load_nifti(reference, subject=subject)
    data = np.asarray(lab_img.dataobj)
    check_finite(data, subject=subject, path=label)
    if data.ndim != 3:
        raise DataError(f"label must be 3D, got shape {data.shape}", subject=subject, path=label)
    if np.any(data < 0) or np.any(data != np.round(data)):
        raise DataError("label must hold non-negative integer classes", subject=subject, path=label)
    labels = data.astype(np.uint8)
    target = geometry_of(ref_img)
    resampled = resample_to_grid(labels, target, interpolation="label", source=geometry_of(lab_img))
    if np.any(labels) and not np.any(resampled):
        raise DataError(
            "label vanished when resampled onto the reference grid (too small for its spacing?)",
            subject=subject,
            path=label,
        )
    save_checked(
        resampled.astype(np.uint8), target, out, dtype=np.uint8, what="resampled label vs reference", subject=subject
    )
    write_sidecar(
        out,
        stage="resample_label",
        subject=subject,
        inputs=[label, reference],
        parameters={"interpolation": "label (linear one-hot, argmax / >= 0.5)"},
        geometry=target,
    )
    logger.info("label %s -> grid %s (%d voxels)", Path(label).name, target.shape, int(np.count_nonzero(resampled)))
    return Path(out)
