"""Body-weight SUV from PET headers: synthetic headers for each rule, the real STS PET series for values."""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.valuerep import DSfloat

from medpipe.convert.dicom import convert_sequence
from medpipe.convert.discover import parse_selector
from medpipe.convert.suv import apply_suv, suv_scale_factor
from medpipe.core.errors import ConfigError, DicomError

STS_PATIENTS = ["STS_001", "STS_002", "STS_003", "STS_004", "STS_005"]
PREFIX = "[subject S01] sequence PET: body-weight SUV (sequences.PET.suv: true) needs "


def _header(top: dict[str, Any] | None = None, item: dict[str, Any] | None = None) -> Dataset:
    """A PET image header (no pixels): 72.5 kg, 370 MBq F-18 injected at 09:15, series at 10:15; None deletes."""
    ds = Dataset()
    ds.Modality, ds.Units, ds.DecayCorrection = "PT", "BQML", "START"
    ds.CorrectedImage = ["NORM", "DTIM", "ATTN", "SCAT", "DECY", "RAN"]
    ds.PatientWeight = "72.5"
    ds.SeriesDate, ds.SeriesTime = "20240305", "101500"
    ds.AcquisitionDate, ds.AcquisitionTime = "20240305", "101500.000000"
    drug = Dataset()
    drug.RadionuclideTotalDose, drug.RadionuclideHalfLife = "3.7E8", "6586.2"
    drug.RadiopharmaceuticalStartTime = "091500.00"
    ds.RadiopharmaceuticalInformationSequence = [drug]
    for target, changes in ((ds, top), (drug, item)):
        for key, value in (changes or {}).items():
            if value is None:
                delattr(target, key)
            else:
                setattr(target, key, value)
    return ds


def _factor(headers: list[Dataset]) -> Any:
    return suv_scale_factor(headers, subject="S01", sequence="PET", label="series 7 'PET AC' (PT, 2 file(s))")


def test_factor_follows_the_definition() -> None:
    record = _factor([_header()])
    # one hour after injection: the dose has decayed by 2^(-3600/6586.2)
    assert record.factor == pytest.approx(72.5e3 / (3.7e8 * math.exp(-math.log(2) * 3600 / 6586.2)), rel=1e-12)
    assert (record.decay_time_s, record.injection_time, record.reference_time) == (3600.0, "09:15:00", "10:15:00")
    assert (record.weight_kg, record.dose_bq, record.half_life_s) == (72.5, 3.7e8, 6586.2)
    assert (record.units, record.decay_correction) == ("BQML", "START")
    assert record.reference_source == "SeriesDate/SeriesTime (0008,0021/0031)"
    data = np.array([[0.0, 1000.0], [5000.0, 20000.0]], dtype=np.float32)
    suv = apply_suv(data, record)
    assert suv.dtype == np.float32 and np.allclose(suv, data * record.factor, rtol=1e-7)


