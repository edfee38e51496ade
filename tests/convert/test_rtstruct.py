"""RTSTRUCT rasterisation on synthetic series with known voxel answers."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medpipe.convert.rtstruct import rtstruct_to_mask
from medpipe.core.errors import DataError, DicomError, GeometryError
from medpipe.core.geometry import geometry_of

RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
# synthetic series: origin (-10, -8, 20) LPS, 1.5 mm pixels, 2 mm slices, 12 rows x 10 columns, 8 slices


def _square(c0: float, c1: float, r0: float, r1: float, k: float) -> list[float]:
    """Closed contour through pixel-index corners (columns c0..c1, rows r0..r1) on slice k, in LPS mm."""
    x = [-10 + 1.5 * c for c in (c0, c1, c1, c0)]
    y = [-8 + 1.5 * r for r in (r0, r0, r1, r1)]
    return [v for xi, yi in zip(x, y, strict=True) for v in (xi, yi, 20 + 2.0 * k)]


def _write_rtstruct(path: Path, rois: dict[str, list[list[float]]], frame_uid: str, sop_ref: str) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = RTSTRUCT_STORAGE, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = (
        RTSTRUCT_STORAGE,
        meta.MediaStorageSOPInstanceUID,
        "RTSTRUCT",
    )
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(), Sequence()
    for n, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = n, name, frame_uid
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber, item.ContourSequence = n, Sequence()
        for data in contours:
            c = Dataset()
            c.ContourGeometricType, c.NumberOfContourPoints, c.ContourData = (
                "CLOSED_PLANAR",
                len(data) // 3,
                data,
            )
            img = Dataset()
            img.ReferencedSOPClassUID, img.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", sop_ref
            c.ContourImageSequence = Sequence([img])
            item.ContourSequence.append(c)
        ds.ROIContourSequence.append(item)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _world_box(mask: np.ndarray, img: nib.Nifti1Image) -> np.ndarray:
    ijk = np.argwhere(mask)
    ras = np.column_stack([ijk, np.ones(len(ijk))]) @ img.affine.T
    return np.sort(np.unique(np.round(ras[:, :3] * [-1, -1, 1], 3), axis=0), axis=0)


def test_square_and_hole_rasterised_exactly(tmp_path: Path, converted, caplog) -> None:
    image, frame, sops = converted
    rs = _write_rtstruct(
        tmp_path / "rs.dcm",
        {
            "GTV": [
                _square(1.5, 5.5, 2.5, 6.5, 3),
                _square(2.5, 3.5, 3.5, 4.5, 3),
                _square(1.5, 3.5, 2.5, 4.5, 4),
            ],
            "Body": [_square(0, 9, 0, 11, 3)],
        },
        frame,
        sop_ref="1.2.3.999",
    )
    img = nib.load(image)
    with caplog.at_level(logging.WARNING):
        mask, report = rtstruct_to_mask(
            rs,
            geometry_of(img),
            subject="S01",
            roi_pattern="^GTV$",
            reference_sops=set(sops),
            frame_of_reference=frame,
        )
    # slice 3: 4x4 square minus a 1x1 hole; slice 4: 2x2 square
    assert mask.dtype == np.uint8 and int(mask.sum()) == 16 - 1 + 4
    world = _world_box(mask, img)
    assert world[:, 2].min() == pytest.approx(26.0) and world[:, 2].max() == pytest.approx(28.0)
    assert world[:, 0].min() == pytest.approx(-10 + 1.5 * 2) and world[:, 0].max() == pytest.approx(-10 + 1.5 * 5)
    assert report.dangling_references == 3 and report.n_placed == 3
    assert "3 of 3 contours reference SOP instances" in caplog.text


def test_roi_selection_frame_and_empty(tmp_path: Path, converted) -> None:
    image, frame, _ = converted
    geom = geometry_of(nib.load(image))
    rs = _write_rtstruct(
        tmp_path / "rs.dcm",
        {"GTV1": [_square(1.5, 5.5, 2.5, 6.5, 3)], "GTV2": [_square(1.5, 5.5, 2.5, 6.5, 4)]},
        frame,
        "1.2",
    )
    with pytest.raises(DicomError, match=r"2 ROI name\(s\) match 'GTV'.*\['GTV1', 'GTV2'\]"):
        rtstruct_to_mask(rs, geom, subject="S01", roi_pattern="GTV")
    with pytest.raises(GeometryError, match="another frame of reference"):
        rtstruct_to_mask(rs, geom, subject="S01", roi_pattern="GTV1", frame_of_reference="1.2.3.4")
    off = _write_rtstruct(tmp_path / "off.dcm", {"GTV": [_square(1.5, 5.5, 2.5, 6.5, 40)]}, frame, "1.2")
    with pytest.raises(DataError, match=r"1 contour\(s\): contour outside the reference grid"):
        rtstruct_to_mask(off, geom, subject="S01", roi_pattern="GTV")
