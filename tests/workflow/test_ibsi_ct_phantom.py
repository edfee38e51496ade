"""End-to-end proof that nothing between DICOM and features alters Hounsfield units.

The IBSI-1 CT radiomics phantom from ../shared (60 DICOM slices and the GTV-1 RTSTRUCT) is one subject of a
radiomics-only run (``automatic_segmentation: false``, tests/workflow/ibsi_ct_phantom.yaml): convert, the
human label, N4 (off for CT: a byte-identical pass-through), radiomics with IBSI-1 configuration C
(config/radiomics/ibsi_ct_config_c.yaml), the review list and the manifest. Checks: (a) the image the
radiomics job read is the converted CT, voxel for voxel the HU of the source DICOM (pydicom, rescale applied);
(b) the feature table, mapped to IBSI codes, reproduces every configuration C reference value within
tolerance, as many as the stand-alone test (tests/radiomics/test_ibsi.py) on the phantom's NIfTI files.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pandas as pd
import pydicom
import pytest

from medpipe.core.io import read_sitk
from medpipe.radiomics.extract import compute_features, load_params
from medpipe.radiomics.ibsi import compare_to_reference, load_reference
from tests.workflow.conftest import REPO, run, snakemake_cmd

pytestmark = [pytest.mark.workflow, pytest.mark.shared]

CONFIG = REPO / "tests" / "workflow" / "ibsi_ct_phantom.yaml"
PARAMS = REPO / "config" / "radiomics" / "ibsi_ct_config_c.yaml"
SUBJECT = "IBSICT"
PHANTOM = Path("ibsi_phantoms") / "ibsi_1_ct_radiomics_phantom"


@pytest.fixture(scope="module")
def phantom_run(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The workflow run to completion on the phantom; returns (workdir, phantom folder)."""
    phantom = shared_dir / PHANTOM
    (rtstruct,) = sorted((phantom / "dicom" / "mask").glob("*.dcm"))
    workdir = tmp_path_factory.mktemp("ibsi_ct_phantom")
    (workdir / "subjects.tsv").write_text(
        f"subject\tdicom\tlabel\n{SUBJECT}\t{phantom / 'dicom' / 'image'}\t{rtstruct}\n"
    )
    start = time.monotonic()
    run(snakemake_cmd(workdir, "--cores", "2", "--profile", str(REPO / "profiles" / "default"), configfile=CONFIG))
    print(f"\nIBSI CT phantom workflow: {time.monotonic() - start:.0f} s")
    return workdir, phantom