@pytest.mark.parametrize(
    ("top", "item", "tag", "problem"),
    [
        ({"PatientWeight": None}, {}, "PatientWeight (0010,1030)", "is missing"),
        ({"PatientWeight": "0"}, {}, "PatientWeight (0010,1030)", "is 0 kg"),
        ({"PatientWeight": "72500"}, {}, "PatientWeight (0010,1030)", "is 72500 kg"),
        ({}, {"RadionuclideTotalDose": None}, "RadionuclideTotalDose (0018,1074)", "is missing"),
        ({}, {"RadionuclideHalfLife": None}, "RadionuclideHalfLife (0018,1075)", "is missing"),
        (
            {"RadiopharmaceuticalInformationSequence": None},
            {},
            "RadiopharmaceuticalInformationSequence (0054,0016)",
            "is missing",
        ),
        ({}, {"RadiopharmaceuticalStartTime": None}, "RadiopharmaceuticalStartTime (0018,1072)", "is missing"),
        ({"Units": "CNTS"}, {}, "Units (0054,1001)", "is CNTS, not BQML"),
        ({"Units": "GML"}, {}, "Units (0054,1001)", "the voxels already are body-weight SUV"),
        ({"Units": None}, {}, "Units (0054,1001)", "is missing"),
        ({"DecayCorrection": "NONE"}, {}, "DecayCorrection (0054,1102)", "is NONE, not START or ADMIN"),
        ({"CorrectedImage": ["DECY", "SCAT"]}, {}, "CorrectedImage (0028,0051)", "lacks ATTN"),
        ({"SeriesTime": None}, {}, "SeriesTime (0008,0031)", "is missing"),
        ({"SeriesTime": "2615"}, {}, "SeriesTime (0008,0031)", "is not a valid DICOM TM value"),
        (
            {},
            {"RadiopharmaceuticalStartDateTime": "20240305"},
            "RadiopharmaceuticalStartDateTime (0018,1078)",
            "is not a valid DICOM DT value with hours and minutes",
        ),
    ],
)
def test_missing_or_unusable_tag_is_refused_naming_it(
    top: dict[str, Any], item: dict[str, Any], tag: str, problem: str
) -> None:
    with pytest.raises(DicomError) as err:
        _factor([_header(top, item)])
    msg = str(err.value)
    print(msg)
    assert msg.startswith(PREFIX + tag + " of series 7 'PET AC'"), msg
    assert problem in msg and "sequences.PET.suv: false" in msg


def test_scan_crossing_midnight() -> None:
    """Injection at 23:35, series at 00:05 the next day: 30 min of decay, with or without the injection date."""
    after = {"SeriesDate": "20240306", "SeriesTime": "000500", "AcquisitionDate": "20240306", "AcquisitionTime": "0005"}
    time_only = _factor([_header(after, {"RadiopharmaceuticalStartTime": "233500"})])
    assert time_only.decay_time_s == 1800.0 and "on the day before the reference date" in time_only.injection_source
    with_date = _factor([_header(after, {"RadiopharmaceuticalStartDateTime": "20240305233500.00"})])
    assert with_date.decay_time_s == 1800.0
    assert with_date.injection_source == "RadiopharmaceuticalStartDateTime (0018,1078)"
    assert with_date.factor == pytest.approx(72.5e3 / (3.7e8 * 2 ** (-1800 / 6586.2)), rel=1e-12)
    assert (with_date.injection_time, with_date.reference_time) == ("23:35:00", "00:05:00")


def test_injection_datetime_with_utc_offset_is_read_in_the_series_time_zone() -> None:
    """09:15 at UTC+01:00 is 08:15 in a series whose TimezoneOffsetFromUTC is +0000: two hours of decay."""
    record = _factor(
        [_header({"TimezoneOffsetFromUTC": "+0000"}, {"RadiopharmaceuticalStartDateTime": "20240305091500+0100"})]
    )
    assert record.decay_time_s == 7200.0 and record.injection_time == "08:15:00"
    assert _factor([_header(item={"RadiopharmaceuticalStartDateTime": "20240305091500+0100"})]).decay_time_s == 3600.0


@pytest.mark.parametrize(
    ("start", "problem"),
    [("20240306091500", "puts the injection 23.0 h after the reference time"), ("20240302091500", "73.0 h before")],
)
def test_injection_date_that_contradicts_the_series_is_refused(start: str, problem: str) -> None:
    with pytest.raises(DicomError) as err:
        _factor([_header(item={"RadiopharmaceuticalStartDateTime": start})])
    msg = str(err.value)
    assert msg.startswith(PREFIX + "RadiopharmaceuticalStartDateTime (0018,1078)") and problem in msg
    assert "20240306" not in msg and "20240302" not in msg  # dates are never shown


def test_series_time_after_the_acquisition_uses_the_earliest_acquisition_or_ge_private() -> None:
    """A post-processed series (SeriesTime = when it was made): QIBA's fallback reference times."""
    late = {"SeriesTime": "120000"}
    headers = [_header({**late, "AcquisitionTime": t}) for t in ("101800", "101500", "102100")]
    record = _factor(headers)
    assert record.reference_time == "10:15:00" and record.decay_time_s == 3600.0
    assert record.reference_source.startswith("earliest AcquisitionDate/AcquisitionTime (0008,0022/0032)")
    for ds in headers:
        ds.private_block(0x0009, "GEMS_PETD_01", create=True).add_new(0x0D, "DT", "20240305101000")
    record = _factor(headers)
    assert record.reference_time == "10:10:00" and record.decay_time_s == 3300.0
    assert record.reference_source.startswith("GE private scan date/time (0009,100D, GEMS_PETD_01)")


