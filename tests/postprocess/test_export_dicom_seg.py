"""Tests of medpipe.postprocess.export_dicom_seg on the real STS_001 MR series: read back with highdicom."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from medpipe.core.errors import DicomError, GeometryError
from medpipe.core.io import save_nifti
from medpipe.core.sidecar import write_sidecar
from medpipe.postprocess.export_dicom_seg import export_dicom_seg, export_subject_dicom_seg

pytestmark = pytest.mark.shared


def readback_dice(
    seg_path: Path, mask_img: nib.Nifti1Image, segment: int = 1, value: int | None = None
) -> tuple[float, int]:
    """Dice between a DICOM-SEG (highdicom volume, LPS) and a NIfTI mask, matched in world coordinates.

    Independent of the exporter's own slice mapping: every segmented voxel of the read-back volume is
    placed in the world with highdicom's affine and mapped onto the NIfTI grid with nibabel's.
    """
    seg = hd.seg.segread(seg_path)
    vol = seg.get_volume(segment_numbers=[segment], combine_segments=True)
    idx = np.argwhere(vol.array > 0)
    lps = np.c_[idx, np.ones(len(idx))] @ vol.affine.T
    ras = lps * np.array([-1.0, -1.0, 1.0, 1.0])
    ijk = ras @ np.linalg.inv(mask_img.affine).T
    assert np.abs(ijk[:, :3] - np.rint(ijk[:, :3])).max() < 1e-3  # lands on the NIfTI voxel centres
    ijk = np.rint(ijk[:, :3]).astype(int)
    readback = np.zeros(mask_img.shape, bool)
    readback[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    data = np.asarray(mask_img.dataobj)
    mask = data > 0 if value is None else data == value
    dice = 2 * np.count_nonzero(readback & mask) / (readback.sum() + mask.sum())
    return float(dice), int(readback.sum())


@pytest.fixture
def sts001(shared_dir):
    return (
        shared_dir / "ibsi_sts" / "dicom" / "STS_001" / "MR_T1",
        shared_dir / "ibsi_sts" / "nifti" / "STS_001" / "MR_T1_mask.nii.gz",
    )


def test_sts001_dicom_seg_reads_back_as_the_nifti_mask(sts001, tmp_path):
    series, mask_path = sts001
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the source's over-long SH values
        out = export_dicom_seg(mask_path, [series], tmp_path / "seg.dcm", subject="001", label_name="lesion")
        again = export_dicom_seg(mask_path, [series], tmp_path / "again.dcm", subject="001", label_name="lesion")
        sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted((series / "image").iterdir())]
    mask_img = nib.load(mask_path)
    dice, n = readback_dice(out, mask_img)
    print(f"STS_001 DICOM-SEG read-back Dice {dice:.6f} ({n} voxels)")
    assert dice >= 0.99
    assert n == int((np.asarray(mask_img.dataobj) > 0).sum())
    assert out.read_bytes() == again.read_bytes()  # re-runs are byte-identical

    seg = hd.seg.segread(out)
    assert seg.SegmentSequence[0].SegmentLabel == "lesion"
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    referenced = {
        i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence
    }
    assert referenced == {str(ds.SOPInstanceUID) for ds in sources}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    raw = out.read_bytes()  # de-identified: none of the source's identifying values survive
    for value in {str(sources[0].PatientName), str(sources[0].PatientID), str(sources[0].AccessionNumber)}:
        assert value.encode() not in raw
    assert str(seg.PatientName) == "001" and seg.PatientID == "001"


def test_mask_off_the_source_grid_is_refused(sts001, tmp_path):
    series, mask_path = sts001
    img = nib.load(mask_path)
    shifted = img.affine.copy()
    shifted[0, 3] += 0.4  # less than one voxel: still a different grid
    bad = save_nifti(np.asarray(img.dataobj), shifted, tmp_path / "bad.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(GeometryError, match="does not lie on the mask grid"):
            export_dicom_seg(bad, [series], tmp_path / "seg.dcm", subject="001", label_name="lesion")


def test_subject_export_picks_the_series_recorded_by_convert(sts001, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    series, mask_path = sts001
    patient_dir = series.parent  # CT, MR_T1 and PET series plus RTSTRUCTs
    first = pydicom.dcmread(next((series / "image").iterdir()), stop_before_pixels=True)
    mask = nib.load(mask_path)
    reference = save_nifti(np.zeros(mask.shape, np.float32), mask.affine, tmp_path / "sub-001_T1w.nii.gz")
    write_sidecar(
        reference,
        stage="convert",
        subject="001",
        extra={"source": {"series_instance_uid": str(first.SeriesInstanceUID)}},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = export_subject_dicom_seg(
            mask_path, patient_dir, reference, tmp_path / "auto.dcm", subject="001", label_name="lesion"
        )
    assert readback_dice(out, mask)[0] >= 0.99
    assert json.loads((tmp_path / "auto.dcm.json").read_text())["source_series_instance_uid"] == str(
        first.SeriesInstanceUID
    )
    write_sidecar(reference, stage="convert", subject="001", extra={})
    with pytest.raises(DicomError, match="series_instance_uid"):
        export_subject_dicom_seg(
            mask_path, patient_dir, reference, tmp_path / "x.dcm", subject="001", label_name="lesion"
        )


def test_planted_phi_does_not_reach_the_segmentation(sts001, tmp_path):
    series, mask_path = sts001
    phi = {
        "PatientName": "Doe^Planted",
        "PatientID": "PLANTEDID77",
        "PatientBirthDate": "19010203",
        "AccessionNumber": "PLANTACC99",
        "InstitutionName": "Planted General Hospital",
        "ReferringPhysicianName": "Planted^Referrer",
        "OperatorsName": "Planted^Operator",
        "StationName": "PLANTSTATION",
        "InstitutionalDepartmentName": "Planted Radiology",
        "StudyDescription": "Planted study of Doe",
        "PerformingPhysicianName": "Planted^Performer",
    }
    planted = tmp_path / "dicom"
    planted.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for f in sorted((series / "image").iterdir()):
            ds = pydicom.dcmread(f)
            for key, value in phi.items():
                setattr(ds, key, value)
            ds.save_as(planted / f.name)
        out = export_dicom_seg(mask_path, [planted], tmp_path / "seg.dcm", subject="007", label_name="lesion")
    raw = out.read_bytes()
    leaked = [key for key, value in phi.items() if value.encode() in raw]
    assert leaked == []
    assert b"Planted" not in raw and b"PLANT" not in raw
    assert readback_dice(out, nib.load(mask_path))[0] >= 0.99


def test_one_segment_per_class_each_reads_back_exactly(sts001, tmp_path):
    """label.classes: a rim (value 1) and a core (value 2, the GTV eroded by three voxels) as two named segments."""
    from scipy import ndimage

    series, mask_path = sts001
    img = nib.load(mask_path)
    gtv = np.asarray(img.dataobj) > 0
    labels = gtv.astype(np.uint8)
    labels[ndimage.binary_erosion(gtv, iterations=3)] = 2
    classes_path = save_nifti(labels, img.affine, tmp_path / "classes.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = export_dicom_seg(
            classes_path, [series], tmp_path / "seg.dcm", subject="001", label_name="lesion",
            classes={"rim": 1, "core": 2},
        )  # fmt: skip
    seg = hd.seg.segread(out)
    assert [(int(s.SegmentNumber), str(s.SegmentLabel)) for s in seg.SegmentSequence] == [(1, "rim"), (2, "core")]
    for number, value in ((1, 1), (2, 2)):
        dice, n = readback_dice(out, nib.load(classes_path), segment=number, value=value)
        print(f"STS_001 segment {number}: read-back Dice {dice:.6f} ({n} voxels)")
        assert dice == 1.0 and n == int((labels == value).sum()) > 0
