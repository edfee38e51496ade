"""Import the human label of a subject onto its converted reference image grid.

The subject sheet's ``label`` is a NIfTI mask, an RTSTRUCT or a DICOM-SEG. Whatever its form, the
output is a uint8 0/1 mask with exactly the reference image's shape and affine:

* NIfTI (and SEG volumes) on the same world lattice but in another axis order, flip or extent are
  mapped voxel by voxel (exact, no interpolation); a genuinely different grid raises
  :class:`GeometryError` (resample the label yourself, deliberately, if that is what you want).
* RTSTRUCT contours are rasterised on the reference grid by geometry (:mod:`medpipe.convert.rtstruct`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pydicom

from medpipe.convert.dicom_seg import seg_volume
from medpipe.convert.rtstruct import rtstruct_to_mask
from medpipe.core.errors import DataError, DicomError, GeometryError
from medpipe.core.geometry import WORLD_ATOL_MM, Geometry, geometry_of
from medpipe.core.io import load_nifti, save_like
from medpipe.core.sidecar import sidecar_path, write_sidecar

logger = logging.getLogger(__name__)


def place_on_grid(
    data: npt.NDArray[Any],
    affine: npt.NDArray[np.float64],
    reference: Geometry,
    *,
    subject: str | None = None,
    path: str | Path | None = None,
    atol_mm: float = WORLD_ATOL_MM,
) -> npt.NDArray[np.uint8]:
    """Map a binary label exactly onto ``reference`` when both grids share one voxel lattice.

    The label may be in another axis order, flipped, or cover a sub-block (or super-block) of
    the reference grid; every labelled voxel must land on a reference voxel centre within
    ``atol_mm`` and inside the reference grid.

    Raises
    ------
    GeometryError
        When the lattices differ (spacing, rotation, half-voxel shift) or labelled voxels fall
        outside the reference grid.
    """
    m = np.linalg.inv(reference.affine) @ np.asarray(affine, dtype=np.float64)
    perm = np.round(m[:3, :3])
    shift = np.round(m[:3, 3])
    is_perm = (np.abs(perm).sum(axis=0) == 1).all() and (np.abs(perm).sum(axis=1) == 1).all()
    shape = np.array(data.shape[:3])
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    exact = np.eye(4)
    exact[:3, :3], exact[:3, 3] = perm, shift
    err = np.abs(corners @ np.asarray(affine).T - corners @ (reference.affine @ exact).T)[:, :3].max()
    if not is_perm or err > atol_mm:
        src, ref = geometry_of(nib.Nifti1Image(np.zeros(shape, np.uint8), affine)), reference
        src_shape = tuple(int(v) for v in shape)
        raise GeometryError(
            f"label grid (shape {src_shape}, spacing {np.round(src.spacing, 4).tolist()} mm, "
            f"{src.orientation}) is not the reference grid (shape {tuple(ref.shape[:3])}, spacing "
            f"{np.round(ref.spacing, 4).tolist()} mm, {ref.orientation}) up to axis order/flip "
            f"(world mismatch {err:.3g} mm); resample the label onto the reference image first",
            subject=subject,
            path=path,
        )
    idx = np.argwhere(np.asarray(data) > 0)
    mapped = idx @ perm.T.astype(int) + shift.astype(int)
    inside = np.all((mapped >= 0) & (mapped < np.array(reference.shape[:3])), axis=1)
    if not inside.all():
        raise GeometryError(
            f"{int((~inside).sum())} labelled voxel(s) lie outside the reference image grid",
            subject=subject,
            path=path,
        )
    out = np.zeros(tuple(int(v) for v in reference.shape[:3]), dtype=np.uint8)
    out[tuple(mapped.T)] = 1
    return out


def _reference_source(reference_image: str | Path) -> dict[str, Any]:
    """The ``source`` record of the reference image's convert sidecar (empty when unavailable)."""
    sc = sidecar_path(reference_image)
    if not sc.exists():
        logger.info("no sidecar beside the reference image: frame-of-reference and SOP checks skipped")
        return {}
    source: dict[str, Any] = json.loads(sc.read_text()).get("source", {})
    return source