def test_admin_decay_correction_needs_no_decay() -> None:
    record = _factor([_header({"DecayCorrection": "ADMIN"}, {"RadiopharmaceuticalStartTime": None})])
    assert record.factor == pytest.approx(72.5e3 / 3.7e8, rel=1e-12)
    assert record.decay_time_s == 0.0 and record.injection_time is None


def test_images_that_disagree_about_the_series_are_refused() -> None:
    with pytest.raises(DicomError) as err:
        _factor([_header(), _header({"PatientWeight": "80"})])
    assert str(err.value).startswith(PREFIX + "PatientWeight (0010,1030)") and "differs between its 2 images" in str(
        err.value
    )


def test_no_identifying_value_logged_or_recorded(caplog: pytest.LogCaptureFixture) -> None:
    ds = _header({"PatientName": "MEDPIPEPHI^Jane", "PatientID": "MEDPIPEPHI-7", "PatientBirthDate": "19230405"})
    with caplog.at_level(logging.DEBUG, logger="medpipe"):
        record = _factor([ds])
    text = caplog.text + json.dumps(record.to_json())
    for value in ("MEDPIPEPHI", "Jane", "19230405", "20240305", "72.5 kg", "3.7e+08"):
        assert value not in caplog.text
    assert "MEDPIPEPHI" not in text and "20240305" not in text and "2024-03-05" not in text
    assert set(record.to_json()) >= {"factor", "weight_kg", "dose_bq", "half_life_s", "injection_time"}


def test_selector_accepts_suv_and_checks_its_type() -> None:
    assert parse_selector({"suv": True, "modality": "PT"}, sequence="PET").modality == ("PT",)
    with pytest.raises(ConfigError, match=r"sequences\.PET\.suv"):
        parse_selector({"suv": "yes"}, sequence="PET")


def _convert(src: Path, out: Path, selector: dict[str, Any], sequence: str = "T1w") -> Path:
    return convert_sequence(
        src,
        out / f"sub-S01_{sequence}.nii.gz",
        out / f"sub-S01_{sequence}_deid.tsv",
        out / f"sub-S01_{sequence}_qc.png",
        subject="S01",
        sequence=sequence,
        selector=selector,
    )


def test_suv_refused_for_mr_and_for_nifti_and_off_changes_nothing(tmp_path: Path, series_factory) -> None:
    series_factory(tmp_path / "dicom", n_slices=4)
    with pytest.raises(DicomError) as err:
        _convert(tmp_path / "dicom", tmp_path / "mr", {"suv": True})
    msg = str(err.value)
    assert msg.startswith("[subject S01] sequence T1w: sequences.T1w.suv is true, but series 3 'T1w_axial'")
    assert "Modality (0008,0060) MR" in msg and not (tmp_path / "mr").exists()
    with pytest.raises(ConfigError, match=r"sequences\.T1w\.suv: true needs the DICOM headers"):
        _convert(tmp_path / "dicom" / "image.nii.gz", tmp_path / "nii", {"nifti": "image.nii.gz", "suv": True})
    plain = _convert(tmp_path / "dicom", tmp_path / "plain", {})
    off = _convert(tmp_path / "dicom", tmp_path / "off", {"suv": False})
    for name in (plain.name, "sub-S01_T1w.json", "sub-S01_T1w_deid.tsv"):
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "off" / name).read_bytes(), name
    assert "suv" not in json.loads(off.with_name("sub-S01_T1w.json").read_text())


# --- the real STS PET series (IBSI soft-tissue sarcoma, GE Discovery ST) -----------------------------------


def _pet_files(shared_dir: Path, patient: str) -> list[Path]:
    return sorted((shared_dir / "ibsi_sts" / "dicom" / patient / "PET" / "image").iterdir())


