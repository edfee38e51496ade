"""IBSI image processing before feature extraction: interpolation and re-segmentation.

IBSI-1 (section 2, "Image processing") prescribes, and pyradiomics does differently:

* the interpolation grid is centred on the input grid (pyradiomics anchors it at the corner voxel),
  its size is rounded up, and extrapolation repeats the nearest boundary intensity;
* the image is interpolated (trilinear, or cubic spline) and, for calibrated integer intensities
  such as HU, rounded to the nearest integer (pyradiomics keeps the interpolated value);
* the mask is interpolated with the same (trilinear) interpolator and kept where >= 0.5
  (pyradiomics uses nearest neighbour);
* re-segmentation by an intensity range and/or outlier filtering (mean +/- k SD) gives an
  intensity mask; morphology uses the unchanged (interpolated) morphological mask.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from medpipe.core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
    "nearest": sitk.sitkNearestNeighbor,
}


@dataclass(frozen=True)
class IbsiSettings:
    """IBSI processing settings (the ``medpipe`` section of a radiomics params YAML).

    Attributes
    ----------
    spacing_mm
        Target voxel spacing; ``None`` disables interpolation. In 2D mode (``in_plane``) the third
        value is ignored and slices are kept.
    in_plane
        Interpolate within slices only (IBSI configuration B).
    interpolator
        ``linear`` (trilinear) or ``bspline`` (cubic spline) for the image.
    round_intensities
        Round interpolated intensities to the nearest integer (calibrated units such as HU).
    mask_threshold
        Partial-volume threshold of the linearly interpolated mask.
    resegment_range
        ``[low, high]`` intensity range of the intensity mask (either bound may be ``None``).
    outlier_sigma
        Remove intensities outside mean +/- k SD of the ROI from the intensity mask.
    bin_start
        Lower bound from which fixed bins are numbered (IBSI: the re-segmentation range's lower
        bound). ``None`` keeps pyradiomics' numbering; ``"range"`` uses ``resegment_range[0]``.
    """

    spacing_mm: tuple[float, float, float] | None = None
    in_plane: bool = False
    interpolator: str = "linear"
    round_intensities: bool = False
    mask_threshold: float = 0.5
    resegment_range: tuple[float | None, float | None] | None = None
    outlier_sigma: float | None = None
    bin_start: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> IbsiSettings:
        """Build settings from a params YAML section, raising :class:`ConfigError` on unknown keys."""
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {unknown} in radiomics params section 'medpipe' (allowed: {sorted(known)})"
            )
        interp = str(data.get("interpolator", "linear"))
        if interp not in _INTERPOLATORS:
            raise ConfigError(f"medpipe.interpolator {interp!r} is not one of {sorted(_INTERPOLATORS)}")
        spacing = data.get("spacing_mm")
        rng = data.get("resegment_range")
        bounds = None if rng is None else (_opt_float(rng[0]), _opt_float(rng[1]))
        bin_start = data.get("bin_start")
        if bin_start == "range":
            if bounds is None or bounds[0] is None:
                raise ConfigError("medpipe.bin_start 'range' needs medpipe.resegment_range with a lower bound")
            bin_start = bounds[0]
        return cls(
            spacing_mm=None if spacing is None else (float(spacing[0]), float(spacing[1]), float(spacing[2])),
            in_plane=bool(data.get("in_plane", False)),
            interpolator=interp,
            round_intensities=bool(data.get("round_intensities", False)),
            mask_threshold=float(data.get("mask_threshold", 0.5)),
            resegment_range=bounds,
            outlier_sigma=_opt_float(data.get("outlier_sigma")),
            bin_start=_opt_float(bin_start),
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def centred_grid(image: sitk.Image, spacing: Sequence[float]) -> tuple[list[int], list[float]]:
    """Size and origin of the IBSI interpolation grid with ``spacing``, centred on ``image``'s grid.

    Along each axis the output has ``ceil(n_in * s_in / s_out)`` voxels and the centre of the
    output grid coincides with the centre of the input grid.
    """
    size_in = np.asarray(image.GetSize(), dtype=float)
    sp_in = np.asarray(image.GetSpacing(), dtype=float)
    sp_out = np.asarray(spacing, dtype=float)
    size_out = np.ceil(np.round(size_in * sp_in / sp_out, 6)).astype(int)
    shift = (sp_in * (size_in - 1) - sp_out * (size_out - 1)) / 2.0  # along each axis, in mm
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), dtype=float) + direction @ shift
    return [int(v) for v in size_out], [float(v) for v in origin]


def _resample(
    image: sitk.Image, size: list[int], origin: list[float], spacing: Sequence[float], interpolator: int
) -> sitk.Image:
    return sitk.Resample(
        image,
        size,
        sitk.Transform(),
        interpolator,
        origin,
        [float(s) for s in spacing],
        image.GetDirection(),
        0.0,
        sitk.sitkFloat64,
        True,  # nearest-boundary extrapolation
    )


def target_spacing(image: sitk.Image, settings: IbsiSettings) -> tuple[float, float, float]:
    """Voxel spacing (x, y, z, mm) of the grid :func:`interpolate` puts ``image`` on (its own if no ``spacing_mm``)."""
    own = tuple(float(s) for s in image.GetSpacing())
    if settings.spacing_mm is None:
        return own[0], own[1], own[2]
    x, y, z = settings.spacing_mm
    return float(x), float(y), own[2] if settings.in_plane else float(z)


def interpolate(image: sitk.Image, mask: sitk.Image, settings: IbsiSettings) -> tuple[sitk.Image, sitk.Image]:
    """Interpolate image and mask onto the IBSI grid (no-op without ``spacing_mm``).

    Returns the image as float64 (rounded when ``round_intensities``) and the mask as uint8 0/1.
    """
    img = sitk.Cast(image, sitk.sitkFloat64)
    msk = sitk.Cast(mask > 0, sitk.sitkFloat64)
    if settings.spacing_mm is not None:
        spacing = list(target_spacing(image, settings))
        size, origin = centred_grid(image, spacing)
        img = _resample(img, size, origin, spacing, _INTERPOLATORS[settings.interpolator])
        msk = _resample(msk, size, origin, spacing, sitk.sitkLinear)
    if settings.round_intensities:
        img = sitk.Round(img)
    out_mask = sitk.Cast(msk >= settings.mask_threshold, sitk.sitkUInt8)
    return img, out_mask


def resegment(image: sitk.Image, mask: sitk.Image, settings: IbsiSettings, *, subject: str | None = None) -> sitk.Image:
    """Intensity mask: ``mask`` restricted to the re-segmentation range and outlier limits.

    Outlier limits (mean +/- k SD) are computed on the voxels left by the range (IBSI order).
    Raises :class:`DataError` when nothing of the ROI is left.
    """
    arr = sitk.GetArrayViewFromImage(image)
    keep = sitk.GetArrayFromImage(mask).astype(bool)
    if settings.resegment_range is not None:
        low, high = settings.resegment_range
        if low is not None:
            keep &= arr >= low
        if high is not None:
            keep &= arr <= high
    if settings.outlier_sigma is not None and keep.any():
        values = arr[keep]
        mu, sd = float(values.mean()), float(values.std())
        k = settings.outlier_sigma
        keep &= (arr >= mu - k * sd) & (arr <= mu + k * sd)
    if not keep.any():
        raise DataError(
            f"re-segmentation (range {settings.resegment_range}, outliers "
            f"{settings.outlier_sigma} SD) left no voxel of the ROI",
            subject=subject,
        )
    out = sitk.GetImageFromArray(keep.astype(np.uint8))
    out.CopyInformation(mask)
    return out


def voxel_count(mask: sitk.Image) -> int:
    """Number of non-zero voxels of a mask."""
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))


def describe(settings: IbsiSettings) -> str:
    """One-line description of the processing, for logs."""
    parts = []
    if settings.spacing_mm is not None:
        parts.append(
            f"{'in-plane ' if settings.in_plane else ''}{settings.interpolator} to "
            f"{settings.spacing_mm} mm on the centred grid, mask >= {settings.mask_threshold}"
        )
    if settings.round_intensities:
        parts.append("intensities rounded")
    if settings.resegment_range is not None:
        parts.append(f"range {settings.resegment_range}")
    if settings.outlier_sigma is not None:
        parts.append(f"outliers beyond {settings.outlier_sigma} SD removed")
    if settings.bin_start is not None and not math.isnan(settings.bin_start):
        parts.append(f"bins numbered from {settings.bin_start}")
    return "; ".join(parts) or "none"
