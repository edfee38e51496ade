"""CT, PET and MR of the same patients through the workflow: the values they were acquired in reach radiomics.

The eight IBSI soft-tissue-sarcoma patients of ../shared that have CT, PET and MR T1, as NIfTI. A radiomics-only
run (``automatic_segmentation: false``) with all three as sequences: MR T1 the reference (N4 by modality, read on
the reference grid), CT and PET read on their own grids (``radiomics.images.<image>.grid: native``) inside their
own GTV masks (``mask``: CT_mask / PET_mask, drawn on those images). The CT and PET params ask for no
resampling and no re-segmentation, so the voxels that reach pyradiomics must be the source voxels, byte for
byte and value for value: Hounsfield units and SUV, no N4, no co-registration, no normalisation.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.workflow.conftest import BIN, REPO, run, snakemake_cmd

pytestmark = [pytest.mark.workflow, pytest.mark.shared, pytest.mark.slow]

SOURCE_FILES = {"T1w": "MR_T1_image.nii.gz", "CT": "CT_image.nii.gz", "PET": "PET_image.nii.gz"}
OWN_MASKS = {"CT": "CT_mask.nii.gz", "PET": "PET_mask.nii.gz"}


def _params(path: Path, bin_width: float) -> Path:
    """First-order and shape features on the image as it is: no resampling, re-segmentation or normalisation."""
    path.write_text(
        yaml.safe_dump(
            {
                "imageType": {"Original": {}},
                "featureClass": {"shape": None, "firstorder": None, "glcm": None},
                "setting": {"binWidth": bin_width, "label": 1, "voxelArrayShift": 0, "preCrop": True},
            },
            sort_keys=False,
        )
    )
    return path


def _config(workdir: Path) -> Path:
    cfg = {
        "subjects": "subjects.tsv",
        "seed": 42,
        "automatic_segmentation": False,
        "sequences": {
            "T1w": {"nifti": SOURCE_FILES["T1w"], "modality": "MR"},
            "CT": {"nifti": SOURCE_FILES["CT"], "modality": "CT"},
            "PET": {"nifti": SOURCE_FILES["PET"], "modality": "PT"},
        },
        "reference_sequence": "T1w",
        "label": {"name": "GTV"},
        "preprocess": {"n4": {"shrink_factor": 4, "convergence_iters": [20, 10]}},
        "postprocess": {"dicom_seg": False},
        "radiomics": {
            "params": str(REPO / "config/radiomics/tiny.yaml"),
            "images": {
                "T1w": {},
                "CT": {"grid": "native", "mask": OWN_MASKS["CT"], "params": str(_params(workdir / "ct.yaml", 25))},
                "PET": {"grid": "native", "mask": OWN_MASKS["PET"], "params": str(_params(workdir / "pet.yaml", 0.5))},
            },
            "sources": ["human"],
            "perturbations": [],
        },
        "signature": {"outcomes": None},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def multimodal_run(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    source = shared_dir / "ibsi_sts" / "nifti"
    patients = sorted(p.name for p in source.iterdir() if all((p / f).is_file() for f in SOURCE_FILES.values()))
    assert len(patients) == 8, patients
    root = tmp_path_factory.mktemp("sts_multimodal_root")
    for patient in patients:
        (root / patient).symlink_to(source / patient, target_is_directory=True)
    workdir = tmp_path_factory.mktemp("sts_multimodal")
    sheet = [str(BIN / "medpipe"), "sheet", str(root), "--label", "MR_T1_mask.nii.gz", "--out", "subjects.tsv"]
    for name in SOURCE_FILES.values():
        sheet += ["--require", name]
    run(sheet, cwd=workdir)
    config = _config(workdir)
    run(snakemake_cmd(workdir, "--cores", "2", "--profile", str(REPO / "profiles" / "default"), configfile=config))
    return workdir, source, patients


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(path)
    return np.asarray(img.dataobj), img.affine


def test_ct_and_pet_reach_radiomics_in_their_own_values(multimodal_run: tuple[Path, Path, list[str]]) -> None:
    workdir, source, patients = multimodal_run
    res = workdir / "results"
    features = pd.read_csv(res / "radiomics/features.tsv", sep="\t", dtype={"subject": str})
    subjects = [p.replace("_", "") for p in patients]
    assert sorted(features["image"].unique()) == ["CT", "PET", "T1w"]
    assert features.groupby("image")["subject"].nunique().to_dict() == {"CT": 8, "PET": 8, "T1w": 8}
    for patient, s in zip(patients, subjects, strict=True):
        for image in ("CT", "PET"):
            converted = res / f"convert/sub-{s}/sub-{s}_{image}.nii.gz"
            voxels, affine = _load(converted)
            truth, truth_affine = _load(source / patient / SOURCE_FILES[image])
            np.testing.assert_array_equal(voxels, truth)  # the acquired values, unchanged
            np.testing.assert_allclose(affine, truth_affine, atol=1e-5)
            mask, mask_affine = _load(res / f"convert/sub-{s}/sub-{s}_img-{image}_desc-human_mask.nii.gz")
            own, _ = _load(source / patient / OWN_MASKS[image])
            assert np.array_equal(mask > 0, own > 0)
            np.testing.assert_allclose(mask_affine, truth_affine, atol=1e-5)
            rows = features[(features["subject"] == s) & (features["image"] == image)].set_index("feature")
            # pyradiomics read exactly these files: the converted image and the image's own mask
            assert set(rows["image_sha256"]) == {hashlib.sha256(converted.read_bytes()).hexdigest()}
            inside = truth[own > 0].astype(np.float64)
            assert rows.loc["original_firstorder_Minimum", "value"] == pytest.approx(inside.min(), rel=1e-6)
            assert rows.loc["original_firstorder_Maximum", "value"] == pytest.approx(inside.max(), rel=1e-6)
            assert rows.loc["original_firstorder_Mean", "value"] == pytest.approx(inside.mean(), rel=1e-5)
            volume = float((own > 0).sum() * np.prod(nib.load(source / patient / OWN_MASKS[image]).header.get_zooms()))
            assert rows.loc["original_shape_VoxelVolume", "value"] == pytest.approx(volume, rel=1e-6)
        ct = features[(features["subject"] == s) & (features["image"] == "CT")].set_index("feature")
        assert ct.loc["original_firstorder_Minimum", "value"] < 0  # HU: soft tissue and fat below water


def test_modality_decides_the_processing_each_image_had(multimodal_run: tuple[Path, Path, list[str]]) -> None:
    workdir, _, patients = multimodal_run
    res = workdir / "results"
    for s in (p.replace("_", "") for p in patients):
        for image, modality in (("T1w", "MR"), ("CT", "CT"), ("PET", "PT")):
            sidecar = json.loads((res / f"convert/sub-{s}/sub-{s}_{image}.json").read_text())
            assert sidecar["modality"] == modality and sidecar["modality_source"] == "config", sidecar
        # MR: N4 on the reference grid; CT and PET: read where they were converted (no N4, no co-registration)
        assert (res / f"n4/sub-{s}/sub-{s}_T1w.nii.gz").is_file()
        for image in ("CT", "PET"):
            assert not (res / f"n4/sub-{s}/sub-{s}_{image}.nii.gz").exists()
            assert not (res / f"coregister/sub-{s}/sub-{s}_{image}.nii.gz").exists()
        n4 = json.loads((res / f"n4/sub-{s}/sub-{s}_T1w.json").read_text())
        assert not n4.get("skipped"), f"sub-{s}: N4 is on for MR"
