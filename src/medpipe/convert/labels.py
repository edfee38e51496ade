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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pydicom

from medpipe.convert.classes import LabelClass, class_record, combine, dicom_class_masks, nifti_class_values
from medpipe.convert.dicom_seg import seg_volume
from medpipe.convert.rtstruct import RoiSelectionError, rtstruct_to_mask
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


def _label_frames(source: Path, kind: str) -> set[str]:
    """FrameOfReferenceUIDs a DICOM label names (structure set and ROIs, or the SEG's own)."""
    ds = pydicom.dcmread(str(source), stop_before_pixels=True, force=True)
    if kind == "seg":
        return {str(ds.FrameOfReferenceUID)} if ds.get("FrameOfReferenceUID") else set()
    frames = {str(r.FrameOfReferenceUID) for r in ds.get("ReferencedFrameOfReferenceSequence", [])}
    frames |= {str(r.ReferencedFrameOfReferenceUID) for r in ds.get("StructureSetROISequence", [])}
    return {f for f in frames if f}


def _frame_override(source: Path, kind: str, frame: str | None, policy: str, subject: str) -> dict[str, Any]:
    """``label.frame_of_reference`` for a DICOM label: the override record when it is placed by geometry.

    With ``require`` nothing is done here (rasterising checks the frame and refuses another one); with ``geometry``
    a label in another frame of reference than the reference image is placed by its world coordinates, with a
    warning, and the record (both UIDs, the policy) goes into the label's sidecar and flags it for review.
    """
    if policy == "require" or frame is None or kind == "nifti":
        return {}
    others = sorted(_label_frames(source, kind) - {frame})
    if not others:
        return {}
    logger.warning(
        "sub-%s: label %s names FrameOfReferenceUID %s, the reference image %s: placed by geometry as "
        "configured (label.frame_of_reference); check the overlay",
        subject,
        source.name,
        others,
        frame,
    )
    reason = "label in another frame of reference than the reference image, placed by geometry"
    return {
        "frame_of_reference_override": {"label": others, "reference": frame, "policy": policy},
        "flag": True,
        "reason": reason + " (label.frame_of_reference: geometry)",
    }


def _nifti_raw(source: Path, subject: str, img: nib.Nifti1Image) -> npt.NDArray[Any]:
    """A NIfTI label's voxels (``img``, read from ``source``): 3D, finite (NaN and infinities refused)."""
    raw = np.asarray(img.dataobj)
    if raw.ndim > 3:
        raise DataError(f"label has shape {raw.shape}; expected a 3D mask", subject=subject, path=source)
    if not np.isfinite(raw).all():
        n_bad = int((~np.isfinite(raw)).sum())
        raise DataError(f"label holds {n_bad} NaN or infinite voxel(s)", subject=subject, path=source)
    return raw


def _nifti_mask(source: Path, reference: Geometry, subject: str, threshold: float | None) -> npt.NDArray[np.uint8]:
    """A NIfTI label as a 0/1 mask on ``reference``: NaN refused, fractional values only with a threshold."""
    img = load_nifti(source, subject=subject)
    raw = _nifti_raw(source, subject, img)
    fractional = raw[raw != np.rint(raw)]
    if threshold is None and fractional.size:
        raise DataError(
            f"label holds {fractional.size} fractional voxel value(s), e.g. {float(fractional[0]):g}; set "
            "label.threshold to binarise a probability or partial-volume label",
            subject=subject,
            path=source,
        )
    binary = raw >= threshold if threshold is not None else raw != 0
    values = np.unique(raw) if threshold is None else np.array([])
    if len(values) > 2 or (len(values) == 2 and values[0] != 0):
        logger.warning("label has values %s; every non-zero voxel is taken as the structure", values[:10].tolist())
    return place_on_grid(binary, img.affine, reference, subject=subject, path=source)


def _dicom_mask(
    source: Path,
    kind: str,
    reference: Geometry,
    ref_source: dict[str, Any],
    frame: str | None,
    *,
    subject: str,
    roi_pattern: str,
) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
    """An RTSTRUCT or DICOM-SEG label on ``reference``, with what the import found (``frame``: None = unchecked)."""
    if kind == "rtstruct":
        sops = ref_source.get("sop_instance_uids")
        mask, report = rtstruct_to_mask(
            source,
            reference,
            subject=subject,
            roi_pattern=roi_pattern,
            reference_sops=None if sops is None else set(sops),
            frame_of_reference=frame,
        )
        return mask, report.to_dict()
    data, affine, name = seg_volume(source, subject=subject, roi_pattern=roi_pattern, frame_of_reference=frame)
    return place_on_grid(data, affine, reference, subject=subject, path=source), {"roi_name": name}


