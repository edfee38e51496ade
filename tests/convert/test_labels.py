"""Label import: exact placement of NIfTI/SEG labels on the reference grid, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from medpipe.convert.dicom import convert_sequence
from medpipe.convert.labels import import_label, place_on_grid
from medpipe.core.errors import DataError, GeometryError
from medpipe.core.geometry import Geometry


def _reference(shape=(10, 12, 8)) -> Geometry:
    aff = np.array([[-1.5, 0, 0, 10], [0, 1.5, 0, -8], [0, 0, 2.0, 20], [0, 0, 0, 1]])
    return Geometry(shape, aff)


def _blob(shape=(10, 12, 8)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[2:5, 3:9, 1:4] = 1
    m[4, 8, 6] = 1
    return m


def test_permuted_and_flipped_label_placed_exactly() -> None:
    ref, mask = _reference(), _blob()
    img = nib.Nifti1Image(mask, ref.affine)
    # reorder axes (k, i, j) and flip the first: same world lattice
    ornt = np.array([[2, -1], [0, 1], [1, 1]])
    moved = img.as_reoriented(ornt)
    assert moved.shape != mask.shape
    out = place_on_grid(np.asarray(moved.dataobj), moved.affine, ref)
    assert np.array_equal(out, mask)


def test_sub_block_label_placed_and_outside_refused() -> None:
    ref, mask = _reference(), _blob()
    block = mask[1:6, 2:10, 0:7]
    aff = ref.affine.copy()
    aff[:3, 3] = (ref.affine @ [1, 2, 0, 1])[:3]
    assert np.array_equal(place_on_grid(block, aff, ref), mask)
    shifted = ref.affine.copy()
    shifted[:3, 3] += ref.affine[:3, 0] * 8  # 8 voxels along i: part of the blob leaves the grid
    with pytest.raises(GeometryError, match="outside the reference image grid"):
        place_on_grid(mask, shifted, ref)


@pytest.mark.parametrize("change", ["spacing", "half_voxel"])
def test_different_grid_refused(change: str) -> None:
    ref, mask = _reference(), _blob()
    aff = ref.affine.copy()
    if change == "spacing":
        aff[:3, :3] *= 1.1
    else:
        aff[:3, 3] += [0.75, 0, 0]
    with pytest.raises(GeometryError, match="not the reference grid"):
        place_on_grid(mask, aff, ref)


def test_import_nifti_label_and_empty_refused(tmp_path: Path) -> None:
    ref = _reference()
    nib.save(nib.Nifti1Image(np.zeros(ref.shape, np.int16), ref.affine), tmp_path / "ref.nii.gz")
    label = nib.Nifti1Image(_blob() * 3, ref.affine).as_reoriented(np.array([[1, 1], [0, -1], [2, 1]]))
    nib.save(label, tmp_path / "label.nii.gz")
    out = import_label(
        tmp_path / "label.nii.gz",
        tmp_path / "ref.nii.gz",
        tmp_path / "mask.nii.gz",
        subject="S01",
        roi_pattern=".*",
        out_qc=tmp_path / "qc.png",
    )
    img = nib.load(out)
    assert np.array_equal(np.asarray(img.dataobj), _blob()) and img.get_data_dtype() == np.uint8
    assert np.allclose(img.affine, ref.affine)
    assert json.loads((tmp_path / "mask.json").read_text())["n_voxels"] == int(_blob().sum())
    nib.save(nib.Nifti1Image(np.zeros(ref.shape, np.uint8), ref.affine), tmp_path / "empty.nii.gz")
    with pytest.raises(DataError, match="empty"):
        import_label(
            tmp_path / "empty.nii.gz",
            tmp_path / "ref.nii.gz",
            tmp_path / "m2.nii.gz",
            subject="S01",
            roi_pattern=".*",
        )


def test_dicom_seg_round_trip(tmp_path: Path, series_factory) -> None:
    files, _ = series_factory(tmp_path / "dicom", n_slices=6)
    image = tmp_path / "out" / "sub-S01_T1w.nii.gz"
    convert_sequence(
        tmp_path / "dicom",
        image,
        tmp_path / "out" / "d.tsv",
        tmp_path / "out" / "qc.png",
        subject="S01",
        sequence="T1w",
        selector={},
    )
    sources = [pydicom.dcmread(f) for f in files]
    frames = np.zeros((6, 12, 10), bool)  # (slice, row, column)
    frames[2:4, 3:7, 2:6] = True
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="GTV_seg",
        segmented_property_category=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
        segmented_property_type=hd.sr.CodedConcept("108369006", "SCT", "Tumor"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=generate_uid(),
        series_number=100,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="medpipe-test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(tmp_path / "seg.dcm")
    out = import_label(tmp_path / "seg.dcm", image, tmp_path / "mask.nii.gz", subject="S01", roi_pattern="GTV")
    img, ref = nib.load(out), nib.load(image)
    assert img.shape == ref.shape and np.allclose(img.affine, ref.affine)
    mask = np.asarray(img.dataobj)
    assert int(mask.sum()) == int(frames.sum())
    # every labelled voxel sits at the world position of a labelled DICOM pixel
    ijk = np.argwhere(mask)
    lps = (np.column_stack([ijk, np.ones(len(ijk))]) @ ref.affine.T)[:, :3] * [-1, -1, 1]
    col, row, k = (lps[:, 0] + 10) / 1.5, (lps[:, 1] + 8) / 1.5, (lps[:, 2] - 20) / 2.0
    assert frames[np.round(k).astype(int), np.round(row).astype(int), np.round(col).astype(int)].all()


def test_nifti_label_with_nan_or_fractions_is_refused_unless_thresholded(tmp_path: Path) -> None:
    ref = _reference()
    nib.save(nib.Nifti1Image(np.zeros(ref.shape, np.int16), ref.affine), tmp_path / "ref.nii.gz")
    blob = _blob().astype(np.float32)
    nan = blob.copy()
    nan[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(nan, ref.affine), tmp_path / "nan.nii.gz")
    partial = blob * 0.7  # a partial-volume label: 0.7 inside
    partial[tuple(np.argwhere(blob > 0)[0])] = 0.3
    nib.save(nib.Nifti1Image(partial, ref.affine), tmp_path / "partial.nii.gz")
    args = {"subject": "S07", "roi_pattern": ".*"}
    with pytest.raises(DataError, match=r"S07.*1 NaN or infinite voxel|1 NaN or infinite voxel.*S07"):
        import_label(tmp_path / "nan.nii.gz", tmp_path / "ref.nii.gz", tmp_path / "m.nii.gz", **args)
    with pytest.raises(DataError, match=r"fractional voxel value\(s\), e\.g\. 0\.[37].*label\.threshold"):
        import_label(tmp_path / "partial.nii.gz", tmp_path / "ref.nii.gz", tmp_path / "m.nii.gz", **args)
    out = import_label(
        tmp_path / "partial.nii.gz", tmp_path / "ref.nii.gz", tmp_path / "m.nii.gz", threshold=0.5, **args
    )
    assert int(np.asarray(nib.load(out).dataobj).sum()) == int(blob.sum()) - 1  # the 0.3 voxel is below 0.5
    assert json.loads((tmp_path / "m.json").read_text())["parameters"]["threshold"] == 0.5


@pytest.mark.shared
def test_rtstruct_in_another_frame_of_reference_is_refused_or_placed_by_geometry(
    shared_dir: Path, tmp_path: Path
) -> None:
    """STS_001's PET RTSTRUCT with its FrameOfReferenceUIDs broken, as in a real public export."""
    from medpipe.audit.review import read_flag

    pet = shared_dir / "ibsi_sts" / "dicom" / "STS_001" / "PET"
    image = tmp_path / "sub-001_PET.nii.gz"
    convert_sequence(pet / "image", image, tmp_path / "deid.tsv", tmp_path / "qc.png", subject="001", sequence="PET",
                     selector={})  # fmt: skip
    (rtstruct,) = sorted((pet / "mask").iterdir())
    broken = pydicom.dcmread(rtstruct)
    wrong = generate_uid()
    for item in broken.ReferencedFrameOfReferenceSequence:
        item.FrameOfReferenceUID = wrong
    for roi in broken.StructureSetROISequence:
        roi.ReferencedFrameOfReferenceUID = wrong
    broken.save_as(tmp_path / "broken.dcm")
    args = {"subject": "001", "roi_pattern": "GTV"}
    truth = import_label(rtstruct, image, tmp_path / "truth.nii.gz", **args)
    assert read_flag(tmp_path / "truth.json") is None
    with pytest.raises(GeometryError, match="another frame of reference"):
        import_label(tmp_path / "broken.dcm", image, tmp_path / "refused.nii.gz", **args)
    placed = import_label(
        tmp_path / "broken.dcm", image, tmp_path / "placed.nii.gz", frame_of_reference="geometry", **args
    )
    assert np.array_equal(np.asarray(nib.load(placed).dataobj), np.asarray(nib.load(truth).dataobj))
    sidecar = json.loads((tmp_path / "placed.json").read_text())
    assert sidecar["frame_of_reference_override"]["label"] == [wrong]
    assert sidecar["frame_of_reference_override"]["reference"] == str(
        pydicom.dcmread(next((pet / "image").iterdir())).FrameOfReferenceUID
    )
    flagged = read_flag(tmp_path / "placed.json")
    assert flagged is not None and flagged.subject == "001" and flagged.stage == "convert"
    assert "placed by geometry" in flagged.reason
