"""Derived regions on real data: a 10 mm peritumoral ring around the clinicians' GTV of five STS patients.

The raw DICOM MR T1 series and RTSTRUCTs of STS_001..005 (../shared/data/ibsi_sts/dicom) run through a
radiomics-only workflow (tests/workflow/sts_ring.yaml) with ``radiomics.regions`` ring10 (10 mm, clipped to the
image) and shell5 (5 mm, clipped to the body). Checks: ring features for every patient and every region; the ring
never overlaps the GTV; its volume matches an independent computation (SimpleITK's signed Maurer distance map of the
converted GTV) within 1 %; the body-clipped shell lies inside the unclipped 5 mm ring; the robustness table (GTV vs
its one-voxel erosion) has rows per region.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from medpipe.core.io import read_feature_table
from tests.workflow.conftest import REPO, run, snakemake_cmd

pytestmark = [pytest.mark.workflow, pytest.mark.shared]

CONFIG = REPO / "tests" / "workflow" / "sts_ring.yaml"
PATIENTS = ["STS_001", "STS_002", "STS_003", "STS_004", "STS_005"]
SUBJECTS = [p.replace("_", "") for p in PATIENTS]


@pytest.fixture(scope="module")
def ring_run(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The radiomics-only workflow run to completion on the five patients; returns the working directory."""
    workdir = tmp_path_factory.mktemp("sts_ring")
    rows = ["subject\tdicom\tlabel"]
    for patient, subject in zip(PATIENTS, SUBJECTS, strict=True):
        series = shared_dir / "ibsi_sts" / "dicom" / patient / "MR_T1"
        rows.append(f"{subject}\t{series / 'image'}\t{series / 'mask' / 'RS.dcm'}")
    (workdir / "subjects.tsv").write_text("\n".join(rows) + "\n")
    start = time.monotonic()
    run(snakemake_cmd(workdir, "--cores", "2", "--profile", str(REPO / "profiles" / "default"), configfile=CONFIG))
    print(f"\nSTS ring workflow (5 patients, 3 regions, 2 sources): {time.monotonic() - start:.0f} s")
    return workdir


def _maurer_distance(mask: nib.Nifti1Image) -> np.ndarray:
    """Distance (mm) of every voxel centre to the nearest GTV voxel centre, by SimpleITK (not scipy)."""
    data = (np.asarray(mask.dataobj) > 0).astype(np.uint8)
    img = sitk.GetImageFromArray(data.transpose(2, 1, 0).copy())
    img.SetSpacing([float(z) for z in mask.header.get_zooms()[:3]])
    dist = sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return sitk.GetArrayFromImage(dist).transpose(2, 1, 0)


def _region(res: Path, subject: str, source: str, region: str) -> nib.Nifti1Image:
    return nib.load(res / f"radiomics/sub-{subject}/sub-{subject}_img-T1w_mask-{source}_region-{region}_mask.nii.gz")


def test_ring_features_for_every_patient_and_region(ring_run: Path) -> None:
    table = read_feature_table(ring_run / "results/radiomics/features.tsv")
    counts = table.groupby(["region", "source"])["subject"].nunique().to_dict()
    assert counts == {(r, s): 5 for r in ("GTV", "ring10", "shell5") for s in ("human", "erode")}
    rows = table[(table["kind"] == "pyradiomics") & (table["source"] == "human")]
    per_region = rows.groupby(["region", "subject"]).size().unstack()
    assert (per_region.nunique(axis=1) == 1).all()  # every subject has the same features in a region
    assert per_region.loc["ring10"].iloc[0] == per_region.loc["GTV"].iloc[0] > 1000
    volume = rows[rows["feature"] == "original_shape_VoxelVolume"].pivot(
        index="subject", columns="region", values="value"
    )
    assert (volume["ring10"] > volume["shell5"]).all() and (volume["ring10"] > 0).all()
    mean = rows[rows["feature"] == "original_firstorder_Mean"].pivot(index="subject", columns="region", values="value")
    assert not np.allclose(mean["ring10"], mean["GTV"])  # the ring's intensities are not the tumour's
    print("\n" + volume.round(0).to_string())


def test_ring_is_disjoint_from_the_gtv_and_its_volume_is_independently_right(ring_run: Path) -> None:
    res = ring_run / "results"
    for subject in SUBJECTS:
        gtv = nib.load(res / f"convert/sub-{subject}/sub-{subject}_desc-human_mask.nii.gz")
        ring = _region(res, subject, "human", "ring10")
        np.testing.assert_allclose(ring.affine, gtv.affine)
        inside, ours = np.asarray(gtv.dataobj) > 0, np.asarray(ring.dataobj) > 0
        assert not (inside & ours).any()
        distance = _maurer_distance(gtv)
        expected = int(((distance > 0) & (distance <= 10.0 + 1e-4)).sum())
        voxel_mm3 = float(np.prod(gtv.header.get_zooms()[:3]))
        record = json.loads(
            (res / f"radiomics/sub-{subject}/sub-{subject}_img-T1w_mask-human_region-ring10_mask.json").read_text()
        )
        print(
            f"{subject}: GTV {inside.sum() * voxel_mm3 / 1000:.1f} mL, ring10 {ours.sum() * voxel_mm3 / 1000:.1f} mL "
            f"(independent {expected * voxel_mm3 / 1000:.1f} mL), sidecar {record['volume_mm3'] / 1000:.1f} mL"
        )
        assert abs(int(ours.sum()) - expected) <= 0.01 * expected
        assert record["n_voxels"] == int(ours.sum()) and record["parameters"]["ring_mm"] == 10
        shell = np.asarray(_region(res, subject, "human", "shell5").dataobj) > 0
        assert not (shell & ~((distance > 0) & (distance <= 5.0 + 1e-4))).any()  # inside the 5 mm ring
        shell_record = json.loads(
            (res / f"radiomics/sub-{subject}/sub-{subject}_img-T1w_mask-human_region-shell5_mask.json").read_text()
        )
        assert shell_record["n_voxels"] + shell_record["n_voxels_outside_body"] == shell_record["n_voxels_unclipped"]
        kept = shell_record["n_voxels"] / shell_record["n_voxels_unclipped"]
        print(f"{subject}: shell5 keeps {kept:.1%} of the 5 mm ring inside the body")
        assert kept >= 0.5  # the body is the tissue around the tumour, not only the fat (a two-class Otsu gave 2 %)


def test_robustness_is_reported_per_region(ring_run: Path) -> None:
    stats = ring_run / "results/stats"
    table = pd.read_csv(stats / "robustness.tsv", sep="\t")
    assert set(table["region"]) == {"GTV", "ring10", "shell5"}
    assert table.groupby("region").size().nunique() == 1  # the same features in each region
    by_class = pd.read_csv(stats / "robustness_by_class.tsv", sep="\t")
    whole = by_class[(by_class["class"] == "all") & (by_class["perturbation"] == "erode")].set_index("region")
    print("\nretention under one-voxel erosion, all features: " + whole["percent_reproducible"].to_string())
    assert set(whole.index) == {"GTV", "ring10", "shell5"}
