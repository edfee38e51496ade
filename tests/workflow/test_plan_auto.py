"""segmentation.plan: auto in the workflow: the fingerprint and plan rules run on the tiny cohort (a copy of the
tiny run), the normalise stage works on the planned grid with the planned method, train and predict read the plan,
the plan files reach the manifest, and a time budget below one epoch stops the plan job with the numbers."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

from tests.workflow.conftest import TINY_CONFIG, clone_run, run, snakemake_cmd


def _planned_config(path: Path, budget_minutes: float) -> Path:
    """The tiny config without the keys the plan decides, except the patch (typed: an override)."""
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["preprocess"].pop("target_spacing_mm")
    cfg["preprocess"]["normalise"] = {}
    cfg["segmentation"] = {
        "folds": 2,
        "plan": "auto",
        "budget_minutes": budget_minutes,
        "plan_memory_mb": 1000,
        "train": {"patch_size": [24, 24, 24], "iterations_per_epoch": 2},
        "infer": {"tta": False},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_a_planned_run_normalises_on_the_planned_grid_and_feeds_the_plan_to_training(
    tiny_run: Path, tmp_path: Path
) -> None:
    work = clone_run(tiny_run, tmp_path / "planned", verify=False)
    too_short = _planned_config(tmp_path / "short.yaml", 1e-4)
    failed = run(snakemake_cmd(work, "--cores", "2", "results/plan/plan.json", configfile=too_short), check=False)
    assert failed.returncode != 0
    log = (work / "logs" / "plan" / "plan.log").read_text()
    assert "time budget 0.0001 min (0 s) is shorter than one epoch" in log, log[-2000:]
    assert "raise the time budget" in log

    config = _planned_config(tmp_path / "planned.yaml", 0.5)
    subject = "demo01"
    targets = [f"results/normalise/sub-{subject}/sub-{subject}_{q}.nii.gz" for q in ("T1w", "T2w")]
    run(snakemake_cmd(work, "--cores", "2", "results/plan/plan.json", *targets, configfile=config))
    plan = json.loads((work / "results" / "plan" / "plan.json").read_text())
    decisions = {d["key"]: d for d in plan["decisions"]}
    assert decisions["segmentation.train.patch_size"]["source"] == "override"
    assert decisions["segmentation.model.architecture"]["source"] == "plan"
    assert (
        decisions["segmentation.train.epochs"]["source"] == "plan"
        and "s budget" in (decisions["segmentation.train.epochs"]["rule"])
    )
    spacing = decisions["preprocess.target_spacing_mm"]["value"]
    assert decisions["preprocess.target_spacing_mm"]["source"] == "plan"
    fingerprint = json.loads((work / "results" / "plan" / "fingerprint.json").read_text())
    assert sorted(s["subject"] for s in fingerprint["subjects"]) == ["demo01", "demo02", "demo03", "demo04"]
    assert fingerprint["modalities"] == ["MR", "MR"]
    for target in targets:
        img = nib.load(work / target)
        assert np.allclose(img.header.get_zooms()[:3], spacing, atol=1e-4), (target, img.header.get_zooms())
        sidecar = json.loads((work / target).with_suffix("").with_suffix(".json").read_text())
        assert sidecar["parameters"]["method"] == "zscore"
    assert "segmentation.model.architecture" in (work / "results" / "plan" / "plan.tsv").read_text()

    graph = run(snakemake_cmd(work, "--rulegraph", configfile=config)).stdout
    labels = {
        line.split("[")[0].strip(): line.split('label = "')[1].split('"')[0]
        for line in graph.splitlines()
        if "label = " in line
    }
    ids = {name: node for node, name in labels.items()}
    edges = {tuple(part.strip() for part in line.split("->")) for line in graph.splitlines() if "->" in line}
    for consumer in ("normalise", "train", "predict", "manifest", "bundle"):
        assert (ids["plan"], ids[consumer]) in edges, consumer
    assert (ids["fingerprint"], ids["plan"]) in edges and (ids["n4"], ids["fingerprint"]) in edges
