"""Synthetic lesion for the demo cohort: enhancing rim, necrotic core and (unlabelled) edema.

The lesion is a level function on a local 1 mm lattice in the subject's world coordinates (the
T1w frame): the distance to the centre through a random ellipsoid metric, divided by the radius,
plus a smooth random field that makes the outline irregular. ``level < core_level`` is the
necrotic core, ``level < 1`` the lesion (rim + core, the label), ``level < edema_level`` the
surrounding edema. Any acquisition (with or without head motion) samples the same function, so
the two sequences show the same lesion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

F64 = npt.NDArray[np.float64]

#: Level value outside the lattice (far from the lesion).
OUTSIDE = 99.0
#: Lattice step in mm.
STEP_MM = 1.0


@dataclass(frozen=True)
class Lesion:
    """A lesion in subject world coordinates (RAS mm, T1w frame)."""

    centre_mm: F64
    radius_mm: float
    core_level: float
    edema_level: float
    level: npt.NDArray[np.float32]
    origin_mm: F64

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable parameters (recorded in the subject's truth file)."""
        return {
            "centre_ras_mm": [round(float(v), 3) for v in self.centre_mm],
            "radius_mm": round(self.radius_mm, 3),
            "core_level": round(self.core_level, 4),
            "edema_level": round(self.edema_level, 4),
        }


def make_lesion(rng: np.random.Generator, centre_mm: F64, radius_mm: float) -> Lesion:
    """Draw an irregular lesion of nominal ``radius_mm`` around ``centre_mm``."""
    half = int(np.ceil(radius_mm * 2.2 + 6.0))
    n = 2 * half + 1
    axes = rng.uniform(0.8, 1.2, size=3)
    axes /= np.cbrt(axes.prod())
    rot = Rotation.from_euler("xyz", rng.uniform(-180.0, 180.0, size=3), degrees=True).as_matrix()
    coords = (np.indices((n, n, n), dtype=np.float64).reshape(3, -1) - half) * STEP_MM
    local = (rot.T @ coords) / axes[:, None]
    dist = np.sqrt((local**2).sum(axis=0)).reshape(n, n, n) / radius_mm
    noise = ndi.gaussian_filter(rng.standard_normal((n, n, n)), sigma=max(radius_mm / 3.0, 2.0) / STEP_MM)
    noise /= max(float(noise.std()), 1e-9)
    level = dist + rng.uniform(0.08, 0.16) * noise
    return Lesion(
        centre_mm=np.asarray(centre_mm, dtype=np.float64),
        radius_mm=float(radius_mm),
        core_level=float(rng.uniform(0.45, 0.65)),
        edema_level=float(rng.uniform(1.2, 1.45)),
        level=level.astype(np.float32),
        origin_mm=np.asarray(centre_mm, dtype=np.float64) - half * STEP_MM,
    )


def lesion_level_on_grid(
    lesion: Lesion,
    grid_affine: F64,
    shape: tuple[int, int, int],
    acquisition_to_subject: F64,
) -> npt.NDArray[np.float32]:
    """Sample the lesion level function on an acquisition grid (``OUTSIDE`` far from the lesion).

    Parameters
    ----------
    lesion
        Output of :func:`make_lesion`.
    grid_affine, shape
        Acquisition grid (voxel to RAS mm).
    acquisition_to_subject
        4x4 map from acquisition world coordinates to the subject frame (identity for T1w, the
        inverse head motion for T2w).
    """
    lattice = np.eye(4)
    lattice[:3, :3] *= STEP_MM
    lattice[:3, 3] = lesion.origin_mm
    vox_to_lattice = np.linalg.inv(lattice) @ acquisition_to_subject @ grid_affine
    n = lesion.level.shape[0]
    corners = np.array([[a, b, c, 1.0] for a in (0, n - 1) for b in (0, n - 1) for c in (0, n - 1)])
    in_grid = (np.linalg.inv(vox_to_lattice) @ corners.T)[:3]
    lo = np.clip(np.floor(in_grid.min(axis=1)).astype(int) - 1, 0, np.array(shape))
    hi = np.clip(np.ceil(in_grid.max(axis=1)).astype(int) + 2, 0, np.array(shape))
    out = np.full(shape, OUTSIDE, dtype=np.float32)
    if np.any(hi <= lo):
        return out
    sub_shape = tuple(int(v) for v in hi - lo)
    offset = vox_to_lattice[:3, :3] @ lo + vox_to_lattice[:3, 3]
    sub = np.empty(sub_shape, dtype=np.float32)
    ndi.affine_transform(
        lesion.level,
        vox_to_lattice[:3, :3],
        offset,
        output_shape=sub_shape,
        output=sub,
        order=1,
        mode="constant",
        cval=OUTSIDE,
    )
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = sub
    return out
