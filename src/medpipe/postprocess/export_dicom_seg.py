"""Export a mask on the native grid as a DICOM Segmentation (highdicom) referencing its source series.

The mask NIfTI must lie on the grid of the source DICOM series (the converted reference image's
grid, which :func:`medpipe.postprocess.clean.postprocess_to_native` guarantees). Each DICOM slice's
pixel centres are mapped through the world coordinates (LPS in DICOM, RAS+ in NIfTI) onto the
mask's voxel indices; they must land on integer indices within ``INDEX_TOL`` voxels, otherwise the
export is refused with :class:`medpipe.core.errors.GeometryError` (the mask is on another grid). This
handles any reorientation or slice order between the NIfTI and the DICOM files.

The Segmentation references every source instance (so a viewer can overlay it on the series) and
keeps the source's Study Instance UID. Its own UIDs are derived from the source series UID, the
label and the mask content, and Content Date/Time are copied from the source series, so a re-run
writes the same bytes. With ``deidentify=True`` (default) the DICOM PS3.15 basic confidentiality profile
with the Retain UIDs Option is applied to the whole object, nested sequences included
(:mod:`medpipe.postprocess.confidentiality`): Patient ID and Name become the subject ID, the study, series,
instance and frame-of-reference UIDs stay (the links that re-attach the segmentation to its study).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.valuerep import DA, TM

from medpipe import __version__
from medpipe.core.confidentiality import apply_basic_profile, profile_record
from medpipe.core.errors import DicomError, GeometryError
from medpipe.core.geometry import LPS_RAS
from medpipe.core.io import atomic_path, load_nifti
from medpipe.core.sidecar import read_sidecar, write_sidecar

logger = logging.getLogger(__name__)

#: Largest distance (in mask voxels) between a DICOM pixel centre and the nearest mask voxel centre.
INDEX_TOL = 0.01


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in (Path(x) for x in paths):
        out.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    return out


def read_series(
    files: Iterable[str | Path], *, subject: str, series_instance_uid: str | None = None
) -> list[pydicom.Dataset]:
    """Read the image instances of one series, sorted along the slice normal.

    Headers are read first; files that are not images (no Image Position/Orientation, e.g. an
    RTSTRUCT) or that belong to another series are skipped before any pixel data is read. When
    the files hold several series, ``series_instance_uid`` must say which one.
    """
    headers: dict[Path, str] = {}
    for f in _expand(files):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises several exception types for broken files
            raise DicomError(f"cannot read DICOM file: {exc}", subject=subject, path=f) from exc
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds and "Rows" in ds:
            headers[f] = str(ds.SeriesInstanceUID)
    uids = sorted(set(headers.values()))
    if series_instance_uid is None and len(uids) > 1:
        raise DicomError(f"source files hold {len(uids)} image series; pass series_instance_uid", subject=subject)
    wanted = series_instance_uid or (uids[0] if uids else "")
    datasets: list[pydicom.Dataset] = [pydicom.dcmread(f) for f, uid in headers.items() if uid == wanted]
    if not datasets:
        raise DicomError(
            f"no image instances of series {series_instance_uid or '(any)'} in the source files", subject=subject
        )
    normal = np.cross(*np.asarray(datasets[0].ImageOrientationPatient, dtype=float).reshape(2, 3))
    datasets.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))))
    return datasets


def mask_frames(
    mask: npt.NDArray[np.bool_],
    mask_affine: npt.NDArray[np.float64],
    datasets: Sequence[pydicom.Dataset],
    *,
    subject: str,
    path: str | Path,
) -> npt.NDArray[np.uint8]:
    """Sample ``mask`` (RAS+ affine) at the pixel centres of every source slice: (frames, rows, cols)."""
    to_index = np.linalg.inv(mask_affine)
    frames = []
    for ds in datasets:
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        row_dir, col_dir = iop[:3], iop[3:]  # direction of increasing column index, of increasing row index
        d_row, d_col = (float(v) for v in ds.PixelSpacing)  # spacing between rows, between columns
        r, c = np.meshgrid(np.arange(int(ds.Rows)), np.arange(int(ds.Columns)), indexing="ij")
        lps = (
            np.asarray(ds.ImagePositionPatient, dtype=float)[:, None, None]
            + row_dir[:, None, None] * (c * d_col)
            + col_dir[:, None, None] * (r * d_row)
        )
        ras = np.tensordot(LPS_RAS[:3, :3], lps, axes=1)
        idx = np.tensordot(to_index[:3, :3], ras, axes=1) + to_index[:3, 3][:, None, None]
        rounded = np.rint(idx)
        off = float(np.abs(idx - rounded).max())
        inside = all(rounded[a].min() >= 0 and rounded[a].max() < mask.shape[a] for a in range(3))
        if off > INDEX_TOL or not inside:
            raise GeometryError(
                f"DICOM instance {ds.SOPInstanceUID} does not lie on the mask grid (pixel centres {off:.3g} "
                f"voxels off the grid, inside the mask volume: {inside}); the mask must be on the source "
                "grid",
                subject=subject,
                path=path,
            )
        ri = rounded.astype(np.intp)
        frames.append(mask[ri[0], ri[1], ri[2]])
    return np.asarray(frames, dtype=np.uint8)


def _uid(*parts: str) -> str:
    return str(pydicom.uid.generate_uid(entropy_srcs=["medpipe-dicom-seg", *parts]))


def _segment_descriptions(names: Sequence[str], src_series: str) -> list[Any]:
    """One automatic segment per name, numbered from 1, each with a tracking UID derived from the source series."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="medpipe", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=_uid(src_series, name),
            tracking_id=name,
        )
        for number, name in enumerate(names, start=1)
    ]


