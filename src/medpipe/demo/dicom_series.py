"""Acquisition grid of the demo cohort and writing it as DICOM MR series (pydicom).

The grid is stored in NIfTI the way dcm2niix stores a standard axial DICOM series
(ImageOrientationPatient ``1\0\0\0\1\0``): RAS+ array ``[i, j, k]`` with ``i`` against the DICOM
row direction (patient right), ``j`` against the column direction (anterior) and ``k`` along the
slice normal (superior), so the ground-truth NIfTI files share the converted images' grid.
The DICOM geometry (ImagePositionPatient, ImageOrientationPatient, PixelSpacing) is derived from
the same RAS affine (DICOM is LPS).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage

from medpipe.core.geometry import LPS_RAS
from medpipe.demo.profile_phi import plant_profile

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

#: Field of view (mm) of every demo acquisition and its centre (RAS mm): the head, cropped.
FOV_MM = (186.0, 222.0, 180.0)
FOV_CENTRE_MM = (0.0, -17.0, 14.0)


@dataclass(frozen=True)
class DemoGrid:
    """Acquisition grid: shape and voxel-to-RAS affine (RAS axis order, like dcm2niix output)."""

    shape: tuple[int, int, int]
    affine: F64

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along i, j, k."""
        s = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return (float(s[0]), float(s[1]), float(s[2]))


def make_grid(spacing_mm: tuple[float, float, float]) -> DemoGrid:
    """Axial grid covering :data:`FOV_MM` around :data:`FOV_CENTRE_MM` at ``spacing_mm``."""
    sp = np.asarray(spacing_mm, dtype=np.float64)
    shape = tuple(max(round(float(f / s)), 8) for f, s in zip(FOV_MM, sp, strict=True))
    affine = np.diag([sp[0], sp[1], sp[2], 1.0])
    half = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    affine[:3, 3] = np.asarray(FOV_CENTRE_MM) - affine[:3, :3] @ half
    return DemoGrid((int(shape[0]), int(shape[1]), int(shape[2])), affine)


def demo_uid(*parts: object) -> str:
    """Deterministic DICOM UID ``2.25.<128-bit int>`` (the UUID-derived root) hashed from ``parts``.

    ``pydicom.uid.generate_uid(prefix=None)`` ignores its entropy sources (it returns a random
    UUID), so the hash is taken here.
    """
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def dicom_geometry(grid: DemoGrid) -> tuple[list[float], F64, list[float]]:
    """ImageOrientationPatient, ImagePositionPatient of every slice (LPS mm) and PixelSpacing.

    Slice ``k`` holds ``volume[::-1, ::-1, k].T``: DICOM row ``r`` is array ``j = ny - 1 - r`` and
    column ``c`` is ``i = nx - 1 - c``.
    """
    a = grid.affine
    sx, sy, _ = grid.spacing
    row_dir = -(LPS_RAS[:3, :3] @ a[:3, 0]) / sx
    col_dir = -(LPS_RAS[:3, :3] @ a[:3, 1]) / sy
    nx, ny, nz = grid.shape
    first = np.array([[nx - 1.0, ny - 1.0, float(k), 1.0] for k in range(nz)])
    ipp = (LPS_RAS @ a @ first.T).T[:, :3]
    iop = [float(v) for v in (*row_dir, *col_dir)]
    return [round(v, 8) for v in iop], ipp, [sy, sx]


@dataclass(frozen=True)
class SeriesInfo:
    """Header values of one MR series."""

    description: str
    number: int
    series_uid: str
    echo_time_ms: float
    repetition_time_ms: float
    flip_angle_deg: float


@dataclass(frozen=True)
class StudyInfo:
    """Patient and study header values shared by a subject's series (PHI planted here)."""

    phi: dict[str, str]
    study_uid: str
    frame_of_reference_uid: str
    study_date: str
    uid_key: str


def _ds(value: float) -> str:
    """Format a number for a DICOM DS element (at most 16 characters)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in {"-0", ""} else text[:16]


def _file_dataset() -> FileDataset:
    """An empty MR Image Storage dataset (explicit VR little endian, 128-byte preamble).

    Returns
    -------
    FileDataset
        Dataset holding only its file meta information.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)


