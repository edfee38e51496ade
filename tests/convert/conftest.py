"""Synthetic DICOM series for the dicom tests (built in code, fixed seeds)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
PHI = "MEDPIPEPHI"

#: Identifying attributes planted by :func:`make_series` with ``phi=True``.
PHI_TAGS: dict[str, str] = {
    "PatientName": f"{PHI}^Jane",
    "PatientID": f"{PHI}-ID-0042",
    "PatientBirthDate": "19230405",
    "AccessionNumber": f"{PHI}ACC",
    "InstitutionName": f"{PHI} General Hospital",
    "InstitutionAddress": f"1 {PHI} Street",
    "OperatorsName": f"{PHI}^Operator",
    "ReferringPhysicianName": f"{PHI}^Referrer",
    "PerformingPhysicianName": f"{PHI}^Performer",
    "StationName": f"{PHI}STATION",
    "StudyDescription": f"{PHI} study",
    "ImageComments": f"comment {PHI}",
    "ProtocolName": f"T1w {PHI} protocol",
}
PHI_STRINGS = (PHI, "19230405", "Jane")


def _dataset(
    pixels: npt.NDArray[np.int16],
    position: Sequence[float],
    iop: Sequence[float],
    spacing: float,
    series_uid: str,
    frame_uid: str,
    number: int,
    tags: dict[str, Any],
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_STORAGE
    sop = generate_uid(entropy_srcs=[series_uid, str(number)])
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MR_STORAGE, sop
    ds.Modality, ds.Manufacturer = "MR", "medpipe-test"
    ds.SeriesInstanceUID, ds.FrameOfReferenceUID = series_uid, frame_uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study", frame_uid])
    ds.SeriesNumber, ds.InstanceNumber = 3, number
    ds.SeriesDescription = "T1w_axial"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "anon^", "anon", "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "", "", "", "", ""
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = 2.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.EchoTime, ds.RepetitionTime = 10.0, 500.0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels.astype("<i2")).tobytes()
    return ds


def make_series(
    folder: Path,
    *,
    n_slices: int = 8,
    shape: tuple[int, int] = (12, 10),
    spacing: float = 1.5,
    slice_gap: float = 2.0,
    positions: Sequence[Sequence[float]] | None = None,
    iop: Sequence[float] = (1, 0, 0, 0, 1, 0),
    origin: Sequence[float] = (-10.0, -8.0, 20.0),
    seed: int = 0,
    phi: bool = False,
    series_uid: str | None = None,
    tags: dict[str, Any] | None = None,
    prefix: str = "im",
) -> tuple[list[Path], npt.NDArray[np.int16]]:
    """Write a classic one-file-per-slice MR series; return the files and the volume [row, col, slice]."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    volume = rng.integers(0, 1000, size=(*shape, n_slices)).astype(np.int16)
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    if positions is None:
        positions = [np.asarray(origin) + k * slice_gap * normal for k in range(n_slices)]
    uid = series_uid or generate_uid(entropy_srcs=["series", str(seed), prefix])
    frame_uid = generate_uid(entropy_srcs=["frame", str(seed)])
    all_tags = {**(PHI_TAGS if phi else {}), **(tags or {})}
    files = []
    for k in range(n_slices):
        ds = _dataset(volume[:, :, k], positions[k], iop, spacing, uid, frame_uid, k + 1, all_tags)
        if phi:
            ds.add_new(0x00291010, "LO", f"private {PHI}")
        path = folder / f"{prefix}{k:03d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        files.append(path)
    return files, volume


@pytest.fixture
def series_factory() -> Callable[..., tuple[list[Path], npt.NDArray[np.int16]]]:
    """The :func:`make_series` builder."""
    return make_series


@pytest.fixture
def phi_strings() -> tuple[str, ...]:
    """Strings planted by ``make_series(phi=True)`` that must never appear in an output."""
    return PHI_STRINGS


@pytest.fixture
def converted(tmp_path: Path, series_factory: Any) -> tuple[Path, str, list[str]]:
    """A synthetic 8-slice series converted by medpipe: (NIfTI, FrameOfReferenceUID, SOP Instance UIDs)."""
    import json

    from medpipe.convert.dicom import convert_sequence

    _files, _ = series_factory(tmp_path / "dicom", n_slices=8)
    out = tmp_path / "out" / "sub-S01_T1w.nii.gz"
    convert_sequence(
        tmp_path / "dicom",
        out,
        tmp_path / "out" / "deid.tsv",
        tmp_path / "out" / "qc.png",
        subject="S01",
        sequence="T1w",
        selector={},
    )
    source = json.loads(out.with_name("sub-S01_T1w.json").read_text())["source"]
    return out, source["frame_of_reference_uid"], source["sop_instance_uids"]
