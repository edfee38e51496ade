"""RTSTRUCT -> voxel mask on a reference image grid, by geometry.

Contours are placed on the reference grid by their world coordinates (DICOM patient LPS mm ->
RAS+ -> voxel indices), not by the SOP Instance UIDs they reference: real exports often reference
instances that are not in the image series (they are counted and reported as a warning). Each
closed planar contour must lie in a plane of the grid; it is rasterised by testing voxel centres
against the polygon (even-odd rule, so holes drawn as inner contours stay holes). No contour is
dropped silently: contours off the grid, between slices or of a non-closed type are counted and
logged, and a structure with no placed contour is an error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from matplotlib.path import Path as PolygonPath

from medpipe.core.errors import DataError, DicomError, GeometryError
from medpipe.core.geometry import Geometry, flip_lps_ras

logger = logging.getLogger(__name__)

#: A contour's plane may sit this far (in voxels) from a slice centre before it is reported.
PLANE_TOL_VOX = 0.1


@dataclass
class RasterReport:
    """What happened to the contours of one ROI."""

    roi_name: str
    n_contours: int = 0
    n_placed: int = 0
    dangling_references: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (recorded in the mask sidecar)."""
        return {
            "roi_name": self.roi_name,
            "n_contours": self.n_contours,
            "n_placed": self.n_placed,
            "dangling_references": self.dangling_references,
            "warnings": list(self.warnings),
        }


class RoiSelectionError(DicomError):
    """A name pattern matched no ROI (or segment) or several; the caller names the setting it came from."""


def select_roi(names: dict[int, str], pattern: str, *, subject: str, path: str | Path, what: str = "ROI") -> int:
    """Number of the one ROI whose name matches ``pattern`` (regular expression, searched).

    Raises
    ------
    RoiSelectionError
        No name or several names match.
    """
    hits = {n: name for n, name in names.items() if re.search(pattern, name)}
    if len(hits) != 1:
        found = sorted(names.values())
        problem = "no" if not hits else f"{len(hits)}"
        raise RoiSelectionError(
            f"{problem} {what} name(s) match {pattern!r}; names in the file: {found}. Use a pattern that matches "
            "exactly one",
            subject=subject,
            path=path,
        )
    return next(iter(hits))


def _polygon_mask(points: npt.NDArray[np.float64], shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """Voxel centres (integer indices) inside a polygon given in continuous index coordinates."""
    lo = np.maximum(np.floor(points.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(points.max(axis=0)).astype(int), np.array(shape) - 1)
    out = np.zeros(shape, dtype=bool)
    if np.any(hi < lo):
        return out
    ia, ib = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    centres = np.column_stack([ia.ravel(), ib.ravel()]).astype(np.float64)
    inside = PolygonPath(np.vstack([points, points[:1]]), closed=True).contains_points(centres)
    out[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1] = inside.reshape(ia.shape)
    return out


def _roi_contours(
    path: str | Path, *, subject: str, roi_pattern: str, frame_of_reference: str | None
) -> tuple[str, list[Any]]:
    """Read the RTSTRUCT and return the selected ROI's name and its contour items.

    Raises
    ------
    DicomError
        When the file is not an RTSTRUCT or ``roi_pattern`` does not match exactly one ROI.
    GeometryError
        When the ROI's frame of reference differs from ``frame_of_reference``.
    """
    ds = pydicom.dcmread(str(path), force=True)
    if str(ds.get("Modality", "")).upper() != "RTSTRUCT":
        raise DicomError(f"expected an RTSTRUCT, got Modality {ds.get('Modality', '?')}", subject=subject, path=path)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}
    number = select_roi(names, roi_pattern, subject=subject, path=path)
    roi_for = {int(r.ROINumber): str(r.get("ReferencedFrameOfReferenceUID", "")) for r in ds.StructureSetROISequence}
    if frame_of_reference and roi_for.get(number) and roi_for[number] != frame_of_reference:
        raise GeometryError(
            f"ROI {names[number]!r} is in another frame of reference than the reference image "
            "(FrameOfReferenceUID differs); it belongs to another scan",
            subject=subject,
            path=path,
        )
    contours = [
        c
        for item in ds.get("ROIContourSequence", [])
        if int(item.ReferencedROINumber) == number
        for c in item.get("ContourSequence", [])
    ]
    return names[number], contours


def _contour_voxels(contour: Any, inv: npt.NDArray[Any]) -> tuple[npt.NDArray[np.float64] | None, str]:
    """Continuous voxel indices (N x 4, homogeneous) of a closed planar contour, and its geometric type.

    The points are ``None`` for a contour that encloses no area (not ``CLOSED_PLANAR`` or fewer than 3 points).
    """
    kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
    pts = flip_lps_ras(np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3))
    if kind != "CLOSED_PLANAR" or len(pts) < 3:
        return None, kind
    return np.column_stack([pts, np.ones(len(pts))]) @ inv.T, kind