def _set_patient_and_study(ds: FileDataset, study: StudyInfo) -> None:
    """Set the equipment, patient (planted fake PHI) and study elements of ``ds``.

    Parameters
    ----------
    ds
        Dataset to fill in place.
    study
        Study identity: fake PHI, UIDs and date.
    """
    ds.SOPClassUID = MRImageStorage
    ds.Modality = "MR"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.Manufacturer = "medpipe"
    ds.ManufacturerModelName = "demo-generator"
    ds.PatientName = study.phi["PatientName"]
    ds.PatientID = study.phi["PatientID"]
    ds.PatientBirthDate = study.phi["PatientBirthDate"]
    ds.PatientSex = "O"
    ds.AccessionNumber = study.phi["AccessionNumber"]
    ds.InstitutionName = study.phi["InstitutionName"]
    ds.ReferringPhysicianName = study.phi["ReferringPhysicianName"]
    ds.OperatorsName = study.phi["OperatorsName"]
    ds.StudyInstanceUID = study.study_uid
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study.study_date
    ds.StudyTime = "090000"


def _set_series(ds: FileDataset, series: SeriesInfo) -> None:
    """Set the series and acquisition elements of ``ds``.

    Parameters
    ----------
    ds
        Dataset to fill in place.
    series
        Series identity and acquisition parameters.
    """
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = f"09{10 + 5 * series.number:02d}00"
    ds.StudyID = "1"
    ds.SeriesInstanceUID = series.series_uid
    ds.SeriesDescription = series.description
    ds.ProtocolName = series.description
    ds.SeriesNumber = series.number
    ds.AcquisitionNumber = 1
    ds.BodyPartExamined = "HEAD"
    ds.ScanningSequence = ["GR"] if series.description == "T1w" else ["SE"]
    ds.SequenceVariant = ["SP"]
    ds.MRAcquisitionType = "3D"
    ds.EchoTime = _ds(series.echo_time_ms)
    ds.RepetitionTime = _ds(series.repetition_time_ms)
    ds.FlipAngle = _ds(series.flip_angle_deg)
    ds.MagneticFieldStrength = "3"
    ds.PatientPosition = "HFS"


def _set_image_plane(ds: FileDataset, grid: DemoGrid, iop: list[float], pixel_spacing: list[float]) -> None:
    """Set the image plane and pixel description elements shared by every slice of ``ds``.

    Parameters
    ----------
    ds
        Dataset to fill in place.
    grid
        Acquisition grid (shape and slice spacing).
    iop, pixel_spacing
        ImageOrientationPatient and PixelSpacing from :func:`dicom_geometry`.
    """
    nx, ny, _ = grid.shape
    ds.ImageOrientationPatient = [_ds(v) for v in iop]
    ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
    ds.SliceThickness = _ds(grid.spacing[2])
    ds.SpacingBetweenSlices = _ds(grid.spacing[2])
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"


def write_series(
    volume: npt.NDArray[np.uint16], grid: DemoGrid, folder: Path, study: StudyInfo, series: SeriesInfo
) -> list[Path]:
    """Write ``volume`` (indexed ``[i, j, k]`` on ``grid``) as one MR Image Storage file per slice.

    Returns the written files ``IM0001.dcm ...`` in slice order (inferior to superior).
    """
    folder.mkdir(parents=True, exist_ok=True)
    iop, ipp, pixel_spacing = dicom_geometry(grid)
    normal = np.cross(iop[:3], iop[3:])
    nz = grid.shape[2]
    ds = _file_dataset()
    _set_patient_and_study(ds, study)
    _set_series(ds, series)
    _set_image_plane(ds, grid, iop, pixel_spacing)
    plant_profile(ds, series.description)
    files: list[Path] = []
    vol = np.asarray(volume, dtype="<u2")
    for k in range(nz):
        sop_uid = UID(demo_uid(study.uid_key, series.series_uid, k))
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(float(v)) for v in ipp[k]]
        ds.SliceLocation = _ds(float(normal @ ipp[k]))
        ds.PixelData = np.ascontiguousarray(vol[::-1, ::-1, k].T).tobytes()
        path = folder / f"IM{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    logger.debug("wrote %d slices of %s to %s", nz, series.description, folder)
    return files