def _hhmmss(text: str) -> str:
    return str(text).split(".")[0].ljust(6, "0")


def _expected_factor(ds: Dataset, decay: str) -> float:
    """SUVbw factor from the raw tag strings, with datetime arithmetic (independent of medpipe.convert.suv)."""
    drug = ds.RadiopharmaceuticalInformationSequence[0]
    grams, dose = float(ds.PatientWeight) * 1000, float(drug.RadionuclideTotalDose)
    if decay == "ADMIN":
        return grams / dose
    scan = datetime.strptime(ds.SeriesDate + _hhmmss(ds.SeriesTime), "%Y%m%d%H%M%S")
    start = str(drug.get("RadiopharmaceuticalStartDateTime") or "")
    raw = start[:14] if start else ds.SeriesDate + _hhmmss(drug.RadiopharmaceuticalStartTime)
    elapsed = (scan - datetime.strptime(raw, "%Y%m%d%H%M%S")).total_seconds()
    return grams / (dose * math.exp(-math.log(2) * elapsed / float(drug.RadionuclideHalfLife)))


@pytest.mark.shared
@pytest.mark.parametrize("patient", STS_PATIENTS)
def test_sts_factor_from_the_real_headers(shared_dir: Path, patient: str) -> None:
    """As exported (Units GML: already SUVbw) the request is refused; relabelled BQML, the factor is the definition's.

    The series say DecayCorrection ADMIN (factor = weight / dose); with START the real injection and series
    times decay the dose. STS_002's RadiopharmaceuticalStartDateTime is one day after its SeriesDate (its
    time-only attribute agrees with the series day): refused, not guessed.
    """
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in _pet_files(shared_dir, patient)]
    first = headers[0]
    assert (first.Modality, first.Units, first.DecayCorrection) == ("PT", "GML", "ADMIN")
    with pytest.raises(DicomError) as err:
        _factor(headers)
    assert str(err.value).startswith(PREFIX + "Units (0054,1001)") and "is GML" in str(err.value)
    for ds in headers:
        ds.Units = "BQML"
    admin = _factor(headers)
    assert admin.factor == pytest.approx(_expected_factor(first, "ADMIN"), rel=1e-12)
    for ds in headers:
        ds.DecayCorrection = "START"
    if patient == "STS_002":
        with pytest.raises(DicomError, match=r"RadiopharmaceuticalStartDateTime \(0018,1078\).*22\.9 h after"):
            _factor(headers)
        return
    start = _factor(headers)
    print(
        f"{patient}: ADMIN factor {admin.factor:.6g} g/Bq; START factor {start.factor:.6g} g/Bq after "
        f"{start.decay_time_s:.0f} s ({start.injection_source})"
    )
    assert start.factor == pytest.approx(_expected_factor(first, "START"), rel=1e-12)
    assert 0 < start.decay_time_s < 2 * 3600 and start.reference_source == "SeriesDate/SeriesTime (0008,0021/0031)"


