"""Conversion with dcm2niix: synthetic round trip, PHI removal, and real reference series."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medpipe.convert.dicom import convert_sequence, find_dcm2niix
from medpipe.convert.labels import import_label
from medpipe.core.errors import DicomError
from medpipe.core.logutil import configure

SELECT_T1 = {"series_description": "^T1w"}


def _convert(src: Path, out: Path, selector: dict, subject: str = "S01", sequence: str = "T1w") -> Path:
    return convert_sequence(
        src,
        out / f"sub-{subject}_{sequence}.nii.gz",
        out / f"sub-{subject}_{sequence}_deid.tsv",
        out / f"sub-{subject}_{sequence}_qc.png",
        subject=subject,
        sequence=sequence,
        selector=selector,
    )


def test_dcm2niix_found() -> None:
    assert Path(find_dcm2niix()).name == "dcm2niix"


def test_synthetic_round_trip_values_and_world_geometry(tmp_path: Path, series_factory) -> None:
    _, volume = series_factory(tmp_path / "dicom", n_slices=6, spacing=1.5, slice_gap=2.0, origin=(-10, -8, 20))
    out = _convert(tmp_path / "dicom", tmp_path / "out", SELECT_T1)
    img = nib.load(out)
    data = np.asarray(img.dataobj)
    assert data.dtype == np.int16 and data.shape == (10, 12, 6)  # dcm2niix: columns x rows x slices
    # every DICOM pixel (row r, column c, slice k) lands on the NIfTI voxel at its world position
    r, c, k = (a.ravel() for a in np.meshgrid(range(12), range(10), range(6), indexing="ij"))
    lps = np.column_stack([-10 + 1.5 * c, -8 + 1.5 * r, 20 + 2.0 * k])
    ijk = (np.column_stack([lps * [-1, -1, 1], np.ones(len(lps))]) @ np.linalg.inv(img.affine).T)[:, :3]
    assert np.abs(ijk - np.round(ijk)).max() < 1e-3
    idx = np.round(ijk).astype(int)
    assert np.array_equal(data[idx[:, 0], idx[:, 1], idx[:, 2]], volume[r, c, k])
    sidecar = json.loads((tmp_path / "out" / "sub-S01_T1w.json").read_text())
    assert sidecar["source"]["n_slices"] == 6 and sidecar["dicom_inputs"]["n_files"] == 6
    assert sidecar["geometry"]["spacing_mm"] == [1.5, 1.5, 2.0]
    assert sidecar["dcm2niix_version"].startswith("v1.0.")
    assert sidecar["modality"] == "MR" and sidecar["modality_source"] == "dicom_header"
    assert img.header["descrip"].tobytes().strip(b"\x00") == b""


def test_phi_never_reaches_outputs_or_log(tmp_path: Path, series_factory, phi_strings) -> None:
    series_factory(tmp_path / "dicom", n_slices=5, phi=True, tags={"SeriesDescription": "T1w MEDPIPEPHI"})
    series_factory(
        tmp_path / "dicom",
        n_slices=5,
        phi=True,
        seed=1,
        prefix="loc",
        tags={"SeriesDescription": "Loc MEDPIPEPHI", "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
    )
    log = tmp_path / "logs" / "convert.log"
    configure(log, level=logging.DEBUG)
    try:
        _convert(tmp_path / "dicom", tmp_path / "out", SELECT_T1)
        with pytest.raises(DicomError) as err:  # a refusal message must not leak PHI either
            _convert(tmp_path / "dicom", tmp_path / "out2", {"series_description": "nomatch"})
    finally:
        configure(None)
    deid = (tmp_path / "out" / "sub-S01_T1w_deid.tsv").read_text()
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "InstitutionName",
        "OperatorsName",
        "private",
    ):
        assert keyword in deid
    files = [p for p in [*(tmp_path / "out").rglob("*"), log] if p.is_file()]
    assert len(files) == 5
    for path in files:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            import gzip

            raw = gzip.decompress(raw)
        for s in phi_strings:
            assert s.encode() not in raw, f"{s} found in {path.name}"
            assert s not in path.name
    for s in phi_strings:
        assert s not in str(err.value)
    assert "<redacted>" in str(err.value)


def test_truncated_file_fails_naming_it(tmp_path: Path, series_factory) -> None:
    files, _ = series_factory(tmp_path / "dicom", n_slices=6)
    raw = files[3].read_bytes()
    files[3].write_bytes(raw[: len(raw) - 100])
    with pytest.raises(DicomError, match=r"file im003\.dcm.*truncated"):
        _convert(tmp_path / "dicom", tmp_path / "out", SELECT_T1)
    assert not (tmp_path / "out" / "sub-S01_T1w.nii.gz").exists()


def test_header_truncated_file_fails_naming_it(tmp_path: Path, series_factory) -> None:
    files, _ = series_factory(tmp_path / "dicom", n_slices=6)
    files[2].write_bytes(files[2].read_bytes()[:300])
    with pytest.raises(DicomError, match=r"file im002\.dcm"):
        _convert(tmp_path / "dicom", tmp_path / "out", SELECT_T1)


# --- real reference data --------------------------------------------------------------------------


def test_declared_modality_contradicting_the_header_stops(tmp_path: Path, series_factory) -> None:
    """The selected series says MR in Modality (0008,0060); a config declaring CT is refused naming both."""
    series_factory(tmp_path / "dicom", n_slices=4)
    for selector in ({**SELECT_T1, "modality": "CT"}, {"modality": ["CT", "PT"]}):
        with pytest.raises(DicomError) as err:
            _convert(tmp_path / "dicom", tmp_path / "out", selector, subject="S09")
        msg = str(err.value)
        assert msg.startswith("[subject S09] sequence T1w: declared modality C")
        assert "contradicts the DICOM header: Modality (0008,0060) is MR" in msg
        assert "sequences.T1w.modality" in msg
    assert not (tmp_path / "out").exists()
    _convert(tmp_path / "dicom", tmp_path / "ok", {**SELECT_T1, "modality": "MR"})
    assert json.loads((tmp_path / "ok" / "sub-S01_T1w.json").read_text())["modality"] == "MR"


def test_modality_rule_alone_lists_the_series_when_several_differ(tmp_path: Path, series_factory) -> None:
    series_factory(tmp_path / "dicom", n_slices=4)
    series_factory(tmp_path / "dicom", n_slices=4, seed=1, prefix="t2", tags={"SeriesDescription": "T2w"})
    with pytest.raises(DicomError, match=r"no series matches \{'modality': \['CT'\]\}"):
        _convert(tmp_path / "dicom", tmp_path / "out", {"modality": "CT"})


STS_MODALITIES = {"CT": "CT", "MR_T1": "MR", "PET": "PT"}


def _canonical(path: Path) -> nib.Nifti1Image:
    img = nib.as_closest_canonical(nib.load(path))
    return img.slicer[..., 0] if img.ndim == 4 and img.shape[3] == 1 else img


def _compare(out: Path, ref: Path) -> tuple[float, float]:
    a, r = _canonical(out), _canonical(ref)
    assert a.shape == r.shape
    return float(np.abs(a.affine - r.affine).max()), float(np.abs(a.get_fdata() - r.get_fdata()).max())


@pytest.mark.shared
@pytest.mark.parametrize("patient", ["STS_001", "STS_002", "STS_003", "STS_004", "STS_005"])
def test_sts_images_and_rtstruct_match_reference(shared_dir: Path, tmp_path: Path, patient: str) -> None:
    """Each modality converts to the reference NIfTI; its RTSTRUCT GTV rasterises to the reference mask."""
    for seq, modality in STS_MODALITIES.items():
        sequence = seq.replace("_", "")
        out = _convert(shared_dir / "ibsi_sts" / "dicom" / patient, tmp_path, {"modality": modality}, sequence=sequence)
        sidecar = json.loads(out.with_name(f"sub-S01_{sequence}.json").read_text())
        assert (sidecar["modality"], sidecar["modality_source"]) == (modality, "dicom_header")
        nifti = shared_dir / "ibsi_sts" / "nifti" / patient
        aff, vox = _compare(out, nifti / f"{seq}_image.nii.gz")
        mask = import_label(
            shared_dir / "ibsi_sts" / "dicom" / patient / seq / "mask" / "RS.dcm",
            out,
            tmp_path / f"{sequence}_mask.nii.gz",
            subject="S01",
            roi_pattern=f"^GTV_Mass_{seq}$",
        )
        a, r = _canonical(mask).get_fdata() > 0, _canonical(nifti / f"{seq}_mask.nii.gz").get_fdata() > 0
        dice = 2 * np.sum(a & r) / (a.sum() + r.sum())
        record = json.loads(mask.with_name(f"{sequence}_mask.json").read_text())
        print(
            f"{patient} {seq}: max affine diff {aff:.3g} mm, max voxel diff {vox:.3g}, GTV Dice {dice:.4f}, "
            f"dangling references {record['label']['dangling_references']}/{record['label']['n_contours']}"
        )
        assert aff < 1e-3 and vox == 0.0
        assert dice >= 0.99
        assert record["label"]["n_placed"] == record["label"]["n_contours"] > 0


@pytest.mark.shared
def test_sts_modality_from_the_header_and_contradiction(shared_dir: Path, tmp_path: Path) -> None:
    """Real CT and PET series: the sidecar's modality is the header's (CT, PT); declaring MR for the CT stops."""
    patient = shared_dir / "ibsi_sts" / "dicom" / "STS_001"
    for seq, header in (("CT", "CT"), ("PET", "PT")):
        out = _convert(patient, tmp_path, {"series_description": f"_{seq}_image$"}, subject="STS001", sequence=seq)
        sidecar = json.loads(out.with_name(f"sub-STS001_{seq}.json").read_text())
        assert sidecar["modality"] == header and sidecar["source"]["modality"] == header
    with pytest.raises(DicomError) as err:
        _convert(patient, tmp_path / "bad", {"series_description": "_CT_image$", "modality": "MR"}, subject="STS001")
    msg = str(err.value)
    assert msg.startswith("[subject STS001] sequence T1w: declared modality MR (sequences.T1w.modality)")
    assert "Modality (0008,0060) is CT in series 2" in msg and "(CT, UID" in msg


@pytest.mark.shared
@pytest.mark.parametrize(
    ("case", "ref", "selector"),
    [
        ("dcm_qa_xa30/In/5_anat-T1w_acq-tfl", "dcm_qa_xa30/Ref/5_anat-T1w_acq-tfl.nii", {}),
        ("dcm_qa_xa30/In/6_anat-T1w_acq-tfl", "dcm_qa_xa30/Ref/6_anat-T1w_acq-tfl.nii", {}),
        ("dcm_qa_nih/In", "dcm_qa_nih/Ref/DCM2NIIX_regression_test_4.nii", {"allow_4d": True}),
    ],
)
def test_dcm_qa_matches_reference(shared_dir: Path, tmp_path: Path, case: str, ref: str, selector: dict) -> None:
    out = _convert(shared_dir / case, tmp_path, selector)
    aff, vox = _compare(out, shared_dir / ref)
    print(f"{case}: shape {nib.load(out).shape}, max affine diff {aff:.3g} mm, max voxel diff {vox:.3g}")
    assert aff < 1e-3 and vox == 0.0
    if "nih" in case:
        assert nib.load(out).shape == (64, 64, 15, 10)


@pytest.mark.shared
def test_4d_series_refused_without_allow_4d(shared_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DicomError, match=r"10 volumes .* \(4D\)"):
        _convert(shared_dir / "dcm_qa_nih" / "In", tmp_path, {})


@pytest.mark.shared
@pytest.mark.parametrize(
    "case",
    [
        "ge/anatomical/001",
        "ge/anatomical/001_implicit",
        "hitachi/anatomical/001",
        "anatomical/001",
        "siemens_multiframe/anatomical/001",
        "philips_enhanced/anatomical/001",
    ],
)
def test_dicom2nifti_vendor_geometry(shared_dir: Path, tmp_path: Path, case: str) -> None:
    root = shared_dir / "dicom2nifti"
    out = _convert(root / case, tmp_path, {})
    a, r = _canonical(out), _canonical(root / f"{case}_ground_truth.nii.gz")
    assert a.shape == r.shape
    aff = float(np.abs(a.affine - r.affine).max())
    print(f"{case}: max affine diff {aff:.3g} mm")
    assert aff < 1e-3
    if "philips" not in case:  # Philips: dicom2nifti applies the private scale slope, dcm2niix stores display values
        assert np.array_equal(a.get_fdata(), r.get_fdata())


@pytest.mark.shared
@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("failing/gantrytilting/001", r"gantry tilt of 14\.00 degrees"),
        ("failing/notavolume/001", r"not a volume: all 4 images lie at one slice position"),
        ("failing/slicecount/001", r"slice count too small: only 2 slices"),
        ("failing/sliceincrement/001", r"inconsistent slice spacing .*missing slices"),
        ("failing/sliceincrement/002", r"gantry tilt .*inconsistent slice spacing .*missing slices"),
        ("failing/sliceorientation/001", r"mixed orientations"),
        ("ge/anatomical/001_single_slice", r"single slice: a volume is required"),
    ],
)
def test_dicom2nifti_failing_cases_refused(shared_dir: Path, tmp_path: Path, case: str, reason: str) -> None:
    with pytest.raises(DicomError, match=reason) as err:
        _convert(shared_dir / "dicom2nifti" / case, tmp_path, {}, subject="BAD01")
    assert "subject BAD01" in str(err.value) and "series" in str(err.value)
    assert not list(tmp_path.glob("*.nii.gz"))


@pytest.mark.shared
def test_gantry_tilt_resample_when_configured(shared_dir: Path, tmp_path: Path) -> None:
    out = _convert(
        shared_dir / "dicom2nifti" / "failing" / "gantrytilting" / "001",
        tmp_path,
        {"gantry_tilt": "resample"},
    )
    sidecar = json.loads(out.with_name("sub-S01_T1w.json").read_text())
    assert sidecar["source"]["gantry_tilt_deg"] == pytest.approx(14.0, abs=0.05)
    assert any("tilt" in w for w in sidecar["warnings"])
    shutil.rmtree(tmp_path)
