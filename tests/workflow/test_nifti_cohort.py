"""End-to-end on real NIfTI inputs: four IBSI soft-tissue-sarcoma patients from ../shared.

The workflow reads the MR T1 images and the clinicians' GTV masks as NIfTI (config
``sequences.T1w.nifti``, sheet from ``medpipe sheet``), trains a tiny 2-fold model, and extracts
radiomics of the human, automatic and one-voxel-eroded masks; the human-vs-eroded retention table
must be in the report. The full 38-patient run is ``make sts`` (config/ibsi_sts.yaml).
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
from tests.workflow.test_report import report_data

pytestmark = [pytest.mark.workflow, pytest.mark.shared, pytest.mark.slow]

#: The four smallest MR T1 images of the cohort (keeps the CI run short).
PATIENTS = ["STS_008", "STS_019", "STS_024", "STS_025"]


def _config(path: Path) -> Path:
    cfg = yaml.safe_load((REPO / "config/ibsi_sts.yaml").read_text())
    cfg["preprocess"]["n4"] = {"shrink_factor": 2, "convergence_iters": [20, 10]}
    cfg["preprocess"]["target_spacing_mm"] = [3.0, 3.0, 6.0]
    cfg["segmentation"].update(folds=2)
    cfg["segmentation"]["model"].update(channels=[4, 8, 16], strides=[2, 2])
    cfg["segmentation"]["train"].update(epochs=1, iterations_per_epoch=2, batch_size=1, patch_size=[24, 24, 16])
    cfg["segmentation"]["infer"].update(tta=False, sw_batch_size=1)
    cfg["radiomics"].update(params=str(REPO / "config/radiomics/tiny.yaml"), perturbations=["erode"])
    cfg["stats"]["bootstrap"] = 200
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def sts_run(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sts_root")
    source = shared_dir / "ibsi_sts" / "nifti"
    for patient in PATIENTS:
        (root / patient).symlink_to(source / patient, target_is_directory=True)
    workdir = tmp_path_factory.mktemp("sts_run")
    run(
        [
            str(BIN / "medpipe"),
            "sheet",
            str(root),
            "--label",
            "MR_T1_mask.nii.gz",
            "--require",
            "MR_T1_image.nii.gz",
            "--out",
            str(workdir / "subjects.tsv"),
        ]
    )
    config = _config(workdir / "config.yaml")
    run(snakemake_cmd(workdir, "--cores", "2", "--profile", str(REPO / "profiles" / "default"), configfile=config))
    run(snakemake_cmd(workdir, "--cores", "1", "--report", "results/report.html", configfile=config))
    return workdir, source


def test_nifti_inputs_are_imported_exactly(sts_run: tuple[Path, Path]) -> None:
    workdir, source = sts_run
    res = workdir / "results"
    for patient in PATIENTS:
        s = patient.replace("_", "")
        original = nib.load(source / patient / "MR_T1_image.nii.gz")
        converted = nib.load(res / f"convert/sub-{s}/sub-{s}_T1w.nii.gz")
        np.testing.assert_array_equal(np.asarray(converted.dataobj), np.asarray(original.dataobj))
        np.testing.assert_allclose(converted.affine, original.affine, atol=1e-5)
        sidecar = json.loads((res / f"convert/sub-{s}/sub-{s}_T1w.json").read_text())
        digest = hashlib.sha256((source / patient / "MR_T1_image.nii.gz").read_bytes()).hexdigest()
        assert sidecar["inputs"][0]["sha256"] == digest and sidecar["source"]["format"] == "nifti"
        human = np.asarray(nib.load(res / f"convert/sub-{s}/sub-{s}_desc-human_mask.nii.gz").dataobj) > 0
        truth = np.asarray(nib.load(source / patient / "MR_T1_mask.nii.gz").dataobj) > 0
        assert np.array_equal(human, truth)
        auto = nib.load(res / f"postprocess/sub-{s}/sub-{s}_desc-auto_mask.nii.gz")
        assert auto.shape == original.shape
        np.testing.assert_allclose(auto.affine, original.affine, atol=1e-5)
    assert not list(res.glob("postprocess/*/*.dcm")), "no DICOM-SEG without a DICOM source"


def test_erosion_retention_table_is_in_the_report(sts_run: tuple[Path, Path]) -> None:
    workdir, _ = sts_run
    res = workdir / "results"
    features = pd.read_csv(res / "radiomics/features.tsv", sep="\t", dtype={"subject": str})
    assert set(features["source"]) == {"human", "auto", "erode"}
    assert features.groupby("source")["subject"].nunique().to_dict() == {"human": 4, "auto": 4, "erode": 4}
    by_class = pd.read_csv(res / "stats/robustness_by_class.tsv", sep="\t")
    erode = by_class[by_class["perturbation"] == "erode"].set_index("class")
    assert erode.loc["all", "n_evaluable"] > 50
    assert 0 <= erode.loc["all", "percent_reproducible"] <= 100
    # shape features of a mask and its one-voxel erosion: volume, surface, diameters all scale together
    assert erode.loc["shape", "percent_reproducible"] >= 50
    categories, results = report_data((res / "report.html").read_text())
    listed = {p for subs in categories.values() for paths in subs.values() for p in paths}
    assert {
        "results/stats/robustness_by_class.tsv",
        "results/stats/robustness.png",
        "results/stats/retention_by_class.tsv",
    } <= listed
    assert "perturb" in results["results/stats/robustness_by_class.tsv"]["caption"].lower()
