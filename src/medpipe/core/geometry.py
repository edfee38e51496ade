"""Image geometry: description, comparison and checks at stage boundaries.

A :class:`Geometry` is the grid of a NIfTI image: its shape and the voxel-to-world (RAS+, mm)
affine. Stages never assume two images share a grid; they call :func:`check_same_grid`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from medpipe.core.errors import GeometryError

logger = logging.getLogger(__name__)

#: Default tolerance (mm) when comparing world coordinates of two grids.
WORLD_ATOL_MM = 1e-3

#: DICOM / ITK / ANTs world coordinates are LPS, NIfTI's RAS+: x and y flip. The homogeneous 4 x 4
#: matrix is its own inverse (RAS -> LPS and LPS -> RAS alike).
LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def flip_lps_ras(points: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """World points (N x 3) from LPS to RAS or back.

    Parameters
    ----------
    points
        Coordinates in mm with x, y, z along the last axis.

    Returns
    -------
    numpy.ndarray
        The same points with x and y negated (float64).
    """
    return np.asarray(points, dtype=np.float64) * LPS_RAS.diagonal()[:3]


@dataclass(frozen=True)
class Geometry:
    """Grid of an image: spatial shape and voxel-to-world (RAS+, mm) affine."""

    shape: tuple[int, ...]
    affine: npt.NDArray[np.float64]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three array axes."""
        s = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return (float(s[0]), float(s[1]), float(s[2]))

    @property
    def orientation(self) -> str:
        """Axis codes such as ``"RAS"`` or ``"LPS"`` (nibabel convention)."""
        return "".join(nib.aff2axcodes(self.affine))

    @property
    def origin(self) -> tuple[float, float, float]:
        """World coordinate (mm) of the centre of voxel (0, 0, 0)."""
        o = self.affine[:3, 3]
        return (float(o[0]), float(o[1]), float(o[2]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (used in sidecars)."""
        return {
            "shape": [int(v) for v in self.shape],
            "spacing_mm": [round(v, 6) for v in self.spacing],
            "orientation": self.orientation,
            "origin_mm": [round(v, 6) for v in self.origin],
            "affine": [[round(float(v), 6) for v in row] for row in self.affine],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Geometry:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(int(v) for v in data["shape"]), np.asarray(data["affine"], dtype=np.float64))


def geometry_of(img: nib.spatialimages.SpatialImage) -> Geometry:
    """Return the geometry of a nibabel image (spatial dimensions only)."""
    return Geometry(tuple(int(v) for v in img.shape[:3]), np.asarray(img.affine, dtype=np.float64))


def grid_differences(a: Geometry, b: Geometry, atol_mm: float = WORLD_ATOL_MM) -> list[str]:
    """List human-readable differences between two grids (empty when they match).

    The affines are compared through the world positions of the grid corners, so the
    tolerance is in millimetres whatever the voxel size.
    """
    problems: list[str] = []
    if tuple(a.shape[:3]) != tuple(b.shape[:3]):
        problems.append(f"shape {tuple(a.shape[:3])} != {tuple(b.shape[:3])}")
        return problems
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, a.shape[0] - 1) for j in (0, a.shape[1] - 1) for k in (0, a.shape[2] - 1)]
    )
    dist = np.abs((corners @ a.affine.T)[:, :3] - (corners @ b.affine.T)[:, :3]).max()
    if dist > atol_mm:
        if a.orientation != b.orientation:
            problems.append(f"orientation {a.orientation} != {b.orientation}")
        if not np.allclose(a.spacing, b.spacing, atol=1e-4):
            problems.append(f"spacing {np.round(a.spacing, 4).tolist()} != {np.round(b.spacing, 4).tolist()} mm")
        if not np.allclose(a.origin, b.origin, atol=atol_mm):
            problems.append(f"origin {np.round(a.origin, 3).tolist()} != {np.round(b.origin, 3).tolist()} mm")
        problems.append(f"grid corners differ by up to {dist:.4g} mm (tolerance {atol_mm} mm)")
    return problems


def check_same_grid(
    a: Geometry,
    b: Geometry,
    *,
    what: str,
    subject: str | None = None,
    path: str | Path | None = None,
    atol_mm: float = WORLD_ATOL_MM,
) -> None:
    """Raise :class:`GeometryError` unless ``a`` and ``b`` describe the same grid.

    Parameters
    ----------
    a, b
        Geometries to compare.
    what
        Short description used in the message, e.g. ``"mask vs image"``.
    subject, path
        Named in the error message.
    atol_mm
        Tolerance on world coordinates in mm.
    """
    problems = grid_differences(a, b, atol_mm)
    if problems:
        raise GeometryError(f"{what}: grids differ: " + "; ".join(problems), subject=subject, path=path)


def check_finite(data: npt.NDArray[Any], *, subject: str | None = None, path: str | Path | None = None) -> None:
    """Raise :class:`medpipe.core.errors.DataError` when ``data`` has NaN or infinite voxels."""
    from medpipe.core.errors import DataError

    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise DataError(
            f"{bad} voxels are NaN or infinite; fix or mask them before this stage", subject=subject, path=path
        )
