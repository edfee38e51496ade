"""DICOM-SEG -> voxel mask (highdicom), placed exactly on a reference grid.

The segment is chosen by label with the same pattern as RTSTRUCT ROIs. highdicom builds the
segment's volume (with its own affine, often covering only the slices that hold frames); that
volume is then mapped voxel by voxel onto the reference grid by
:func:`medpipe.convert.labels.place_on_grid`, which refuses a genuinely different grid.
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt

from medpipe.convert.rtstruct import select_roi
from medpipe.core.errors import DicomError, GeometryError

logger = logging.getLogger(__name__)


def seg_volume(
    path: str | Path, *, subject: str, roi_pattern: str, frame_of_reference: str | None = None
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float64], str]:
    """Binary volume of the one segment whose label matches ``roi_pattern``.

    Returns
    -------
    data, affine, label
        uint8 0/1 array, its voxel-to-RAS+ affine (mm) and the segment label.
    """
    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:  # highdicom/pydicom raise several types for non-SEG input
        raise DicomError(f"cannot read DICOM-SEG ({type(exc).__name__}: {exc})", subject=subject, path=path) from exc
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    number = select_roi(names, roi_pattern, subject=subject, path=path, what="segment")
    seg_for = str(seg.get("FrameOfReferenceUID", ""))
    if frame_of_reference and seg_for and seg_for != frame_of_reference:
        raise GeometryError(
            f"segment {names[number]!r} is in another frame of reference than the reference image",
            subject=subject,
            path=path,
        )
    try:
        volume = seg.get_volume(segment_numbers=[number], combine_segments=True, relabel=True)
    except (ValueError, RuntimeError) as exc:
        raise GeometryError(
            f"segment {names[number]!r} does not form a regular volume: {exc}", subject=subject, path=path
        ) from exc
    img = volume.to_nibabel()
    data = (np.asarray(img.dataobj) > 0).astype(np.uint8)
    if data.ndim == 4:
        data = data.max(axis=3)
    logger.info("segment %r: %d voxel(s) on a %s grid", names[number], int(data.sum()), data.shape)
    return data, np.asarray(img.affine, dtype=np.float64), names[number]
