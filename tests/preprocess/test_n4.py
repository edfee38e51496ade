"""Tests of medpipe.preprocess.n4: N4 on a known synthetic field, on real XA30 data, determinism, bad input,
and the modality switch (CT/PT passed through unchanged, per-sequence overrides, negative values refused)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medpipe.core.errors import ConfigError, DataError
from medpipe.core.io import save_nifti
from medpipe.core.records import ModalityRecord
from medpipe.preprocess.n4 import foreground_mask, n4_correct

FAST = {"shrink_factor": 2, "convergence_iters": [30, 30, 30]}


def _biased_phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    idx = np.indices((48, 48, 40)).astype(np.float64)
    r2 = ((idx[0] - 23.5) / 20) ** 2 + ((idx[1] - 23.5) / 20) ** 2 + ((idx[2] - 19.5) / 16) ** 2
    tissue = np.where(r2 < 1, 100.0, 0.0) + np.where(r2 < 0.4, 50.0, 0.0)
    field = np.exp(0.35 * (idx[0] - 23.5) / 24 - 0.25 * (idx[2] - 19.5) / 20)
    noisy = tissue * field + rng.normal(0, 1.0, tissue.shape) * (r2 < 1)
    return noisy.astype(np.float32), field, r2 < 1


def test_n4_recovers_synthetic_field_and_is_deterministic(tmp_path: Path) -> None:
    img, field, inside = _biased_phantom()
    save_nifti(img, np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "in.nii.gz")
    runs = []
    for run in ("a", "b"):
        d = tmp_path / run
        n4_correct(
            tmp_path / "in.nii.gz",
            d / "n4.nii.gz",
            d / "field.nii.gz",
            d / "qc.png",
            subject="S1",
            settings=FAST,
            seed=2,
        )
        runs.append(d)
    for name in ("n4.nii.gz", "field.nii.gz", "n4.json", "field.json"):
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name
    est = nib.load(runs[0] / "field.nii.gz").get_fdata()
    r = np.corrcoef(np.log(est[inside]), np.log(field[inside]))[0, 1]
    assert r > 0.9, r
    corrected = nib.load(runs[0] / "n4.nii.gz").get_fdata()
    np.testing.assert_allclose(corrected, img / est, rtol=1e-5)
    side = json.loads((runs[0] / "n4.json").read_text())
    assert side["stage"] == "n4" and side["bias_field"] == "field.nii.gz"
    assert side["skipped"] is False and side["n4_decision"]["key"] == "preprocess.n4.modalities.MR"


def test_n4_refuses_nan_and_empty(tmp_path: Path) -> None:
    img, _, _ = _biased_phantom()
    img[1, 2, 3] = np.nan
    save_nifti(img, np.eye(4), tmp_path / "nan.nii.gz")
    with pytest.raises(DataError, match=r"subject S4.*nan.nii.gz.*NaN"):
        n4_correct(
            tmp_path / "nan.nii.gz",
            tmp_path / "o.nii.gz",
            tmp_path / "f.nii.gz",
            tmp_path / "q.png",
            subject="S4",
            settings=FAST,
            seed=1,
        )
    save_nifti(np.zeros((8, 8, 8), np.float32), np.eye(4), tmp_path / "zero.nii.gz")
    with pytest.raises(DataError, match="empty"):
        n4_correct(
            tmp_path / "zero.nii.gz",
            tmp_path / "o.nii.gz",
            tmp_path / "f.nii.gz",
            tmp_path / "q.png",
            subject="S4",
            settings=FAST,
            seed=1,
        )


@pytest.mark.shared
def test_n4_xa30_approaches_scanner_normalised(shared_dir: Path, tmp_path: Path) -> None:
    """Series 5 (raw, coil bias) corrected by N4 correlates more with series 6 (scanner-normalised)."""
    ref = shared_dir / "dcm_qa_xa30" / "Ref"
    raw_path = next(ref.glob("5_*.nii"))
    norm = np.asarray(nib.load(next(ref.glob("6_*.nii"))).dataobj, dtype=np.float64)
    raw = np.asarray(nib.load(raw_path).dataobj, dtype=np.float64)
    n4_correct(
        raw_path,
        tmp_path / "n4.nii.gz",
        tmp_path / "f.nii.gz",
        tmp_path / "q.png",
        subject="xa30",
        settings={},
        seed=1,
    )
    corrected = nib.load(tmp_path / "n4.nii.gz").get_fdata()
    head = foreground_mask(norm).astype(bool)
    r_raw = np.corrcoef(raw[head], norm[head])[0, 1]
    r_n4 = np.corrcoef(corrected[head], norm[head])[0, 1]
    print(f"XA30 inside head ({head.sum()} voxels): r(raw, s6) = {r_raw:.4f}, r(N4, s6) = {r_n4:.4f}")
    assert r_n4 > r_raw


def _ct_phantom() -> np.ndarray:
    """CT-like int16 volume in Hounsfield units: air -1000, soft tissue ~40, bone ~700, with noise."""
    rng = np.random.default_rng(3)
    idx = np.indices((40, 36, 24)).astype(np.float64)
    r2 = ((idx[0] - 19.5) / 16) ** 2 + ((idx[1] - 17.5) / 14) ** 2 + ((idx[2] - 11.5) / 10) ** 2
    hu = np.where(r2 < 1, 40.0, -1000.0) + np.where(r2 < 0.15, 660.0, 0.0) + rng.normal(0, 15, r2.shape)
    return np.rint(hu).astype(np.int16)


def _run(tmp_path: Path, src: Path, name: str, **kw) -> tuple[Path, dict]:
    out = tmp_path / name
    n4_correct(
        src,
        out / "n4.nii.gz",
        out / "field.nii.gz",
        out / "qc.png",
        subject="S7",
        settings=kw.pop("settings", FAST),
        seed=1,
        **kw,
    )
    return out, json.loads((out / "n4.json").read_text())


def test_ct_is_passed_through_unchanged(tmp_path: Path) -> None:
    """N4 is off for CT by default: Hounsfield units (negative ones included) reach normalise as converted."""
    hu = _ct_phantom()
    save_nifti(hu, np.diag([0.9, 0.9, 2.5, 1.0]), tmp_path / "ct.nii.gz")
    record = ModalityRecord("CT", source="dicom_header")
    out, side = _run(tmp_path, tmp_path / "ct.nii.gz", "ct", sequence="CT", modality=record)
    assert (out / "n4.nii.gz").read_bytes() == (tmp_path / "ct.nii.gz").read_bytes()
    img = nib.load(out / "n4.nii.gz")
    assert img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(img.dataobj), hu)
    field = nib.load(out / "field.nii.gz")
    assert field.shape == hu.shape and np.array_equal(field.affine, img.affine)
    assert np.all(np.asarray(field.dataobj) == 1.0) and field.get_data_dtype() == np.float32
    assert (out / "qc.png").read_bytes()[:4] == b"\x89PNG"
    assert side["skipped"] is True and side["bias_field"] == "field.nii.gz"
    decision = side["n4_decision"]
    assert decision["modality"] == "CT" and decision["modality_source"] == "dicom_header"
    assert decision["key"] == "preprocess.n4.modalities.CT" and "passed through unchanged" in decision["reason"]
    assert json.loads((out / "field.json").read_text())["skipped"] is True


def test_pet_is_passed_through_and_mr_can_be_switched_off(tmp_path: Path) -> None:
    img, _, _ = _biased_phantom()
    save_nifti(img, np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "in.nii.gz")
    out, side = _run(tmp_path, tmp_path / "in.nii.gz", "pet", sequence="PET", modality="PT")
    assert side["skipped"] is True and side["n4_decision"]["key"] == "preprocess.n4.modalities.PT"
    assert (out / "n4.nii.gz").read_bytes() == (tmp_path / "in.nii.gz").read_bytes()
    settings = {**FAST, "per_sequence": {"T1w": False}}
    out, side = _run(tmp_path, tmp_path / "in.nii.gz", "mr_off", sequence="T1w", modality="MR", settings=settings)
    assert side["skipped"] is True and side["n4_decision"]["key"] == "preprocess.n4.per_sequence.T1w"
    assert (out / "n4.nii.gz").read_bytes() == (tmp_path / "in.nii.gz").read_bytes()
    _, side = _run(tmp_path, tmp_path / "in.nii.gz", "other_seq", sequence="T2w", modality="MR", settings=settings)
    assert side["skipped"] is False  # another sequence's override does not apply


def test_per_sequence_override_forces_n4_on(tmp_path: Path) -> None:
    """Forcing N4 on a non-negative PET image runs it; the same run as the MR default."""
    img, _, _ = _biased_phantom()
    save_nifti(img, np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "in.nii.gz")
    settings = {**FAST, "per_sequence": {"PET": True}}
    forced, side = _run(tmp_path, tmp_path / "in.nii.gz", "pet_on", sequence="PET", modality="PT", settings=settings)
    assert side["skipped"] is False and side["n4_decision"]["key"] == "preprocess.n4.per_sequence.PET"
    mr, _ = _run(tmp_path, tmp_path / "in.nii.gz", "mr", sequence="T1w")
    assert (forced / "n4.nii.gz").read_bytes() == (mr / "n4.nii.gz").read_bytes()
    assert (forced / "field.nii.gz").read_bytes() == (mr / "field.nii.gz").read_bytes()


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"per_sequence": {"CT": True}}, "preprocess.n4.per_sequence.CT"),
        ({"modalities": {"CT": True}}, "preprocess.n4.modalities.CT"),
    ],
)
def test_n4_forced_on_negative_values_is_refused(tmp_path: Path, settings: dict, key: str) -> None:
    """No silent shift to >= 0: the user is told that N4 would destroy Hounsfield units and how to switch it off."""
    save_nifti(_ct_phantom(), np.eye(4), tmp_path / "ct.nii.gz")
    with pytest.raises(ConfigError, match=r"subject S7.*ct.nii.gz.*negative values") as err:
        _run(tmp_path, tmp_path / "ct.nii.gz", "ct", sequence="CT", modality="CT", settings={**FAST, **settings})
    assert f"{key}: false" in str(err.value) and "Hounsfield" in str(err.value)
    assert not (tmp_path / "ct" / "n4.nii.gz").exists()


def test_modality_without_n4_setting_is_refused(tmp_path: Path) -> None:
    save_nifti(_ct_phantom(), np.eye(4), tmp_path / "us.nii.gz")
    with pytest.raises(ConfigError, match=r"modality 'US' has no N4 setting.*preprocess.n4.modalities.US"):
        _run(tmp_path, tmp_path / "us.nii.gz", "us", sequence="US", modality="US")
    _, side = _run(
        tmp_path, tmp_path / "us.nii.gz", "us", sequence="US", modality="US", settings={"modalities": {"US": False}}
    )
    assert side["skipped"] is True


def test_mr_with_negative_values_is_still_shifted_and_corrected(tmp_path: Path) -> None:
    """MR (arbitrary units) keeps the documented behaviour: a negative minimum is shifted for N4, not refused."""
    mr = _ct_phantom().astype(np.float32) / 10.0 + 20.0  # min about -80: negative background
    assert mr.min() < 0
    save_nifti(mr, np.eye(4), tmp_path / "mr.nii.gz")
    out, sidecar = _run(tmp_path, tmp_path / "mr.nii.gz", "mr", sequence="T1w", modality="MR")
    assert not sidecar.get("skipped")
    corrected = nib.load(out / "n4.nii.gz").get_fdata()
    assert corrected.shape == mr.shape and np.isfinite(corrected).all() and corrected.min() >= 0