def import_label(
    source: str | Path,
    reference_image: str | Path,
    out_mask: str | Path,
    *,
    subject: str,
    roi_pattern: str,
    out_qc: str | Path | None = None,
    frame_of_reference: str = "require",
    threshold: float | None = None,
    classes: Sequence[LabelClass] | None = None,
) -> Path:
    """Write the subject's human label as a uint8 mask on the reference image grid (0/1, or class values).

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
    frame_of_reference
        ``require`` (a DICOM label in another frame of reference is refused) or ``geometry`` (placed by its
        world coordinates, with a warning; recorded in the sidecar and flagged for review).
    threshold
        NIfTI labels: voxels >= ``threshold`` are the structure; without it fractional values are refused.
    classes
        ``label.classes`` (:func:`medpipe.convert.classes.label_classes`, priority order): several structures,
        each found by its ROI / segment pattern or NIfTI value and written as its value, overlaps resolved by
        priority and counted in the sidecar (one declared class too). None: a 0/1 mask via ``roi_pattern``.

    Raises
    ------
    GeometryError
        The label is on another grid or (with ``require``) in another frame of reference.
    DataError
        The resulting mask is empty; a NIfTI label with NaN, or fractional values without a threshold.
    DicomError
        Unreadable label, or no/several ROIs matching ``roi_pattern`` (or a class's pattern, naming the class).
    DataError
        With classes: NIfTI values outside the declared classes (naming them).
    """
    source, ref_img = Path(source), load_nifti(reference_image, subject=subject)
    reference = geometry_of(ref_img)
    ref_source = _reference_source(reference_image)
    frame = ref_source.get("frame_of_reference_uid") or None
    kind = _label_kind(source, subject)
    details: dict[str, Any] = {"label_type": kind}
    override = _frame_override(source, kind, frame, frame_of_reference, subject)
    voxel_mm3 = float(np.prod(reference.spacing))

    def read_dicom(pattern: str) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
        checked = None if override else frame
        return _dicom_mask(source, kind, reference, ref_source, checked, subject=subject, roi_pattern=pattern)

    if classes is None:
        if kind == "nifti":
            mask = _nifti_mask(source, reference, subject, threshold)
        else:
            try:
                mask, found = read_dicom(roi_pattern)
            except RoiSelectionError as exc:
                raise DicomError(
                    f"label.rtstruct_roi = {roi_pattern!r}: {exc.message}", subject=subject, path=source
                ) from exc
            details.update(found)
    else:
        mask = _class_mask(source, kind, reference, read_dicom, details, subject, classes, voxel_mm3)
    n = int(np.count_nonzero(mask))
    if n == 0:
        raise DataError("the label is empty on the reference grid", subject=subject, path=source)
    save_like(mask, reference, out_mask, dtype=np.uint8)
    parameters: dict[str, Any] = {
        "roi_pattern": roi_pattern,
        "frame_of_reference": frame_of_reference,
        "threshold": threshold,
    }
    if classes is not None:
        parameters["classes"] = [c.to_dict() for c in classes]
    write_sidecar(
        out_mask,
        stage="convert",
        subject=subject,
        inputs=[source, reference_image],
        parameters=parameters,
        geometry=reference,
        packages=["pydicom", "highdicom"],
        extra={"label": details, "n_voxels": n, "volume_mm3": round(n * voxel_mm3, 3), **override},
    )
    if out_qc is not None:
        overlay = {"human": mask} if classes is None else {c.name: mask == c.value for c in classes}
        _label_qc(ref_img, overlay, out_qc, title=f"sub-{subject} human label ({kind})", spacing=reference.spacing)
    logger.info("label (%s): %d voxel(s), %.1f mm3 on the reference grid", kind, n, n * voxel_mm3)
    return Path(out_mask)


def _class_mask(
    source: Path,
    kind: str,
    reference: Geometry,
    read_dicom: Callable[[str], tuple[npt.NDArray[np.uint8], dict[str, Any]]],
    details: dict[str, Any],
    subject: str,
    classes: Sequence[LabelClass],
    voxel_mm3: float,
) -> npt.NDArray[np.uint8]:
    """A label of several classes: class values, overlaps by priority; ``details`` gets classes and overlaps.

    ``read_dicom`` rasterises the one ROI or segment an RTSTRUCT / SEG pattern selects (as the one-structure import).
    """
    if kind == "nifti":
        img = load_nifti(source, subject=subject)
        raw = _nifti_raw(source, subject, img)
        nifti_class_values(raw, classes, subject=subject, path=source)
        masks = {
            c.name: place_on_grid(raw == c.value, img.affine, reference, subject=subject, path=source) for c in classes
        }
        found: dict[str, Any] = {}
    else:
        masks, found = dicom_class_masks(classes, read_dicom, subject=subject, path=source, kind=kind)
    mask, overlaps = combine(masks, classes)
    for pair, n in overlaps.items():
        logger.info(
            "sub-%s: %d voxel(s) claimed by two classes went to the first by label.priority: %s", subject, n, pair
        )
    details.update(
        classes=class_record(mask, classes, voxel_mm3, found), priority=[c.name for c in classes], overlaps=overlaps
    )
    return mask


def _label_qc(ref_img: nib.Nifti1Image, masks: dict[str, Any], out_qc: str | Path, *, title: str, spacing: Any) -> None:
    from medpipe.core.qc import save_overlay

    image = np.asarray(ref_img.dataobj, dtype=np.float32)
    save_overlay(image[..., 0] if image.ndim == 4 else image, masks, out_qc, title=title, spacing=spacing)