@pytest.mark.shared
def test_sts_pet_as_exported_is_refused_before_conversion(shared_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DicomError) as err:
        _convert(shared_dir / "ibsi_sts" / "dicom" / "STS_001", tmp_path, {"modality": "PT", "suv": True}, "PET")
    msg = str(err.value)
    assert msg.startswith(PREFIX + "Units (0054,1001) of series")
    assert "is GML" in msg and "set sequences.PET.suv: false" in msg and not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def bqml_pet(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """STS_001's PET relabelled as Bq/mL: Units BQML, DecayCorrection START, each slice's RescaleSlope divided
    by the SUVbw factor of its headers, so that SUV of the copy is the providers' SUV image. Converted with
    suv false and true."""
    root = tmp_path_factory.mktemp("bqml_pet")
    (root / "dicom").mkdir()
    datasets = [pydicom.dcmread(f) for f in _pet_files(shared_dir, "STS_001")]
    factor = _expected_factor(datasets[0], "START")
    for n, ds in enumerate(datasets):
        ds.Units, ds.DecayCorrection = "BQML", "START"
        ds.RescaleSlope = DSfloat(float(ds.RescaleSlope) / factor, auto_format=True)
        ds.save_as(root / "dicom" / f"pet{n:03d}.dcm")
    images = {
        suv: _convert(root / "dicom", root / str(suv), {"modality": "PT", "suv": suv}, "PET") for suv in (False, True)
    }
    return {"root": root, "factor": factor, "bqml": images[False], "suv": images[True]}


@pytest.mark.shared
def test_sts_suv_image_is_the_activity_image_times_the_factor(shared_dir: Path, bqml_pet: dict[str, Any]) -> None:
    bq_img, suv_img = nib.load(bqml_pet["bqml"]), nib.load(bqml_pet["suv"])
    bq, suv = np.asarray(bq_img.dataobj), np.asarray(suv_img.dataobj)
    assert suv.dtype == np.float32 and suv.shape == bq.shape and np.array_equal(suv_img.affine, bq_img.affine)
    assert np.allclose(suv, bq.astype(np.float64) * bqml_pet["factor"], rtol=1e-6, atol=0)
    # dcm2niix's output is Bq/mL: pixel x RescaleSlope + RescaleIntercept of the slice, per slice
    for path in sorted((bqml_pet["root"] / "dicom").iterdir())[::14]:
        ds = pydicom.dcmread(path)
        bqml = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        r, c = np.unravel_index(int(np.argmax(bqml)), bqml.shape)
        iop, ps = np.asarray(ds.ImageOrientationPatient, float), np.asarray(ds.PixelSpacing, float)
        lps = np.asarray(ds.ImagePositionPatient, float) + c * ps[1] * iop[:3] + r * ps[0] * iop[3:]
        ijk = np.linalg.inv(bq_img.affine) @ np.r_[lps * [-1, -1, 1], 1]
        i, j, k = np.round(ijk[:3]).astype(int)
        assert np.allclose(ijk[:3], (i, j, k), atol=1e-3)
        assert bq[i, j, k] == pytest.approx(bqml[r, c], rel=1e-6)
    # the SUV of the relabelled copy is the providers' SUV image (the reference NIfTI), voxel for voxel
    nifti = shared_dir / "ibsi_sts" / "nifti" / "STS_001"
    ref = nib.as_closest_canonical(nib.load(nifti / "PET_image.nii.gz")).get_fdata()
    ours = nib.as_closest_canonical(suv_img).get_fdata()
    gtv = nib.as_closest_canonical(nib.load(nifti / "PET_mask.nii.gz")).get_fdata() > 0
    assert ours.shape == ref.shape and np.allclose(ours, ref, rtol=1e-5, atol=1e-6)
    body = (ours > 0.1) & ~gtv
    stats = {"body median": np.median(ours[body]), "GTV max": ours[gtv].max(), "max": ours.max()}
    print(
        "STS_001 SUVbw: " + ", ".join(f"{k} {v:.3f}" for k, v in stats.items()), f"(Bq/mL median {np.median(bq):.0f})"
    )
    assert 0.3 <= stats["body median"] <= 3 and 0.5 <= stats["max"] <= 100 and stats["GTV max"] > 2


@pytest.mark.shared
def test_sts_suv_sidecar_records_the_factor_without_dates(bqml_pet: dict[str, Any]) -> None:
    text = bqml_pet["suv"].with_name("sub-S01_PET.json").read_text()
    record = json.loads(text)["suv"]
    assert record["factor"] == pytest.approx(bqml_pet["factor"], rel=1e-12)
    assert {k: record[k] for k in ("weight_kg", "dose_bq", "half_life_s", "units", "decay_correction")} == {
        "weight_kg": 71.0,
        "dose_bq": 388777472.0,
        "half_life_s": 6588.0,
        "units": "BQML",
        "decay_correction": "START",
    }
    assert (record["injection_time"], record["reference_time"], record["decay_time_s"]) == (
        "10:35:00",
        "11:20:11",
        2711.0,
    )
    assert "20000907" not in text and "2000-09-07" not in text
    assert "suv" not in json.loads(bqml_pet["bqml"].with_name("sub-S01_PET.json").read_text())
