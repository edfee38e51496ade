"""preprocess.template: mni152 in the workflow: on a copy of the tiny run, the template rules register every
subject's brain-extracted reference onto the MNI152 template, bring its masks back onto the native reference grid,
feed the registration checks to the review list and the outputs to the manifest; a rerun of a registration job
writes the same bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml

from medpipe.core.geometry import geometry_of, grid_differences
from medpipe.preprocess.template_stage import TISSUE_LABELS
from tests.workflow.conftest import TINY_CONFIG, clone_run, run, snakemake_cmd


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_template_stage_runs_checks_and_reruns_byte_identically(tiny_run: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["preprocess"]["template"] = {"method": "mni152", "resolution_mm": 2}
    config = tmp_path / "template.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    work = clone_run(tiny_run, tmp_path / "wd", verify=False)
    dry = run(snakemake_cmd(work, "--cores", "1", "-n", configfile=config))
    jobs = dry.stdout + dry.stderr
    for rule in ("template", "template_register", "template_to_native", "review_list", "manifest"):
        assert f"rule {rule}:" in jobs or f"\n{rule} " in jobs, rule
    for rule in ("n4", "skullstrip", "train", "predict", "radiomics"):  # nothing upstream is re-made
        assert f"rule {rule}:" not in jobs, rule
    run(snakemake_cmd(work, "--cores", "2", configfile=config), timeout=1200)

    subjects = sorted(p.name.removeprefix("sub-") for p in (work / "results" / "template").glob("sub-*"))
    assert len(subjects) == 4
    for s in subjects:
        folder = work / "results" / "template" / f"sub-{s}"
        record = json.loads((folder / f"sub-{s}_registration.json").read_text())
        assert record["subject"] == s and record["brain_dice"] >= 0.9, record
        native = geometry_of(nib.load(work / "results" / "n4" / f"sub-{s}" / f"sub-{s}_T1w.nii.gz"))
        tissue_img = nib.load(folder / f"sub-{s}_space-native_desc-tissue_dseg.nii.gz")
        assert not grid_differences(geometry_of(tissue_img), native)
        tissue = np.asarray(tissue_img.dataobj)
        assert set(np.unique(tissue)) == {0, *TISSUE_LABELS.values()}
        brain = np.asarray(nib.load(folder / f"sub-{s}_space-native_desc-brain_dseg.nii.gz").dataobj) > 0
        # the same brain through the same transforms (label interpolation may move a few boundary voxels)
        assert 2 * (brain & (tissue > 0)).sum() / (brain.sum() + (tissue > 0).sum()) > 0.999
    flagged = pd.read_csv(work / "results" / "audit" / "flagged_cases.tsv", sep="\t", dtype=str)
    assert "template" not in set(flagged["stage"])  # every registration check passed (Dice >= 0.9 above)
    manifest = (work / "results" / "audit" / "manifest.json").read_text()
    assert f"template/sub-{subjects[0]}/sub-{subjects[0]}_space-native_desc-tissue_dseg.nii.gz" in manifest

    folder = work / "results" / "template" / f"sub-{subjects[0]}"
    outputs = sorted(p for p in folder.iterdir() if p.name.endswith((".mat", ".nii.gz")))
    before = {p.name: _sha(p) for p in outputs}
    record = folder / f"sub-{subjects[0]}_registration.json"
    run(snakemake_cmd(work, "--cores", "2", "--force", str(record.relative_to(work)), configfile=config))
    assert {p.name: _sha(p) for p in outputs} == before