def _place_contour(
    vox: npt.NDArray[np.float64],
    mask: npt.NDArray[np.bool_],
    skipped: dict[str, int],
    *,
    roi_name: str,
    subject: str,
    path: str | Path,
) -> bool:
    """XOR the contour (voxel coordinates ``vox``) into its grid plane of ``mask``.

    Contours off the grid are counted in ``skipped`` and not placed; contours between slices are
    counted and placed on the nearest slice.

    Returns
    -------
    bool
        Whether the contour was placed.

    Raises
    ------
    GeometryError
        When the contour is oblique to every grid plane.
    """
    shape = mask.shape
    spread = np.ptp(vox[:, :3], axis=0)
    axis = int(np.argmin(spread))
    if spread[axis] > 2 * PLANE_TOL_VOX:
        raise GeometryError(
            f"a contour of ROI {roi_name!r} is oblique to the reference grid (its points "
            f"span {spread[axis]:.2f} voxels across every grid plane); rasterise it on the grid "
            "it was drawn on",
            subject=subject,
            path=path,
        )
    k_float = float(vox[:, axis].mean())
    k = round(k_float)
    if not 0 <= k < shape[axis]:
        skipped["contour outside the reference grid"] = skipped.get("contour outside the reference grid", 0) + 1
        return False
    if abs(k_float - k) > PLANE_TOL_VOX:
        skipped_key = "contour between slices, placed on the nearest slice"
        skipped[skipped_key] = skipped.get(skipped_key, 0) + 1
    in_plane = [a for a in range(3) if a != axis]
    plane = _polygon_mask(vox[:, in_plane], (shape[in_plane[0]], shape[in_plane[1]]))
    index: list[Any] = [slice(None)] * 3
    index[axis] = k
    mask[tuple(index)] ^= plane
    return True


def _report_warnings(report: RasterReport, skipped: dict[str, int]) -> None:
    """Add the dangling-reference and skipped-contour warnings to ``report`` and log them."""
    if report.dangling_references:
        report.warnings.append(
            f"{report.dangling_references} of {report.n_contours} contours reference SOP instances "
            "that are not in the reference series; placed by geometry"
        )
    for reason, count in sorted(skipped.items()):
        report.warnings.append(f"{count} contour(s): {reason}")
    for w in report.warnings:
        logger.warning("ROI %r: %s", report.roi_name, w)


def rtstruct_to_mask(
    path: str | Path,
    reference: Geometry,
    *,
    subject: str,
    roi_pattern: str,
    reference_sops: Collection[str] | None = None,
    frame_of_reference: str | None = None,
) -> tuple[npt.NDArray[np.uint8], RasterReport]:
    """Rasterise the ROI of an RTSTRUCT selected by ``roi_pattern`` on the ``reference`` grid.

    Parameters
    ----------
    path
        RTSTRUCT file.
    reference
        Grid of the converted reference image (RAS+ affine).
    subject
        Named in errors.
    roi_pattern
        Regular expression selecting exactly one ROI name.
    reference_sops
        SOP Instance UIDs of the reference series (from its convert sidecar), used to report
        contours whose image references dangle; ``None`` skips that report.
    frame_of_reference
        FrameOfReferenceUID of the reference series; a different one is a GeometryError.

    Returns
    -------
    mask, report
        uint8 0/1 mask on ``reference`` and what happened to every contour.
    """
    roi_name, contours = _roi_contours(
        path, subject=subject, roi_pattern=roi_pattern, frame_of_reference=frame_of_reference
    )
    report = RasterReport(roi_name=roi_name, n_contours=len(contours))
    inv = np.linalg.inv(reference.affine)
    mask = np.zeros(tuple(int(v) for v in reference.shape[:3]), dtype=bool)
    skipped: dict[str, int] = {}
    for contour in contours:
        refs = [str(r.ReferencedSOPInstanceUID) for r in contour.get("ContourImageSequence", [])]
        if reference_sops is not None and any(r not in reference_sops for r in refs):
            report.dangling_references += 1
        vox, kind = _contour_voxels(contour, inv)
        if vox is None:
            skipped[f"{kind} contour (not an area)"] = skipped.get(f"{kind} contour (not an area)", 0) + 1
        elif _place_contour(vox, mask, skipped, roi_name=roi_name, subject=subject, path=path):
            report.n_placed += 1
    _report_warnings(report, skipped)
    if not mask.any():
        raise DataError(
            f"ROI {roi_name!r}: no voxel of the reference grid lies inside its {len(contours)} "
            f"contour(s) ({'; '.join(report.warnings) or 'no contours'})",
            subject=subject,
            path=path,
        )
    logger.info(
        "ROI %r: %d of %d contour(s) placed, %d voxel(s)",
        roi_name,
        report.n_placed,
        report.n_contours,
        int(mask.sum()),
    )
    return mask.astype(np.uint8), report