def _label_kind(source: Path, subject: str) -> str:
    name = source.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    try:
        modality = str(pydicom.dcmread(str(source), stop_before_pixels=True, force=True).get("Modality", "")).upper()
    except Exception as exc:  # pydicom raises several types for unreadable files
        raise DicomError(
            f"label file is neither NIfTI nor readable DICOM ({type(exc).__name__})",
            subject=subject,
            path=source,
        ) from exc
    if modality in ("RTSTRUCT", "SEG"):
        return modality.lower()
    raise DicomError(
        f"label DICOM has Modality {modality or '(none)'}; expected RTSTRUCT or SEG",
        subject=subject,
        path=source,
    )


def import_label(
    source: str | Path,
    reference_image: str | Path,
    out_mask: str | Path,
    *,
    subject: str,
    roi_pattern: str,
    out_qc: str | Path | None = None,
) -> Path:
    """Write the subject's human label as a uint8 0/1 mask on the reference image grid.

    Parameters
    ----------
    source
        NIfTI mask, RTSTRUCT (``.dcm``) or DICOM-SEG (``.dcm``).
    reference_image
        Converted reference sequence (``results/convert/...``); its sidecar, when present,
        supplies the FrameOfReferenceUID and SOP Instance UIDs that are checked.
    out_mask
        Output mask (``.nii.gz``); its sidecar is written beside it.
    subject
        Subject ID (from the subject sheet).
    roi_pattern
        Regular expression choosing the ROI (RTSTRUCT) or segment (SEG) by name.
    out_qc
        Optional QC figure: the mask outline over the reference image.

    Raises
    ------
    GeometryError
        The label is on another grid or frame of reference.
    DataError
        The resulting mask is empty.
    DicomError
        Unreadable label, or no/several ROIs matching ``roi_pattern``.
    """
    source, ref_img = Path(source), load_nifti(reference_image, subject=subject)
    reference = geometry_of(ref_img)
    ref_source = _reference_source(reference_image)
    frame = ref_source.get("frame_of_reference_uid") or None
    kind = _label_kind(source, subject)
    details: dict[str, Any] = {"label_type": kind}
    if kind == "nifti":
        img = load_nifti(source, subject=subject)
        raw = np.asarray(img.dataobj)
        if raw.ndim > 3:
            raise DataError(f"label has shape {raw.shape}; expected a 3D mask", subject=subject, path=source)
        values = np.unique(raw)
        if len(values) > 2 or (len(values) == 2 and values[0] != 0):
            logger.warning("label has values %s; every non-zero voxel is taken as the structure", values[:10].tolist())
        mask = place_on_grid(raw != 0, img.affine, reference, subject=subject, path=source)
    elif kind == "rtstruct":
        sops = ref_source.get("sop_instance_uids")
        mask, report = rtstruct_to_mask(
            source,
            reference,
            subject=subject,
            roi_pattern=roi_pattern,
            reference_sops=None if sops is None else set(sops),
            frame_of_reference=frame,
        )
        details.update(report.to_dict())
    else:
        data, affine, name = seg_volume(source, subject=subject, roi_pattern=roi_pattern, frame_of_reference=frame)
        mask = place_on_grid(data, affine, reference, subject=subject, path=source)
        details["roi_name"] = name
    n = int(mask.sum())
    if n == 0:
        raise DataError("the label is empty on the reference grid", subject=subject, path=source)
    save_like(mask, reference, out_mask, dtype=np.uint8)
    voxel_mm3 = float(np.prod(reference.spacing))
    write_sidecar(
        out_mask,
        stage="convert",
        subject=subject,
        inputs=[source, reference_image],
        parameters={"roi_pattern": roi_pattern},
        geometry=reference,
        packages=["pydicom", "highdicom"],
        extra={"label": details, "n_voxels": n, "volume_mm3": round(n * voxel_mm3, 3)},
    )
    if out_qc is not None:
        from medpipe.core.qc import save_overlay

        image = np.asarray(ref_img.dataobj, dtype=np.float32)
        save_overlay(
            image[..., 0] if image.ndim == 4 else image,
            {"human": mask},
            out_qc,
            title=f"sub-{subject} human label ({kind})",
            spacing=reference.spacing,
        )
    logger.info("label (%s): %d voxel(s), %.1f mm3 on the reference grid", kind, n, n * voxel_mm3)
    return Path(out_mask)