def _dicom_hu(folder: Path) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """HU volume ``[column, row, slice]`` of a DICOM series (pydicom, rescale applied) and its RAS affine."""
    slices = [pydicom.dcmread(p) for p in folder.glob("*.dcm")]
    cosines = np.asarray(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(cosines[:3], cosines[3:])
    slices.sort(key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, dtype=float))))
    hu = np.stack([d.pixel_array.T * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in slices], axis=-1)
    first, last = (np.asarray(d.ImagePositionPatient, dtype=float) for d in (slices[0], slices[-1]))
    row_mm, col_mm = (float(v) for v in slices[0].PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = cosines[:3] * col_mm, cosines[3:] * row_mm
    lps[:3, 2], lps[:3, 3] = (last - first) / (len(slices) - 1), first
    return hu, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _on_dicom_grid(img: nib.Nifti1Image, dicom_affine: npt.NDArray[np.float64]) -> tuple[np.ndarray, ...]:
    """DICOM voxel indices of every voxel of ``img`` (same grid up to axis flips: the indices must be whole)."""
    ijk = np.indices(img.shape).reshape(3, -1)
    world = img.affine[:3, :3] @ ijk + img.affine[:3, 3:]
    index = np.linalg.solve(dicom_affine[:3, :3], world - dicom_affine[:3, 3:])
    np.testing.assert_allclose(index, np.round(index), atol=1e-3)
    return tuple(np.round(index).astype(int))


def test_radiomics_read_the_dicom_hounsfield_units(phantom_run: tuple[Path, Path]) -> None:
    workdir, phantom = phantom_run
    res = workdir / "results"
    converted = res / f"convert/sub-{SUBJECT}/sub-{SUBJECT}_CT.nii.gz"
    n4 = res / f"n4/sub-{SUBJECT}/sub-{SUBJECT}_CT.nii.gz"
    features = pd.read_csv(res / "radiomics/features.tsv", sep="\t", dtype={"subject": str, "ibsi_code": str})
    # the radiomics job's image (its sha256 is on every row) is the n4 output, a byte-identical copy for CT
    assert set(features["image_sha256"]) == {hashlib.sha256(n4.read_bytes()).hexdigest()}
    assert n4.read_bytes() == converted.read_bytes()
    sidecar = json.loads(n4.with_suffix("").with_suffix(".json").read_text())
    assert sidecar["skipped"] is True and sidecar["n4_decision"]["modality"] == "CT"
    image, source = nib.load(n4), nib.load(converted)
    np.testing.assert_array_equal(np.asarray(image.dataobj), np.asarray(source.dataobj))
    # ... and holds, voxel for voxel, the HU of the source DICOM slices
    hu, dicom_affine = _dicom_hu(phantom / "dicom" / "image")
    voxels = np.asarray(image.dataobj, dtype=np.float64)
    np.testing.assert_array_equal(voxels.reshape(-1), hu[_on_dicom_grid(image, dicom_affine)])
    mask = np.asarray(nib.load(res / f"convert/sub-{SUBJECT}/sub-{SUBJECT}_desc-human_mask.nii.gz").dataobj) > 0
    in_mask = hu[_on_dicom_grid(image, dicom_affine)].reshape(mask.shape)[mask]
    print(f"HU in the GTV: workflow {voxels[mask].min():.0f}..{voxels[mask].max():.0f}, ", end="")
    print(f"DICOM {in_mask.min():.0f}..{in_mask.max():.0f} ({int(mask.sum())} voxels)")
    assert (voxels[mask].min(), voxels[mask].max()) == (in_mask.min(), in_mask.max())
    assert voxels.min() == -1000.0  # the rescale intercept was applied (stored pixels start at 0)
    # the RTSTRUCT rasterised onto the CT is the phantom's published voxel mask
    published = nib.as_closest_canonical(nib.load(phantom / "nifti/mask/mask.nii.gz"))
    ours = nib.as_closest_canonical(nib.load(res / f"convert/sub-{SUBJECT}/sub-{SUBJECT}_desc-human_mask.nii.gz"))
    np.testing.assert_allclose(ours.affine, published.affine, atol=1e-3)
    assert np.array_equal(np.asarray(ours.dataobj) > 0, np.asarray(published.dataobj) > 0)


def _standalone(phantom: Path, reference: pd.DataFrame) -> pd.DataFrame:
    """The stand-alone comparison of tests/radiomics/test_ibsi.py on the phantom's NIfTI files."""
    params, settings = load_params(PARAMS)
    image = read_sitk(phantom / "nifti/image/phantom.nii.gz")
    mask = read_sitk(phantom / "nifti/mask/mask.nii.gz")
    _, codes = compute_features(image, mask, params, settings)
    return compare_to_reference(codes["original"], reference)


def test_features_reproduce_ibsi_config_c(phantom_run: tuple[Path, Path], shared_dir: Path) -> None:
    workdir, phantom = phantom_run
    reference = load_reference(shared_dir / "ibsi_phantoms/ibsi1_reference_values.csv", "config_C")
    table = pd.read_csv(
        workdir / "results/radiomics/features.tsv",
        sep="\t",
        keep_default_na=False,
        na_values=["NA"],
        dtype={"subject": str, "ibsi_code": str},
    )
    assert set(table["source"]) == {"human"} and set(table["subject"]) == {SUBJECT}
    rows = table[(table["image_type"] == "original") & (table["ibsi_code"] != "")]
    assert not rows["ibsi_code"].duplicated().any()
    result = compare_to_reference(dict(zip(rows["ibsi_code"], rows["ibsi_value"], strict=True)), reference)
    standalone = _standalone(phantom, reference)
    print(
        f"IBSI-1 config_C through the workflow: {int(result['ok'].sum())}/{len(result)} mapped features within "
        f"tolerance (stand-alone on the NIfTI phantom: {int(standalone['ok'].sum())}/{len(standalone)})"
    )
    misses = result[~result["ok"]]
    assert misses.empty, "features outside IBSI tolerance:\n" + misses.to_string()
    assert len(result) == len(standalone) >= 108 and standalone["ok"].all()
    assert set(result["ibsi_code"]) == set(standalone["ibsi_code"])


def test_radiomics_only_run_made_no_segmentation_outputs(phantom_run: tuple[Path, Path]) -> None:
    workdir, _ = phantom_run
    res = workdir / "results"
    assert sorted(p.name for p in res.iterdir()) == ["audit", "convert", "n4", "radiomics"]
    assert not (res / "stats").exists()  # human-vs-automatic statistics need two sources
    flagged = pd.read_csv(res / "audit/flagged_cases.tsv", sep="\t")
    assert list(flagged.columns[:4]) == ["subject", "stage", "decision", "comment"] and flagged.empty
    manifest = json.loads((res / "audit/manifest.json").read_text())
    assert "radiomics/features.tsv" in manifest["files"] and manifest["run"]["subjects"] == [SUBJECT]
