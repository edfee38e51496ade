"""Tests of the demo cohort generator (medpipe.demo).

A two-subject cohort on a coarse, anisotropic grid (3 x 2.5 x 3.5 mm, so that row, column and
slice spacing cannot be confused) is generated once per module; the geometry checks read the
DICOM files back with pydicom and rebuild the world coordinates from the tags alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage as ndi

from medpipe.core.errors import ConfigError, DataError
from medpipe.demo import PHI_TOKEN, DemoSettings, cohort_is_current, generate_demo_cohort

SPACING = (3.0, 2.5, 3.5)
SETTINGS = DemoSettings(n_subjects=2, seed=5, spacing_mm=SPACING)
PHI_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
    "OperatorsName",
)
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    generate_demo_cohort(out, SETTINGS)
    return out


def read_series(folder: Path) -> tuple[np.ndarray, np.ndarray, list[pydicom.Dataset]]:
    """Volume indexed [column, row, slice] and its voxel -> RAS affine, from DICOM tags only."""
    dss = sorted((pydicom.dcmread(p) for p in folder.glob("*.dcm")), key=lambda d: int(d.InstanceNumber))
    iop = np.array(dss[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    dr, dc = (float(v) for v in dss[0].PixelSpacing)  # between rows, between columns
    ipp = np.array([d.ImagePositionPatient for d in dss], dtype=float)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc  # column index c moves along the row direction
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = (ipp[-1] - ipp[0]) / (len(dss) - 1)
    lps[:3, 3] = ipp[0]
    slices = [d.pixel_array.T * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss]
    vol = np.stack(slices, axis=-1)
    return vol.astype(np.float64), LPS @ lps, dss


def canonical(vol: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
    """Volume and affine reordered to RAS+ axis order (nibabel)."""
    img = nib.as_closest_canonical(nib.Nifti1Image(vol, affine))
    return np.asarray(img.dataobj), img.affine, None


def world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return (affine[:3, :3] @ ijk.T).T + affine[:3, 3]


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def test_layout_sheet_and_manifest(cohort: Path) -> None:
    rows = (cohort / "subjects.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["subject", "dicom", "label"]
    assert [r.split("\t")[0] for r in rows[1:]] == ["demo01", "demo02"]
    manifest = json.loads((cohort / "demo_manifest.json").read_text())
    assert manifest["parameters"]["spacing_mm"] == list(SPACING)
    n_slices = round(180.0 / SPACING[2])
    for sid in ("demo01", "demo02"):
        for seq in ("T1w", "T2w"):
            assert len(list((cohort / "dicom" / sid / seq).glob("IM*.dcm"))) == n_slices
        for name in ("brainmask", "lesion", "lesion_parts", "biasfield_T1w", "biasfield_T2w", "T1w_clean"):
            assert f"truth/{sid}/{name}.nii.gz" in manifest["files"]
            assert json.loads((cohort / "truth" / sid / f"{name}.json").read_text())["subject"] == sid
    assert cohort_is_current(cohort, SETTINGS)


def test_same_seed_is_byte_identical_and_other_seed_differs(cohort: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_demo_cohort(again, SETTINGS)
    files = sorted(p.relative_to(cohort) for p in cohort.rglob("*") if p.is_file() and p.name != "subjects.tsv")
    assert len(files) > 200
    for rel in files:
        assert (again / rel).read_bytes() == (cohort / rel).read_bytes(), rel
    other = tmp_path / "other"
    generate_demo_cohort(other, DemoSettings(n_subjects=1, seed=6, spacing_mm=SPACING))
    for rel in ("dicom/demo01/T1w/IM0020.dcm", "truth/demo01/lesion.nii.gz", "truth/demo01/biasfield_T2w.nii.gz"):
        assert (other / rel).read_bytes() != (cohort / rel).read_bytes(), rel


def test_up_to_date_cohort_is_not_regenerated(cohort: Path, tmp_path: Path) -> None:
    probe = cohort / "dicom" / "demo01" / "T1w" / "IM0001.dcm"
    before = probe.stat().st_mtime_ns
    generate_demo_cohort(cohort, SETTINGS)
    assert probe.stat().st_mtime_ns == before
    assert not cohort_is_current(cohort, DemoSettings(n_subjects=3, seed=5, spacing_mm=SPACING))
    small = tmp_path / "small"
    settings = DemoSettings(n_subjects=1, seed=1, spacing_mm=(6.0, 6.0, 6.0))
    generate_demo_cohort(small, settings)
    (small / "truth" / "demo01" / "lesion.nii.gz").unlink()
    assert not cohort_is_current(small, settings)
    generate_demo_cohort(small, settings)
    assert cohort_is_current(small, settings)


def test_dicom_geometry_matches_truth_nifti(cohort: Path) -> None:
    vol, dicom_affine, dss = read_series(cohort / "dicom" / "demo01" / "T1w")
    ds = dss[0]
    assert ds.Modality == "MR" and ds.SOPClassUID == pydicom.uid.MRImageStorage
    assert ds.SeriesDescription == f"T1w {PHI_TOKEN}SE" and int(ds.SeriesNumber) == 1
    assert [float(v) for v in ds.PixelSpacing] == [SPACING[1], SPACING[0]]
    assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == SPACING[2]
    ipp = np.array([d.ImagePositionPatient for d in dss], dtype=float)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    steps = np.diff(ipp, axis=0)
    np.testing.assert_allclose(np.linalg.norm(steps, axis=1), SPACING[2], atol=1e-5)
    np.testing.assert_allclose(steps @ normal, SPACING[2], atol=1e-5)
    assert len({d.SOPInstanceUID for d in dss}) == len(dss)
    assert all(pydicom.uid.UID(d.SOPInstanceUID).is_valid for d in dss)
    assert [int(d.InstanceNumber) for d in dss] == list(range(1, len(dss) + 1))

    # the truth grid is the DICOM grid: same voxel centres (in its own index order) ...
    lesion, nii_affine = load(cohort / "truth" / "demo01" / "lesion.nii.gz")
    corners = np.array([[0, 0, 0], [vol.shape[0] - 1, vol.shape[1] - 1, vol.shape[2] - 1]], dtype=float)
    to_nii = np.linalg.inv(nii_affine) @ dicom_affine
    idx = world(to_nii, corners)
    np.testing.assert_allclose(idx, np.rint(idx), atol=1e-4)
    assert sorted(np.rint(idx).ravel().tolist()) == sorted(corners.ravel().tolist())
    # ... and the same content: the DICOM pixels are clean T1w x bias field + noise at the same world point
    clean, _ = load(cohort / "truth" / "demo01" / "T1w_clean.nii.gz")
    bias, _ = load(cohort / "truth" / "demo01" / "biasfield_T1w.nii.gz")
    grid = np.indices(vol.shape).reshape(3, -1).T.astype(float)
    nii_idx = np.rint(world(to_nii, grid)).astype(int)
    expected = (clean * bias)[tuple(nii_idx.T)].reshape(vol.shape)
    sigma = json.loads((cohort / "truth" / "demo01" / "subject.json").read_text())["noise_sigma_T1w"]
    head = expected > 300
    assert np.corrcoef(vol[head], expected[head])[0, 1] > 0.97
    assert abs(np.std(vol[head] - expected[head]) - sigma) < 0.15 * sigma

    # lesion centroid in world coordinates: from lesion.nii.gz vs from the DICOM image content
    centroid_nii = world(nii_affine, np.argwhere(lesion > 0).astype(float)).mean(axis=0)
    pos = world(dicom_affine, grid).reshape(*vol.shape, 3)
    near = np.linalg.norm(pos - centroid_nii, axis=-1) < 25.0
    local = vol / ndi.gaussian_filter(vol, 6.0)  # flatten the smooth bias field
    bright = near & (local > 1.25) & (vol > np.percentile(vol[near], 80))
    assert bright.sum() >= 10
    parts, _ = load(cohort / "truth" / "demo01" / "lesion_parts.nii.gz")
    rim_nii = world(nii_affine, np.argwhere(parts == 1).astype(float)).mean(axis=0)
    np.testing.assert_allclose(pos[bright].mean(axis=0), rim_nii, atol=0.75 * min(SPACING))


def test_phi_is_planted_in_every_header(cohort: Path) -> None:
    phi = json.loads((cohort / "phi.json").read_text())
    assert phi["token"] == PHI_TOKEN
    for sid in ("demo01", "demo02"):
        planted = phi["subjects"][sid]
        assert set(planted) == set(PHI_TAGS)
        for seq in ("T1w", "T2w"):
            path = sorted((cohort / "dicom" / sid / seq).glob("*.dcm"))[3]
            ds = pydicom.dcmread(path)
            raw = path.read_bytes()
            for tag in PHI_TAGS:
                assert str(ds[tag].value) == planted[tag]
                assert planted[tag].encode() in raw
                if tag != "PatientBirthDate":
                    assert PHI_TOKEN in planted[tag]
            assert ds.PatientBirthDate.isdigit() and len(ds.PatientBirthDate) == 8
    assert phi["subjects"]["demo01"]["PatientID"] != phi["subjects"]["demo02"]["PatientID"]


def test_every_profile_attribute_carries_an_identifier(cohort: Path) -> None:
    """Beside the patient data, each attribute of the PS3.15 basic profile holds a greppable planted value."""
    from pydicom.datadict import dictionary_VR

    from medpipe.core.confidentiality import profile_tags

    phi = json.loads((cohort / "phi.json").read_text())
    ds = pydicom.dcmread(sorted((cohort / "dicom" / "demo01" / "T2w").glob("*.dcm"))[2])
    raw = b"".join(p.read_bytes() for p in sorted((cohort / "dicom" / "demo01" / "T2w").glob("*.dcm"))[2:3])
    missing = []
    for group, element in profile_tags():
        tag = (group << 16) | element
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        if vr in {"UI", "US", "SS", "UL", "SL", "FL", "FD", "DS", "IS", "AS", "OB", "OW", "UN", "AT", "SV", "UV"}:
            continue  # UIDs are kept by the Retain UIDs Option; numbers hold nothing greppable
        if tag not in ds:
            missing.append(f"({group:04X},{element:04X})")
    assert not missing, missing[:20]
    assert len(phi["profile"]) > 400 and set(phi["profile"]) <= set(phi["all_strings"])
    found = [text for text in phi["profile"] if text.encode() in raw]
    assert len(found) > 400  # the planted values are in the file itself (sequences and private blocks too)
    assert ds.SeriesDescription.startswith("T2w ") and PHI_TOKEN in ds.SeriesDescription
    assert any(el.tag.is_private and PHI_TOKEN in str(el.value) for el in ds)


def test_rigid_truth_maps_t2w_back_onto_t1w(cohort: Path) -> None:
    improvements = []
    for sid in ("demo01", "demo02"):
        t1, affine, _ = canonical(*read_series(cohort / "dicom" / sid / "T1w")[:2])
        t2, affine2, _ = canonical(*read_series(cohort / "dicom" / sid / "T2w")[:2])
        lesion, lesion_affine = load(cohort / "truth" / sid / "lesion.nii.gz")
        np.testing.assert_allclose(affine, affine2)
        np.testing.assert_allclose(affine, lesion_affine, atol=1e-5)  # truth is on the canonical DICOM grid
        rigid = json.loads((cohort / "truth" / sid / "t2w_to_t1w_rigid.json").read_text())
        t2_to_t1 = np.array(rigid["world_t2w_to_t1w"])
        assert np.max(np.abs(np.abs(rigid["rotation_deg_xyz"]))) <= 6.0
        assert np.max(np.abs(rigid["translation_mm"])) <= 6.0
        # T2w intensity at the anatomical point seen at T1w voxel x lies at p_T2 = inv(t2_to_t1) @ x
        vox = np.linalg.inv(affine) @ np.linalg.inv(t2_to_t1) @ affine
        moved = ndi.affine_transform(t2, vox[:3, :3], vox[:3, 3], order=1)
        head1, head2, head2m = t1 > 150, t2 > 150, moved > 150
        dice_before = 2 * (head1 & head2).sum() / (head1.sum() + head2.sum())
        dice_after = 2 * (head1 & head2m).sum() / (head1.sum() + head2m.sum())
        assert dice_after > 0.95
        improvements.append(dice_after - dice_before)
        brain, _ = load(cohort / "truth" / sid / "brainmask.nii.gz")
        shell = ndi.binary_dilation(lesion > 0, iterations=3) & (lesion == 0) & (brain > 0)
        # the lesion is T2w-hyperintense: brighter than its surroundings once T2w is moved back
        assert moved[lesion > 0].mean() > 1.15 * moved[shell].mean()
    assert max(improvements) > 0.01


def test_truth_is_consistent(cohort: Path) -> None:
    for sid in ("demo01", "demo02"):
        truth = cohort / "truth" / sid
        lesion, _ = load(truth / "lesion.nii.gz")
        label, _ = load(cohort / "labels" / f"{sid}_lesion.nii.gz")
        brain, _ = load(truth / "brainmask.nii.gz")
        parts, _ = load(truth / "lesion_parts.nii.gz")
        np.testing.assert_array_equal(label > 0, lesion)
        np.testing.assert_array_equal(label, np.where(np.isin(parts, (1, 2)), parts, 0))  # 1 rim, 2 core
        assert set(np.unique(label)) == {0, 1, 2} and label.dtype == np.uint8
        assert set(np.unique(lesion)) == {0, 1} and lesion.dtype == np.uint8
        assert np.all(brain[lesion > 0] == 1)
        np.testing.assert_array_equal(lesion, np.isin(parts, (1, 2)))
        info = json.loads((truth / "subject.json").read_text())
        radius = info["lesion"]["radius_mm"]
        assert 8.0 <= radius <= 16.0
        sphere_ml = 4 / 3 * np.pi * radius**3 / 1000
        assert 0.3 * sphere_ml < info["lesion"]["volume_ml"] < 2.5 * sphere_ml
        assert 900 < brain.sum() * np.prod(SPACING) / 1000 < 2600  # brain volume in ml
        clean, _ = load(truth / "T1w_clean.nii.gz")
        assert clean[parts == 1].mean() > 1.3 * clean[parts == 2].mean()  # bright rim, dark core
        for seq in ("T1w", "T2w"):
            bias, _ = load(truth / f"biasfield_{seq}.nii.gz")
            assert 0.6 < bias.min() < 1.0 < bias.max() < 1.5
            assert np.abs(np.diff(bias, axis=0)).max() < 0.05  # smooth
        b1, _ = load(truth / "biasfield_T1w.nii.gz")
        b2, _ = load(truth / "biasfield_T2w.nii.gz")
        assert not np.allclose(b1, b2)


def test_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="n_subject"):
        DemoSettings.from_config({"n_subject": 3})
    with pytest.raises(ConfigError, match="spacing_mm"):
        DemoSettings.from_config({"spacing_mm": [1.5, 1.5]})
    # The generator's ranges are the schema's (one place), for config sections and direct calls alike.
    for bad in ({"n_subjects": 100}, {"n_subjects": 0}, {"spacing_mm": [0.2, 1.0, 1.0]}, {"seed": -1}):
        key = next(iter(bad))
        with pytest.raises(ConfigError, match=rf"demo\.{key}"):
            DemoSettings.from_config(bad)
        with pytest.raises(ConfigError, match=rf"demo\.{key}"):
            DemoSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in bad.items()}).validate()
    assert DemoSettings.from_config({"seed": 3}) == DemoSettings(seed=3)
    foreign = tmp_path / "foreign"
    (foreign / "dicom").mkdir(parents=True)
    with pytest.raises(DataError, match="not made by medpipe"):
        generate_demo_cohort(foreign, DemoSettings(n_subjects=1, spacing_mm=(6.0, 6.0, 6.0)))


def test_demo_defaults_come_from_the_schema() -> None:
    from medpipe.core.config import with_defaults

    schema = with_defaults({}, "demo")
    default = DemoSettings()
    assert (default.n_subjects, default.seed, list(default.spacing_mm)) == (
        schema["n_subjects"],
        schema["seed"],
        schema["spacing_mm"],
    )