def export_dicom_seg(
    mask_nifti: str | Path,
    source_dicom_files: Iterable[str | Path],
    out_dcm: str | Path,
    *,
    subject: str,
    label_name: str,
    label_value: int | None = None,
    series_instance_uid: str | None = None,
    deidentify: bool = True,
    classes: Mapping[str, int] | None = None,
) -> Path:
    """Write a binary DICOM-SEG of one label (or one segment per class) that references the source image series.

    Parameters
    ----------
    mask_nifti
        Label map on the native grid of the source series.
    source_dicom_files
        Files (or folders, searched recursively) of the source series; non-image files are skipped.
    out_dcm
        Destination ``.dcm``.
    subject
        Subject ID (becomes Patient Name and ID when de-identifying).
    label_name
        Segment label (e.g. ``lesion``).
    label_value
        Voxel value of the segment; default any non-zero voxel.
    series_instance_uid
        Source series to use when the files hold several.
    deidentify
        Apply the basic confidentiality profile (Retain UIDs Option); Patient ID and Name := ``subject``.
    classes
        ``label.classes`` as class name -> voxel value: one segment per class (numbered 1..K in this order,
        labelled with the class name); None: the one segment ``label_name``.
    """
    import highdicom as hd

    img = load_nifti(mask_nifti, subject=subject)
    data = np.asarray(img.dataobj)
    segments = dict(classes) if classes else {label_name: label_value}
    datasets = read_series(source_dicom_files, subject=subject, series_instance_uid=series_instance_uid)
    affine = np.asarray(img.affine, dtype=np.float64)
    per_segment = []
    for value in segments.values():
        mask = data != 0 if value is None else data == value
        frames = mask_frames(mask, affine, datasets, subject=subject, path=mask_nifti)
        if int(frames.sum()) != int(mask.sum()):
            raise GeometryError(
                f"the source series covers {int(frames.sum())} of the {int(mask.sum())} mask voxels",
                subject=subject,
                path=mask_nifti,
            )
        per_segment.append(frames)
    frames = per_segment[0] if len(per_segment) == 1 else np.stack(per_segment, axis=-1)
    src_series = str(datasets[0].SeriesInstanceUID)
    content = hashlib.sha256(np.packbits(frames).tobytes()).hexdigest()
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(list(segments), src_series),
        series_instance_uid=_uid(src_series, label_name, "series"),
        series_number=9000,
        sop_instance_uid=_uid(src_series, label_name, content),
        instance_number=1,
        manufacturer="medpipe",
        manufacturer_model_name="medpipe",
        software_versions=__version__,
        device_serial_number="0",
        series_description=f"medpipe {label_name}"[:64],
    )
    _make_reproducible(seg, datasets[0], _uid(src_series, label_name, content, "dimensions"))
    if deidentify:
        apply_basic_profile(seg, subject=subject)
        seg.SeriesDescription = f"medpipe {label_name}"[:64]  # medpipe's own text (the profile removes the source's)
    out = Path(out_dcm)
    with atomic_path(out, suffix=".dcm") as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    logger.info(
        "subject %s: DICOM-SEG %s with %d frames referencing %d instances of series %s",
        subject,
        out.name,
        int(seg.NumberOfFrames),
        len(datasets),
        src_series,
    )
    return out


def export_subject_dicom_seg(
    mask_nifti: str | Path,
    dicom_dir: str | Path,
    reference: str | Path,
    out_dcm: str | Path,
    *,
    subject: str,
    label_name: str,
    classes: Mapping[str, int] | None = None,
) -> Path:
    """Pipeline entry: export the automatic mask as DICOM-SEG on the series the reference came from.

    With ``classes`` (``label.classes``: name -> value) the SEG holds one segment per class.

    The source series is the one recorded by the convert stage in the reference image's sidecar
    (``source.series_instance_uid``); its files are looked up in the subject's DICOM folder. A
    sidecar ``<out>.dcm.json`` records inputs and the referenced series.
    """
    record = read_sidecar(reference, subject=subject).get("source", {})
    series_uid = record.get("series_instance_uid")
    if not series_uid:
        raise DicomError(
            "the reference sidecar records no source series_instance_uid (was it converted from DICOM?)",
            subject=subject,
            path=reference,
        )
    out = export_dicom_seg(
        mask_nifti,
        [dicom_dir],
        out_dcm,
        subject=subject,
        label_name=label_name,
        series_instance_uid=str(series_uid),
        classes=classes,
    )
    write_sidecar(
        out,
        stage="dicom_seg",
        subject=subject,
        inputs=[mask_nifti, reference],
        parameters={"label_name": label_name, "deidentify": True, "classes": dict(classes) if classes else None},
        packages=("highdicom", "pydicom", "dicom-anonymizer"),
        extra={"source_series_instance_uid": str(series_uid), "deidentification": profile_record()},
    )
    return out


def _make_reproducible(seg: pydicom.Dataset, source: pydicom.Dataset, dimension_uid: str) -> None:
    """Replace the creation timestamps and random UIDs highdicom sets, so re-runs give the same bytes.

    Dates and times are those of the source series (the segmentation describes that acquisition).
    """
    date = str(source.get("SeriesDate") or source.get("StudyDate") or "19000101")
    time = str(source.get("SeriesTime") or source.get("StudyTime") or "000000").split(".")[0]
    seg.ContentDate = seg.InstanceCreationDate = DA(date)
    seg.ContentTime = seg.InstanceCreationTime = TM(time)
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + time
    for key in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
        for item in seg.get(key, []):
            if "DimensionOrganizationUID" in item:
                item.DimensionOrganizationUID = dimension_uid
