"""A second reader (subject sheet column label2) on a copy of the tiny run: imported like the first reader's mask,
scored against it, summarised, and compared subject by subject with the automatic masks; with radiomics.sources
reader2 its features are compared with the first reader's (human vs human CCC / ICC beside human vs automatic); a
second reader's mask on another grid stops that subject's job naming it."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml
from scipy import ndimage

from medpipe.core.overlap import dice_score
from tests.workflow.conftest import TINY_CONFIG, clone_run, run, snakemake_cmd

SHEET = "resources/demo/subjects.tsv"


def _simulate_second_reader(work: Path, subjects: list[str]) -> dict[str, float]:
    """A reader who draws one voxel inside the first reader's outline: eroded copies of the human masks."""
    folder = work / "resources" / "demo" / "reader2"
    folder.mkdir()
    dice = {}
    for s in subjects:
        human_img = nib.load(work / "results" / "convert" / f"sub-{s}" / f"sub-{s}_desc-human_mask.nii.gz")
        human = np.asarray(human_img.dataobj) > 0
        eroded = ndimage.binary_erosion(human)
        nib.save(nib.Nifti1Image(eroded.astype(np.uint8), human_img.affine), folder / f"{s}.nii.gz")
        dice[s] = dice_score(eroded, human)
    return dice


def test_a_second_reader_is_scored_and_read_beside_the_automatic_masks(tiny_run: Path, tmp_path: Path) -> None:
    work = clone_run(tiny_run, tmp_path / "wd", verify=False)
    sheet = pd.read_csv(work / SHEET, sep="\t", dtype=str, keep_default_na=False)
    labelled = sorted(sheet.loc[sheet["label"] != "", "subject"])
    expected = _simulate_second_reader(work, labelled)
    sheet["label2"] = [f"resources/demo/reader2/{s}.nii.gz" if s in labelled else "" for s in sheet["subject"]]
    sheet.to_csv(work / SHEET, sep="\t", index=False)

    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["radiomics"]["sources"] = ["human", "auto", "reader2"]
    config = tmp_path / "readers.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))

    dry = run(snakemake_cmd(work, "--cores", "1", "-n", configfile=config))
    jobs = dry.stdout + dry.stderr
    rules = ("convert_reader2", "evaluate_reader2", "evaluate_readers_summary", "compare_readers", "radiomics")
    for rule in (*rules, "reproducibility_readers"):
        assert f"rule {rule}:" in jobs, rule
    for rule in ("n4", "train", "predict", "evaluate_subject"):  # the first reader's results stand
        assert f"rule {rule}:" not in jobs, rule
    n_radiomics = re.search(r"^radiomics\s+(\d+)\s*$", jobs, flags=re.MULTILINE)
    assert n_radiomics and int(n_radiomics.group(1)) == 2 * len(
        labelled
    )  # only the reader2 features (2 images) are new
    run(snakemake_cmd(work, "--cores", "2", configfile=config))

    readers = pd.read_csv(work / "results/evaluate/readers/metrics.tsv", sep="\t", dtype={"subject": str})
    assert sorted(readers["subject"]) == labelled
    for row in readers.itertuples():
        assert abs(row.dice - expected[row.subject]) < 1e-9, row
        assert 0.3 < row.dice < 1.0 and row.precision == 1.0  # inside the first reader's outline
    summary = pd.read_csv(work / "results/evaluate/readers/summary.tsv", sep="\t")
    assert not summary.empty and "dice" in set(summary["metric"])
    compared = pd.read_csv(work / "results/evaluate/readers/automatic_vs_second_reader.tsv", sep="\t")
    dice = compared.set_index("metric").loc["dice"]
    assert dice["name_a"] == "automatic" and dice["name_b"] == "second_reader" and int(dice["n"]) == len(labelled)
    automatic = pd.read_csv(work / "results/evaluate/metrics.tsv", sep="\t", dtype={"subject": str})
    assert abs(dice["mean_a"] - automatic["dice"].mean()) < 1e-9
    # built so: the tiny run's one-epoch model is far from the readers, whose agreement is the ceiling
    assert dice["mean_b"] > dice["mean_a"]
    manifest = (work / "results/audit/manifest.json").read_text()
    assert "evaluate/readers/automatic_vs_second_reader.tsv" in manifest
    assert "stats/readers/reproducibility.tsv" in manifest

    features = pd.read_csv(work / "results/radiomics/features.tsv", sep="\t", dtype={"subject": str}, low_memory=False)
    assert sorted(features.loc[features["source"] == "reader2", "subject"].unique()) == labelled
    readers_ccc = pd.read_csv(work / "results/stats/readers/reproducibility.tsv", sep="\t")
    auto_ccc = pd.read_csv(work / "results/stats/reproducibility.tsv", sep="\t")
    assert len(readers_ccc) == len(auto_ccc) > 0  # the same features, the same statistics
    # built so: two readers a voxel apart agree far better than the first reader and a one-epoch model
    assert readers_ccc["ccc"].median() > auto_ccc["ccc"].median() + 0.1, (
        readers_ccc["ccc"].median(),
        auto_ccc["ccc"].median(),
    )

    bad = labelled[0]
    img = nib.load(work / "resources/demo/reader2" / f"{bad}.nii.gz")
    shifted = img.affine.copy()
    shifted[:3, 3] += 0.5 * np.abs(np.diag(img.affine)[:3])  # half a voxel off the first reader's grid
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted), work / "resources/demo/reader2" / f"{bad}.nii.gz")
    target = f"results/convert/sub-{bad}/sub-{bad}_desc-reader2_mask.nii.gz"
    proc = run(
        snakemake_cmd(work, "--cores", "1", "--forcerun", "convert_reader2", target, configfile=config), check=False
    )
    assert proc.returncode != 0
    log = (work / "logs/convert_reader2" / f"sub-{bad}.log").read_text()
    assert "GeometryError" in log and bad in log and "not the reference grid" in log, log[-2000:]
